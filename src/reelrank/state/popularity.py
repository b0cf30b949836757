"""Video popularity at several horizons at once: hot this hour, today, this week, this
month, and of all time.

What wins a feed differs between apps (what is hot now on a news-like app, what has been
loved for years on a film catalog); the ranker learns which horizon matters from the app's
own log, so every horizon is kept. Each event adds its hotness weight to every horizon;
horizon j decays with half-life h_j (the last one never decays). Values are stored against
a shared reference time, as in `counters`, so an update is one row write and reading a
column as of `now` is one multiplication.
"""

from __future__ import annotations

import math

import numpy as np

from ..arrays import Copy, copied, doubled, grown
from ..schema import EventType
from .counters import HOTNESS_WEIGHTS

HORIZONS: tuple[tuple[str, float], ...] = (
    ("1h", 3600.0),
    ("1d", 86400.0),
    ("7d", 7 * 86400.0),
    ("30d", 30 * 86400.0),
    ("all", math.inf),
)
_REBASE_AFTER = 256.0  # half-lives of the shortest horizon before values are rescaled
TOUCHED_KEEP = 1 << 16  # rows written, kept for readers that follow the changes


class Popularity:
    """(videos, horizons) decayed engagement; mutated only under the caller's writer lock."""

    def __init__(self, capacity: int = 1024) -> None:
        self.half_lives = np.array([h for _, h in HORIZONS], dtype=np.float64)
        self.names = [n for n, _ in HORIZONS]
        self.t0: float | None = None
        self.values = np.zeros((capacity, len(HORIZONS)), dtype=np.float64)
        self.totals = np.zeros(len(HORIZONS), dtype=np.float64)
        # The rows written, in order, from offset `base` on (one tuple, swapped whole when
        # trimmed, so a reader on another thread reads a consistent pair), and an epoch
        # that moves whenever every value changes at once (a rebase, a restore): readers
        # that keep lists ordered by stored value follow these instead of ranking every
        # video again (stored values keep their order between writes: time multiplies
        # a whole column alike).
        self._touched: tuple[int, list[int]] = (0, [])
        self.epoch = 0

    def ensure(self, rows: int) -> None:
        """Grow to hold at least `rows` videos."""
        if rows > len(self.values):
            self.values = grown(self.values, doubled(len(self.values), rows))

    def _scale(self, ts: float) -> np.ndarray:
        if self.t0 is None:
            self.t0 = ts
        x = (ts - self.t0) / self.half_lives
        if x[0] > _REBASE_AFTER:  # the shortest horizon decays fastest
            factor = 2.0 ** (-x)
            self.values *= factor
            self.totals *= factor
            self.t0 = ts
            self.epoch += 1
            x = np.zeros_like(x)
        return 2.0 ** np.maximum(x, -1000.0)

    def add(self, row: int, event_type: EventType, ts: float) -> None:
        """Add the event's hotness weight to every horizon."""
        w = HOTNESS_WEIGHTS.get(event_type)
        if not w:
            return
        scaled = w * self._scale(ts)
        self.values[row] += scaled
        self.totals += scaled
        base, rows = self._touched
        rows.append(row)
        if len(rows) > TOUCHED_KEEP:
            half = len(rows) // 2
            self._touched = (base + half, rows[half:])

    def touched_since(self, offset: int) -> tuple[np.ndarray | None, int]:
        """The distinct rows written since `offset` (None when they are no longer kept:
        the reader must read everything again) and the offset to ask from next time."""
        base, rows = self._touched
        end = base + len(rows)
        if offset < base:
            return None, end
        return np.unique(np.asarray(rows[offset - base : end - base], dtype=np.int64)), end

    def factors(self, now: float) -> np.ndarray:
        """(horizons,) multipliers that read stored values as of `now`."""
        if self.t0 is None:
            return np.ones(len(HORIZONS))
        x = (now - self.t0) / self.half_lives
        return 2.0 ** -np.minimum(np.maximum(x, 0.0), 1000.0)

    def at(self, rows: np.ndarray, now: float) -> np.ndarray:
        """(n, horizons) popularity of rows as of `now`, never below zero."""
        return np.maximum(self.values[rows] * self.factors(now), 0.0)

    def relative(self, rows: np.ndarray, catalog: int) -> np.ndarray:
        """(n, horizons) popularity over the catalog's mean at each horizon: 1.0 is an
        average video, whatever the app's volume (so what the ranker learns on one log
        carries to another). Values and totals decay alike, so no time is needed."""
        mean = self.totals / max(catalog, 1)
        ok = mean > 0
        return np.maximum(self.values[rows], 0.0) / np.where(ok, mean, 1.0) * ok

    def to_arrays(self, size: int, copy: Copy = copied) -> dict[str, np.ndarray]:
        return {
            "popularity": copy("popularity", self.values[:size]),
            "popularity_totals": self.totals.copy(),
            "popularity_t0": np.array([math.nan if self.t0 is None else self.t0]),
        }

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        if "popularity" not in arrays:  # a snapshot from before popularity horizons
            return
        values = arrays["popularity"]
        if values.shape[1] != len(HORIZONS):
            return  # other horizons: rebuilt as events arrive
        self.ensure(len(values))
        self.values[: len(values)] = values
        self.totals[:] = arrays["popularity_totals"]
        t0 = float(arrays["popularity_t0"][0])
        self.t0 = None if math.isnan(t0) else t0
        self.epoch += 1
