"""Popular: the most engaged approved videos at every popularity horizon (this hour,
today, this week, this month, all time), interleaved. Which horizon wins differs between
apps; the ranker learns it from the `pop_*` features, recall only has to bring each."""

from __future__ import annotations

import numpy as np

from ..state.popularity import HORIZONS, Popularity
from ..types import Query, Recalled
from .base import Cached

LIST_LEN = 500
REASONS = {
    "1h": "popular this hour",
    "1d": "popular today",
    "7d": "popular this week",
    "30d": "popular this month",
    "all": "among the most loved of all time",
}


def ranked(rows: np.ndarray, values: np.ndarray, k: int) -> np.ndarray:
    """The k rows with the largest positive value, largest first, ties by row: one
    order, whichever subset of the same values it is computed from."""
    keep = values > 0
    rows, values = rows[keep], values[keep]
    if len(rows) > k:  # everything at or above the k-th value, its ties included
        kth = np.partition(values, len(values) - k)[len(values) - k]
        keep = values >= kth
        rows, values = rows[keep], values[keep]
    return rows[np.lexsort((rows, -values))][:k]


class PopularLists:
    """The most popular approved rows of every horizon, interleaved round-robin (rank 0 of
    every horizon, then rank 1, ...), each video once, in the first horizon that has it;
    and that horizon's index. Recomputed when the cache refreshes, not per request.

    Stored popularity keeps its order between writes (time multiplies a whole column
    alike), so a refresh need not rank every video again: each horizon keeps a shortlist
    of its `shortlist` best rows from the last full ranking, above which everything outside
    it lies (`floor`), and a refresh re-ranks the shortlist with the rows written or
    whose approval changed since. While the `length`-th best of those stays above the
    floor, the list is exactly the full ranking's; when it does not (many shortlisted
    videos fell, by skips or holds), or the popularity was rebased or restored, or the
    rows written are no longer kept, it ranks everything again."""

    def __init__(self, length: int = LIST_LEN, shortlist: int = 4 * LIST_LEN) -> None:
        self.length = length
        self.shortlist = max(shortlist, length)
        self._source: object = None  # the Popularity the state below was built from
        self._epoch = -1
        self._offset = 0
        self._size = 0
        self._approved = np.zeros(0, np.bool_)
        self._short = [np.zeros(0, np.int64) for _ in HORIZONS]  # per horizon, best first
        self._floor = np.zeros(len(HORIZONS))
        self._lists: list[np.ndarray] = []  # the last answer, per horizon
        self._mark = np.zeros(0, np.bool_)
        self._first = np.zeros(0, np.int64)  # scratch for the interleave, kept at its max
        self._interleaved: tuple[object, tuple[np.ndarray, np.ndarray]] = (
            None,
            _interleave([], np.zeros(0, np.int64)),
        )
        self.full = 0  # full rankings, for tests and profiles
        self.incremental = 0

    def __call__(self, query: Query) -> tuple[np.ndarray, np.ndarray]:
        pop = query.popularity
        if pop is None:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        size = query.size
        approved = query.table.approved[:size]
        lists: list[np.ndarray] | None = None
        if pop is self._source and pop.epoch == self._epoch and size >= self._size:
            touched, offset = pop.touched_since(self._offset)
            if touched is not None:
                lists = self._rank_changed(pop, approved, touched)
                self._offset = offset
                self.incremental += lists is not None
        if lists is None:
            lists = self._rank_all(pop, approved)
        if lists is not self._interleaved[0]:
            if len(self._first) < size:
                self._first = np.full(2 * size, np.iinfo(np.int64).max, np.int64)
            self._interleaved = (lists, _interleave(lists, self._first))
        return self._interleaved[1]

    def _rank_all(self, pop: Popularity, approved: np.ndarray) -> list[np.ndarray]:
        self.full += 1
        _, self._offset = pop.touched_since(1 << 62)  # everything written so far is in
        self._source, self._epoch = pop, pop.epoch
        self._size, self._approved = len(approved), approved.copy()
        rows = np.flatnonzero(approved)
        lists = []
        for j in range(len(HORIZONS)):
            values = pop.values[:, j]
            best = ranked(rows, values[rows], self.shortlist)
            lists.append(best[: self.length])
            # Outside a full shortlist every row is at most its last value; the rows at
            # that value leave it too (an outside row may tie them), so every row kept
            # lies strictly above the floor.
            floor = float(values[best[-1]]) if len(best) == self.shortlist else 0.0
            self._short[j] = best[values[best] > floor]
            self._floor[j] = floor
        self._lists = lists
        return lists

    def _rank_changed(
        self, pop: Popularity, approved: np.ndarray, touched: np.ndarray
    ) -> list[np.ndarray] | None:
        old = len(self._approved)
        changed = [touched[touched < len(approved)]]
        changed.append(np.flatnonzero(approved[:old] != self._approved))
        if len(approved) > old:  # new rows: anything written to them was touched
            changed.append(np.arange(old, len(approved))[approved[old:]])
        extra = np.unique(np.concatenate(changed))
        self._size, self._approved = len(approved), approved.copy()
        if len(extra) == 0:
            return self._lists  # nothing changed: the last answer
        servable = extra[approved[extra]]
        if len(self._mark) < len(approved):
            self._mark = np.zeros(2 * len(approved), np.bool_)
        mark = self._mark  # the changed rows, marked while the lists are merged
        mark[extra] = True
        try:
            return self._merge(pop, extra, servable, mark)
        finally:
            mark[extra] = False

    def _merge(
        self, pop: Popularity, extra: np.ndarray, servable: np.ndarray, mark: np.ndarray
    ) -> list[np.ndarray] | None:
        lists = []
        for j, short in enumerate(self._short):
            values = pop.values[:, j]
            short = short[~mark[short]]  # the unchanged rows, in order
            floor = self._floor[j]
            new = servable[values[servable] > floor]
            if len(new):  # merged in at their places (value, then row)
                new = new[np.lexsort((new, -values[new]))]
                kept, added = -values[short], -values[new]
                at = np.searchsorted(kept, added, side="left")
                ties = np.searchsorted(kept, added, side="right")
                for i in np.flatnonzero(ties > at).tolist():
                    at[i] += np.searchsorted(short[at[i] : ties[i]], new[i])
                short = np.insert(short, at, new)
            if len(short) > self.shortlist:  # what the cut leaves out is at most its first
                floor = self._floor[j] = max(floor, float(values[short[self.shortlist]]))
                short = short[: self.shortlist]
                short = short[values[short] > floor]
            if floor > 0 and len(short) < self.length:
                return None  # rows outside the shortlist may belong in the list
            self._short[j] = short
            lists.append(short[: self.length])
        self._lists = lists
        return lists


def _interleave(lists: list[np.ndarray], first: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rank 0 of every list, then rank 1, ...; each row once, at its first place (each
    list holds a row at most once). `first`: scratch over every row, at the int64 max,
    left so."""
    depth = max((len(r) for r in lists), default=0)
    if depth == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    n = len(lists)
    stacked = np.full((n, depth), -1, np.int64)
    for j, r in enumerate(lists):  # a row's first place: the least over the lists holding it
        stacked[j, : len(r)] = r
        first[r] = np.minimum(first[r], np.arange(len(r)) * n + j)
    at = np.flatnonzero(stacked.T.ravel() >= 0)  # places, rank-major
    order = stacked.T.ravel()[at]
    keep = first[order] == at
    first[order] = np.iinfo(np.int64).max
    order, at = order[keep], at[keep]
    return order, at % n


_NAMES = np.array([REASONS[name] for name, _ in HORIZONS], dtype=object)


class PopularRecall:
    name = "popular"
    cheap = True  # a precomputed list: runs past the recall budget

    def __init__(self, refresh_s: float = 2.0, background: bool = True) -> None:
        self.lists = PopularLists()
        self._lists = Cached(refresh_s, self.lists, background)

    def recall(self, query: Query, quota: int) -> Recalled:
        got: tuple[np.ndarray, np.ndarray] = self._lists.get(query)  # type: ignore[assignment]
        order, horizon = got
        if not len(order) or quota <= 0:
            return Recalled.join([])
        keep = np.flatnonzero(order < query.size)[:quota]
        return Recalled(order[keep], _NAMES[horizon[keep]])
