"""Per-video counters: all-time totals, time-decayed copies, and hotness.

Decay uses a shared reference time: an event at time t adds w * 2**((t - t0) / h), so a
value read at time `now` is stored * 2**(-(now - t0) / h). Nothing is rescanned per event,
and ordering by a decayed column needs no `now` at all.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..arrays import Copy, copied, doubled, grown
from ..schema import EventType

# A new catalog's rates of each action per view: the prior that smoothed rates start from
# until the catalog has views of its own.
DEFAULT_PRIOR = {"finish": 0.3, "like": 0.05, "share": 0.01, "skip": 0.3}


def smoothed_rate(count: Any, views: Any, prior: float, strength: float) -> Any:
    """A rate per view smoothed toward `prior` (Bayesian smoothing): `strength` pseudo-views
    at the prior rate added to what was seen. Works on numbers and arrays alike."""
    return (count + strength * prior) / (views + strength)


COUNTERS = (
    "impressions",
    "plays",
    "watch_ms",
    "finishes",
    "replays",
    "likes",
    "shares",
    "comments",
    "follows",
    "skips",
    "not_interested",
    "hides",
    "reports",
)
C = {name: i for i, name in enumerate(COUNTERS)}

# What each event adds to a video's hotness (its trending score).
HOTNESS_WEIGHTS: dict[EventType, float] = {
    EventType.PLAY: 0.1,
    EventType.FINISH: 1.0,
    EventType.REPLAY: 1.0,
    EventType.LIKE: 2.0,
    EventType.SHARE: 3.0,
    EventType.COMMENT: 2.0,
    EventType.FOLLOW: 2.0,
    EventType.SKIP: -0.5,
    EventType.NOT_INTERESTED: -2.0,
    EventType.REPORT: -3.0,
}

_REBASE_AFTER = 256.0  # half-lives past t0 before values are rescaled toward overflow


class VideoCounters:
    """Counters for every video row; mutated only under the caller's writer lock."""

    def __init__(self, half_life_s: float, capacity: int = 1024) -> None:
        self.half_life_s = half_life_s
        self.t0: float | None = None
        self.totals = np.zeros((capacity, len(COUNTERS)), dtype=np.int64)
        self.decayed = np.zeros((capacity, len(COUNTERS)), dtype=np.float64)
        self.hotness = np.zeros(capacity, dtype=np.float64)
        self.catalog_totals = np.zeros(len(COUNTERS), dtype=np.int64)

    def ensure(self, rows: int) -> None:
        """Grow to hold at least `rows` videos."""
        if rows <= len(self.hotness):
            return
        cap = doubled(len(self.hotness), rows)
        self.totals = grown(self.totals, cap)
        self.decayed = grown(self.decayed, cap)
        self.hotness = grown(self.hotness, cap)

    def _scale(self, ts: float) -> float:
        if self.t0 is None:
            self.t0 = ts
        x = (ts - self.t0) / self.half_life_s
        if x > _REBASE_AFTER:
            factor = 2.0 ** (-x)
            self.decayed *= factor
            self.hotness *= factor
            self.t0 = ts
            x = 0.0
        return 2.0**x if x > -1000 else 0.0

    def add(self, row: int, counter: str, amount: int, ts: float) -> None:
        """Add to a counter (negative amounts undo, never below zero)."""
        i = C[counter]
        if amount < 0:
            amount = -min(-amount, int(self.totals[row, i]))
        self.totals[row, i] += amount
        self.catalog_totals[i] += amount
        self.decayed[row, i] += amount * self._scale(ts)

    def heat(self, row: int, event_type: EventType, ts: float) -> None:
        """Add the event's hotness weight."""
        w = HOTNESS_WEIGHTS.get(event_type)
        if w:
            self.hotness[row] += w * self._scale(ts)

    def decay_factor(self, now: float) -> float:
        """Multiply stored decayed values by this to read them as of `now`."""
        if self.t0 is None:
            return 1.0
        x = (now - self.t0) / self.half_life_s
        return 0.0 if x > 1000 else 2.0 ** (-x)

    def totals_of(self, row: int) -> dict[str, int]:
        return {name: int(self.totals[row, i]) for i, name in enumerate(COUNTERS)}

    def decayed_of(self, row: int, now: float) -> dict[str, float]:
        f = self.decay_factor(now)
        return {name: round(float(self.decayed[row, i]) * f, 4) for i, name in enumerate(COUNTERS)}

    def to_arrays(self, size: int, copy: Copy = copied) -> dict[str, np.ndarray]:
        return {
            "totals": copy("totals", self.totals[:size]),
            "decayed": copy("decayed", self.decayed[:size]),
            "hotness": copy("hotness", self.hotness[:size]),
            "catalog_totals": self.catalog_totals.copy(),
            "t0": np.array([math.nan if self.t0 is None else self.t0]),
        }

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        size = len(arrays["hotness"])
        self.ensure(size)
        self.totals[:size] = arrays["totals"]
        self.decayed[:size] = arrays["decayed"]
        self.hotness[:size] = arrays["hotness"]
        self.catalog_totals[:] = arrays["catalog_totals"]
        t0 = float(arrays["t0"][0])
        self.t0 = None if math.isnan(t0) else t0
