"""The library facade: one Engine owns the store, the online state and the pipeline.

The CLI and the HTTP layer only parse input, call these methods and map errors.
"""

from __future__ import annotations

import gc
import logging
import queue
import threading
import time
import uuid
from collections import OrderedDict
from typing import Any

from .config import Settings
from .content.duplicates import UploadBatch
from .content.embed import make_embedder
from .content.indexer import ContentIndexer
from .content.lifecycle import Lifecycle
from .content.review import Review
from .errors import InvalidInput, NotFound, ReelrankError
from .experiments.registry import CONTROL_KIND, ExperimentBook, parse_spec
from .experiments.report import Tracker
from .ingest.events import EventIngestor, IngestResult
from .metrics import Metrics, histogram_quantile, samples_by_name
from .pipeline.feed import Feed, FeedPipeline
from .rank.cascade import RankCascade
from .rank.heuristic import HeuristicScorer
from .rank.learned import ModelServer
from .recall import RetrievalIndex, default_sources
from .rerank.filters import default_filters
from .rerank.policy import PolicySelector
from .schema import EventType, Follow, Impression, User, UserControls, VideoIn, parse
from .state.online import ENGAGEMENTS, OnlineState
from .storage import CONTROLS, CatalogChange, Store, open_store
from .storage.params import ParamChannel, open_params
from .types import FeedRequest, Query, UserMutes

log = logging.getLogger(__name__)

SLOT_MEMORY = 200_000  # served slots remembered for the channels' engagement rates


def new_request_id() -> str:
    """A fresh feed request id (it seeds exploration and tie-breaking for the page)."""
    return uuid.uuid4().hex


class Engine:
    """reelrank in one process: call `open()` before use and `close()` after."""

    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.store = store or open_store(settings.store_url(), settings.sqlite_synchronous)
        self.metrics = Metrics()
        embedder = make_embedder(settings.content_embedder, settings.content_dim)
        self.state = OnlineState(settings, self.store, embedder.dim)
        self.content = ContentIndexer(settings, self.state.table, self.state.content, embedder)
        self.ingestor = EventIngestor(self.state, self.metrics, settings.max_future_skew_s)
        self.params: ParamChannel = open_params(settings.params_channel_url())
        self.model = ModelServer(
            self.params, self.state.table, settings.model_min_examples, settings.learned_ranker
        )
        self.retrieval = RetrievalIndex(
            self.model,
            self.state.table,
            settings.two_tower_refresh_s,
            settings.ann_min_vectors,
            settings.ann_nprobe,
        )
        self.sequence = RetrievalIndex(
            self.model,
            self.state.table,
            settings.two_tower_refresh_s,
            settings.ann_min_vectors,
            settings.ann_nprobe,
            kind="sequence",
        )
        self._catalog_lock = threading.RLock()  # serialises catalog writers
        self.lifecycle = Lifecycle(
            settings,
            self.state,
            [self.retrieval, self.sequence],
            self.content,
            self.metrics,
            self._catalog_lock,
        )
        sources = default_sources(
            settings.trending_refresh_s,
            self.state.pools,
            self.retrieval,
            self.sequence,
            self.state.content,
        )
        self.pipeline = FeedPipeline(
            sources=sources,
            filters=default_filters(),
            ranker=RankCascade(
                HeuristicScorer(settings.score_weights, settings.smoothing_strength),
                self.model,
                settings.fusion_weights,
                settings.prerank_keep,
                self.metrics,
                settings.champion_holdout,
                self.sequence,
            ),
            selector=PolicySelector(
                [s.name for s in sources],
                diversity_lambda=settings.diversity_lambda,
                diversity_window=settings.diversity_window,
                fatigue_creator_per_day=settings.fatigue_creator_per_day,
                fatigue_tag_per_day=settings.fatigue_tag_per_day,
                exploration_fraction=settings.exploration_fraction,
                exploration_positions=settings.exploration_positions,
                content=self.state.content,
                strict_caps=settings.fatigue_strict,
            ),
            quotas=settings.recall_quotas,
            metrics=self.metrics,
            budget_ms=settings.recall_budget_ms,
            parallel=settings.recall_parallel,
        )
        self.experiments: ExperimentBook = settings.experiment_book(time.time())
        self.experiment_tracker = Tracker(self.store)
        self.state.catalog_changes.on(CONTROLS, self._on_experiment, kind=CONTROL_KIND)
        self.trainer: Any = None  # OnlineTrainer (thread mode) or a Process (process mode)
        self._served: queue.SimpleQueue[Impression] = queue.SimpleQueue()
        # (request id, video id) -> [source, engaged], for each channel's engagement rate
        self._slots: OrderedDict[tuple[str, str], list[Any]] = OrderedDict()
        self._slots_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._related_clocked = False  # a replay or simulation drives the related refits
        self.started_at = time.time()

    # -- lifecycle -----------------------------------------------------------------------
    def open(self) -> Engine:
        """Load state from the store and start the background workers."""
        self.state.load()
        self.content.fill()
        self.lifecycle.load()
        self._load_experiments()
        # Long-lived catalog and profile objects need no scanning by the cyclic collector;
        # freezing them keeps full collections from stalling requests.
        gc.collect()
        gc.freeze()
        s = self.settings
        self.model.bootstrap()
        self._start_trainer()
        for name, interval, job in (
            ("impressions", s.impression_flush_s, self.flush_impressions),
            ("snapshot", s.snapshot_interval_s, self.snapshot),
            ("log-follower", 0.5, self.state.catch_up),
            ("catalog-follower", 0.5, self.follow_catalog),
            ("model-sync", s.model_poll_s, self.sync_model),
            ("retrieval", 1.0, self.refresh_indexes),
            ("related", 1.0, self.refit_related),
            ("lifecycle", 1.0, self.lifecycle_tick),
        ):
            t = threading.Thread(
                target=self._every, args=(interval, job), name=f"reelrank-{name}", daemon=True
            )
            t.start()
            self._threads.append(t)
        return self

    def _every(self, interval: float, job: Any) -> None:
        while not self._stop.wait(interval):
            try:
                job()
            except Exception:
                log.exception("background job %s failed", getattr(job, "__name__", job))

    def refresh_indexes(self, force: bool = False) -> bool:
        """Rebuild the two-tower and sequence indexes when their models changed (each on
        its own interval); True when either rebuilt."""
        a = self.retrieval.refresh(force)
        b = self.sequence.refresh(force)
        return a or b

    def refit_related(self, throttle: bool = True) -> bool:
        """Refit the related-videos model when its window has grown enough (and, with
        `throttle`, ten times the last fit's duration has passed). A replay or simulation
        passes `throttle=False` after each step: from its first such call it alone refits
        (the background job stands down), on the event count alone, so its results do not
        depend on the machine's speed."""
        if not self.settings.related_max_videos:
            return False
        if not throttle:
            self._related_clocked = True
        elif self._related_clocked:
            return False
        return self.state.related.refit(throttle=throttle)

    def lifecycle_tick(self) -> None:
        """Reports that call for review (also from events other processes logged), then
        traffic pools: judge, cool, revive."""
        self.lifecycle.process_reports()
        self.lifecycle.evaluate_pools()

    # -- experiments ---------------------------------------------------------------------
    def _load_experiments(self) -> None:
        """Apply stored experiments and stops; give settings-defined experiments their
        first start time, kept across restarts."""
        stored = dict(self.store.catalog.iter_controls(CONTROL_KIND))
        for body in stored.values():
            self.experiments.restore(body)
        for exp in list(self.experiments.experiments.values()):
            if exp.spec.id not in stored:
                self.store.catalog.put_control(
                    CONTROL_KIND, exp.spec.id, self.experiments.control_body(exp)
                )
            else:
                exp.started_at = float(stored[exp.spec.id].get("started_at", exp.started_at))

    def follow_catalog(self) -> int:
        """Apply the catalog's changes since the last call, whichever process wrote them:
        follows, user controls, experiments created or stopped."""
        return self.state.catalog_changes.catch_up()

    def _on_experiment(self, change: CatalogChange) -> None:
        body = self.store.catalog.get_control(CONTROL_KIND, change.key)
        if body is None:
            return
        try:
            self.experiments.restore(body)
        except ReelrankError as exc:  # e.g. overlaps one of this process's settings
            log.warning("stored experiment %s not applied: %s", body.get("id"), exc)

    def create_experiment(self, raw: Any) -> dict[str, Any]:
        spec = parse_spec(raw, "body")
        exp = self.experiments.create(spec, time.time())
        self.store.catalog.put_control(CONTROL_KIND, spec.id, self.experiments.control_body(exp))
        return exp.describe()

    def stop_experiment(self, experiment_id: str) -> dict[str, Any]:
        exp = self.experiments.stop(experiment_id, time.time())
        body = self.experiments.control_body(exp)
        self.store.catalog.put_control(CONTROL_KIND, exp.spec.id, body)
        return exp.describe()

    def list_experiments(self) -> list[dict[str, Any]]:
        return [e.describe() for e in self.experiments.experiments.values()]

    def experiment_report(self, experiment_id: str, level: float = 0.95) -> dict[str, Any]:
        """Per-arm results from the impression and event logs (served impressions are
        flushed first, so the report includes this process's latest pages)."""
        exp = self.experiments.get(experiment_id)
        self.flush_impressions()
        return self.experiment_tracker.report(exp, level)

    def _start_trainer(self) -> None:
        mode = self.settings.trainer_mode()
        if mode == "thread":
            from .train.trainer import OnlineTrainer, checkpoint_path

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

            from .train.trainer import run_trainer_process

            self.trainer = multiprocessing.get_context("spawn").Process(
                target=run_trainer_process, args=(self.settings,), name="reelrank-trainer"
            )
            self.trainer.start()
            log.info("trainer process started (pid %s)", self.trainer.pid)

    def sync_model(self) -> None:
        """Apply new parameters and mirror the trainer's figures into the metrics."""
        self.model.poll()
        status = self.model.trainer_status
        m = self.metrics
        for head, figures in status.get("heads", {}).items():
            if figures.get("auc") is not None:
                m.model_auc.labels(head).set(figures["auc"])
            if "logloss" in figures:
                m.model_logloss.labels(head).set(figures["logloss"])
            if figures.get("observed_rate"):
                m.model_calibration.labels(head).set(
                    figures["predicted_rate"] / figures["observed_rate"]
                )
        if status:
            m.train_examples.set(status.get("examples_trained", 0))
            m.train_rate.set(status.get("examples_per_s", 0.0))
            if status.get("lag_s") is not None:
                m.train_lag.set(status["lag_s"])
        if self.model.last_applied:
            m.model_sync_age.set(time.time() - self.model.last_applied)

    def model_status(self) -> dict[str, Any]:
        """The serving model and the trainer's latest published figures."""
        return {
            "serving": {
                **self.model.status(),
                "trainer_mode": self.settings.trainer_mode(),
                "fusion_weights": self.settings.fusion_weights,
                "retrieval": self.retrieval.status(),
                "sequence": self.sequence.status(),
                "related": self.state.related.status(),
                "content": {
                    "embedder": self.content.embedder.name,
                    "dim": self.content.embedder.dim,
                    "videos": len(self.state.content),
                    "filled": self.content.filled.is_set(),
                    "waiting": self.content.waiting,
                    "approximate": self.state.content.approximate,
                },
            },
            "trainer": self.model.trainer_status or None,
        }

    def close(self) -> None:
        """Stop workers, flush impressions, write a final snapshot, close the store."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        if self.trainer is not None and hasattr(self.trainer, "terminate"):
            self.trainer.terminate()  # SIGTERM: the trainer checkpoints, then exits
            self.trainer.join(timeout=60)
            if self.trainer.is_alive():
                self.trainer.kill()
        self.pipeline.close()
        self.flush_impressions()
        self.state.catch_up()
        self.snapshot()
        self.params.close()
        self.store.close()

    def snapshot(self) -> None:
        self.state.impression_offset = self.store.events.last_impression_offset()
        self.state.snapshot()

    def flush_impressions(self) -> int:
        batch: list[Impression] = []
        while True:
            try:
                batch.append(self._served.get_nowait())
            except queue.Empty:
                break
        if batch:
            self.store.events.append_impressions(batch)
            self.metrics.impressions_logged.inc(len(batch))
        return len(batch)

    # -- catalog -------------------------------------------------------------------------
    def _check_batch(self, items: Any, field: str) -> list[Any]:
        if not isinstance(items, list):
            raise InvalidInput(field, "expected a list")
        return items

    def upsert_videos(self, raws: Any) -> list[dict[str, Any]]:
        """Review and upsert videos; one result per item, errors included."""
        raws = self._check_batch(raws, "videos")
        results: list[dict[str, Any]] = [{} for _ in raws]
        valid: list[tuple[int, VideoIn]] = []
        for i, raw in enumerate(raws):
            try:
                video_in: VideoIn = parse(VideoIn, raw, f"videos[{i}]")
                if video_in.created_at > time.time() + self.settings.max_future_skew_s:
                    raise InvalidInput(f"videos[{i}].created_at", "lies too far in the future")
            except InvalidInput as exc:
                results[i] = {"index": i, "error": str(exc)}
                continue
            valid.append((i, video_in))
        last: dict[str, int] = {v.id: j for j, (_, v) in enumerate(valid)}
        with self._catalog_lock:
            # A video repeated in one batch: its last record is the one reviewed and kept.
            batch = UploadBatch()
            reviews: list[Review] = [
                self.lifecycle.review(v, batch) for j, (_, v) in enumerate(valid) if last[v.id] == j
            ]
            rows = self.store.catalog.upsert_videos([r.video for r in reviews])
            if rows:
                with self.state.lock:  # counters grow in place of arrays events write to
                    self.state.counters.ensure(max(r for r, _ in rows) + 1)
                    self.state.popularity.ensure(max(r for r, _ in rows) + 1)
                    self.state.pools.ensure(max(r for r, _ in rows) + 1)
            placed = []
            for review, (row, _) in zip(reviews, rows, strict=True):
                self.state.table.upsert(row, review.video)
                placed.append((row, review.video))
            self.lifecycle.placed(placed, reviews, [created for _, created in rows])
            outcome = {
                r.video.id: (row, created) for r, (row, created) in zip(reviews, rows, strict=True)
            }
            for i, video_in in valid:
                row, created = outcome[video_in.id]
                video = self.state.table.video(row)  # as placed (near-duplicates marked)
                results[i] = {
                    "index": i,
                    "id": video.id,
                    "result": "created" if created else "updated",
                    "status": video.status.value,
                }
                if video.status_reason:
                    results[i]["status_reason"] = video.status_reason
                if video.duplicate_of:
                    results[i]["duplicate_of"] = video.duplicate_of
        self.metrics.upserts.labels("video").inc(len(valid))
        self.metrics.videos.set(self.state.table.size)
        return results

    def upsert_users(self, raws: Any) -> list[dict[str, Any]]:
        raws = self._check_batch(raws, "users")
        results: list[dict[str, Any]] = [{} for _ in raws]
        valid: list[tuple[int, User]] = []
        for i, raw in enumerate(raws):
            try:
                valid.append((i, parse(User, raw, f"users[{i}]")))
            except InvalidInput as exc:
                results[i] = {"index": i, "error": str(exc)}
        with self._catalog_lock:
            created = self.store.catalog.upsert_users([u for _, u in valid])
            for (i, user), new in zip(valid, created, strict=True):
                self.state.profiles[user.id] = user
                results[i] = {"index": i, "id": user.id, "result": "created" if new else "updated"}
        self.metrics.upserts.labels("user").inc(len(valid))
        return results

    def add_follows(self, raws: Any) -> list[dict[str, Any]]:
        raws = self._check_batch(raws, "follows")
        results: list[dict[str, Any]] = [{} for _ in raws]
        valid: list[tuple[int, Follow]] = []
        for i, raw in enumerate(raws):
            try:
                valid.append((i, parse(Follow, raw, f"follows[{i}]")))
            except InvalidInput as exc:
                results[i] = {"index": i, "error": str(exc)}
        with self._catalog_lock:
            added = self.store.catalog.add_follows([f for _, f in valid])
            for (i, f), new in zip(valid, added, strict=True):
                with self.state.lock:
                    self.state.follow(f.user_id, f.creator_id, True)
                results[i] = {
                    "index": i,
                    "user_id": f.user_id,
                    "creator_id": f.creator_id,
                    "result": "created" if new else "unchanged",
                }
        self.metrics.upserts.labels("follow").inc(len(valid))
        return results

    # -- user controls -------------------------------------------------------------------
    def _user_controls(self, user_id: str) -> dict[str, Any]:
        mutes = self.state.mutes.get(user_id)
        at, generation = self.state.resets.get(user_id, (0.0, 0))
        return {
            "muted_keywords": mutes.keywords if mutes else [],
            "muted_hashtags": mutes.hashtags if mutes else [],
            "reset_at": at,
            "generation": generation,
        }

    def set_user_controls(self, user_id: str, raw: Any) -> dict[str, Any]:
        """Replace the user's muted keywords and hashtags."""
        controls: UserControls = parse(UserControls, raw, "body")
        with self._catalog_lock:
            mutes = UserMutes.of(controls.muted_keywords, controls.muted_hashtags)
            body = self._user_controls(user_id)
            body.update(muted_keywords=mutes.keywords, muted_hashtags=mutes.hashtags)
            self.store.catalog.put_control("user", user_id, body)  # durable, then applied
            with self.state.lock:
                self.state.set_controls(user_id, body)
        return body

    def reset_user(self, user_id: str) -> dict[str, Any]:
        """ "Reset my feed": forget the learned profile (affinities, session, recent likes,
        the model's embedding of the user); keep follows, hides and mutes."""
        if not self.state.knows_user(user_id):
            raise NotFound(f"unknown user {user_id!r}")
        with self._catalog_lock:
            at = time.time()
            body = self._user_controls(user_id)
            body["reset_at"], body["generation"] = at, body["generation"] + 1
            self.store.catalog.put_control("user", user_id, body)
            with self.state.lock:
                self.state.set_controls(user_id, body)
                self.state.reset_user(user_id)
        return body

    # -- events --------------------------------------------------------------------------
    def ingest(self, raws: Any) -> IngestResult:
        """Validate, durably log and apply a batch of events."""
        raws = self._check_batch(raws, "events")
        result = self.ingestor.ingest(raws)
        if any(e.type is EventType.REPORT for e in result.logged):
            self.lifecycle.process_reports()
        if any(e.type in (EventType.FOLLOW, EventType.UNFOLLOW) for e in result.logged):
            self.state.catalog_changes.catch_up()  # the edges the append wrote
        self._count_engaged_slots(result.logged)
        self.metrics.state_lag.set(self.store.events.last_offset() - self.state.offset)
        return result

    def _count_engaged_slots(self, events: list[Any]) -> None:
        with self._slots_lock:
            for e in events:
                if e.request_id is None or e.type not in ENGAGEMENTS:
                    continue
                slot = self._slots.get((e.request_id, e.video_id))
                if slot is not None and not slot[1]:
                    slot[1] = True
                    self.metrics.channel_engagements.labels(slot[0]).inc()

    def channel_figures(self) -> dict[str, dict[str, Any]]:
        """Per recall channel: candidates contributed, slots won, engaged slots and rate."""
        reg = self.metrics.registry
        out = {}
        for name in self.pipeline.channel_names:
            label = {"source": name}
            slots = int(reg.get_sample_value("reelrank_feed_items_total", label) or 0)
            engaged = int(reg.get_sample_value("reelrank_channel_engagements_total", label) or 0)
            out[name] = {
                "candidates": int(
                    reg.get_sample_value("reelrank_recall_candidates_total", label) or 0
                ),
                "failures": int(reg.get_sample_value("reelrank_recall_failures_total", label) or 0),
                "slots": slots,
                "engagements": engaged,
                "engagement_rate": engaged / slots if slots else None,
            }
        return out

    # -- feed ----------------------------------------------------------------------------
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
        """A personalised page for the user; an unknown user gets a cold-start page.

        `now`, `record=False` and `trace` are for replay evaluation: the page as of another
        time, not logged as served (nothing marked seen, no impression, no pool progress),
        with where its candidates went stage by stage (`Feed.trace`), and `explain=False`
        without the scorer's reasons (each video keeps its channel's)."""
        s = self.settings
        n = s.feed_default_n if n is None else n
        if not 1 <= n <= s.feed_max_n:
            raise InvalidInput("n", f"must be between 1 and {s.feed_max_n}, got {n}")
        request = FeedRequest(
            user_id=user_id,
            n=n,
            request_id=new_request_id(),
            now=time.time() if now is None else now,
            region=region,
            device=device,
            language=language,
        )
        started = time.perf_counter()
        query = self.hydrate(request)
        feed = self.pipeline.run(query, trace=trace, explain=explain, features=record)
        self.metrics.feed_latency.observe(time.perf_counter() - started)
        self.metrics.feed_requests.labels("true" if feed.cold_start else "false").inc()
        if record:
            self._log_served(request, feed)
        return feed

    def hydrate(self, request: FeedRequest) -> Query:
        user = self.state.users.get(request.user_id)
        profile = self.state.profiles.get(request.user_id)
        query = Query(
            request=request,
            table=self.state.table,
            counters=self.state.counters,
            size=self.state.table.size,
            user=user,
            profile=profile,
            follows=frozenset(self.state.follows.get(request.user_id, ())),
            region=request.region or (profile.region if profile else None),
            language=request.language or (profile.language if profile else None),
            coengagement=self.state.coengagement,
            mutes=self.state.mutes.get(request.user_id),
            assignment=self.experiments.assign(request.user_id),
            popularity=self.state.popularity,
            related=self.state.related.fitted,
        )
        if user is not None:
            now = user.last_ts or request.now
            query.tag_affinity = user.tags.at(now)
            query.sound_affinity = user.sounds.at(now)
            query.creator_affinity = user.creators.at(now)
        return query

    def _log_served(self, request: FeedRequest, feed: Feed) -> None:
        served = [
            Impression(
                request_id=feed.request_id,
                position=position,
                user_id=request.user_id,
                video_id=item.video_id,
                source=item.source,
                score=item.score,
                model_version=feed.model_version,
                ts=request.now,
                features=features,
                arms=feed.experiments or None,
            )
            for position, (item, features) in enumerate(zip(feed.items, feed.features, strict=True))
        ]
        with self.state.lock:  # seen at once; written to the impression log in the background
            for imp in served:
                self.state.mark_served(imp)
        with self._slots_lock:
            for imp in served:
                self._slots[(imp.request_id, imp.video_id)] = [imp.source, False]
            while len(self._slots) > SLOT_MEMORY:
                self._slots.popitem(last=False)
        for imp in served:
            self._served.put(imp)

    # -- reads ---------------------------------------------------------------------------
    def video_detail(self, video_id: str) -> dict[str, Any]:
        row = self.state.table.row_of(video_id)
        if row < 0:
            raise NotFound(f"unknown video {video_id!r}")
        video = self.state.table.video(row)
        counters = self.state.counters
        return {
            "video": video.model_dump(mode="json"),
            "status": video.status.value,
            "counters": counters.totals_of(row),
            "decayed": counters.decayed_of(row, time.time()),
            "hotness": round(float(counters.hotness[row]) * counters.decay_factor(time.time()), 4),
            "lifecycle": self.lifecycle.video_state(video_id),
        }

    def user_profile(self, user_id: str) -> dict[str, Any]:
        if not self.state.knows_user(user_id):
            raise NotFound(f"unknown user {user_id!r}")
        profile = self.state.profiles.get(user_id)
        user = self.state.users.get(user_id)
        out: dict[str, Any] = {
            "user": profile.model_dump(mode="json") if profile else {"id": user_id},
            "follows": sorted(self.state.follows.get(user_id, ())),
            "controls": self._user_controls(user_id),
        }
        if user is None:
            out.update(
                top_interests={"hashtags": [], "sounds": [], "creators": []},
                hidden_creators=[],
                hidden_sounds=[],
                not_interested=[],
                session=[],
                seen=0,
                engagements=0,
            )
            return out
        now = user.last_ts or time.time()

        def top(aff: Any) -> list[dict[str, Any]]:
            return [{"id": k, "weight": round(w, 4)} for k, w in aff.top(now, 10)]

        table = self.state.table
        out.update(
            top_interests={
                "hashtags": top(user.tags),
                "sounds": top(user.sounds),
                "creators": top(user.creators),
            },
            hidden_creators=sorted(user.hidden_creators),
            hidden_sounds=sorted(user.hidden_sounds),
            not_interested=sorted(table.video(r).id for r in list(user.not_interested)),
            session=[{"video_id": v, "type": t, "ts": ts} for v, t, ts in list(user.session)],
            seen=len(user.seen),
            engagements=user.engagements,
        )
        return out

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "store": self.store.url.split("://")[0],
            "videos": self.state.table.size,
            "users": len(self.state.users),
            "event_offset": self.state.offset,
            "uptime_s": round(time.time() - self.started_at, 1),
        }

    def overview(self) -> dict[str, Any]:
        """Cumulative counters, the feed latency histogram and the model's figures: what the
        dashboard polls (it derives rates and recent quantiles by differencing two polls)."""
        samples = samples_by_name(self.metrics.registry)

        def by(name: str, label: str) -> dict[str, int]:
            return {lab[label]: int(v) for lab, v in samples.get(name, []) if label in lab}

        buckets = [
            (float(lab["le"]), v)
            for lab, v in samples.get("reelrank_feed_latency_seconds_bucket", [])
        ]
        requests = by("reelrank_feed_requests_total", "cold")
        outcomes = by("reelrank_events_total", "outcome")
        trainer = self.model.trainer_status or {}
        heads = trainer.get("heads", {})
        return {
            "ts": time.time(),
            "uptime_s": round(time.time() - self.started_at, 1),
            "videos": self.state.table.size,
            "users": len(self.state.users),
            "feed": {
                "requests": sum(requests.values()),
                "cold_start": requests.get("true", 0),
                "by_ranker": by("reelrank_ranker_requests_total", "ranker"),
                "ranker_fallbacks": sum(by("reelrank_ranker_fallbacks_total", "reason").values()),
                "latency": {
                    "count": int(buckets[-1][1]) if buckets else 0,
                    "sum_s": sum(
                        v for _, v in samples.get("reelrank_feed_latency_seconds_sum", [])
                    ),
                    "buckets": [["+Inf" if b == float("inf") else b, int(c)] for b, c in buckets],
                    "p50_s": histogram_quantile(buckets, 0.5),
                    "p99_s": histogram_quantile(buckets, 0.99),
                },
            },
            "events": {
                "accepted": outcomes.get("accepted", 0),
                "duplicates": outcomes.get("duplicate", 0),
                "rejected": outcomes.get("rejected", 0),
                "by_type": by("reelrank_events_accepted_by_type_total", "type"),
                "state_lag": self.store.events.last_offset() - self.state.offset,
            },
            "impressions_logged": int(
                sum(v for _, v in samples.get("reelrank_impressions_logged_total", []))
            ),
            "model": {
                "version": self.model.version() if self.model.live is not None else None,
                "ready": self.model.ready(),
                "note": None if self.model.ready() else self.model.not_ready_note(),
                "champion": self.model.champion or None,
                "examples_trained": trainer.get("examples_trained", 0),
                "examples_per_s": trainer.get("examples_per_s"),
                "lag_s": trainer.get("lag_s"),
                "auc": {h: f["auc"] for h, f in heads.items() if f.get("auc") is not None},
            },
        }


__all__ = ["Engine", "ReelrankError"]
