"""Traffic pools: every new approved video gets a small first audience and climbs to
larger ones only while its viewers finish, like, share, comment and follow.

Per video a state machine:

    (new, approved) -> testing(tier 0) --impressions spent--> judging --settle_s-->
        quality >= threshold[tier] -> testing(tier + 1), or graduated after the last tier
        otherwise                  -> stopped
    graduated --heat decays below cool_heat--> cooled
    stopped | cooled --engagement since then >= revive_heat--> testing (the tier it left)

Quality is judged on the impressions of the current tier only: each rate is smoothed
toward the catalog's rate (Bayesian smoothing with `smoothing` pseudo-impressions) and
read as a lift over it; quality is the weighted mean of the positive lifts minus the
skip lift's excess. Pool impressions are delivered through the feed's exploration slots
by the `pool` recall channel; operator boosts ("heating") ride the same slots.
Writers hold the online state's lock; the feed reads the arrays without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np

from ..state.counters import C, VideoCounters

POSITIVE = ("finish", "like", "share", "comment", "follow")
_COUNTER = {
    "finish": "finishes",
    "like": "likes",
    "share": "shares",
    "comment": "comments",
    "follow": "follows",
    "skip": "skips",
}
_DEFAULT_PRIOR = {
    "finish": 0.3,
    "like": 0.05,
    "share": 0.01,
    "comment": 0.01,
    "follow": 0.005,
    "skip": 0.3,
}


class Stage(IntEnum):
    NONE = 0  # never in a pool: not approved yet, too old when it arrived, or a duplicate
    TESTING = 1
    JUDGING = 2  # impressions spent, waiting `settle_s` for their engagement to arrive
    GRADUATED = 3
    STOPPED = 4
    COOLED = 5


@dataclass
class Transition:
    row: int
    stage: Stage
    tier: int
    quality: float | None = None


class PoolBook:
    """Pool state for every video row, as arrays (see the module docstring)."""

    def __init__(
        self,
        sizes: list[int],
        thresholds: list[float],
        weights: dict[str, float],
        settle_s: float,
        smoothing: float,
        max_age_s: float,
        cool_heat: float,
        revive_heat: float,
        capacity: int = 1024,
    ) -> None:
        self.sizes = list(sizes)
        self.thresholds = list(thresholds)
        self.weights = dict(weights)
        self.settle_s = settle_s
        self.smoothing = smoothing
        self.max_age_s = max_age_s
        self.cool_heat = cool_heat
        self.revive_heat = revive_heat
        self.stage = np.zeros(capacity, np.int8)
        self.tier = np.full(capacity, -1, np.int8)  # -1: never entered
        self.served = np.zeros(capacity, np.int32)  # impressions in the current tier
        self.judge_at = np.zeros(capacity, np.float64)
        self.heat_mark = np.zeros(capacity, np.float64)  # heat when stopped or cooled
        self.mark_ts = np.zeros(capacity, np.float64)
        self.revivals = np.zeros(capacity, np.int16)
        self.boost_left = np.zeros(capacity, np.int32)
        self.boost_used = np.zeros(capacity, np.int32)  # boosted impressions served so far
        self.window: dict[int, np.ndarray] = {}  # row -> counter totals at tier start
        self.funnel = {"entered": 0, "promotions": 0, "graduations": 0, "stops": 0}
        self.funnel.update({"cooled": 0, "revivals": 0})
        self.promotions_by_tier = [0] * len(sizes)
        self.stops_by_tier = [0] * len(sizes)
        self.version = 0  # bumped when the set of testing or boosted rows changes

    # -- growth and entry ----------------------------------------------------------------
    def ensure(self, rows: int) -> None:
        cap = len(self.stage)
        if rows <= cap:
            return
        while cap < rows:
            cap *= 2
        for name, fill in (
            ("stage", 0),
            ("tier", -1),
            ("served", 0),
            ("judge_at", 0.0),
            ("heat_mark", 0.0),
            ("mark_ts", 0.0),
            ("revivals", 0),
            ("boost_left", 0),
            ("boost_used", 0),
        ):
            old = getattr(self, name)
            new = np.full(cap, fill, dtype=old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)

    def eligible(self, row: int, created_at: float, now: float) -> bool:
        """Never in a pool and young enough to get a first audience."""
        self.ensure(row + 1)
        return bool(self.tier[row] < 0) and now - created_at <= self.max_age_s

    def enter(self, row: int, totals: np.ndarray) -> Transition:
        """Start the first pool."""
        self.ensure(row + 1)
        self.funnel["entered"] += 1
        return self._test(row, 0, totals)

    def _test(self, row: int, tier: int, totals: np.ndarray) -> Transition:
        self.stage[row] = Stage.TESTING
        self.tier[row] = tier
        self.served[row] = 0
        self.window[row] = totals.copy()
        self.version += 1
        return Transition(row, Stage.TESTING, tier)

    # -- delivery ------------------------------------------------------------------------
    def on_served(self, row: int, ts: float) -> None:
        """An impression was served: it counts toward the tier and any boost."""
        if row >= len(self.stage):
            return
        if self.boost_left[row] > 0:
            self.boost_left[row] -= 1
            self.boost_used[row] += 1
            if self.boost_left[row] == 0:
                self.version += 1
        if self.stage[row] != Stage.TESTING:
            return
        self.served[row] += 1
        if self.served[row] >= self.sizes[self.tier[row]]:
            self.stage[row] = Stage.JUDGING
            self.judge_at[row] = ts + self.settle_s
            self.version += 1

    def testing(self, size: int) -> np.ndarray:
        """Rows owed pool impressions (below `size`)."""
        rows = np.flatnonzero(self.stage[:size] == Stage.TESTING)
        return rows

    def boosted(self, size: int) -> np.ndarray:
        return np.flatnonzero(self.boost_left[:size] > 0)

    def boost(self, row: int, impressions: int) -> None:
        self.ensure(row + 1)
        self.boost_left[row] += impressions
        self.version += 1

    def boost_outstanding(self) -> int:
        return int(self.boost_left.sum())

    # -- judging -------------------------------------------------------------------------
    def rates(self, row: int, counters: VideoCounters) -> dict[str, Any]:
        """Smoothed rates, lifts and quality over the current tier's impressions."""
        start = self.window.get(row)
        totals = counters.totals[row]
        delta = totals - start if start is not None else totals
        views = float(max(delta[C["impressions"]], delta[C["plays"]]))
        if views <= 0:
            views = float(self.served[row])
        cat = counters.catalog_totals
        cat_views = float(max(cat[C["impressions"]], cat[C["plays"]]))
        m = self.smoothing
        out: dict[str, Any] = {"views": int(views), "rates": {}, "lifts": {}}
        for action, counter in _COUNTER.items():
            i = C[counter]
            prior = (
                cat[i] / cat_views if cat_views >= 100 and cat[i] > 0 else _DEFAULT_PRIOR[action]
            )
            rate = (float(delta[i]) + m * prior) / (views + m)
            out["rates"][action] = round(rate, 5)
            out["lifts"][action] = round(min(rate / prior, 10.0), 4)
        lifts = out["lifts"]
        total_w = sum(self.weights.get(a, 0.0) for a in POSITIVE) or 1.0
        positive = sum(self.weights.get(a, 0.0) * lifts[a] for a in POSITIVE) / total_w
        out["quality"] = round(positive - self.weights.get("skip", 0.0) * (lifts["skip"] - 1.0), 4)
        return out

    def evaluate(self, now: float, counters: VideoCounters, size: int) -> list[Transition]:
        """Judge settled pools, cool graduated videos, revive stopped or cooled ones."""
        out: list[Transition] = []
        stage = self.stage[:size].copy()  # as it stood: a video moves one step per call
        judged = np.flatnonzero((stage == Stage.JUDGING) & (self.judge_at[:size] <= now))
        for row in judged.tolist():
            tier = int(self.tier[row])
            quality = float(self.rates(row, counters)["quality"])
            if quality >= self.thresholds[tier]:
                self.promotions_by_tier[tier] += 1
                if tier + 1 < len(self.sizes):
                    self.funnel["promotions"] += 1
                    out.append(self._test(row, tier + 1, counters.totals[row]))
                    out[-1].quality = quality
                    continue
                self.funnel["graduations"] += 1
                self.stage[row] = Stage.GRADUATED
                self.window.pop(row, None)
                out.append(Transition(row, Stage.GRADUATED, tier, quality))
            else:
                self.stops_by_tier[tier] += 1
                self.funnel["stops"] += 1
                self._mark(row, Stage.STOPPED, counters, now)
                out.append(Transition(row, Stage.STOPPED, tier, quality))
            self.version += 1
        decay = counters.decay_factor(now)
        heat = counters.hotness[:size] * decay
        cooled = np.flatnonzero((stage == Stage.GRADUATED) & (heat < self.cool_heat))
        for row in cooled.tolist():
            self.funnel["cooled"] += 1
            self._mark(row, Stage.COOLED, counters, now)
            out.append(Transition(row, Stage.COOLED, int(self.tier[row])))
        resting = np.flatnonzero((stage == Stage.STOPPED) | (stage == Stage.COOLED))
        if len(resting):
            since = heat[resting] - self.heat_mark[resting] * np.exp2(
                -(now - self.mark_ts[resting]) / counters.half_life_s
            )
            for row in resting[since >= self.revive_heat].tolist():
                self.funnel["revivals"] += 1
                self.revivals[row] += 1
                out.append(self._test(row, int(self.tier[row]), counters.totals[row]))
        return out

    def _mark(self, row: int, stage: Stage, counters: VideoCounters, now: float) -> None:
        self.stage[row] = stage
        self.heat_mark[row] = counters.hotness[row] * counters.decay_factor(now)
        self.mark_ts[row] = now
        self.window.pop(row, None)

    # -- reading and persistence ---------------------------------------------------------
    def describe(self, row: int, counters: VideoCounters) -> dict[str, Any]:
        """One video's pool: stage, tier, progress, and the rates it is judged on."""
        if row >= len(self.stage) or self.tier[row] < 0:
            out: dict[str, Any] = {"stage": "none", "tier": None}
        else:
            tier = int(self.tier[row])
            stage = Stage(int(self.stage[row]))
            out = {
                "stage": stage.name.lower(),
                "tier": tier,
                "tier_size": self.sizes[tier],
                "served_in_tier": int(self.served[row]),
                "threshold": self.thresholds[tier],
                "revivals": int(self.revivals[row]),
            }
            if stage in (Stage.TESTING, Stage.JUDGING):
                out.update(self.rates(row, counters))
        if row < len(self.boost_left) and self.boost_left[row] > 0:
            out["boost_left"] = int(self.boost_left[row])
        return out

    def summary(self, size: int) -> dict[str, Any]:
        stage = self.stage[:size]
        tier = self.tier[:size]
        tiers = []
        for t, (pool_size, threshold) in enumerate(zip(self.sizes, self.thresholds, strict=True)):
            at = tier == t
            tiers.append(
                {
                    "tier": t,
                    "size": pool_size,
                    "threshold": threshold,
                    "testing": int(((stage == Stage.TESTING) & at).sum()),
                    "judging": int(((stage == Stage.JUDGING) & at).sum()),
                    "promoted": self.promotions_by_tier[t],
                    "stopped": self.stops_by_tier[t],
                }
            )
        return {
            "tiers": tiers,
            "videos": {s.name.lower(): int((stage == s).sum()) for s in Stage},
            "funnel": dict(self.funnel),
            "boosted": int((self.boost_left[:size] > 0).sum()),
            "boost_outstanding": self.boost_outstanding(),
        }

    def to_arrays(self, size: int) -> dict[str, np.ndarray]:
        rows = np.array(sorted(self.window), dtype=np.int64)
        width = len(next(iter(self.window.values()))) if self.window else 0
        windows = (
            np.stack([self.window[r] for r in rows.tolist()])
            if len(rows)
            else np.zeros((0, width), np.int64)
        )
        meta = [
            *self.funnel.values(),
            *self.promotions_by_tier,
            *self.stops_by_tier,
        ]
        out = {
            f"pool_{name}": getattr(self, name)[:size].copy()
            for name in (
                "stage",
                "tier",
                "served",
                "judge_at",
                "heat_mark",
                "mark_ts",
                "revivals",
                "boost_left",
                "boost_used",
            )
        }
        out["pool_window_rows"] = rows
        out["pool_windows"] = windows
        out["pool_counts"] = np.array(meta, dtype=np.int64)
        return out

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        if "pool_stage" not in arrays:
            return  # a snapshot from before pools: every young video enters afresh
        size = len(arrays["pool_stage"])
        self.ensure(size)
        for name in ("stage", "tier", "served", "judge_at", "heat_mark", "mark_ts", "revivals"):
            getattr(self, name)[:size] = arrays[f"pool_{name}"]
        self.boost_left[:size] = arrays["pool_boost_left"]
        self.boost_used[:size] = arrays["pool_boost_used"]
        self.window = {
            int(r): w.copy()
            for r, w in zip(arrays["pool_window_rows"], arrays["pool_windows"], strict=True)
        }
        counts = arrays["pool_counts"].tolist()
        n_funnel, n_tiers = len(self.funnel), len(self.sizes)
        if len(counts) == n_funnel + 2 * n_tiers:  # tiers unchanged since the snapshot
            for key, value in zip(list(self.funnel), counts[:n_funnel], strict=True):
                self.funnel[key] = int(value)
            self.promotions_by_tier = [int(x) for x in counts[n_funnel : n_funnel + n_tiers]]
            self.stops_by_tier = [int(x) for x in counts[n_funnel + n_tiers :]]
        # Tiers beyond a shortened pool_sizes list finish at the last tier.
        np.minimum(self.tier, len(self.sizes) - 1, out=self.tier)
        self.version += 1


def max_age_seconds(hours: float) -> float:
    return math.inf if hours <= 0 else hours * 3600.0
