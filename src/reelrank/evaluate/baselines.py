"""The reference systems a replay scores reelrank against: all-time popularity,
popularity with a half-life, and item-to-item nearest neighbours; and the `System`
protocol every replayed recommender implements."""

from __future__ import annotations

from typing import Protocol

import numpy as np
from scipy import sparse

from .data import Interaction


class System(Protocol):
    """A recommender under replay."""

    name: str

    def add_item(self, item: str, ts: float) -> None:
        """A new item joins the catalog (after its first interaction's test)."""

    def recommend(self, user: str, ts: float, k: int) -> list[str]:
        """The user's top k items of the catalog at time ts, best first."""

    def learn(self, x: Interaction, positive: bool) -> None:
        """Take in one interaction."""


class _Catalog:
    """Item ids <-> dense indices, and each user's items (never recommended again)."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.ids: list[str] = []
        self.seen: dict[str, set[int]] = {}

    def add(self, item: str) -> int:
        found = self.index.get(item)
        if found is None:
            found = self.index[item] = len(self.ids)
            self.ids.append(item)
        return found

    def top(self, scores: np.ndarray, user: str, k: int) -> list[str]:
        scores = scores.astype(np.float64, copy=True)
        seen = self.seen.get(user)
        if seen:
            scores[list(seen)] = -np.inf
        k = min(k, len(scores))
        if k <= 0:
            return []
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [self.ids[i] for i in top if np.isfinite(scores[i])]

    def saw(self, user: str, item: str) -> None:
        i = self.index.get(item)
        if i is not None:
            self.seen.setdefault(user, set()).add(i)


class PopularSystem:
    """Most positives so far."""

    name = "popular"

    def __init__(self) -> None:
        self.catalog = _Catalog()
        self.counts = np.zeros(0)

    def add_item(self, item: str, ts: float) -> None:
        self.catalog.add(item)
        self.counts = np.resize(self.counts, len(self.catalog.ids))
        self.counts[-1] = 0.0

    def recommend(self, user: str, ts: float, k: int) -> list[str]:
        # Tie-break toward older items (lower index) so results are deterministic.
        tiebreak = -np.arange(len(self.counts)) * 1e-9
        return self.catalog.top(self.counts + tiebreak, user, k)

    def learn(self, x: Interaction, positive: bool) -> None:
        i = self.catalog.index.get(x.item)
        if i is not None and positive:
            self.counts[i] += 1.0
        self.catalog.saw(x.user, x.item)


class RecentPopularSystem(PopularSystem):
    """Positives decayed with a half-life: what is popular lately."""

    name = "recent_popular"

    def __init__(self, half_life_s: float = 14 * 86400.0) -> None:
        super().__init__()
        self.half_life_s = half_life_s
        self.t0: float | None = None

    def learn(self, x: Interaction, positive: bool) -> None:
        i = self.catalog.index.get(x.item)
        if i is not None and positive:
            if self.t0 is None:
                self.t0 = x.ts
            exponent = (x.ts - self.t0) / self.half_life_s
            if exponent > 500:  # rescale before overflow
                self.counts *= 2.0**-exponent
                self.t0, exponent = x.ts, 0.0
            self.counts[i] += 2.0**exponent
        self.catalog.saw(x.user, x.item)


class ItemKNNSystem:
    """Item-based CF: cosine over users' positives, the `neighbours` most similar items
    per item, recomputed from the interactions so far whenever the positives grew by a
    `refresh` share (at least 200) since the last build; a user is scored by the summed
    similarity to their last `history` positives."""

    name = "item_knn"

    def __init__(self, neighbours: int = 50, history: int = 20, refresh: float = 0.1) -> None:
        self.catalog = _Catalog()
        self.neighbours = neighbours
        self.history = history
        self.refresh = refresh
        self.pairs: list[tuple[int, int]] = []  # (user index, item index) positives
        self.users: dict[str, int] = {}
        self.recent: dict[str, list[int]] = {}
        self.sim: sparse.csr_matrix | None = None
        self._since = 0

    def add_item(self, item: str, ts: float) -> None:
        self.catalog.add(item)

    def _rebuild(self) -> None:
        n_items = len(self.catalog.ids)
        if not self.pairs:
            return
        u, i = np.array(self.pairs).T
        x = sparse.csr_matrix(
            (np.ones(len(u), np.float32), (u, i)), shape=(len(self.users), n_items)
        )
        x.data[:] = 1.0  # repeated pairs count once
        norms = np.sqrt(np.asarray(x.sum(axis=0)).ravel())
        norms[norms == 0] = 1.0
        xt = x.T.tocsr()
        rows, cols, vals = [], [], []
        block = 512
        for start in range(0, n_items, block):
            co = (xt[start : start + block] @ x).toarray()  # (block, n_items)
            co /= norms[start : start + block, None] * norms[None, :]
            for r in range(co.shape[0]):
                co[r, start + r] = 0.0
            k = min(self.neighbours, n_items - 1)
            if k <= 0:
                continue
            top = np.argpartition(-co, k - 1, axis=1)[:, :k]
            for r in range(co.shape[0]):
                keep = top[r][co[r, top[r]] > 0]
                rows.extend([start + r] * len(keep))
                cols.extend(keep.tolist())
                vals.extend(co[r, keep].tolist())
        self.sim = sparse.csr_matrix((vals, (rows, cols)), shape=(n_items, n_items))
        self._since = 0

    def recommend(self, user: str, ts: float, k: int) -> list[str]:
        n_items = len(self.catalog.ids)
        history = self.recent.get(user)
        if self.sim is None or not history or n_items == 0:
            return []
        known = [i for i in history if i < self.sim.shape[0]]
        if not known:
            return []
        scores = np.zeros(n_items)
        got = np.asarray(self.sim[known].sum(axis=0)).ravel()
        scores[: len(got)] = got
        scores[scores <= 0] = -np.inf  # no evidence: not recommended
        return self.catalog.top(scores, user, k)

    def learn(self, x: Interaction, positive: bool) -> None:
        self.catalog.saw(x.user, x.item)
        i = self.catalog.index.get(x.item)
        if i is None or not positive:
            return
        u = self.users.setdefault(x.user, len(self.users))
        self.pairs.append((u, i))
        recent = self.recent.setdefault(x.user, [])
        recent.append(i)
        del recent[: -self.history]
        self._since += 1
        if self._since >= max(200, self.refresh * len(self.pairs)):
            self._rebuild()
