"""Pool: videos owed impressions by a traffic pool or an operator boost, matched to the
user (hashtag affinity, onboarding interests, language); the policy puts them in the
page's exploration slots."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace

import numpy as np

from ..rank.signals import tag_sum
from ..state.pools import PoolBook, Stage
from ..types import Query, Recalled

MATCH_POOL = 1000  # pool videos considered per request, the least served first
MIN_MATCH = 1.0  # about one finished video with its hashtag, or an onboarding interest
SHORTLIST = 4 * MATCH_POOL  # least-served testing rows kept between changes of the pools


def least(values: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k smallest values, smallest first, ties in position order: what
    `np.argsort(values, kind="stable")[:k]` gives, in linear time plus a sort of k.

    Needs are mostly ties (every video not served yet needs 0), and numpy's vectorised
    selection slows about thirtyfold when the k-th value is one that many share and
    larger ones exist (`np.partition` of 214,000 needs, all but 101 of them 0: 28-35 ms
    against 1 ms for all 0, numpy 2.4 on this x86 machine). So the smallest value's
    positions are taken by a scan first, which is the whole answer when k of them tie,
    and the rest is selected in extended precision, whose scalar selection holds its
    speed on ties (1.8 ms there)."""
    low = values.min()
    at_low = np.flatnonzero(values == low)
    if len(at_low) >= k:
        return at_low[:k]
    kth = np.partition(values.astype(np.longdouble), k - 1)[k - 1].astype(values.dtype)
    below = np.flatnonzero(values < kth)
    ties = np.flatnonzero(values == kth)[: k - len(below)]
    pick = np.concatenate([below, ties])
    pick.sort()
    return pick[np.argsort(values[pick], kind="stable")]


@dataclass(frozen=True)
class _Shortlist:
    generation: int  # pools.generation it was built in
    position: int  # pools' entries to TESTING it holds (pools.entered_since)
    rows: np.ndarray  # ascending
    bound: tuple[float, int] | None  # (need, row) of its last row; None: every testing row


def _need(pools: PoolBook, rows: np.ndarray) -> np.ndarray:
    """Impressions served over the tier's pool size: 0 for a pool just started."""
    return pools.served[rows] / np.asarray(pools.sizes, np.float64)[pools.tier[rows]]


class LeastServed:
    """The `match` (MATCH_POOL) approved testing rows least served (by need, then row),
    in time independent of how many rows are testing.

    At a million videos most of them can be testing, and ranking every one by need is
    most of a request's recall time. A row's need only grows while it stays in a tier
    (serving adds to it); it starts again at 0 only when the row enters TESTING (a first
    pool, a promotion, a revival), and the pools log those entries. So the `shortlist`
    (SHORTLIST) least-needing testing rows, kept from a ranking of every testing row,
    with the rows that entered since folded in and those no longer testing skipped, hold
    the answer for as long as their `match`-th is still at or below the shortlist's last
    (need, row) when it was ranked: every row left out was above that and can only have
    moved up. When that fails (its rows were served past it, or reviews and judgements
    removed too many of them), when twice the shortlist's rows entered since, or when
    the pools were restored, the request ranks every row, as without the shortlist, and
    keeps a new one. The answer is exactly the full ranking's."""

    def __init__(self, match: int = MATCH_POOL, shortlist: int = SHORTLIST) -> None:
        self.match = match
        self.shortlist = shortlist
        self._kept: _Shortlist | None = None

    def get(
        self, pools: PoolBook, size: int, approved: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(rows, need): the `match` rows least needing impressions, least first, when
        there are more approved testing rows than that, else all of them in row order."""
        kept = self._kept
        if kept is not None and kept.generation == pools.generation:
            entered, position = pools.entered_since(kept.position)
            if entered is not None and len(kept.rows) + len(entered) <= 2 * self.shortlist:
                if entered:
                    rows = np.union1d(kept.rows, np.asarray(entered, np.int64))
                    kept = self._kept = replace(kept, rows=rows, position=position)
                rows = kept.rows[kept.rows < size]
                rows = rows[(pools.stage[rows] == Stage.TESTING) & approved[rows]]
                picked, need = self._least(rows, _need(pools, rows))
                if kept.bound is None:
                    return picked, need
                if len(rows) > self.match and (float(need[-1]), int(picked[-1])) <= kept.bound:
                    return picked, need
        return self._rebuild(pools, size, approved)

    def _rebuild(
        self, pools: PoolBook, size: int, approved: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        generation, position = pools.generation, pools.entered_count
        # Every testing row, past this request's catalog size too: a row that entered
        # before `position` is found here or never (its entry is not read again).
        testing = pools.testing(len(pools.stage))
        need = _need(pools, testing)
        if len(testing) <= self.shortlist:
            self._kept = _Shortlist(generation, position, testing, None)
        else:
            pick = least(need, self.shortlist)
            last = int(pick[-1])
            bound = (float(need[last]), int(testing[last]))
            self._kept = _Shortlist(generation, position, np.sort(testing[pick]), bound)
        keep = (testing < size) & approved[testing]
        return self._least(testing[keep], need[keep])

    def _least(self, rows: np.ndarray, need: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(rows) > self.match:
            pick = least(need, self.match)
            return rows[pick], need[pick]
        return rows, need


class PoolRecall:
    name = "pool"

    def __init__(self, pools: PoolBook | None = None) -> None:
        self.pools = pools  # traffic pools and operator boosts; None: recalls nothing
        self._least = LeastServed()

    def recall(self, query: Query, quota: int) -> Recalled:
        pools = self.pools
        if pools is None or quota <= 0:
            return Recalled.join([])
        size = query.size
        boosted = pools.boosted(size)
        boosted = boosted[query.table.approved[boosted]]
        testing, need = self._least.get(pools, size, query.table.approved)
        parts = []
        if len(boosted):
            parts.append(Recalled.of(boosted[:quota], "promoted: boosted by the editors"))
        room = quota - len(parts[0].rows) if parts else quota
        if len(testing) and room > 0:
            rng = np.random.default_rng(zlib.crc32(query.request.request_id.encode()))
            match = np.zeros(len(testing))
            interests = query.profile.interests if query.profile is not None else []
            tag_ids = query.table.tag_ids[testing]  # read once for both sums
            if query.tag_affinity:
                tags = tag_sum(query, tag_ids, query.tag_affinity, "tags")
                match += np.clip(tags, 0.0, None)
            if interests:
                wanted = dict.fromkeys(interests, 1.0)
                match += 2.0 * tag_sum(query, tag_ids, wanted, "interests")
            if query.tag_affinity or (query.profile is not None and query.profile.interests):
                # A user with known tastes is a first audience only for videos that match
                # them (their reactions to other topics would judge the topic, not the
                # video), unless a video has waited `match_patience_s` in its tier. Users
                # with no tastes yet see any pool video.
                waited = query.request.now - pools.tier_started[testing]
                keep = (match >= MIN_MATCH) | (waited >= pools.match_patience_s)
                testing, need, match = testing[keep], need[keep], match[keep]
            if query.language:
                language = query.table.languages.get(query.language)
                match += 0.5 * (query.table.language[testing] == language)
            # Matched users first; among equals, the pool furthest from its size.
            order = np.lexsort((rng.random(len(testing)), need, -match))[:room]
            rows = testing[order]
            tiers = pools.tier[rows]
            reasons = np.where(
                tiers == 0,
                "new video being tested with a first audience",
                "rising video being tested with a wider audience",
            ).astype(object)
            parts.append(Recalled(rows.astype(np.int64), reasons))
        return Recalled.join(parts)
