"""Pool: videos owed impressions by a traffic pool or an operator boost, matched to the
user (hashtag affinity, onboarding interests, language); the policy puts them in the
page's exploration slots."""

from __future__ import annotations

import zlib

import numpy as np

from ..rank.signals import tag_sum
from ..state.pools import PoolBook
from ..types import Query, Recalled

MATCH_POOL = 1000  # pool videos considered per request, the least served first
MIN_MATCH = 1.0  # about one finished video with its hashtag, or an onboarding interest


def least(values: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k smallest values, smallest first, ties in position order: what
    `np.argsort(values, kind="stable")[:k]` gives, in linear time plus a sort of k."""
    kth = np.partition(values, k - 1)[k - 1]
    below = np.flatnonzero(values < kth)
    ties = np.flatnonzero(values == kth)[: k - len(below)]
    pick = np.concatenate([below, ties])
    pick.sort()
    return pick[np.argsort(values[pick], kind="stable")]


class PoolRecall:
    name = "pool"

    def __init__(self, pools: PoolBook | None = None) -> None:
        self.pools = pools  # traffic pools and operator boosts; None: recalls nothing

    def recall(self, query: Query, quota: int) -> Recalled:
        pools = self.pools
        if pools is None or quota <= 0:
            return Recalled.join([])
        size = query.size
        boosted = pools.boosted(size)
        boosted = boosted[query.table.approved[boosted]]
        testing = pools.testing(size)
        testing = testing[query.table.approved[testing]]
        parts = []
        if len(boosted):
            parts.append(Recalled.of(boosted[:quota], "promoted: boosted by the editors"))
        room = quota - len(parts[0].rows) if parts else quota
        if len(testing) and room > 0:
            rng = np.random.default_rng(zlib.crc32(query.request.request_id.encode()))
            need = pools.served[testing] / np.array(pools.sizes, np.float64)[pools.tier[testing]]
            if len(testing) > MATCH_POOL:
                pick = least(need, MATCH_POOL)
                testing, need = testing[pick], need[pick]
            match = np.zeros(len(testing))
            if query.tag_affinity:
                match += np.clip(tag_sum(query, testing, query.tag_affinity), 0.0, None)
            interests = query.profile.interests if query.profile is not None else []
            if interests:
                match += 2.0 * tag_sum(query, testing, dict.fromkeys(interests, 1.0))
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
