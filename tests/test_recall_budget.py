"""The recall stage's time budget: a channel that misses the budget is left out of the page
and counted, and the others still fill it; the precomputed lists run whatever the budget
and are read deeper when a page comes up short, so overload never empties a page."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from reelrank.engine import Engine
from reelrank.pipeline.feed import FeedPipeline
from reelrank.recall import TrendingRecall, default_sources
from reelrank.rerank.filters import default_filters
from reelrank.rerank.policy import PolicySelector
from reelrank.types import FeedRequest, Query, Recalled

from .conftest import event, make_settings, video

SOURCE_NAMES = [s.name for s in default_sources(0.01)]


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


class Instant:
    """An in-process channel (not a precomputed list) that answers at once."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0

    def recall(self, query: Query, quota: int) -> Recalled:
        self.calls += 1
        return Recalled.of(np.arange(min(quota, query.size))[::-1], self.name)


def test_channels_not_started_within_the_budget_are_skipped_and_counted(tmp_path: Path) -> None:
    eng = Engine(make_settings(tmp_path)).open()
    late = Instant("late")
    sources = [Slow(), late, TrendingRecall(0.01)]
    pipe = FeedPipeline(
        sources=sources,
        filters=default_filters(),
        ranker=eng.pipeline.ranker,
        selector=PolicySelector([s.name for s in sources]),
        quotas={"slow": 50, "late": 50, "trending": 50},
        metrics=eng.metrics,
        budget_ms=100,
    )
    try:
        eng.upsert_videos([video(i) for i in range(40)])
        cands = pipe.recall(eng.hydrate(FeedRequest("u1", 10, "r1", time.time())))
        # the slow channel ran (it started in time) and its rows count; `late`, due to
        # start after the budget was spent, was skipped; trending reads a precomputed
        # list, so it runs whatever the budget
        assert {pipe.channel_names[int(s)] for s in cands.source} == {"slow", "trending"}
        assert late.calls == 0
        reg = eng.metrics.registry
        assert reg.get_sample_value("reelrank_recall_timeouts_total", {"source": "late"}) == 1
        assert reg.get_sample_value("reelrank_recall_timeouts_total", {"source": "slow"}) is None
        assert (
            reg.get_sample_value("reelrank_recall_timeouts_total", {"source": "trending"}) is None
        )
    finally:
        pipe.close()
        eng.close()


def test_a_spent_budget_never_empties_the_page(tmp_path: Path) -> None:
    """With no time at all for recall, every channel but the precomputed lists is
    skipped, and the page is still full."""
    eng = Engine(make_settings(tmp_path, recall_budget_ms=1e-6)).open()
    try:
        eng.upsert_videos([video(i, hashtags=["cats"]) for i in range(80)])
        eng.ingest([event("finish", "u1", f"v{i}") for i in range(5)])
        for k in range(3):
            page = eng.feed("u1", n=10)
            assert len(page.items) == 10, f"page {k}"
            assert {i.source for i in page.items} <= {"trending", "popular", "fresh"}
        get = eng.metrics.registry.get_sample_value
        assert get("reelrank_recall_timeouts_total", {"source": "interest"}) == 3
        # Past the budget a list gives five rows per page item (all 80 without the cap).
        assert get("reelrank_feed_fallbacks_total") == 0
        assert get("reelrank_recall_candidates_total", {"source": "trending"}) <= 3 * 50
    finally:
        eng.close()


def test_a_short_page_is_topped_up_from_the_lists_read_deeper(tmp_path: Path) -> None:
    """Only trending, 10 deep: once its 10 are seen, the filters leave nothing, and the
    page comes from the lists read deeper, with the usual filters (nothing seen twice)."""
    quotas = {name: 0 for name in SOURCE_NAMES}
    quotas["trending"] = 10
    eng = Engine(make_settings(tmp_path, recall_quotas=quotas)).open()
    try:
        eng.upsert_videos([video(i) for i in range(35)])
        served: list[str] = []
        for _ in range(3):
            page = eng.feed("u1", n=10)
            assert len(page.items) == 10
            served += [i.video_id for i in page.items]
        assert len(set(served)) == 30  # every page new: the seen filter ran over the top-up
        fallbacks = eng.metrics.registry.get_sample_value("reelrank_feed_fallbacks_total")
        assert fallbacks == 2  # the first page was full without it
        last = eng.feed("u1", n=10)
        assert sorted(i.video_id for i in last.items) == sorted(
            {f"v{i}" for i in range(35)} - set(served)
        )  # the 5 left, and no more: an honest short page once the catalog is spent
    finally:
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
