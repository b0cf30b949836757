"""Traffic pools: every new approved video gets a small first audience and climbs to
larger ones only while its viewers finish, like, share, comment and follow.

Per video a state machine:

    (new, approved) -> testing(tier 0) --impressions spent--> judging --settle_s-->
        quality >= threshold[tier] -> testing(tier + 1), or graduated after the last tier
        otherwise                  -> stopped
    graduated --heat decays below cool_heat--> cooled
    stopped | cooled --engagement since then >= revive_heat--> testing (the tier it left)

Quality is judged on the tier's own audience: the engagement of the impressions the pool
served (events joined to them by request id), each action counted once per impression.
Each rate is smoothed toward a baseline rate (Bayesian smoothing with `smoothing`
pseudo-impressions, and never fewer than PSEUDO_EVENTS expected events, so rare actions
need real evidence) and read as a lift over it; quality is the weighted mean of the
positive lifts minus the skip lift's excess. The baseline is the catalog's rates until
the tier has judged BASELINE_MIN pool views, then the rates of all pools judged at that
tier: a first audience is chosen for its interest, so it engages more than the average
viewer, and only a comparison with audiences chosen alike says whether the video is good.
Exposure through other channels (fresh, following) reaches an unselected audience and is
not part of the judgement.
Pool impressions are delivered through the feed's exploration slots by the `pool`
recall channel; operator boosts ("heating") ride the same slots.
Writers hold the online state's lock; the feed reads the arrays without it.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np

from ..arrays import doubled, grown
from ..schema import EventType
from .counters import DEFAULT_PRIOR, C, VideoCounters, smoothed_rate
from .pool_snapshots import ROW_ARRAYS, PoolSnapshots

POSITIVE = ("finish", "like", "share", "comment", "follow")
# Per pool impression, what its viewer did: each counted once per impression.
ACTIONS = ("viewed", "finish", "like", "share", "comment", "follow", "skip")
_COLUMN = {
    EventType.IMPRESSION: 0,
    EventType.PLAY: 0,
    EventType.WATCH: 0,
    EventType.FINISH: 1,
    EventType.LIKE: 2,
    EventType.SHARE: 3,
    EventType.COMMENT: 4,
    EventType.FOLLOW: 5,
    EventType.SKIP: 6,
}
IMPRESSION_MEMORY = 200_000  # pool impressions remembered to attribute their engagement
ENTERED_MEMORY = 65_536  # entries to TESTING remembered for readers of the testing set
PSEUDO_EVENTS = 3.0  # least prior weight of a rate, in expected events
BASELINE_MIN = 200  # judged pool views at a tier before its own rates are the baseline
_COUNTER = {
    "finish": "finishes",
    "like": "likes",
    "share": "shares",
    "comment": "comments",
    "follow": "follows",
    "skip": "skips",
}
_DEFAULT_PRIOR = {**DEFAULT_PRIOR, "comment": 0.01, "follow": 0.005}


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


class PoolBook(PoolSnapshots):
    """Pool state for every video row, as arrays (see the module docstring)."""

    # The ROW_ARRAYS, set in __init__.
    stage: np.ndarray
    tier: np.ndarray
    served: np.ndarray
    judge_at: np.ndarray
    tier_started: np.ndarray
    heat_mark: np.ndarray
    mark_ts: np.ndarray
    revivals: np.ndarray
    boost_left: np.ndarray
    boost_used: np.ndarray
    last_quality: np.ndarray
    epoch: np.ndarray

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
        match_patience_s: float = 300.0,
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
        self.match_patience_s = match_patience_s
        for name, dtype, fill in ROW_ARRAYS:
            setattr(self, name, np.full(capacity, fill, dtype))
        self.counts = np.zeros((capacity, len(ACTIONS)), np.int32)  # this tier's audience
        # (request id, video id) -> [row, epoch, flags] for impressions the pool served
        self.impressions: OrderedDict[tuple[str, str], list[int]] = OrderedDict()
        self.funnel = {"entered": 0, "promotions": 0, "graduations": 0, "stops": 0}
        self.funnel.update({"cooled": 0, "revivals": 0})
        self.tier_totals = np.zeros((len(sizes), len(ACTIONS)), np.int64)  # judged audiences
        self.promotions_by_tier = [0] * len(sizes)
        self.stops_by_tier = [0] * len(sizes)
        self.version = 0  # bumped when the set of testing rows changes
        self.boost_version = 0  # bumped when the set of boosted rows changes
        self.generation = 0  # bumped when the arrays are replaced wholesale (a restore)
        # Rows that entered TESTING (first pool, promotion, revival), in order: (absolute
        # position of the list's first entry, the list). Readers of the testing set keep
        # a position and read what entered since instead of every testing row again.
        self._entered: tuple[int, list[int]] = (0, [])
        self._lists: dict[str, tuple[tuple[str, int, int], np.ndarray]] = {}

    # -- growth and entry ----------------------------------------------------------------
    def ensure(self, rows: int) -> None:
        if rows <= len(self.stage):
            return
        cap = doubled(len(self.stage), rows)
        for name, _, fill in ROW_ARRAYS:
            setattr(self, name, grown(getattr(self, name), cap, fill))
        self.counts = grown(self.counts, cap)

    def eligible(self, row: int, created_at: float, now: float) -> bool:
        """Never in a pool and young enough to get a first audience."""
        self.ensure(row + 1)
        return bool(self.tier[row] < 0) and now - created_at <= self.max_age_s

    def enter(self, row: int, now: float) -> Transition:
        """Start the first pool."""
        self.ensure(row + 1)
        self.funnel["entered"] += 1
        return self._test(row, 0, now)

    def _test(self, row: int, tier: int, now: float) -> Transition:
        self.stage[row] = Stage.TESTING
        self.tier_started[row] = now
        self.tier[row] = tier
        self.served[row] = 0
        self.counts[row] = 0
        self.epoch[row] += 1
        self.version += 1
        base, log = self._entered
        log.append(row)
        if len(log) > ENTERED_MEMORY:  # a reader further behind than half of it rebuilds
            self._entered = (base + len(log) // 2, log[len(log) // 2 :])
        return Transition(row, Stage.TESTING, tier)

    @property
    def entered_count(self) -> int:
        """Entries to TESTING so far (a position for `entered_since`)."""
        base, log = self._entered
        return base + len(log)

    def entered_since(self, position: int) -> tuple[list[int] | None, int]:
        """Rows that entered TESTING since `position` (None when forgotten: read every
        testing row again), and the position to read from next time."""
        base, log = self._entered
        end = base + len(log)
        if position < base:
            return None, end
        return log[position - base :], end

    # -- delivery ------------------------------------------------------------------------
    def on_served(self, row: int, ts: float, key: tuple[str, str]) -> None:
        """The pool channel served an impression (`key`: request id, video id): it counts
        toward the tier and any boost, and its viewer's actions toward the judgement."""
        if row >= len(self.stage):
            return
        if self.boost_left[row] > 0:
            self.boost_left[row] -= 1
            self.boost_used[row] += 1
            if self.boost_left[row] == 0:
                self.boost_version += 1
        if self.stage[row] != Stage.TESTING:
            return
        self.served[row] += 1
        self.impressions[key] = [row, int(self.epoch[row]), 0]
        if len(self.impressions) > IMPRESSION_MEMORY:
            self.impressions.popitem(last=False)
        if self.served[row] >= self.sizes[self.tier[row]]:
            self.stage[row] = Stage.JUDGING
            self.judge_at[row] = ts + self.settle_s
            self.version += 1

    def on_event(self, key: tuple[str, str], event_type: EventType) -> None:
        """An event on a served impression: counted if the pool served it this tier."""
        column = _COLUMN.get(event_type)
        found = self.impressions.get(key) if column is not None else None
        if found is None:
            return
        row, epoch, flags = found
        bit = 1 << column  # type: ignore[operator]
        if epoch != self.epoch[row] or flags & bit:
            return
        found[2] = flags | bit
        self.counts[row, column] += 1

    def testing(self, size: int) -> np.ndarray:
        """Rows owed pool impressions (below `size`), cached until the set changes."""
        return self._cached(
            "testing", size, lambda: self.stage[:size] == Stage.TESTING, self.version
        )

    def boosted(self, size: int) -> np.ndarray:
        """Rows with boost impressions left (below `size`)."""
        return self._cached("boosted", size, lambda: self.boost_left[:size] > 0, self.boost_version)

    def _cached(self, name: str, size: int, mask: Any, version: int) -> np.ndarray:
        key = (name, size, version)
        found = self._lists.get(name)
        if found is None or found[0] != key:
            found = (key, np.flatnonzero(mask()))
            self._lists[name] = found
        return found[1]

    def boost(self, row: int, impressions: int) -> None:
        self.ensure(row + 1)
        self.boost_left[row] += impressions
        self.boost_version += 1

    def boost_outstanding(self) -> int:
        return int(self.boost_left.sum())

    # -- judging -------------------------------------------------------------------------
    def baseline(self, tier: int, counters: VideoCounters) -> tuple[str, dict[str, float]]:
        """The rates a tier's videos are compared with: those of every pool judged at
        the tier so far (its audiences are chosen alike), or, until they hold
        BASELINE_MIN views, the catalog's."""
        done = self.tier_totals[tier]
        if done[0] >= BASELINE_MIN:
            return "pool tier", {
                a: max(float(done[ACTIONS.index(a)]) / float(done[0]), 1e-4) for a in _COUNTER
            }
        cat = counters.catalog_totals
        cat_views = float(max(cat[C["impressions"]], cat[C["plays"]]))
        return "catalog", {
            a: cat[C[c]] / cat_views if cat_views >= 100 and cat[C[c]] > 0 else _DEFAULT_PRIOR[a]
            for a, c in _COUNTER.items()
        }

    def rates(self, row: int, counters: VideoCounters) -> dict[str, Any]:
        """Smoothed rates, lifts and quality over this tier's pool impressions."""
        got = self.counts[row]
        views = float(got[0]) or float(self.served[row])  # apps that send no views
        m = self.smoothing
        basis, priors = self.baseline(max(int(self.tier[row]), 0), counters)
        out: dict[str, Any] = {"views": int(views), "baseline": basis, "rates": {}, "lifts": {}}
        for action in _COUNTER:
            prior = priors[action]
            seen = min(float(got[ACTIONS.index(action)]), views)
            # At least PSEUDO_EVENTS expected events of prior: one comment on a rare-
            # comment video must not read as a tripled comment rate.
            strength = max(m, PSEUDO_EVENTS / prior)
            rate = smoothed_rate(seen, views, prior, strength)
            out["rates"][action] = round(float(rate), 5)
            out["lifts"][action] = round(float(min(rate / prior, 10.0)), 4)
        lifts = out["lifts"]
        total_w = sum(self.weights.get(a, 0.0) for a in POSITIVE) or 1.0
        positive = sum(self.weights.get(a, 0.0) * lifts[a] for a in POSITIVE) / total_w
        skip_penalty = self.weights.get("skip", 0.0) * (lifts["skip"] - 1.0)
        out["quality"] = round(float(positive - skip_penalty), 4)
        return out

    def evaluate(self, now: float, counters: VideoCounters, size: int) -> list[Transition]:
        """Judge settled pools, cool graduated videos, revive stopped or cooled ones."""
        out: list[Transition] = []
        stage = self.stage[:size].copy()  # as it stood: a video moves one step per call
        judged = np.flatnonzero((stage == Stage.JUDGING) & (self.judge_at[:size] <= now))
        for row in judged.tolist():
            tier = int(self.tier[row])
            quality = float(self.rates(row, counters)["quality"])
            self.last_quality[row] = quality
            got = self.counts[row].astype(np.int64)
            if got[0] == 0:  # an app that sends no views: the impressions served stand in
                got[0] = self.served[row]
            self.tier_totals[tier] += got
            if quality >= self.thresholds[tier]:
                self.promotions_by_tier[tier] += 1
                if tier + 1 < len(self.sizes):
                    self.funnel["promotions"] += 1
                    out.append(self._test(row, tier + 1, now))
                    out[-1].quality = quality
                    continue
                self.funnel["graduations"] += 1
                self.stage[row] = Stage.GRADUATED
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
                out.append(self._test(row, int(self.tier[row]), now))
        return out

    def _mark(self, row: int, stage: Stage, counters: VideoCounters, now: float) -> None:
        self.stage[row] = stage
        self.heat_mark[row] = counters.hotness[row] * counters.decay_factor(now)
        self.mark_ts[row] = now

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
            if not np.isnan(self.last_quality[row]):
                out["last_quality"] = round(float(self.last_quality[row]), 4)
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


def max_age_seconds(hours: float) -> float:
    return math.inf if hours <= 0 else hours * 3600.0
