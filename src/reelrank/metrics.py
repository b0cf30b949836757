"""Prometheus metrics, one registry per engine so several can live in one process."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import prometheus_client
from prometheus_client import CollectorRegistry

_M = TypeVar("_M")
log = logging.getLogger(__name__)

SLOW_JOB_S = 0.05  # a background job run at least this long is logged, with its time


class _Children:
    """A labelled metric whose children are looked up once per label values: the library's
    `labels()` checks its arguments and takes a lock on every call, and the request path
    calls it several times per request and the ingest path once per event."""

    def labels(self: _M, *labelvalues: Any, **labelkwargs: Any) -> _M:
        if labelkwargs:
            return super().labels(*labelvalues, **labelkwargs)  # type: ignore[misc]
        memo: dict[tuple[Any, ...], _M] | None = self.__dict__.get("_children")
        if memo is None:
            memo = self.__dict__["_children"] = {}
        child = memo.get(labelvalues)
        if child is None:
            child = memo[labelvalues] = super().labels(*labelvalues)  # type: ignore[misc]
        return child

    def remove(self, *labelvalues: Any) -> None:
        self.__dict__.pop("_children", None)  # a removed child must not be handed out
        super().remove(*labelvalues)  # type: ignore[misc]

    def clear(self) -> None:
        self.__dict__.pop("_children", None)
        super().clear()  # type: ignore[misc]


class Counter(_Children, prometheus_client.Counter):
    pass


class Gauge(_Children, prometheus_client.Gauge):
    pass


class Histogram(_Children, prometheus_client.Histogram):
    pass


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.feed_requests = Counter(
            "reelrank_feed_requests", "Feed requests served", ["cold"], registry=r
        )
        self.feed_latency = Histogram(
            "reelrank_feed_latency_seconds",
            "Feed pipeline time per request",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.review_decisions = Counter(
            "reelrank_review_decisions",
            "Review decisions, by who decided (machine, reports, person) and the outcome",
            ["actor", "status"],
            registry=r,
        )
        self.pool_transitions = Counter(
            "reelrank_pool_transitions",
            "Traffic-pool transitions, by the stage entered",
            ["stage"],
            registry=r,
        )
        self.feed_items = Counter(
            "reelrank_feed_items", "Items served, by source channel", ["source"], registry=r
        )
        self.recall_candidates = Counter(
            "reelrank_recall_candidates", "Candidates contributed", ["source"], registry=r
        )
        self.recall_failures = Counter(
            "reelrank_recall_failures", "Recall sources that failed open", ["source"], registry=r
        )
        self.in_flight = Gauge(
            "reelrank_requests_in_flight",
            "HTTP requests being worked on (all but /healthz and /metrics)",
            registry=r,
        )
        self.shed = Counter(
            "reelrank_requests_shed",
            "HTTP requests refused with 503 because `max_in_flight` were already in flight",
            registry=r,
        )
        self.feed_fallbacks = Counter(
            "reelrank_feed_fallbacks",
            "Pages the channels left short of the page size after the filters, topped up "
            "from the precomputed lists (trending, popular, fresh) read deeper",
            registry=r,
        )
        self.recall_timeouts = Counter(
            "reelrank_recall_timeouts",
            "Recall sources left out of a page for missing the recall time budget",
            ["source"],
            registry=r,
        )
        self.recall_seconds = Histogram(
            "reelrank_recall_seconds",
            "Time of one recall source for one request",
            ["source"],
            buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05),
            registry=r,
        )
        self.filtered = Counter(
            "reelrank_filtered", "Candidates removed, by filter", ["filter"], registry=r
        )
        self.events = Counter(
            "reelrank_events", "Events received, by outcome", ["outcome"], registry=r
        )
        self.events_by_type = Counter(
            "reelrank_events_accepted_by_type", "Accepted events by type", ["type"], registry=r
        )
        self.upserts = Counter("reelrank_upserts", "Records upserted", ["kind"], registry=r)
        self.impressions_logged = Counter(
            "reelrank_impressions_logged", "Server-side impressions written", registry=r
        )
        self.state_lag = Gauge(
            "reelrank_state_lag_events", "Logged events not yet folded into state", registry=r
        )
        self.videos = Gauge("reelrank_videos", "Videos in the catalog", registry=r)
        self.channel_engagements = Counter(
            "reelrank_channel_engagements",
            "Served slots that drew an engagement (finish, like, share, ...), by source",
            ["source"],
            registry=r,
        )
        self.ranker_requests = Counter(
            "reelrank_ranker_requests",
            "Feed requests by the ranker that scored",
            ["ranker"],
            registry=r,
        )
        self.ranker_fallbacks = Counter(
            "reelrank_ranker_fallbacks",
            "Learned-ranker failures served by the heuristic",
            ["reason"],
            registry=r,
        )
        self.model_auc = Gauge(
            "reelrank_model_auc", "Progressive AUC per head (trainer)", ["head"], registry=r
        )
        self.model_logloss = Gauge(
            "reelrank_model_logloss",
            "Progressive log loss per head (trainer)",
            ["head"],
            registry=r,
        )
        self.model_calibration = Gauge(
            "reelrank_model_calibration",
            "Predicted / observed rate per head (trainer)",
            ["head"],
            registry=r,
        )
        self.train_examples = Gauge(
            "reelrank_train_examples", "Examples the trainer has learned from", registry=r
        )
        self.train_rate = Gauge(
            "reelrank_train_examples_per_second", "Trainer throughput", registry=r
        )
        self.train_lag = Gauge(
            "reelrank_train_lag_seconds",
            "Now minus the event time of the newest trained example",
            registry=r,
        )
        self.model_sync_age = Gauge(
            "reelrank_model_sync_age_seconds",
            "Seconds since serving last applied parameters",
            registry=r,
        )
        self.users = Gauge("reelrank_users", "Users with state", registry=r)
        self.job_seconds = Histogram(
            "reelrank_background_job_seconds",
            "Time of one run of a periodic background job (snapshot, log follower, refits...)",
            ["job"],
            buckets=(0.001, 0.005, 0.02, 0.05, 0.2, 1.0, 5.0, 30.0),
            registry=r,
        )

    def timed_job(self, name: str, job: Callable[[], Any]) -> Callable[[], Any]:
        """`job`, each run timed into `reelrank_background_job_seconds{job=name}` and
        logged when it took SLOW_JOB_S or more (a run that long may have held up
        requests: the log says when, for matching against slow responses)."""
        child = self.job_seconds.labels(name)

        def run() -> Any:
            started = time.perf_counter()
            try:
                return job()
            finally:
                took = time.perf_counter() - started
                child.observe(took)
                if took >= SLOW_JOB_S:
                    log.info("background job %s took %.3f s", name, took)

        run.__name__ = getattr(job, "__name__", name)
        return run


def samples_by_name(registry: CollectorRegistry) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of a registry, grouped by sample name (e.g. `..._total`, `..._bucket`)."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in registry.collect():
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return out


def histogram_quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The q-quantile of cumulative (upper bound, count) buckets, interpolated linearly
    within a bucket as Prometheus does; the largest finite bound past the last one."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return lower
