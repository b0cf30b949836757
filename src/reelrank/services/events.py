"""The events use case: validate, durably log and fold a batch, then what the batch calls
for at once (reports to review, the follow edges it wrote, channels' engaged slots)."""

from __future__ import annotations

from typing import Any

from ..content.lifecycle import Lifecycle
from ..ingest.events import EventIngestor, IngestResult
from ..metrics import Metrics
from ..schema import EventType
from ..state.online import OnlineState
from .catalog import check_batch
from .feed import ChannelSlots

_FOLLOWING = (EventType.FOLLOW, EventType.UNFOLLOW)


class EventService:
    def __init__(
        self,
        state: OnlineState,
        lifecycle: Lifecycle,
        slots: ChannelSlots,
        metrics: Metrics,
        max_future_skew_s: float,
    ) -> None:
        self.state = state
        self.lifecycle = lifecycle
        self.slots = slots
        self.metrics = metrics
        self.ingestor = EventIngestor(state, metrics, max_future_skew_s)

    def ingest(self, raws: Any) -> IngestResult:
        """Validate, durably log and apply a batch of events."""
        raws = check_batch(raws, "events")
        result = self.ingestor.ingest(raws)
        if any(e.type is EventType.REPORT for e in result.logged):
            self.lifecycle.process_reports()
        if any(e.type in _FOLLOWING for e in result.logged):
            self.state.catalog_changes.catch_up()  # the edges the append wrote
        self.slots.engaged(result.logged)
        self.metrics.state_lag.set(self.state.lag())
        return result
