"""Popular: the most engaged approved videos at every popularity horizon (this hour,
today, this week, this month, all time), interleaved. Which horizon wins differs between
apps; the ranker learns it from the `pop_*` features, recall only has to bring each."""

from __future__ import annotations

import numpy as np

from ..state.popularity import HORIZONS
from ..types import Query, Recalled
from .base import Cached, top_by

LIST_LEN = 500
REASONS = {
    "1h": "popular this hour",
    "1d": "popular today",
    "7d": "popular this week",
    "30d": "popular this month",
    "all": "among the most loved of all time",
}


def _lists(query: Query) -> tuple[np.ndarray, np.ndarray]:
    """The most popular approved rows of every horizon, interleaved round-robin (rank 0 of
    every horizon, then rank 1, ...), each video once, in the first horizon that has it;
    and that horizon's index. Built when the cache refreshes, not per request."""
    pop = query.popularity
    if pop is None:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    rows = np.flatnonzero(query.table.approved[: query.size])
    values = pop.values[rows]
    lists = []
    for j in range(len(HORIZONS)):
        keep = values[:, j] > 0
        lists.append(top_by(rows[keep], values[keep, j], LIST_LEN))
    depth = max(len(r) for r in lists)
    stacked = np.full((len(lists), depth), -1, np.int64)
    for j, r in enumerate(lists):
        stacked[j, : len(r)] = r
    order = stacked.T.ravel()
    horizon = np.tile(np.arange(len(lists)), depth)
    keep = order >= 0
    order, horizon = order[keep], horizon[keep]
    _, first = np.unique(order, return_index=True)
    first.sort()
    return order[first], horizon[first]


_NAMES = np.array([REASONS[name] for name, _ in HORIZONS], dtype=object)


class PopularRecall:
    name = "popular"
    cheap = True  # a precomputed list: runs past the recall budget

    def __init__(self, refresh_s: float = 2.0, background: bool = True) -> None:
        self._lists = Cached(refresh_s, _lists, background)

    def recall(self, query: Query, quota: int) -> Recalled:
        got: tuple[np.ndarray, np.ndarray] = self._lists.get(query)  # type: ignore[assignment]
        order, horizon = got
        if not len(order) or quota <= 0:
            return Recalled.join([])
        keep = np.flatnonzero(order < query.size)[:quota]
        return Recalled(order[keep], _NAMES[horizon[keep]])
