"""Trending: the hottest approved videos, in the user's region and globally."""

from __future__ import annotations

import numpy as np

from ..pipeline.query import Query, Recalled
from .base import Cached, top_by

LIST_LEN = 1000


def _hot_lists(query: Query) -> dict[int, np.ndarray]:
    """region int -> its hottest rows; -1 -> global."""
    size = query.size
    table = query.table
    rows = np.flatnonzero(table.approved[:size])
    hot = query.counters.hotness[rows]
    lists = {-1: top_by(rows, hot, LIST_LEN)}
    regions = table.region[rows]
    for r in np.unique(regions):
        if r >= 0:
            mask = regions == r
            lists[int(r)] = top_by(rows[mask], hot[mask], LIST_LEN)
    return lists


class TrendingRecall:
    name = "trending"

    def __init__(self, refresh_s: float = 2.0) -> None:
        self._lists = Cached(refresh_s, _hot_lists)

    def recall(self, query: Query, quota: int) -> Recalled:
        lists: dict[int, np.ndarray] = self._lists.get(query)  # type: ignore[assignment]
        # The shared lists may come from a request that saw a larger catalog.
        lists = {k: v[v < query.size] for k, v in lists.items()}
        parts = []
        region = query.table.regions.get(query.region) if query.region else -1
        if region >= 0 and region in lists:
            parts.append(Recalled.of(lists[region][: quota // 2], f"trending in {query.region}"))
        rest = quota - (len(parts[0].rows) if parts else 0)
        parts.append(Recalled.of(lists[-1][:rest], "trending now"))
        return Recalled.join(parts)
