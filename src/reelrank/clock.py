"""What time it is for an engine: the wall clock when serving; the event clock when a
replay or a simulation drives the engine through a log faster than real time."""

from __future__ import annotations

from collections.abc import Callable

Clock = Callable[[], float]  # seconds since the epoch


class EventClock:
    """Time as far as a driver has replayed it: the latest event time it advanced to.

    An engine given one runs no background job: the driver calls `Engine.tick()` after
    each step, and every job, cache and timer (traffic pools, recall lists, refits) ages
    with the events, so a replay's results depend on its log alone, not on the machine's
    speed or a thread's timing."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, ts: float) -> None:
        """Move to `ts` (never back: a log's timestamps may tie or jitter)."""
        if ts > self.now:
            self.now = ts
