"""Popular: the most engaged approved videos at every popularity horizon (this hour,
today, this week, this month, all time), interleaved. Which horizon wins differs between
apps; the ranker learns it from the `pop_*` features, recall only has to bring each."""

from __future__ import annotations

import numpy as np

from ..pipeline.query import Query, Recalled
from ..state.popularity import HORIZONS
from .base import Cached, top_by

LIST_LEN = 500
REASONS = {
    "1h": "popular this hour",
    "1d": "popular today",
    "7d": "popular this week",
    "30d": "popular this month",
    "all": "among the most loved of all time",
}


def _lists(query: Query) -> list[np.ndarray]:
    """Per horizon, the most popular approved rows, most popular first."""
    pop = query.popularity
    if pop is None:
        return []
    rows = np.flatnonzero(query.table.approved[: query.size])
    values = pop.values[rows]
    out = []
    for j in range(len(HORIZONS)):
        keep = values[:, j] > 0
        out.append(top_by(rows[keep], values[keep, j], LIST_LEN))
    return out


class PopularRecall:
    name = "popular"

    def __init__(self, refresh_s: float = 2.0) -> None:
        self._lists = Cached(refresh_s, _lists)

    def recall(self, query: Query, quota: int) -> Recalled:
        lists: list[np.ndarray] = self._lists.get(query)  # type: ignore[assignment]
        if not lists or quota <= 0:
            return Recalled.join([])
        lists = [rows[rows < query.size] for rows in lists]
        # Round-robin over the horizons, each video once, in the first horizon that has it.
        depth = max(len(rows) for rows in lists)
        stacked = np.full((len(lists), depth), -1, np.int64)
        for j, rows in enumerate(lists):
            stacked[j, : len(rows)] = rows
        order = stacked.T.ravel()  # rank 0 of every horizon, then rank 1, ...
        horizon = np.tile(np.arange(len(lists)), depth)
        keep = order >= 0
        order, horizon = order[keep], horizon[keep]
        _, first = np.unique(order, return_index=True)
        first.sort()
        first = first[:quota]
        names = np.array([REASONS[name] for name, _ in HORIZONS], dtype=object)
        return Recalled(order[first], names[horizon[first]])
