"""The composition root: builds the store, the online state, the indexes, the pipeline
and the services for a process's roles (`roles` setting), and runs each role's
background jobs. `Engine` is also the library facade: the CLI, the HTTP layer, the
simulator and the replay call its methods, which hand each call to its service."""

from __future__ import annotations

import gc
import itertools
import logging
import math
import threading
import time
from typing import Any

from ..clock import Clock, EventClock
from ..config import Settings
from ..content.embed import make_embedder
from ..content.indexer import ContentIndexer
from ..content.lifecycle import Lifecycle
from ..content.replica import CatalogReplica
from ..ingest.events import IngestResult
from ..metrics import Metrics
from ..pipeline.feed import Feed, FeedPipeline
from ..priority import lower_thread_priority
from ..rank.cascade import RankCascade
from ..rank.heuristic import HeuristicScorer
from ..rank.learned import ModelServer
from ..recall import RetrievalIndex, default_sources
from ..rerank.filters import default_filters
from ..rerank.policy import PolicySelector
from ..state.online import OnlineState
from ..storage import Store, open_store
from ..storage.params import ParamChannel, open_params
from ..types import FeedRequest, Query
from .catalog import CatalogService
from .events import EventService
from .experiments import ExperimentService
from .feed import FeedService
from .users import UserService
from .views import Views

log = logging.getLogger(__name__)

CLOCKED_JOBS = ("catalog-follower", "log-follower", "lifecycle")  # tick()'s, by event time
REBUILD_JOBS = ("retrieval", "related")  # whole rebuilds: their threads yield to requests


class Engine:
    """reelrank in one process: call `open()` before use and `close()` after.

    With an `EventClock` (replays, simulations) it starts no background job or trainer:
    the driver advances the clock and calls `tick()` after each step; pools, cached lists
    and request ids follow its steps, so a log gives the same pages on any machine."""

    def __init__(
        self, settings: Settings, store: Store | None = None, clock: EventClock | None = None
    ) -> None:
        self.settings = settings
        self.event_clock = clock
        self.clock: Clock = clock if clock is not None else time.time
        self.roles = settings.role_set()
        self._stop = threading.Event()  # set by close(): jobs end, rebuilds are given up
        self.store = store or open_store(settings.store_url(), settings.sqlite_synchronous)
        self.metrics = Metrics()
        embedder = make_embedder(settings.content_embedder, settings.content_dim)
        self.state = OnlineState(settings, self.store, embedder.dim)
        self.content = ContentIndexer(
            settings, self.state.table, self.state.content, embedder, self.store.vectors
        )
        self.params: ParamChannel = open_params(settings.params_channel_url())
        self.model = ModelServer(
            self.params, self.state.table, settings.model_min_examples, settings.learned_ranker
        )
        self.retrieval = self._retrieval_index("two_tower")
        self.sequence = self._retrieval_index("sequence")
        catalog_lock = threading.RLock()  # serialises catalog writers
        self.lifecycle = Lifecycle(
            settings,
            self.state,
            [self.retrieval, self.sequence],
            self.content,
            self.metrics,
            catalog_lock,
            self.clock,
        )
        # What other processes write to the catalog, applied here.
        self.replica = CatalogReplica(
            self.store.catalog, self.state, self.lifecycle, self.state.catalog_changes
        )
        self.pipeline = self._pipeline()
        self.experiments = settings.experiment_book(time.time())
        numbers = itertools.count(1)  # event-clocked request ids (they seed exploration)
        self.feeds = FeedService(
            settings,
            self.state,
            self.pipeline,
            self.experiments,
            self.store.events,
            self.metrics,
            self.clock,
            None if clock is None else (lambda: f"clocked-{next(numbers)}"),
        )
        self.catalog = CatalogService(
            settings, self.store.catalog, self.state, self.lifecycle, self.metrics, catalog_lock
        )
        self.users = UserService(self.store.catalog, self.state, catalog_lock)
        self.events = EventService(
            self.state, self.lifecycle, self.feeds.slots, self.metrics, settings.max_future_skew_s
        )
        self.experiment_admin = ExperimentService(
            self.experiments, self.store, self.state.catalog_changes, self.feeds.flush_impressions
        )
        self.views = Views(
            settings,
            self.store,
            self.state,
            self.model,
            {"retrieval": self.retrieval, "sequence": self.sequence},
            self.content,
            self.pipeline,
            self.metrics,
        )
        self.trainer: Any = None  # OnlineTrainer (thread mode) or a Process (process mode)
        self._threads: list[threading.Thread] = []
        self._ticked: dict[str, float] = {}  # job -> event time it last ran (tick())

    def _retrieval_index(self, kind: str) -> RetrievalIndex:
        s = self.settings
        knobs = (s.two_tower_refresh_s, s.ann_min_vectors, s.ann_nprobe)
        return RetrievalIndex(
            self.model, self.state.table, *knobs, kind=kind, stop=self._stop, recall=s.ann_recall
        )

    def _pipeline(self) -> FeedPipeline:
        s, state = self.settings, self.state
        sources = default_sources(
            s.trending_refresh_s,
            state.pools,
            self.retrieval,
            self.sequence,
            state.content,
            background=self.event_clock is None,
        )
        return FeedPipeline(
            sources=sources,
            filters=default_filters(),
            ranker=RankCascade(
                HeuristicScorer(s.score_weights, s.smoothing_strength),
                self.model,
                s.fusion_weights,
                s.prerank_keep,
                self.metrics,
                s.champion_holdout,
                self.sequence,
            ),
            selector=PolicySelector(
                [source.name for source in sources],
                diversity_lambda=s.diversity_lambda,
                diversity_window=s.diversity_window,
                fatigue_creator_per_day=s.fatigue_creator_per_day,
                fatigue_tag_per_day=s.fatigue_tag_per_day,
                exploration_fraction=s.exploration_fraction,
                exploration_positions=s.exploration_positions,
                content=state.content,
                strict_caps=s.fatigue_strict,
            ),
            quotas=s.recall_quotas,
            metrics=self.metrics,
            budget_ms=s.recall_budget_ms,
            parallel=s.recall_parallel,
        )

    # -- the process's roles -------------------------------------------------------------
    def open(self) -> Engine:
        """Load state from the store and start the background jobs of this process's
        roles (the trainer among them, where `trainer` says)."""
        # Loading makes millions of long-lived objects without cycles: the collector stays
        # off until they are frozen (never scanned), not rescanning them as they are made.
        collecting = gc.isenabled()
        gc.disable()
        try:
            self.state.load()
            self.content.fill()
            self.lifecycle.load()
            self.experiment_admin.load()
        finally:
            gc.freeze()
            if collecting:
                gc.enable()
        self.model.bootstrap()
        if self.event_clock is not None:
            return self  # the driver calls tick()
        if "trainer" in self.roles:
            self._start_trainer()
        for role, name, interval, job in self._jobs():
            if role not in self.roles:
                continue
            nice = self.settings.rebuild_nice if name in REBUILD_JOBS else 0
            args = (interval, self.metrics.timed_job(name, job), nice)
            t = threading.Thread(
                target=self._every, args=args, name=f"reelrank-{name}", daemon=True
            )
            t.start()
            self._threads.append(t)
        return self

    def _jobs(self) -> list[tuple[str, str, float, Any]]:
        """(role, name, interval in seconds, job) of every background job."""
        s = self.settings
        return [
            ("api", "impressions", s.impression_flush_s, self.flush_impressions),
            ("api", "model-sync", s.model_poll_s, self.sync_model),
            ("api", "retrieval", 1.0, self.refresh_indexes),
            ("api", "catalog-follower", 0.5, self.follow_catalog),
            ("worker", "log-follower", 0.5, self.state.catch_up),
            ("worker", "snapshot", s.snapshot_interval_s, self.snapshot),
            ("worker", "related", 1.0, self.refit_related),
            ("lifecycle", "lifecycle", 1.0, self.lifecycle_tick),
        ]

    def tick(self) -> None:
        """An event-clocked engine's jobs, run by its driver after each step: the pages
        served since the last tick are logged (the driver's trainer reads them next),
        the other CLOCKED_JOBS run when their interval has passed on the event clock, and
        the related refit on the event count. The clocked trainer syncs models."""
        assert self.event_clock is not None, "tick() drives an event-clocked engine"
        self.flush_impressions()
        now = self.event_clock()
        for role, name, interval, job in self._jobs():
            due = now - self._ticked.get(name, -math.inf) >= interval
            if due and name in CLOCKED_JOBS and role in self.roles:
                self._ticked[name] = now
                job()
        self.refit_related(throttle=False)

    def _every(self, interval: float, job: Any, nice: int = 0) -> None:
        lower_thread_priority(nice)
        while not self._stop.wait(interval):
            try:
                job()
            except Exception:
                log.exception("background job %s failed", getattr(job, "__name__", job))

    def _start_trainer(self) -> None:
        mode = self.settings.trainer_mode()
        if mode == "thread":
            from ..train.process import checkpoint_path
            from ..train.trainer import OnlineTrainer

            sqlite = self.store.url.startswith("sqlite:")
            self.trainer = OnlineTrainer(
                self.settings,
                self.store,
                self.params,
                checkpoint_path(self.settings) if sqlite else None,
            )
            t = threading.Thread(
                target=self.trainer.run, args=(self._stop,), name="reelrank-trainer", daemon=True
            )
            t.start()
            self._threads.append(t)
        elif mode == "process":
            import multiprocessing

            from ..train.process import run_trainer_process

            self.trainer = multiprocessing.get_context("spawn").Process(
                target=run_trainer_process, args=(self.settings,), name="reelrank-trainer"
            )
            self.trainer.start()
            log.info("trainer process started (pid %s)", self.trainer.pid)

    def close(self) -> None:
        """Stop the jobs and the trainer (a process is told first, to checkpoint meanwhile),
        flush impressions, fold the log's tail, write a final snapshot, close the store."""
        self._stop.set()
        process = self.trainer if hasattr(self.trainer, "terminate") else None
        if process is not None:
            process.terminate()  # SIGTERM: the trainer checkpoints, then exits
        for t in self._threads:
            t.join(timeout=30)
        self.pipeline.close()
        self.flush_impressions()
        self.state.catch_up()
        self.snapshot()
        if process is not None:
            process.join(timeout=60)
            process.kill()  # when still alive (a no-op for a process that exited)
        self.params.close()
        self.store.close()

    # -- background jobs -----------------------------------------------------------------
    def refresh_indexes(self, force: bool = False) -> bool:
        """Rebuild the two-tower and sequence indexes when their models changed (each on
        its own interval); True when either rebuilt."""
        return self.retrieval.refresh(force) | self.sequence.refresh(force)  # (both run)

    def refit_related(self, throttle: bool = True) -> bool:
        """Refit the related-videos model when its window has grown enough (and, with
        `throttle`, ten times the last fit's duration has passed: the background job's
        call). An event-clocked engine's tick passes `throttle=False`, so a replay's or
        simulation's fits follow the event count alone, not the machine's speed."""
        if not self.settings.related_max_videos:
            return False
        return self.state.related.refit(throttle=throttle)

    def lifecycle_tick(self) -> None:
        """Reports that call for review (also from events other processes logged), then
        traffic pools: judge, cool, revive."""
        self.lifecycle.process_reports()
        self.lifecycle.evaluate_pools()

    def follow_catalog(self) -> int:
        """Apply the catalog's changes since the last call: follows, user controls and
        experiments, whichever process wrote them; and videos, strikes and boosts that
        another process wrote."""
        return self.state.catalog_changes.catch_up()

    def sync_model(self) -> None:
        """Apply new parameters and mirror the trainer's figures into the metrics."""
        self.model.poll()
        self.views.mirror_trainer()

    def snapshot(self) -> None:
        self.state.impression_offset = self.store.events.last_impression_offset()
        self.state.snapshot()

    def flush_impressions(self) -> int:
        return self.feeds.flush_impressions()

    # -- the facade: each call is its service's ------------------------------------------
    def upsert_videos(self, raws: Any) -> list[dict[str, Any]]:
        return self.catalog.upsert_videos(raws)

    def upsert_users(self, raws: Any) -> list[dict[str, Any]]:
        return self.catalog.upsert_users(raws)

    def add_follows(self, raws: Any) -> list[dict[str, Any]]:
        return self.catalog.add_follows(raws)

    def video_detail(self, video_id: str) -> dict[str, Any]:
        return self.catalog.video_detail(video_id)

    def set_user_controls(self, user_id: str, raw: Any) -> dict[str, Any]:
        return self.users.set_controls(user_id, raw)

    def reset_user(self, user_id: str) -> dict[str, Any]:
        return self.users.reset(user_id)

    def user_profile(self, user_id: str) -> dict[str, Any]:
        return self.users.profile(user_id)

    def ingest(self, raws: Any) -> IngestResult:
        return self.events.ingest(raws)

    def feed(
        self,
        user_id: str,
        n: int | None = None,
        region: str | None = None,
        device: str | None = None,
        language: str | None = None,
        now: float | None = None,
        record: bool = True,
        trace: bool = False,
        explain: bool = True,
    ) -> Feed:
        """See `FeedService.feed`."""
        return self.feeds.feed(
            user_id, n, region, device, language, now, record=record, trace=trace, explain=explain
        )

    def hydrate(self, request: FeedRequest) -> Query:
        return self.feeds.hydrate(request)

    def create_experiment(self, raw: Any) -> dict[str, Any]:
        return self.experiment_admin.create(raw)

    def stop_experiment(self, experiment_id: str) -> dict[str, Any]:
        return self.experiment_admin.stop(experiment_id)

    def list_experiments(self) -> list[dict[str, Any]]:
        return self.experiment_admin.describe_all()

    def experiment_report(self, experiment_id: str, level: float = 0.95) -> dict[str, Any]:
        return self.experiment_admin.report(experiment_id, level)

    def health(self) -> dict[str, Any]:
        return self.views.health()

    def overview(self) -> dict[str, Any]:
        return self.views.overview()

    def model_status(self) -> dict[str, Any]:
        return self.views.model_status()

    def channel_figures(self) -> dict[str, dict[str, Any]]:
        return self.views.channel_figures()
