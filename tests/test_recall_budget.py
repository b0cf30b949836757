"""The recall stage's time budget: channels run side by side; one that misses the budget
is left out of the page and counted, and the others still fill it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from reelrank.engine import Engine
from reelrank.pipeline.feed import FeedPipeline
from reelrank.recall import TrendingRecall
from reelrank.rerank.filters import default_filters
from reelrank.rerank.policy import PolicySelector
from reelrank.types import FeedRequest, Query, Recalled

from .conftest import make_settings, video


class Stalled:
    """A channel that blocks until released (a slow remote index, say)."""

    name = "stalled"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def recall(self, query: Query, quota: int) -> Recalled:
        self.calls += 1
        self.release.wait(10)
        return Recalled.of(np.arange(min(quota, query.size)), "late")


class Slow:
    """A channel that takes 300 ms, then returns the first rows."""

    name = "slow"

    def recall(self, query: Query, quota: int) -> Recalled:
        time.sleep(0.3)
        return Recalled.of(np.arange(min(quota, query.size)), "slow")


def test_channels_not_started_within_the_budget_are_skipped_and_counted(tmp_path: Path) -> None:
    eng = Engine(make_settings(tmp_path)).open()
    sources = [Slow(), TrendingRecall(0.01)]
    pipe = FeedPipeline(
        sources=sources,
        filters=default_filters(),
        ranker=eng.pipeline.ranker,
        selector=PolicySelector([s.name for s in sources]),
        quotas={"slow": 50, "trending": 50},
        metrics=eng.metrics,
        budget_ms=100,
    )
    try:
        eng.upsert_videos([video(i) for i in range(40)])
        cands = pipe.recall(eng.hydrate(FeedRequest("u1", 10, "r1", time.time())))
        # the slow channel ran (it started in time) and its rows count; trending, due to
        # start after the budget was spent, was skipped
        assert {pipe.channel_names[int(s)] for s in cands.source} == {"slow"}
        reg = eng.metrics.registry
        assert reg.get_sample_value("reelrank_recall_timeouts_total", {"source": "trending"}) == 1
        assert reg.get_sample_value("reelrank_recall_timeouts_total", {"source": "slow"}) is None
    finally:
        pipe.close()
        eng.close()


def _pipeline(eng: Engine, stalled: Stalled, budget_ms: float) -> FeedPipeline:
    sources = [stalled, TrendingRecall(0.01)]
    return FeedPipeline(
        sources=sources,
        filters=default_filters(),
        ranker=eng.pipeline.ranker,
        selector=PolicySelector([s.name for s in sources]),
        quotas={"stalled": 50, "trending": 50},
        metrics=eng.metrics,
        budget_ms=budget_ms,
        parallel=True,
    )


def test_in_parallel_a_channel_that_misses_the_budget_is_left_out_and_counted(
    tmp_path: Path,
) -> None:
    eng = Engine(make_settings(tmp_path)).open()
    stalled = Stalled()
    pipe = _pipeline(eng, stalled, budget_ms=500)
    try:
        eng.upsert_videos([video(i) for i in range(40)])
        query = eng.hydrate(FeedRequest("u1", 10, "r1", time.time()))
        cands = pipe.recall(query)
        assert stalled.calls == 1
        names = {pipe.channel_names[int(s)] for s in cands.source}
        assert names == {"trending"}  # the stalled channel's rows are not in the page
        assert len(cands) == 40
        timeouts = eng.metrics.registry.get_sample_value(
            "reelrank_recall_timeouts_total", {"source": "stalled"}
        )
        assert timeouts == 1
        page = pipe.run(eng.hydrate(FeedRequest("u1", 10, "r2", time.time())))
        assert len(page.items) == 10 and {i.source for i in page.items} == {"trending"}
    finally:
        stalled.release.set()
        pipe.close()
        eng.close()


def test_without_a_budget_every_channel_is_waited_for(tmp_path: Path) -> None:
    eng = Engine(make_settings(tmp_path)).open()
    stalled = Stalled()
    stalled.release.set()  # returns at once
    pipe = _pipeline(eng, stalled, budget_ms=0)
    try:
        eng.upsert_videos([video(i) for i in range(40)])
        cands = pipe.recall(eng.hydrate(FeedRequest("u1", 10, "r1", time.time())))
        names = [pipe.channel_names[int(s)] for s in cands.source]
        assert names.count("stalled") == 40 and names.count("trending") == 40
    finally:
        pipe.close()
        eng.close()
