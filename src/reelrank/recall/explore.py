"""Explore: a uniform sample of the catalog, to find interests the profile lacks."""

from __future__ import annotations

import zlib

import numpy as np

from ..types import Query, Recalled


class ExploreRecall:
    name = "explore"

    def recall(self, query: Query, quota: int) -> Recalled:
        if query.size == 0 or quota <= 0:
            return Recalled.join([])
        seed = zlib.crc32(query.request.request_id.encode())
        rng = np.random.default_rng(seed)
        rows = np.unique(rng.integers(0, query.size, size=quota * 2))
        rows = rows[query.table.approved[rows]]
        rng.shuffle(rows)
        return Recalled.of(rows[:quota], "something new to explore")
