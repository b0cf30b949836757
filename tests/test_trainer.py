"""The online trainer over real stores: offsets, checkpoints, publishing to serving, and the
serving side's fallbacks."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import torch

from reelrank.engine import Engine
from reelrank.rank.features import DENSE, JUDGE_ONLY, SINGLE_SLOTS, extract
from reelrank.rank.learned import ModelServer
from reelrank.rank.model import HEADS, MultiTaskRanker, NumpyRanker, RankerConfig
from reelrank.sim.world import World, make_world, react
from reelrank.train.joiner import Example, SampleJoiner
from reelrank.train.trainer import OnlineTrainer
from reelrank.types import FeedRequest

from .conftest import make_settings, video

FAR = 10**6  # seconds: closes every join window


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


class Sim:
    """Simulated viewers on an engine: each round every viewer fetches a page and reacts."""

    def __init__(self, eng: Engine, n_videos: int = 400, n_viewers: int = 30) -> None:
        self.eng = eng
        self.world: World = make_world(n_videos=n_videos, n_viewers=n_viewers, seed=5)
        eng.upsert_videos(self.world.videos)
        eng.upsert_users([{"id": v.id, "region": v.region} for v in self.world.viewers])
        self.by_id = {v["id"]: v for v in self.world.videos}
        self.rng = np.random.default_rng(1)

    def round(self) -> list[Any]:
        feeds = []
        w = self.world
        for viewer in w.viewers:
            feed = self.eng.feed(viewer.id, n=8)
            feeds.append(feed)
            events: list[dict[str, Any]] = []
            for it in feed.items:
                events += react(
                    viewer, self.by_id[it.video_id], w.topic_of[it.video_id],
                    w.quality[it.video_id], self.rng, feed.request_id, time.time(),
                )  # fmt: skip
            self.eng.ingest(events)
        self.eng.flush_impressions()
        return feeds


def settings_for(tmp_path: Path, store: str, **kw: Any) -> Any:
    kw.setdefault("train_batch", 64)
    kw.setdefault("model_min_examples", 10**9)
    url = "memory://" if store == "memory" else f"sqlite:///{tmp_path / 'rr.db'}"
    return make_settings(tmp_path, store=url, **kw)


@pytest.fixture(params=["memory", "sqlite"])
def eng(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    e = Engine(settings_for(tmp_path, request.param)).open()
    yield e
    e.close()


def catch_up(t: OnlineTrainer) -> None:
    """Read both logs to their ends, close every window, train what is buffered."""
    for _ in range(100):
        t.step()
        s = t.store.events
        if t.event_offset == s.last_offset() and t.impression_offset == s.last_impression_offset():
            break
    t._take(t.joiner.advance(time.time() + FAR))
    t._flush()


def joined_count(eng: Engine) -> int:
    """Examples (with corrections) a fresh joiner makes of the whole logs."""
    j = SampleJoiner(
        eng.settings.join_window_s, eng.settings.join_require_view, eng.settings.correction_window_s
    )
    n = 0
    for _, imp in eng.store.events.read_impressions(0, 10**9):
        n += len(j.add_impression(imp))
    for _, ev in eng.store.events.read(0, 10**9):
        n += len(j.add_event(ev))
    return n + len(j.advance(time.time() + FAR))


def probe(eng: Engine, user_id: str, n: int = 120) -> tuple[Any, list[Example]]:
    """Candidate features for a request, and the same features as training examples."""
    query = eng.hydrate(FeedRequest(user_id=user_id, n=8, request_id="probe", now=time.time()))
    rows = np.arange(min(n, query.size), dtype=np.int64)
    feats = extract(query, rows, eng.settings.smoothing_strength)
    examples = [
        Example(
            features=feats.record(query, i),
            labels=np.zeros(len(HEADS), np.float32),
            ts=query.request.now,
            request_id="probe",
            video_id=query.table.video(int(rows[i])).id,
        )
        for i in range(len(rows))
    ]
    return feats, examples


# -- reading the logs ----------------------------------------------------------------------
def test_step_trains_on_the_joined_logs_and_tracks_their_offsets(eng: Engine) -> None:
    sim = Sim(eng)
    trainer = OnlineTrainer(eng.settings, eng.store, eng.params)
    assert trainer.step() == 0  # nothing logged yet
    for _ in range(2):
        sim.round()
        trainer.step()
    assert trainer.event_offset == eng.store.events.last_offset() > 0
    assert trainer.impression_offset == eng.store.events.last_impression_offset() > 0
    catch_up(trainer)
    assert trainer.examples_trained > 0
    assert trainer.batches > 0
    assert trainer.skipped == 0  # served features are complete
    stats = trainer.joiner.stats
    assert stats.impressions == eng.store.events.last_impression_offset()
    assert stats.events == eng.store.events.last_offset()
    # every joined example was trained on once: none lost in the buffer, none twice
    assert trainer.examples_trained == stats.examples + stats.corrections == joined_count(eng)
    before = trainer.examples_trained
    assert trainer.step() == 0  # no new records: nothing more
    assert trainer.examples_trained == before


def test_impressions_marked_judge_only_are_judged_but_never_learned_from(eng: Engine) -> None:
    """A batch whose last impressions are marked judge-only trains the model exactly as the
    batch without them would, while the champion/challenger comparison counts their pairs."""
    Sim(eng).round()
    _, examples = probe(eng, "u3", n=48)
    rng = np.random.default_rng(0)
    for i, e in enumerate(examples):
        e.features["heuristic"] = float(rng.normal())
        if i % 6 == 0:  # a chosen video per page of six
            e.labels[:] = 0.0
            e.labels[[HEADS.index("finish"), HEADS.index("long_view")]] = 1.0
            e.labels[HEADS.index("watch_ratio")] = 1.0
        else:
            e.labels[HEADS.index("skip")] = 1.0
        e.request_id = f"page-{i // 6}"
    learned, judged = examples[:36], examples[36:]
    for e in judged:
        e.features[JUDGE_ONLY] = True

    both = OnlineTrainer(eng.settings, eng.store, eng.params)
    alone = OnlineTrainer(eng.settings, eng.store, eng.params)
    assert both._train(learned + judged) == len(learned)
    assert alone._train(learned) == len(learned)
    assert both.examples_trained == alone.examples_trained == len(learned)
    assert both.champion.pairs > alone.champion.pairs > 0
    for name, value in alone.model.state_dict().items():
        torch.testing.assert_close(both.model.state_dict()[name], value, rtol=0, atol=0)
    for slot in SINGLE_SLOTS:
        keys = [e.features["slots"].get(slot) for e in learned]
        rows_a = alone.tables[slot].lookup(keys)
        rows_b = both.tables[slot].lookup(keys)
        torch.testing.assert_close(
            both.tables[slot].weight[rows_b], alone.tables[slot].weight[rows_a], rtol=0, atol=0
        )
    # A batch of judged impressions only: compared, nothing learned.
    fresh = OnlineTrainer(eng.settings, eng.store, eng.params)
    untouched = {k: v.clone() for k, v in fresh.model.state_dict().items()}
    assert fresh._train(judged) == 0
    assert fresh.batches == 0 and fresh.champion.pairs > 0
    for name, value in untouched.items():
        torch.testing.assert_close(fresh.model.state_dict()[name], value, rtol=0, atol=0)


# -- checkpoints ---------------------------------------------------------------------------
def test_a_restored_trainer_predicts_the_same_and_continues_without_gaps(
    eng: Engine, tmp_path: Path
) -> None:
    sim = Sim(eng)
    path = tmp_path / "model" / "trainer.pt"
    original = OnlineTrainer(eng.settings, eng.store, eng.params, checkpoint_path=path)
    for _ in range(2):
        sim.round()
        original.step()
    sim.round()  # part of it stays open in the joiner at the checkpoint
    original.step()
    original.checkpoint()
    assert path.exists()
    assert original.joiner.open  # the checkpoint carries open impressions too

    restored = OnlineTrainer(eng.settings, eng.store, eng.params, checkpoint_path=path)
    assert restored.examples_trained == 0
    assert restored.restore() is True
    assert restored.event_offset == original.event_offset == eng.store.events.last_offset()
    assert restored.impression_offset == original.impression_offset
    assert restored.examples_trained == original.examples_trained > 0
    assert restored.version() == original.version()
    assert set(restored.joiner.open) == set(original.joiner.open)
    # The checkpoint names logged impressions by offset; the restore reads them back.
    saved = orjson.loads(torch.load(path, weights_only=True)["joiner"])
    kept = [*saved["open"], *(r for _, r in saved["closed"])]
    assert kept and all("imp" not in r and r["seq"] > 0 for r in kept)
    for key, was in original.joiner.open.items():
        assert restored.joiner.open[key].imp == was.imp
    for user in ("u0", "u7", "stranger"):
        _, examples = probe(eng, user)
        np.testing.assert_allclose(
            restored.predict(examples), original.predict(examples), rtol=0, atol=1e-6
        )

    for _ in range(2):  # the same new traffic for both
        sim.round()
        original.step()
        restored.step()
    catch_up(original)
    catch_up(restored)
    assert restored.event_offset == original.event_offset == eng.store.events.last_offset()
    assert restored.impression_offset == original.impression_offset
    assert restored.examples_trained == original.examples_trained == joined_count(eng)


def test_a_trainer_told_to_stop_saves_its_backlog_instead_of_training_it(
    eng: Engine, tmp_path: Path
) -> None:
    """Stopping never waits for a backlog: a step told to stop returns before the next
    event or batch; the checkpoint on the way out keeps the joined examples it did not
    train, and the restored trainer trains them, so nothing is lost or trained twice."""
    sim = Sim(eng)
    for _ in range(3):
        sim.round()
    stop = threading.Event()
    stop.set()
    path = tmp_path / "model" / "trainer.pt"
    idle = OnlineTrainer(eng.settings, eng.store, eng.params, checkpoint_path=path)
    assert idle.step(stop) == 0 and idle.event_offset == 0  # stopped before any event
    # A batch larger than the backlog: everything joins, nothing trains.
    slow = dataclasses.replace(eng.settings, train_batch=10**6, train_max_wait_s=1e9)
    first = OnlineTrainer(slow, eng.store, eng.params, checkpoint_path=path)
    first.step()
    first._take(first.joiner.advance(time.time() + FAR))
    backlog = len(first.buffer)
    assert backlog > 0 and first.examples_trained == 0
    first.checkpoint(train_buffer=False)
    assert first.examples_trained == 0  # saved, not trained

    second = OnlineTrainer(eng.settings, eng.store, eng.params, checkpoint_path=path)
    assert second.restore() is True
    assert len(second.buffer) == backlog
    assert [e.request_id for e in second.buffer] == [e.request_id for e in first.buffer]
    np.testing.assert_array_equal(second.buffer[0].labels, first.buffer[0].labels)
    catch_up(second)
    assert second.examples_trained == joined_count(eng)


def test_restore_without_a_checkpoint_is_a_fresh_start(tmp_path: Path) -> None:
    eng = Engine(settings_for(tmp_path, "memory")).open()
    try:
        t = OnlineTrainer(eng.settings, eng.store, eng.params, tmp_path / "none" / "t.pt")
        assert t.restore() is False
        assert (t.event_offset, t.impression_offset, t.examples_trained) == (0, 0, 0)
        no_path = OnlineTrainer(eng.settings, eng.store, eng.params)
        no_path.checkpoint()  # without a path, a no-op
        assert no_path.restore() is False
    finally:
        eng.close()


# -- publishing to serving -----------------------------------------------------------------
def test_serving_applies_full_sparse_and_dense_and_predicts_like_the_trainer(
    eng: Engine,
) -> None:
    sim = Sim(eng)
    trainer = OnlineTrainer(eng.settings, eng.store, eng.params)
    for _ in range(2):
        sim.round()
        trainer.step()
    catch_up(trainer)
    trainer.publish_full()
    early = ModelServer(eng.params, eng.state.table, min_examples=0)
    early.bootstrap()  # starts from the full snapshot
    assert early.version() == trainer.version()
    assert early.examples == trainer.examples_trained

    sim.round()  # more training after the snapshot
    catch_up(trainer)
    users = ("u1", "u4", "stranger")
    feats0, ex0 = probe(eng, users[0])
    stale = np.abs(early.predict(feats0) - trainer.predict(ex0)).max()
    assert stale > 1e-4  # serving is behind: the comparison below can tell

    trainer.publish_sparse()
    trainer.publish_dense()
    late = ModelServer(eng.params, eng.state.table, min_examples=0)
    late.bootstrap()  # full + the sparse and dense entries after it
    assert early.poll() >= 2  # the incremental path catches up too
    for server in (early, late):
        assert server.version() == trainer.version()
        assert server.examples == trainer.examples_trained
        assert server.trained()
    assert early.trainer_status["examples_trained"] == trainer.examples_trained
    for user in users:
        feats, examples = probe(eng, user)
        want = trainer.predict(examples)
        assert want.shape == (len(examples), len(HEADS))
        assert np.ptp(want[:, HEADS.index("like")]) > 1e-3  # candidates are told apart
        for server in (early, late):
            np.testing.assert_allclose(server.predict(feats), want, rtol=0, atol=1e-5)


def test_a_checkpoint_reaches_running_servers_without_a_rebuild(
    eng: Engine, tmp_path: Path
) -> None:
    """After a checkpoint a running server applies the pending rows and the new weights as
    small entries and skips the full model at the version it then holds; a server whose
    entries were pruned, or one that starts later, loads a full model: all of them
    predict what the trainer does."""
    sim = Sim(eng)
    path = tmp_path / "model" / "trainer.pt"
    trainer = OnlineTrainer(eng.settings, eng.store, eng.params, checkpoint_path=path)
    sim.round()
    catch_up(trainer)
    trainer.publish_full()
    running, behind = (ModelServer(eng.params, eng.state.table, min_examples=0) for _ in "ab")
    running.bootstrap()
    behind.bootstrap()
    first = behind.live
    kept = running.live
    for checkpoints in (1, 2):
        sim.round()
        catch_up(trainer)  # rows and weights the servers have not seen
        trainer.checkpoint()
        assert running.poll() >= 4  # sparse, status, dense, full, status
        assert running.live is kept  # no rebuild
        assert running.fulls_skipped == checkpoints
        assert running.version() == trainer.version()
    # The second checkpoint pruned what came before the first one's full model: the
    # server that did not poll finds that full model, then the entries after it.
    kinds = [k for _, k, _, _ in eng.params.read(0, 100)]
    assert kinds.count("full") == 2 and kinds[0] == "full"
    behind.poll()
    assert behind.live is not first and behind.fulls_skipped == 1
    late = ModelServer(eng.params, eng.state.table, min_examples=0)
    late.bootstrap()  # the newest full model
    assert late.fulls_skipped == 0
    for server in (running, behind, late):
        assert server.version() == trainer.version()
        assert server.examples == trainer.examples_trained
    for user in ("u1", "stranger"):
        feats, examples = probe(eng, user)
        want = trainer.predict(examples)
        for server in (running, behind, late):
            np.testing.assert_allclose(server.predict(feats), want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", ["shared_bottom", "mmoe"])
def test_the_numpy_ranker_computes_what_the_module_does(arch: str) -> None:
    config = RankerConfig(arch=arch, seed=3)
    module = MultiTaskRanker(config)
    with torch.no_grad():  # weights away from their initial values, biases included
        for p in module.parameters():
            p.add_(0.3 * torch.randn_like(p))
    module.eval()
    gen = np.random.default_rng(0)
    b, d = 37, config.dim
    single = gen.normal(size=(b, len(SINGLE_SLOTS), d)).astype(np.float32)
    tags = gen.normal(size=(b, 5, d)).astype(np.float32)
    mask = (gen.random((b, 5)) < 0.5).astype(np.float32)
    mask[0] = 0.0  # a video without hashtags
    dense = gen.normal(size=(b, len(DENSE))).astype(np.float32)
    with torch.inference_mode():
        want = module(*(torch.from_numpy(a) for a in (single, tags, mask, dense))).numpy()
    got = NumpyRanker(config, module.state_dict())(single, tags, mask, dense)
    assert got.shape == (b, len(HEADS))
    assert np.ptp(want, axis=0).min() > 1e-2  # the heads vary over the page
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_the_numpy_ranker_refuses_weights_of_another_config() -> None:
    state = MultiTaskRanker(RankerConfig(hidden=(64, 48))).state_dict()
    with pytest.raises(ValueError, match=r"bottom\.0\.weight"):
        NumpyRanker(RankerConfig(), state)
    del state["towers.0.2.bias"]
    with pytest.raises(ValueError, match=r"towers\.0\.2\.bias"):
        NumpyRanker(RankerConfig(hidden=(64, 48)), state)


def test_a_sparse_sync_without_changes_publishes_no_rows(eng: Engine) -> None:
    sim = Sim(eng, n_viewers=10)
    trainer = OnlineTrainer(eng.settings, eng.store, eng.params)
    sim.round()
    catch_up(trainer)
    trainer.publish_full()
    last = eng.params.latest("full")
    assert last is not None
    trainer.publish_sparse()  # everything went out with the full snapshot
    kinds = [kind for _, kind, _, _ in eng.params.read(last[0], 100)]
    assert kinds == ["status", "status"]


# -- serving: fallbacks --------------------------------------------------------------------
def _small_engine(tmp_path: Path, **kw: Any) -> Engine:
    eng = Engine(make_settings(tmp_path, **kw)).open()
    eng.upsert_videos([video(i, hashtags=[f"t{i % 5}"]) for i in range(60)])
    return eng


def test_serving_falls_back_to_the_heuristic_when_the_learned_path_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    eng = _small_engine(tmp_path, model_min_examples=0, learned_ranker="always")
    try:
        trainer = OnlineTrainer(eng.settings, eng.store, eng.params)
        trainer.publish_full()
        eng.model.poll()
        assert eng.model.ready()
        ok = eng.feed("u1", n=5)
        assert ok.ranker == "learned"  # the learned path works before we break it
        assert ok.model_version.startswith("mtl-")

        def boom(*_: Any, **__: Any) -> np.ndarray:
            raise RuntimeError("model exploded")

        monkeypatch.setattr(eng.model, "predict", boom)
        reg = eng.metrics.registry
        for i in range(1, 3):
            feed = eng.feed("u1", n=5)
            assert feed.ranker == "heuristic"
            assert len(feed.items) == 5
            assert feed.model_version == eng.pipeline.ranker.heuristic.model_version
            assert feed.ranker_note is not None and "fail" in feed.ranker_note
            value = reg.get_sample_value("reelrank_ranker_fallbacks_total", {"reason": "error"})
            assert value == i
        assert reg.get_sample_value("reelrank_ranker_requests_total", {"ranker": "learned"}) == 1
        assert reg.get_sample_value("reelrank_ranker_requests_total", {"ranker": "heuristic"}) == 2
        monkeypatch.undo()
        assert eng.feed("u1", n=5).ranker == "learned"  # and it recovers
    finally:
        eng.close()


def test_non_finite_learned_scores_fall_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    eng = _small_engine(tmp_path, model_min_examples=0, learned_ranker="always")
    try:
        OnlineTrainer(eng.settings, eng.store, eng.params).publish_full()
        eng.model.poll()
        real = eng.model.predict

        def nan_predict(feats: Any) -> np.ndarray:
            out = real(feats)
            out[0, 0] = np.nan
            return out

        monkeypatch.setattr(eng.model, "predict", nan_predict)
        feed = eng.feed("u1", n=5)
        assert feed.ranker == "heuristic" and len(feed.items) == 5
        value = eng.metrics.registry.get_sample_value(
            "reelrank_ranker_fallbacks_total", {"reason": "error"}
        )
        assert value == 1
    finally:
        eng.close()


def test_the_heuristic_serves_while_the_model_warms_up(tmp_path: Path) -> None:
    eng = _small_engine(tmp_path, model_min_examples=100, train_batch=32, learned_ranker="always")
    try:
        feed = eng.feed("u1", n=5)  # no model at all yet
        assert feed.ranker == "heuristic" and len(feed.items) == 5
        assert feed.ranker_note == "learned ranker warming up (0 of 100 examples)"
        trainer = OnlineTrainer(eng.settings, eng.store, eng.params)
        trainer.publish_full()  # a model, but trained on nothing
        eng.model.poll()
        assert eng.model.live is not None and not eng.model.ready()
        feed = eng.feed("u1", n=5)
        assert feed.ranker == "heuristic"
        assert feed.ranker_note == "learned ranker warming up (0 of 100 examples)"
        sim = Sim(eng, n_videos=200, n_viewers=12)
        partial = 0  # syncs seen with some, but not enough, examples
        for _ in range(30):
            if trainer.examples_trained >= 100:
                break
            sim.round()
            catch_up(trainer)
            trainer.publish_dense()
            eng.model.poll()
            feed = eng.feed("u0", n=5)
            if trainer.examples_trained < 100:
                partial += trainer.examples_trained > 0
                assert feed.ranker == "heuristic"
                assert feed.ranker_note == (
                    f"learned ranker warming up ({trainer.examples_trained} of 100 examples)"
                )
        assert partial >= 1
        assert eng.model.examples >= 100
        assert eng.feed("u0", n=5).ranker == "learned"
    finally:
        eng.close()


# -- the whole loop in one process -----------------------------------------------------------
def test_a_trainer_thread_takes_serving_from_heuristic_to_learned(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        trainer="thread",
        sync_interval_s=0.2,
        dense_sync_interval_s=0.5,
        model_poll_s=0.1,
        model_min_examples=200,
        train_max_wait_s=0.1,
        learned_ranker="always",  # the champion test is test_champion.py's
    )
    eng = Engine(settings).open()
    try:
        sim = Sim(eng, n_videos=400, n_viewers=30)
        first = sim.round()
        assert all(f.ranker == "heuristic" for f in first)
        deadline = time.monotonic() + 30.0
        learned: list[Any] = []
        while not learned and time.monotonic() < deadline:
            learned = [f for f in sim.round() if f.ranker == "learned"]
            time.sleep(0.05)
        assert learned, "the learned ranker never took over"
        assert all(f.model_version.startswith("mtl-") for f in learned)
        assert all(f.items and f.ranker_note is None for f in learned)
        status = eng.model_status()
        serving, trainer = status["serving"], status["trainer"]
        assert serving["ready"] and serving["model_version"].startswith("mtl-")
        assert serving["examples"] >= 200
        assert serving["trainer_mode"] == "thread"
        assert trainer is not None and trainer["examples_trained"] >= 200
        heads = trainer["heads"]
        assert set(heads) == set(HEADS)
        aucs = {h: heads[h].get("auc") for h in ("like", "finish", "skip")}
        for head, value in aucs.items():
            assert value is not None and 0.0 <= value <= 1.0, (head, value)
        assert "auc" not in heads["watch_ratio"]  # a soft label has no AUC
        eng.sync_model()  # mirrors the trainer's figures into the metrics
        auc = eng.metrics.registry.get_sample_value("reelrank_model_auc", {"head": "like"})
        assert auc is not None and 0.0 <= auc <= 1.0
    finally:
        eng.close()
