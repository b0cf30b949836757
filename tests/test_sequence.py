"""The sequence model (issue 13): self-attention over a user's latest engagements,
trained online from the event log, served as a recall channel and a ranker feature."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import torch

from reelrank.engine import Engine
from reelrank.rank.cascade import sequence_feature
from reelrank.rank.features import DENSE
from reelrank.rank.sequence import SequenceConfig
from reelrank.recall import SequenceRecall
from reelrank.schema import Event
from reelrank.train.embedding import unpack_sequences
from reelrank.train.sequence import SequenceLearner
from reelrank.train.trainer import READ_LIMIT, SEQUENCE_BATCHES_PER_STEP, OnlineTrainer
from reelrank.types import FeedRequest

from .conftest import event, make_settings, video

CHAINS, LENGTH = 40, 4  # films in series: part j is followed by part j + 1


def _walks(users: int, seed: int) -> list[tuple[str, str]]:
    """(user, video) in time order: each user watches three random series in order."""
    rng = np.random.default_rng(seed)
    out = []
    for u in range(users):
        for k in rng.choice(CHAINS, 3, replace=False):
            out += [(f"u{seed}-{u}", f"v{k}-{j}") for j in range(LENGTH)]
    return out


def _next_part_hit_rate(learner: SequenceLearner) -> float:
    """Share of (part j -> part j + 1) steps where part j + 1 scores highest of all."""
    table = learner.table
    ids = [f"v{k}-{j}" for k in range(CHAINS) for j in range(LENGTH)]
    rows = table.lookup(ids)
    items = table.weight[rows]
    hits = total = 0
    learner.model.eval()
    with torch.no_grad():
        for k in range(CHAINS):
            for j in range(LENGTH - 1):
                history = torch.from_numpy(rows[[k * LENGTH + i for i in range(j + 1)]])
                h = learner.model(table.weight[history][None], torch.ones(1, j + 1, dtype=bool))
                scores = (items @ h[0, -1]).numpy()
                scores[[k * LENGTH + i for i in range(j + 1)]] = -np.inf  # already watched
                hits += int(np.argmax(scores) == k * LENGTH + j + 1)
                total += 1
    return hits / total


def test_the_learner_finds_the_next_part_of_a_series() -> None:
    learner = SequenceLearner(SequenceConfig(batch=32, rehearse=32), min_count=1)
    ts = 1_000_000.0
    for n, (user, vid) in enumerate(_walks(300, seed=1)):
        learner.observe(Event(event_id=f"e{n}", type="finish", user_id=user, video_id=vid, ts=ts))
        ts += 30.0
    learner.flush()
    assert learner.sequences > 300 and learner.loss < 3.0  # ln(129) = 4.86 at chance
    # Chance would be about 1 in 150; popularity cannot tell one series' parts apart.
    assert _next_part_hit_rate(learner) > 0.6


def test_only_engagements_extend_a_sequence_and_repeats_do_not() -> None:
    learner = SequenceLearner(SequenceConfig(batch=1000), min_count=1)
    kinds = ["play", "finish", "like", "skip", "impression", "share", "finish"]
    videos = ["a", "a", "a", "b", "c", "d", "a"]
    for n, (kind, vid) in enumerate(zip(kinds, videos, strict=True)):
        learner.observe(Event(event_id=f"e{n}", type=kind, user_id="u", video_id=vid, ts=n + 1.0))
    # finish a, like a (the same video: no step), share d, finish a again (moves to the end)
    assert list(learner.history["u"]) == ["d", "a"]
    assert [s for s, _ in learner.pending] == [["a", "d"], ["d", "a"]]


def test_a_backlog_waits_and_is_trained_a_bounded_number_of_batches_per_step(
    tmp_path: Path,
) -> None:
    """A trainer reading a long log from its start (a restart, a first deployment over
    history) must not spend its steps training the sequence model on every old engagement
    while the ranker's examples wait: each step trains at most SEQUENCE_BATCHES_PER_STEP
    sequence batches, the rest wait and are trained by the steps after (idle ones too),
    and draining trains them all. A live stream, a few batches a step, trains at once."""
    learner = SequenceLearner(SequenceConfig(batch=8, rehearse=0), min_count=1)
    walks = _walks(40, seed=2)  # 40 users x 12 finishes: 440 sequences of two or more
    learner.renew(3)
    for n, (user, vid) in enumerate(walks):
        learner.observe(
            Event(event_id=f"e{n}", type="finish", user_id=user, video_id=vid, ts=n + 1)
        )
    assert learner.sequences == 3 * 8 and len(learner.pending) == 440 - 3 * 8
    assert {u: len(s) for u, s in learner.history.items()} == {f"u2-{u}": 12 for u in range(40)}
    learner.renew(2)
    assert learner.train_pending() == 2 * 8 and learner.sequences == 5 * 8
    assert learner.flush() == 440 - 5 * 8 and learner.sequences == 440 and learner.skipped == 0
    # Without a bound, the same stream trains batch by batch as it arrives.
    live = SequenceLearner(SequenceConfig(batch=8, rehearse=0), min_count=1)
    for n, (user, vid) in enumerate(walks):
        live.observe(Event(event_id=f"e{n}", type="finish", user_id=user, video_id=vid, ts=n + 1))
    assert live.sequences == 440 and not live.pending

    # Through the trainer: a backlog of engagements with no impressions (history sent
    # before any page was served), read READ_LIMIT events a step.
    eng = Engine(make_settings(tmp_path)).open()
    try:
        eng.upsert_videos([video(f"{k}-{j}") for k in range(CHAINS) for j in range(LENGTH)])
        history = [
            event("finish", user, vid, ts=1_000_000.0 + n)
            for n, (user, vid) in enumerate(_walks(600, seed=3))
        ]
        for i in range(0, len(history), 1000):
            eng.ingest(history[i : i + 1000])
        trainer = OnlineTrainer(eng.settings, eng.store, eng.params)
        seq = trainer.sequence
        per_step = SEQUENCE_BATCHES_PER_STEP * seq.config.batch  # new sequences a step
        trainer.step()
        assert trainer.event_offset == READ_LIMIT  # 5,000 events, about 4,600 sequences
        assert seq.batches == SEQUENCE_BATCHES_PER_STEP
        told = threading.Event()
        told.set()
        trainer.step(told)  # told to stop: the backlog waits for the restart
        assert seq.batches == SEQUENCE_BATCHES_PER_STEP and trainer.event_offset == READ_LIMIT
        trainer.step()  # the other 2,200 events
        trainer.step()  # nothing new to read: the backlog still moves
        assert trainer.event_offset == len(history) == 7200
        assert seq.batches == 3 * SEQUENCE_BATCHES_PER_STEP
        waiting = seq.status()["sequences_pending"]
        assert waiting == 600 * 11 - 3 * per_step  # 11 sequences a user, none dropped
        trainer.drain()
        assert seq.batches == 600 * 11 // seq.config.batch + 1  # the last one partial
        assert not seq.pending and seq.status()["sequences_dropped_behind"] == 0
    finally:
        eng.close()


def test_a_checkpoint_keeps_each_users_sequence_and_the_backlog_in_order(
    tmp_path: Path,
) -> None:
    """The learner's state goes through torch.save and back (weights_only, as the trainer
    loads it): the users' sequences in recency order and the untrained backlog with its
    times; a state written in the earlier JSON form still loads."""
    learner = SequenceLearner(SequenceConfig(batch=8, rehearse=0), min_count=1)
    learner.renew(2)
    for n, (user, vid) in enumerate(_walks(30, seed=4)):
        learner.observe(
            Event(event_id=f"e{n}", type="finish", user_id=user, video_id=vid, ts=n + 0.5)
        )
    assert learner.pending and learner.sequences == 2 * 8
    path = tmp_path / "seq.pt"
    torch.save(learner.state(), path)
    restored = SequenceLearner(SequenceConfig(batch=8, rehearse=0), min_count=1)
    restored.load_state(torch.load(path, weights_only=True))
    assert list(restored.history) == list(learner.history)  # least recently active first
    assert {u: list(s) for u, s in restored.history.items()} == {
        u: list(s) for u, s in learner.history.items()
    }
    assert list(restored.pending) == list(learner.pending)
    assert restored.sequences == learner.sequences and restored.table.ids == learner.table.ids
    assert restored.flush() == learner.flush() == 30 * 11 - 2 * 8

    older = {k: v for k, v in learner.state().items() if "packed" not in k}
    older.pop("history_users"), older.pop("pending_ts")
    older["history"] = json.dumps({u: list(s) for u, s in learner.history.items()})
    older["pending"] = json.dumps([[["v1-0", "v1-1"], 7.0]])
    table = older["table"] = dict(older["table"])
    (table["ids"],) = unpack_sequences(table.pop("ids_packed"))
    (table["pending_ids"],) = unpack_sequences(table.pop("pending_packed"))
    old = SequenceLearner(SequenceConfig(batch=8, rehearse=0), min_count=1)
    old.load_state(older)
    assert list(old.history) == list(learner.history)
    assert list(old.pending) == [(["v1-0", "v1-1"], 7.0)]
    assert old.table.ids == learner.table.ids


def test_serving_recalls_the_next_part_from_the_users_latest_finishes(tmp_path: Path) -> None:
    eng = Engine(make_settings(tmp_path, model_min_examples=0, embedding_min_count=1)).open()
    try:
        eng.upsert_videos(
            [
                video(f"{k}-{j}", hashtags=[f"t{(k + j) % 3}"], creator_id=f"c{k}-{j}")
                for k in range(CHAINS)
                for j in range(LENGTH)
            ]
        )
        t0 = time.time() - 10_000
        walks = _walks(300, seed=2)
        for i in range(0, len(walks), 500):
            chunk = walks[i : i + 500]
            eng.ingest(
                [event("finish", u, v, ts=t0 + (i + n) * 0.01) for n, (u, v) in enumerate(chunk)]
            )
        trainer = OnlineTrainer(eng.settings, eng.store, eng.params)
        trainer.drain()
        assert trainer.status()["sequence"]["sequences_trained"] > 500
        trainer.publish_full()
        eng.sync_model()
        assert eng.sequence.refresh(force=True)
        # A new viewer finishes the first two parts of series 5.
        eng.ingest([event("finish", "new", f"v5-{j}") for j in range(2)])
        query = eng.hydrate(FeedRequest("new", 10, "r1", time.time()))
        got = SequenceRecall(eng.sequence).recall(query, 10)
        assert eng.state.table.video(int(got.rows[0])).id == "v5-2"
        # The learner and serving agree on the user's vector.
        vec = eng.model.seq_user_vector(query)
        table = trainer.sequence.table
        hist = torch.from_numpy(table.lookup(["v5-0", "v5-1"]))
        trainer.sequence.model.eval()
        with torch.no_grad():
            want = trainer.sequence.model(table.weight[hist][None], torch.ones(1, 2, dtype=bool))
        assert vec is not None
        np.testing.assert_allclose(vec, want[0, -1].numpy(), atol=1e-5)
        # and the ranker sees the model's scores as a feature
        scores = eng.model.sequence_scores(query, got.rows)
        assert scores is not None and scores[0] == scores.max()
        # also in what a page the heuristic served logs for training (as when it scored)
        feed = eng.feed("new", n=6)
        assert feed.ranker == "heuristic"
        eng.flush_impressions()
        logged = [
            imp for _, imp in eng.store.events.read_impressions(0, 10**6)
            if imp.request_id == feed.request_id
        ]  # fmt: skip
        assert len(logged) == len(feed.items)
        query = eng.hydrate(FeedRequest("new", 6, "r2", time.time()))
        rows = np.array([eng.state.table.row_of(imp.video_id) for imp in logged])
        want = sequence_feature(query, rows, eng.sequence)
        assert want is not None and np.abs(want).max() > 0
        got_feature = [imp.features["dense"][DENSE.index("sequence_score")] for imp in logged]
        np.testing.assert_allclose(got_feature, want / 2.0, atol=1e-4)
    finally:
        eng.close()
