"""The feed use case: hydrate the request from the online state, run the pipeline, record
what was served (seen at once, logged in the background), and count each channel's
engaged slots."""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ..clock import Clock
from ..config import Settings
from ..errors import InvalidInput
from ..experiments.registry import ExperimentBook
from ..metrics import Metrics
from ..pipeline.feed import Feed, FeedPipeline
from ..schema import Event, Impression, constructed
from ..state.fold import ENGAGEMENTS
from ..state.online import OnlineState
from ..storage import EventLog
from ..types import FeedRequest, Query
from .gate import Gate

SLOT_MEMORY = 200_000  # served slots remembered for the channels' engagement rates


def new_request_id() -> str:
    """A fresh feed request id (it seeds exploration and tie-breaking for the page)."""
    return uuid.uuid4().hex


class ChannelSlots:
    """(request id, video id) -> [source, engaged] for the last `SLOT_MEMORY` served
    slots: an engagement on a served slot counts once for the channel that filled it."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._slots: OrderedDict[tuple[str, str], list[Any]] = OrderedDict()
        self._lock = threading.Lock()

    def served(self, impressions: list[Impression]) -> None:
        with self._lock:
            for imp in impressions:
                self._slots[(imp.request_id, imp.video_id)] = [imp.source, False]
            while len(self._slots) > SLOT_MEMORY:
                self._slots.popitem(last=False)

    def engaged(self, events: list[Event]) -> None:
        with self._lock:
            for e in events:
                if e.request_id is None or e.type not in ENGAGEMENTS:
                    continue
                slot = self._slots.get((e.request_id, e.video_id))
                if slot is not None and not slot[1]:
                    slot[1] = True
                    self.metrics.channel_engagements.labels(slot[0]).inc()


class FeedService:
    def __init__(
        self,
        settings: Settings,
        state: OnlineState,
        pipeline: FeedPipeline,
        experiments: ExperimentBook,
        log: EventLog,
        metrics: Metrics,
        clock: Clock = time.time,
        request_ids: Callable[[], str] | None = None,  # None: new_request_id()
    ) -> None:
        self.settings = settings
        self.state = state
        self.clock = clock
        self.request_ids = request_ids
        self.pipeline = pipeline
        self.experiments = experiments
        self.log = log
        self.metrics = metrics
        self.slots = ChannelSlots(metrics)
        self.gate = Gate(settings.feed_concurrency)
        self._served: queue.SimpleQueue[Impression] = queue.SimpleQueue()

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
            request_id=(self.request_ids or new_request_id)(),
            now=self.clock() if now is None else now,
            region=region,
            device=device,
            language=language,
        )
        with self.gate:  # `feed_concurrency` pipelines at once, in the order requests came
            started = time.perf_counter()
            query = self.hydrate(request)
            feed = self.pipeline.run(query, trace=trace, explain=explain, features=record)
            self.metrics.feed_latency.observe(time.perf_counter() - started)
        self.metrics.feed_requests.labels("true" if feed.cold_start else "false").inc()
        if record:
            self._log_served(request, feed)
        return feed

    def hydrate(self, request: FeedRequest) -> Query:
        state = self.state
        user = state.users.get(request.user_id)
        profile = state.profiles.get(request.user_id)
        query = Query(
            request=request,
            table=state.table,
            counters=state.counters,
            size=state.table.size,
            user=user,
            profile=profile,
            follows=frozenset(state.follows.get(request.user_id, ())),
            region=request.region or (profile.region if profile else None),
            language=request.language or (profile.language if profile else None),
            coengagement=state.coengagement,
            mutes=state.mutes.get(request.user_id),
            assignment=self.experiments.assign(request.user_id),
            popularity=state.popularity,
            related=state.related.fitted,
        )
        if user is not None:
            now = user.last_ts or request.now
            query.tag_affinity = user.tags.at(now)
            query.sound_affinity = user.sounds.at(now)
            query.creator_affinity = user.creators.at(now)
        return query

    def _log_served(self, request: FeedRequest, feed: Feed) -> None:
        # Built from the pipeline's own values (checked types): no validation needed, every
        # field given in declaration order.
        arms = feed.experiments or None
        served = [
            constructed(
                Impression,
                {
                    "request_id": feed.request_id,
                    "position": position,
                    "user_id": request.user_id,
                    "video_id": item.video_id,
                    "source": item.source,
                    "score": item.score,
                    "model_version": feed.model_version,
                    "ts": request.now,
                    "features": features,
                    "arms": arms,
                },
            )
            for position, (item, features) in enumerate(zip(feed.items, feed.features, strict=True))
        ]
        with self.state.lock:  # seen at once; written to the impression log in the background
            self.state.mark_page(served)
        self.slots.served(served)
        for imp in served:
            self._served.put(imp)

    def flush_impressions(self) -> int:
        """Write the served impressions queued since the last flush to the log."""
        batch: list[Impression] = []
        while True:
            try:
                batch.append(self._served.get_nowait())
            except queue.Empty:
                break
        if batch:
            self.log.append_impressions(batch)
            self.metrics.impressions_logged.inc(len(batch))
        return len(batch)
