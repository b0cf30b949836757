"""The event path: per-item validation, idempotent durable append, state fan-out."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidInput
from ..metrics import Metrics
from ..schema import Event, parse
from ..state.online import OnlineState


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    logged: list[Event] = field(default_factory=list)  # the accepted events


class EventIngestor:
    """Valid events are applied even when others in the batch are rejected; an event is
    in the durable log before it counts as accepted; a repeated event_id is acknowledged
    as a duplicate and changes nothing."""

    def __init__(self, state: OnlineState, metrics: Metrics, max_future_skew_s: float) -> None:
        self.state = state
        self.metrics = metrics
        self.max_future_skew_s = max_future_skew_s

    def validate(self, raw: Any, index: int, now: float) -> Event:
        event: Event = parse(Event, raw, f"events[{index}]")
        if event.ts > now + self.max_future_skew_s:
            raise InvalidInput(f"events[{index}].ts", "lies too far in the future")
        if self.state.table.row_of(event.video_id) < 0:
            raise InvalidInput(f"events[{index}].video_id", f"unknown video {event.video_id!r}")
        return event

    def ingest(self, raws: list[Any]) -> IngestResult:
        now = time.time()
        result = IngestResult()
        valid: list[Event] = []
        for i, raw in enumerate(raws):
            try:
                valid.append(self.validate(raw, i, now))
            except InvalidInput as exc:
                result.rejected.append({"index": i, "error": str(exc)})
        offsets = self.state.store.events.append(valid, received_at=now)
        logged = []
        for event, offset in zip(valid, offsets, strict=True):
            if offset is None:
                result.duplicates += 1
            else:
                logged.append((offset, event))
                self.metrics.events_by_type.labels(event.type.value).inc()
        result.accepted = len(logged)
        result.logged = [e for _, e in logged]
        self.state.apply_logged(logged)
        self.metrics.events.labels("accepted").inc(result.accepted)
        self.metrics.events.labels("duplicate").inc(result.duplicates)
        self.metrics.events.labels("rejected").inc(len(result.rejected))
        return result
