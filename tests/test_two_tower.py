"""The two-tower retrieval model: trained online from the joined stream, served from an
index that follows the catalog, and better at finding what a viewer likes than
popularity or chance."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from reelrank.engine import Engine
from reelrank.rank.two_tower import HISTORY, USER_CONTEXT, masked_mean
from reelrank.recall import TwoTowerRecall
from reelrank.sim.world import World, make_world, react
from reelrank.train.trainer import OnlineTrainer
from reelrank.train.two_tower import FrequencyEstimate
from reelrank.types import FeedRequest

from .conftest import make_settings, video

pytestmark = pytest.mark.slow


def _round(eng: Engine, world: World, rng: np.random.Generator) -> None:
    by_id = {v["id"]: v for v in world.videos}
    for viewer in world.viewers:
        feed = eng.feed(viewer.id, n=8)
        events: list[dict[str, Any]] = []
        for it in feed.items:
            events += react(
                viewer, by_id[it.video_id], world.topic_of[it.video_id],
                world.quality[it.video_id], rng, feed.request_id, time.time(),
            )  # fmt: skip
        eng.ingest(events)
    eng.flush_impressions()


def _trained(tmp_path: Path, rounds: int, **overrides: Any) -> tuple[Engine, World, OnlineTrainer]:
    torch.manual_seed(0)
    eng = Engine(make_settings(tmp_path, model_min_examples=1, **overrides)).open()
    world = make_world(n_videos=1500, n_viewers=160, seed=11)
    eng.upsert_videos(world.videos)
    eng.upsert_users([{"id": v.id, "region": v.region} for v in world.viewers])
    trainer = OnlineTrainer(eng.settings, eng.store, eng.params)
    rng = np.random.default_rng(3)
    for _ in range(rounds):
        _round(eng, world, rng)
        trainer.step()
    trainer.drain()
    trainer.publish_full()
    eng.model.poll()
    assert eng.retrieval.refresh(force=True)
    return eng, world, trainer


def _query(eng: Engine, user: str):  # type: ignore[no-untyped-def]
    return eng.hydrate(FeedRequest(user_id=user, n=10, request_id="q", now=time.time()))


def test_retrieval_finds_planted_tastes_better_than_popularity_and_chance(
    tmp_path: Path,
) -> None:
    eng, world, trainer = _trained(tmp_path, rounds=10)
    try:
        assert trainer.tt.positives > 1000
        k = 50
        table = eng.state.table
        approved = np.flatnonzero(table.approved[: table.size])
        hot = eng.state.counters.hotness[approved]
        popular = approved[np.argsort(-hot)[:k]]
        rng = np.random.default_rng(0)

        def taste(viewer: Any, rows: np.ndarray) -> float:
            topics = [world.topic_of[table.video(int(r)).id] for r in rows]
            return float(np.mean([viewer.likes_topic(t) for t in topics]))

        tt, pop, rand = [], [], []
        for viewer in world.viewers:
            got = TwoTowerRecall(eng.retrieval).recall(_query(eng, viewer.id), k).rows
            assert len(got) == k
            tt.append(taste(viewer, got))
            pop.append(taste(viewer, popular))
            rand.append(taste(viewer, rng.choice(approved, k, replace=False)))
        print(f"taste of top-{k}: two-tower {np.mean(tt):.3f}, popular {np.mean(pop):.3f}, "
              f"random {np.mean(rand):.3f}")  # fmt: skip
        assert np.mean(tt) > np.mean(pop) + 0.1
        assert np.mean(tt) > np.mean(rand) + 0.1
        status = eng.model_status()["serving"]["retrieval"]
        assert status["ready"] and status["videos"] == len(approved)
    finally:
        eng.close()


def test_serving_towers_match_the_trainers(tmp_path: Path) -> None:
    """The numpy towers serving runs give the vectors the trainer's torch model gives."""
    eng, _, trainer = _trained(tmp_path, rounds=2)
    try:
        tt = trainer.tt
        table = eng.state.table
        rows = np.arange(0, 200, 7)
        served = eng.model.tt_video_vectors(rows)
        # the trainer's side, from the catalog's records
        examples = []
        for r in rows.tolist():
            v = table.video(r)
            feats = {
                "slots": {"video": v.id, "creator": v.creator_id, "sound": v.sound_id},
                "hashtags": table.tag_names(r),
            }
            examples.append(type("E", (), {"features": feats})())
        ids, tags, mask = tt.video_rows(examples, admit=False, ts=0.0)
        x = torch.cat(
            [tt.tables[f"tt_{s}"].weight[torch.from_numpy(ids[:, j])] for j, s in
             enumerate(("video", "creator", "sound"))]
            + [masked_mean(tt.tables["tt_hashtag"].weight[torch.from_numpy(tags)], mask)],
            dim=1,
        )  # fmt: skip
        with torch.no_grad():
            expected = tt.model.video_vectors(x).numpy()
        np.testing.assert_allclose(served, expected, atol=1e-5)

        q = _query(eng, "u3")
        u = eng.model.tt_user_vector(q)
        assert u is not None
        ctx = {
            "user": "u3", "region": q.region, "language": q.language, "device": None,
            "hour": str(time.gmtime(q.request.now).tm_hour),
        }  # fmt: skip
        hist = [vid for vid, _, _ in reversed(list(q.user.session))] if q.user else []
        hist = list(dict.fromkeys(hist))[:HISTORY]
        ex = type("E", (), {"features": {"slots": ctx, "history": hist}})()
        crow, hrow, hmask = tt.user_rows([ex], admit=False, ts=0.0)
        parts = [tt.tables[f"tt_{s}"].weight[torch.from_numpy(crow[:, j])] for j, s in
                 enumerate(USER_CONTEXT)]  # fmt: skip
        parts.append(masked_mean(tt.tables["tt_video"].weight[torch.from_numpy(hrow)], hmask))
        with torch.no_grad():
            want = tt.model.user_vectors(torch.cat(parts, dim=1)).numpy()[0]
        np.testing.assert_allclose(u, want, atol=1e-5)
    finally:
        eng.close()


def test_new_edited_and_taken_down_videos_reach_the_index_at_once(tmp_path: Path) -> None:
    eng, world, _ = _trained(tmp_path, rounds=2, banned_terms=["spam"])
    try:
        index = eng.retrieval.index
        assert index is not None
        before = len(index)
        fresh = video("brand-new", creator_id=world.videos[0]["creator_id"], hashtags=["cats"])
        eng.upsert_videos([fresh])
        row = eng.state.table.row_of("vbrand-new")
        assert eng.retrieval.index is index and len(index) == before + 1
        vec = index.vector(row)
        assert vec is not None
        keys, scores = index.search(vec, 20)
        # the next query finds it at the top (other unseen videos of that creator and
        # hashtag may tie: none of them has an id row of its own yet)
        assert row in keys[scores >= scores[0] - 1e-5]
        eng.upsert_videos([{**fresh, "caption": "buy spam"}])  # held for review
        assert index.vector(row) is None
        keys, _ = index.search(vec, 50)
        assert row not in keys
        # a full refresh keeps both facts
        assert eng.retrieval.refresh(force=True)
        assert eng.retrieval.index is not None and eng.retrieval.index.vector(row) is None
    finally:
        eng.close()


def test_a_rebuild_after_new_weights_refines_the_last_indexs_cells(tmp_path: Path) -> None:
    """The index rebuilt for newer weights starts k-means from the cells of the index it
    replaces (no clustering from scratch in the serving process) and still finds what
    exact search over the new vectors finds."""
    eng, world, trainer = _trained(tmp_path, rounds=3, ann_min_vectors=200)
    try:
        first = eng.retrieval.index
        assert first is not None and first.approximate and first.trainings == 1
        _round(eng, world, np.random.default_rng(4))
        trainer.step()
        trainer.drain()
        trainer.publish_full()
        eng.model.poll()
        assert eng.model_status()["serving"]["retrieval"]["building_s"] is None
        during = []
        vectors = eng.retrieval._vectors

        def looked_at(rows: np.ndarray) -> np.ndarray:  # what /v1/model says mid-rebuild
            during.append(eng.model_status()["serving"]["retrieval"])
            return vectors(rows)

        eng.retrieval._vectors = looked_at
        assert eng.retrieval.refresh(force=True)
        eng.retrieval._vectors = vectors
        assert during and during[0]["building_s"] is not None and during[0]["building_s"] >= 0
        assert during[0]["ready"] and during[0]["videos"] == len(first)  # the old one serves
        assert eng.model_status()["serving"]["retrieval"]["building_s"] is None
        index = eng.retrieval.index
        assert index is not None and index is not first and index.approximate
        assert index.refinements == 1 and index.trainings == 0
        recalls = []
        for viewer in world.viewers[:40]:
            vec = eng.retrieval.user_vector(_query(eng, viewer.id))
            assert vec is not None
            approx, _ = index.search(vec, 50)
            exact, _ = index.search(vec, 50, exact=True)
            recalls.append(len(set(approx.tolist()) & set(exact.tolist())) / 50)
        assert np.mean(recalls) >= 0.9, np.mean(recalls)
        # A stopping process gives a rebuild up rather than waiting for it to finish.
        assert eng.retrieval.stop is not None
        eng.retrieval.stop.set()
        assert not eng.retrieval.refresh(force=True)
        assert eng.retrieval.index is index
    finally:
        eng.close()


def test_frequency_estimate_tracks_how_often_videos_recur() -> None:
    freq = FrequencyEstimate(buckets=1 << 16)
    for step in range(400):
        keys = ["hot"] + (["warm"] if step % 4 == 0 else []) + [f"cold{step}"]
        log_q = freq.update(keys)
    q = dict(zip(keys, np.exp(log_q), strict=True))
    assert q["hot"] == pytest.approx(1.0, rel=0.05)  # every batch
    assert freq.gap[freq._hash(["warm"])[0]] == pytest.approx(4.0, rel=0.1)
    assert q["cold399"] < 0.01  # seen once in 400 batches
