"""The feed pipeline: recall -> filter -> score -> select, as configured component lists."""

from __future__ import annotations

import logging
import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..metrics import Metrics
from ..rank.cascade import RankCascade, sequence_feature
from ..rank.features import RecallView, extract
from ..rank.signals import candidate_signals
from ..recall.base import RecallSource
from ..rerank.filters import Filter, run_filter
from ..rerank.policy import POOL_SOURCE, PolicySelector
from ..types import Candidates, Query, Recalled

log = logging.getLogger(__name__)

PROTECTED_POOL = 8  # pool candidates (in the channel's order) kept past the pre-ranker
FALLBACK_DEPTH = 10  # how much deeper the cheap lists are read for a short page
LATE_ROWS_PER_ITEM = 5  # rows per page item a cheap list gives once the budget is spent


@dataclass
class FeedItem:
    video_id: str
    score: float
    source: str
    reasons: list[str]


@dataclass
class Feed:
    request_id: str
    model_version: str
    items: list[FeedItem]
    cold_start: bool = False
    removed: dict[str, int] = field(default_factory=dict)
    ranker: str = "heuristic"
    ranker_note: str | None = None
    experiments: dict[str, str] = field(default_factory=dict)  # experiment id -> arm
    features: list[dict[str, Any]] = field(default_factory=list)  # per item, for the log
    # (empty when the page is not recorded)
    trace: FeedTrace | None = None  # where candidates went, when asked for


@dataclass
class FeedTrace:
    """Where the page's candidates went, stage by stage (for replay diagnostics).

    candidates: every row the channels returned, with `channels` (all that returned it)
    and `position`; filtered: the rows left after the filters; ranked: the n best rows by
    the serving ranker's score (before the policy layer), best first; heuristic: the
    heuristic's score of each filtered row (it scores every request, serving or not);
    served: the page's rows.
    """

    candidates: Candidates
    names: list[str]  # the pipeline's channel names (bit i of `channels` is names[i])
    filtered: np.ndarray
    ranked: np.ndarray
    heuristic: np.ndarray
    served: np.ndarray
    query: Query  # the hydrated request the page was computed for

    def channels_of(self, row: int) -> list[str]:
        """The names of the channels that returned `row` (empty when none did)."""
        c = self.candidates
        at = np.flatnonzero(c.rows == row)
        if len(at) == 0 or c.channels is None:
            return []
        bits = int(c.channels[at[0]])
        return [name for i, name in enumerate(self.names) if bits >> i & 1]

    def recall_view(self, rows: np.ndarray, names: list[str]) -> RecallView:
        """What recall said of `rows` (any rows: those no channel returned get none)."""
        c = self.candidates
        if c.channels is None or c.position is None or len(c) == 0:
            return RecallView.none(len(rows))
        order = np.argsort(c.rows, kind="stable")
        sorted_rows = c.rows[order]
        at = np.clip(np.searchsorted(sorted_rows, rows), 0, len(sorted_rows) - 1)
        hit = sorted_rows[at] == rows
        bits = np.where(hit, c.channels[order][at], 0)
        position = np.where(hit, c.position[order][at], 1.0)
        return RecallView.of(bits, position, names)


class FeedPipeline:
    """An ordered list of components per stage; each recall source fails open.

    The recall budget (`budget_ms`, 0 for none) bounds the recall stage. By default the
    channels run one after another in the request's thread, in priority order, and once
    the budget is spent the remaining channels are skipped for this page. With
    `parallel`, they run side by side on a thread pool and the stage waits at most the
    budget; a channel still running is left out (it finishes in the background and its
    result is dropped). In-process channels are CPU-bound numpy work, so under the GIL
    one after another is faster; the pool suits channels that wait on I/O.

    Overload degrades a page, never empties it: the cheap channels (precomputed lists,
    `RecallSource.cheap`) run in the request's thread whatever the budget (past it, each
    gives at most `LATE_ROWS_PER_ITEM` rows per page item, so a late page costs little
    more than its items), and when the filters leave fewer candidates than the page asks
    for, those lists (the ones with a quota) are read `FALLBACK_DEPTH` times deeper and
    the filters run again over everything.
    """

    def __init__(
        self,
        sources: list[RecallSource],
        filters: list[Filter],
        ranker: RankCascade,
        selector: PolicySelector,
        quotas: dict[str, int],
        metrics: Metrics,
        budget_ms: float = 0.0,
        parallel: bool = False,
    ) -> None:
        self.sources = sources
        self.filters = filters
        self.ranker = ranker
        self.scorer = ranker.heuristic
        self.selector = selector
        self.quotas = quotas
        self.metrics = metrics
        self.channel_names = [s.name for s in sources]
        ranker.channel_names = self.channel_names
        self._is_pool = np.array([n == POOL_SOURCE for n in self.channel_names], bool)
        self._cheap = [bool(getattr(s, "cheap", False)) for s in sources]
        self.budget_s = budget_ms / 1000.0
        self._pool = (
            ThreadPoolExecutor(4 * len(sources), thread_name_prefix="reelrank-recall")
            if parallel and budget_ms > 0 and sources
            else None
        )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _timed(self, source: RecallSource, query: Query, quota: int) -> Recalled:
        started = time.perf_counter()
        try:
            return source.recall(query, quota)
        finally:
            self.metrics.recall_seconds.labels(source.name).observe(time.perf_counter() - started)

    def _quotas(self, query: Query) -> dict[str, int]:
        if query.assignment.recall_quotas:  # an experiment arm's quotas
            return {**self.quotas, **query.assignment.recall_quotas}
        return self.quotas

    def recall(self, query: Query) -> Candidates:
        quotas = self._quotas(query)
        active = [
            (i, s, quotas.get(s.name, 0))
            for i, s in enumerate(self.sources)
            if quotas.get(s.name, 0) > 0
        ]
        pending: list[Future[Recalled] | None] = [None] * len(active)
        deadline = time.perf_counter() + self.budget_s
        if self._pool is not None:  # the cheap channels run in this thread, below
            pending = [
                None if self._cheap[i] else self._pool.submit(self._timed, s, query, q)
                for i, s, q in active
            ]
        return self._collect(query, active, pending, deadline)

    def _fallback(self, query: Query) -> Candidates:
        """The cheap channels read FALLBACK_DEPTH times deeper, whatever the budget (those
        switched on: a channel with no quota stays off)."""
        quotas = self._quotas(query)
        deep = max(query.request.n, 1) * FALLBACK_DEPTH
        active = [
            (i, s, FALLBACK_DEPTH * quotas[s.name] + deep)
            for i, s in enumerate(self.sources)
            if self._cheap[i] and quotas.get(s.name, 0) > 0
        ]
        return self._collect(query, active, [None] * len(active), math.inf)

    def _collect(
        self,
        query: Query,
        active: list[tuple[int, RecallSource, int]],
        pending: list[Future[Recalled] | None],
        deadline: float,
    ) -> Candidates:
        parts = []
        for (i, source, quota), future in zip(active, pending, strict=True):
            late = self.budget_s > 0 and time.perf_counter() > deadline
            if future is None and late and not self._cheap[i]:
                self.metrics.recall_timeouts.labels(source.name).inc()  # not started in time
                continue
            if late:  # past the budget a cheap list gives what a page needs, no more
                quota = min(quota, LATE_ROWS_PER_ITEM * max(query.request.n, 1))
            try:
                if future is None:
                    got = self._timed(source, query, quota)
                else:
                    wait = max(deadline - time.perf_counter(), 0.0)
                    got = future.result(timeout=wait)
                rows, reasons = got.rows[:quota], got.reasons[:quota]
                rows = np.asarray(rows, dtype=np.int64)
                if len(rows) and (rows.min() < 0 or rows.max() >= query.size):
                    raise IndexError(f"{source.name} returned rows outside the catalog")
            except FutureTimeout:
                self.metrics.recall_timeouts.labels(source.name).inc()
                continue
            except Exception:
                # Fail open: a broken channel thins the feed, it never fails the request.
                log.exception("recall source %s failed", source.name)
                self.metrics.recall_failures.labels(source.name).inc()
                continue
            self.metrics.recall_candidates.labels(source.name).inc(len(rows))
            parts.append(Candidates(rows, np.full(len(rows), i, np.int16), reasons))
        return Candidates.concat(parts)

    def run(
        self, query: Query, trace: bool = False, explain: bool = True, features: bool = True
    ) -> Feed:
        """The page for a hydrated query; `trace` keeps where candidates went, `explain`
        False gives each video only its channel's reason (replays skip the wording), and
        `features` False leaves out the per-item features logged with served impressions
        (a page that is not recorded needs none)."""
        raw = self.recall(query)
        recalled = raw.with_recall_view()
        cands, removed = self._filter(query, recalled)
        if len(cands) < query.request.n:  # a short page: read the cheap lists deeper
            extra = self._fallback(query)
            if len(extra):
                self.metrics.feed_fallbacks.inc()
                recalled = Candidates.concat([raw, extra]).with_recall_view()
                cands, removed = self._filter(query, recalled)
        for name, n in removed.items():
            if n:
                self.metrics.filtered.labels(name).inc(n)
        protect = None
        if self._is_pool.any():  # the pool channel's best few, whatever the pre-ranker thinks
            owed = np.flatnonzero(self._is_pool[cands.source])[:PROTECTED_POOL]
            protect = np.zeros(len(cands), dtype=bool)
            protect[owed] = True
        filtered_cands = cands
        ranked = self.ranker.rank(query, cands, protect)
        cands, scores = ranked.cands, ranked.scores
        selection = self.selector.select(query, cands, scores, query.request.n)
        picked = selection.picked
        rates = self._page_rates(query, cands.rows[picked]) if explain else None
        items = [
            self._item(query, cands, scores, int(i), None if rates is None else rates[k])
            for k, i in enumerate(picked)
        ]
        for item, explored in zip(items, selection.exploration, strict=True):
            if explored and item.source != "pool":  # the pool's own reason says why
                item.reasons.append("exploration slot: a new or unusual pick for you")
        for item in items:
            self.metrics.feed_items.labels(item.source).inc()
        # What the ranker saw, logged with each impression so training sees the same.
        records: list[dict[str, Any]] = []
        if features:
            if ranked.features is not None:
                feats, at = ranked.features, picked
            else:
                shown = cands.take(picked)
                feats = extract(  # every feature the learned ranker would have seen
                    query,
                    shown.rows,
                    self.scorer.smoothing,
                    self.ranker.recall_view(shown),
                    sequence_feature(query, shown.rows, self.ranker.sequence),
                )
                feats.heuristic = scores[picked]
                at = np.arange(len(picked))
            records = feats.records(query, at)
            for record in records:
                record["served_by"] = ranked.ranker
        feed_trace = None
        if trace:
            best = np.argsort(-scores, kind="stable")[: query.request.n]
            h = ranked.heuristic
            feed_trace = FeedTrace(
                recalled,
                self.channel_names,
                filtered_cands.rows,
                cands.rows[best],
                h if h is not None else np.zeros(len(filtered_cands)),
                cands.rows[picked],
                query,
            )
        return Feed(
            request_id=query.request.request_id,
            model_version=ranked.model_version,
            items=items,
            cold_start=query.is_cold,
            removed=removed,
            ranker=ranked.ranker,
            ranker_note=ranked.note,
            experiments=query.assignment.arms,
            features=records,
            trace=feed_trace,
        )

    def _filter(self, query: Query, cands: Candidates) -> tuple[Candidates, dict[str, int]]:
        """The candidates every filter keeps, and how many each removed."""
        removed: dict[str, int] = {}
        for f in self.filters:
            result = run_filter(f, query, cands)
            cands = result.kept
            removed[f.name] = result.removed
        return cands, removed

    def _page_rates(self, query: Query, rows: np.ndarray) -> list[tuple[float, float, float]]:
        """(views, finish lift, share lift) of each page video, read from the request's
        signals (the scorer computed them for every candidate), for the reasons."""
        signals, at = candidate_signals(query, rows, self.scorer.smoothing)
        views, lifts = signals.views(query), signals.lifts(query)
        if at is not None:
            views = views[at]
            lifts = {x: v[at] for x, v in lifts.items()}
        return list(
            zip(views.tolist(), lifts["finish"].tolist(), lifts["share"].tolist(), strict=True)
        )

    def _item(
        self,
        query: Query,
        cands: Candidates,
        scores: np.ndarray,
        i: int,
        rates: tuple[float, float, float] | None = None,
    ) -> FeedItem:
        """A page item; with `rates` (views, finish lift, share lift) the scorer's reasons
        too, else only the channel's."""
        row = int(cands.rows[i])
        video = query.table.video(row)
        reasons = [str(cands.reason[i])]
        if rates is not None:
            reasons.extend(self._score_reasons(query, row, *rates))
        return FeedItem(
            video_id=video.id,
            score=round(float(scores[i]), 6),
            source=self.channel_names[int(cands.source[i])],
            reasons=reasons,
        )

    def _score_reasons(
        self, query: Query, row: int, views: float, finish_lift: float, share_lift: float
    ) -> list[str]:
        """Why the scorer liked it, in words, for the few items on the page."""
        out = []
        table = query.table
        tags = table.tag_names(row)
        user = query.user
        said = False
        liked = query.cache.get("liked_tags")
        if liked is None:  # once per page: how many of the user's liked videos carry each tag
            liked = {}  # (a video holds a tag once, so counting tags counts videos)
            if user is not None and user.recent_likes:
                tag_ids = table.tag_ids[np.fromiter(user.recent_likes, np.int64)]
                ids, counts = np.unique(tag_ids[tag_ids >= 0], return_counts=True)
                liked = dict(zip(ids.tolist(), counts.tolist(), strict=True))
            query.cache["liked_tags"] = liked
        if liked and tags:
            n, tag = max(((liked.get(table.tags.get(t), 0), t) for t in tags), key=lambda c: c[0])
            if n >= 1:
                out.append(f"you liked {n} video{'s' if n > 1 else ''} with #{tag}")
                said = True
        if not said:
            strong = [t for t in tags if query.tag_affinity.get(t, 0.0) >= 2.0]
            if strong:
                out.append(f"you often watch #{strong[0]}")
        if views >= 20:
            if finish_lift >= 1.3:
                out.append("most viewers watch it to the end")
            if share_lift >= 1.5:
                out.append("often shared")
        return out
