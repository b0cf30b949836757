"""The learned ranker against the heuristic, on held-out simulated traffic it never saw."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from reelrank.engine import Engine
from reelrank.evaluate.metrics import auc
from reelrank.rank.model import HEADS
from reelrank.sim.world import World, make_world, react
from reelrank.train.joiner import Example, SampleJoiner
from reelrank.train.trainer import OnlineTrainer

from .conftest import make_settings

pytestmark = pytest.mark.slow


def _round(eng: Engine, world: World, rng: np.random.Generator) -> dict[tuple[str, str], float]:
    """Every viewer fetches a page and reacts; returns the served score per item."""
    by_id = {v["id"]: v for v in world.videos}
    served = {}
    for viewer in world.viewers:
        feed = eng.feed(viewer.id, n=8)
        events: list[dict[str, Any]] = []
        for it in feed.items:
            served[(feed.request_id, it.video_id)] = it.score
            events += react(
                viewer, by_id[it.video_id], world.topic_of[it.video_id],
                world.quality[it.video_id], rng, feed.request_id, time.time(),
            )  # fmt: skip
        eng.ingest(events)
    eng.flush_impressions()
    return served


def _join_all(eng: Engine, imp_after: int, ev_after: int) -> list[Example]:
    joiner = SampleJoiner(window_s=30.0)
    out: list[Example] = []
    for _, imp in eng.store.events.read_impressions(imp_after, 10**9):
        out += joiner.add_impression(imp)
    for _, ev in eng.store.events.read(ev_after, 10**9):
        out += joiner.add_event(ev)
    return out + joiner.advance(time.time() + 3600.0)


def test_learned_ranker_beats_the_heuristic_on_held_out_traffic(tmp_path: Path) -> None:
    torch.manual_seed(0)
    eng = Engine(make_settings(tmp_path, model_min_examples=10**9)).open()
    world = make_world(n_videos=2000, n_viewers=250, seed=5)
    eng.upsert_videos(world.videos)
    eng.upsert_users([{"id": v.id, "region": v.region} for v in world.viewers])
    trainer = OnlineTrainer(eng.settings, eng.store, eng.params)
    rng = np.random.default_rng(1)
    try:
        for _ in range(12):  # training traffic, served by the heuristic
            _round(eng, world, rng)
            trainer.step()
        trainer.drain()
        assert trainer.examples_trained > 10_000
        imp_after = eng.store.events.last_impression_offset()
        ev_after = eng.store.events.last_offset()
        served: dict[tuple[str, str], float] = {}
        for _ in range(3):  # held-out traffic: never trained on
            served.update(_round(eng, world, rng))
        held_out = [e for e in _join_all(eng, imp_after, ev_after) if not e.correction]
    finally:
        eng.close()
    assert len(held_out) > 3000
    learned = trainer.predict(held_out)
    heuristic = np.array([served[(e.request_id, e.video_id)] for e in held_out])
    labels = np.stack([e.labels for e in held_out])
    report = {}
    for head in ("like", "finish"):
        j = HEADS.index(head)
        report[head] = (auc(labels[:, j], learned[:, j]), auc(labels[:, j], heuristic))
    print("held-out AUC (learned, heuristic):", report)
    for head, (ours, baseline) in report.items():
        assert ours is not None and baseline is not None
        assert ours >= baseline + 0.05, (head, ours, baseline)
