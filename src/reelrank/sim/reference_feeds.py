"""Reference feeds for closed-loop simulation: the baselines of evaluate.replay, a random
feed, and an oracle that knows the planted tastes (a ceiling, not a recommender)."""

from __future__ import annotations

import numpy as np

from ..evaluate.data import Interaction
from ..evaluate.replay import System
from .catalog import SimCatalog
from .closed_loop import Viewed
from .viewers import Behaviour, SimViewer


class ReplayFeed:
    """A reference system from evaluate.replay; a page it cannot fill (item_knn before a
    viewer has any positive) is filled from `fallback`."""

    def __init__(self, system: System, fallback: System | None = None) -> None:
        self.system = system
        self.fallback = fallback
        self.name = system.name
        self.ids: list[str] = []
        self.index: dict[str, int] = {}
        self.durations = np.zeros(0, dtype=np.int64)

    def _systems(self) -> list[System]:
        return [self.system] if self.fallback is None else [self.system, self.fallback]

    def start(self, catalog: SimCatalog, viewers: list[SimViewer], now: float) -> None:
        self.ids = catalog.ids
        self.index = {v: i for i, v in enumerate(catalog.ids)}
        self.durations = catalog.duration_ms
        self.upload(list(range(catalog.initial)), now)

    def upload(self, videos: list[int], now: float) -> None:
        for s in self._systems():
            for i in videos:
                s.add_item(self.ids[i], now)

    def page(self, viewer: SimViewer, n: int, now: float) -> tuple[list[int], str | None]:
        got = self.system.recommend(viewer.id, now, n)
        if len(got) < n and self.fallback is not None:
            more = self.fallback.recommend(viewer.id, now, n + len(got))
            chosen = set(got)
            got += [v for v in more if v not in chosen][: n - len(got)]
        return [self.index[v] for v in got], None

    def send(self, viewer: SimViewer, request_id: str | None, shown: list[Viewed]) -> None:
        for v in shown:
            duration = int(self.durations[v.video])
            r = v.reaction
            x = Interaction(viewer.id, self.ids[v.video], v.at, watch_ratio=r.watch_ms / duration)
            for s in self._systems():
                s.learn(x, r.positive(duration))

    def end_session(self, now: float) -> None:
        pass


class _UnseenFeed:
    """Shared by the random and oracle feeds: arrived videos, and what each viewer saw."""

    name = "unseen"

    def __init__(self) -> None:
        self.available = 0
        self.seen: dict[str, set[int]] = {}

    def start(self, catalog: SimCatalog, viewers: list[SimViewer], now: float) -> None:
        self.available = catalog.initial

    def upload(self, videos: list[int], now: float) -> None:
        self.available = max([self.available, *(i + 1 for i in videos)])

    def send(self, viewer: SimViewer, request_id: str | None, shown: list[Viewed]) -> None:
        self.seen.setdefault(viewer.id, set()).update(v.video for v in shown)

    def end_session(self, now: float) -> None:
        pass


class RandomFeed(_UnseenFeed):
    """Videos the viewer has not seen, uniformly at random."""

    name = "random"

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.rng = np.random.default_rng(seed)

    def page(self, viewer: SimViewer, n: int, now: float) -> tuple[list[int], str | None]:
        seen = self.seen.get(viewer.id, set())
        out: list[int] = []
        for _ in range(20):
            for i in self.rng.integers(0, self.available, size=2 * n).tolist():
                if i not in seen and i not in out:
                    out.append(i)
            if len(out) >= n or len(seen) + len(out) >= self.available:
                break
        return out[:n], None


class OracleFeed(_UnseenFeed):
    """Knows every viewer's planted taste and satiation: the unseen videos of highest
    match now. A reference ceiling, not a recommender."""

    name = "oracle"

    def __init__(self, behaviour: Behaviour) -> None:
        super().__init__()
        self.b = behaviour
        self.tags = np.zeros((0, 0), dtype=np.float32)
        self.has_tags = np.zeros(0, dtype=bool)
        self.quality = np.zeros(0)

    def start(self, catalog: SimCatalog, viewers: list[SimViewer], now: float) -> None:
        super().start(catalog, viewers, now)
        self.tags = catalog.tag_matrix()
        self.has_tags = np.asarray(self.tags.any(axis=1), dtype=bool)
        self.quality = catalog.quality

    def page(self, viewer: SimViewer, n: int, now: float) -> tuple[list[int], str | None]:
        a = self.available
        taste = viewer.effective_taste(self.b)
        interest = np.where(
            self.has_tags[:a], (self.tags[:a] * taste).max(axis=1), self.b.untagged_taste
        )
        scores = interest * (0.4 + 0.6 * self.quality[:a])
        seen = self.seen.get(viewer.id)
        if seen:
            scores[list(seen)] = -np.inf
        k = min(n, a)
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [int(i) for i in top if np.isfinite(scores[i])], None
