"""Trending: the hottest approved videos in the user's region, in their language, and
globally: with onboarding interests (the interest channel), the cold-start feed."""

from __future__ import annotations

import numpy as np

from ..types import Query, Recalled
from .base import Cached, top_by

LIST_LEN = 1000


def _hot_lists(query: Query) -> dict[tuple[str, int], np.ndarray]:
    """("region" | "language", int) -> the hottest rows there; ("global", -1) -> all."""
    size = query.size
    table = query.table
    rows = np.flatnonzero(table.approved[:size])
    hot = query.counters.hotness[rows]
    lists = {("global", -1): top_by(rows, hot, LIST_LEN)}
    for kind, column in (("region", table.region), ("language", table.language)):
        keys = column[rows]
        for k in np.unique(keys):
            if k >= 0:
                mask = keys == k
                lists[(kind, int(k))] = top_by(rows[mask], hot[mask], LIST_LEN)
    return lists


class TrendingRecall:
    name = "trending"
    cheap = True  # a precomputed list: runs past the recall budget

    def __init__(self, refresh_s: float = 2.0, background: bool = True) -> None:
        self._lists = Cached(refresh_s, _hot_lists, background)

    def recall(self, query: Query, quota: int) -> Recalled:
        lists: dict[tuple[str, int], np.ndarray] = self._lists.get(query)  # type: ignore[assignment]
        table = query.table
        parts = []
        used = 0
        local = [
            ("region", table.regions.get(query.region) if query.region else -1, quota // 3,
             f"popular in your region ({query.region})"),
            ("language", table.languages.get(query.language) if query.language else -1,
             quota // 3, f"popular in your language ({query.language})"),
        ]  # fmt: skip
        for kind, key, share, reason in local:
            found = lists.get((kind, key)) if key >= 0 else None
            if found is not None:
                found = found[found < query.size]  # lists may come from a larger catalog
                parts.append(Recalled.of(found[:share], reason))
                used += len(parts[-1].rows)
        everywhere = lists[("global", -1)]
        parts.append(
            Recalled.of(everywhere[everywhere < query.size][: quota - used], "trending now")
        )
        return Recalled.join(parts)
