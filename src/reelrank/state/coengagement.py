"""Item-to-item co-engagement: time-decayed item-CF, updated event by event.

When a user engages with video j, every video i they engaged with in the last
`window_s` (at most `depth` of them) gains a pair weight with j that decays with the time
between the two engagements (half-life `half_life_s`). Neighbours are ranked by the
weight over sqrt(engagements_i * engagements_j), so very popular videos do not crowd out
every list, and each video keeps at most `max_neighbours`: memory is bounded per video.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np
import orjson


@dataclass(frozen=True)
class GraphChanges:
    changed: dict[int, dict[int, float]]  # video -> a copy of its neighbours
    videos: list[int]  # every video with neighbours
    engagements: dict[int, int]


class CoEngagement:
    def __init__(
        self,
        window_s: float = 3600.0,
        half_life_s: float = 1800.0,
        depth: int = 10,
        max_neighbours: int = 100,
    ) -> None:
        self.window_s = window_s
        self.half_life_s = half_life_s
        self.depth = depth
        self.max_neighbours = max_neighbours
        self.pairs: dict[int, dict[int, float]] = {}
        self.engagements: dict[int, int] = {}
        # Incremental snapshots: each video's neighbours as `to_json` last serialised them,
        # and the videos whose neighbours changed since.
        self._blobs: dict[int, orjson.Fragment] = {}
        self._dirty: set[int] = set()

    def add(self, history: list[tuple[int, float]], row: int, ts: float) -> None:
        """A user engaged with `row` at `ts`; history holds their earlier (row, ts)."""
        self.engagements[row] = self.engagements.get(row, 0) + 1
        for other, t in history[-self.depth :]:
            if other == row or ts - t > self.window_s or t > ts:
                continue
            w = 2.0 ** (-(ts - t) / self.half_life_s)
            self._bump(other, row, w)
            self._bump(row, other, w)

    def _bump(self, a: int, b: int, w: float) -> None:
        self._dirty.add(a)
        nbrs = self.pairs.setdefault(a, {})
        nbrs[b] = nbrs.get(b, 0.0) + w
        if len(nbrs) > self.max_neighbours:
            del nbrs[min(nbrs, key=nbrs.__getitem__)]

    def neighbours(self, row: int, k: int) -> list[tuple[int, float]]:
        """The k videos most co-engaged with `row`, best first, with their scores."""
        keys, scores = self.weights(row)
        top = np.argsort(-scores, kind="stable")[:k]
        return list(zip(keys[top].tolist(), scores[top].tolist(), strict=True))

    def weights(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """Every neighbour of `row` (int64, in insertion order) and its normalised score."""
        nbrs = self.pairs.get(row)
        if not nbrs:
            return np.zeros(0, np.int64), np.zeros(0)
        nbrs = nbrs.copy()  # one atomic copy: events may add neighbours meanwhile
        n = len(nbrs)
        keys = np.fromiter(nbrs.keys(), np.int64, n)
        raw = np.fromiter(nbrs.values(), np.float64, n)
        eng = self.engagements
        counts = np.fromiter(map(eng.get, nbrs, repeat(1)), np.float64, n)
        return keys, raw / np.sqrt(eng.get(row, 1) * counts)

    def changes(self) -> GraphChanges:
        """Under the writers' lock: copies of the neighbours that changed since the last
        call, every video's key and the engagement counts; cheap (dict copies), so the
        serialising can happen after the lock is released (`to_json`)."""
        pairs = self.pairs
        changed = {a: dict(pairs[a]) for a in self._dirty if a in pairs}
        self._dirty.clear()
        return GraphChanges(changed, list(pairs), dict(self.engagements))

    def to_json(self, changes: GraphChanges | None = None) -> dict[str, Any]:
        """The graph for a snapshot (orjson serialises it), from `changes` taken under
        the lock (taken here without one). Only the videos whose neighbours changed are
        serialised again; the others reuse the bytes the last call made. One caller at
        a time (the snapshot)."""
        if changes is None:
            changes = self.changes()
        blobs = self._blobs
        for a, nbrs in changes.changed.items():
            blobs[a] = orjson.Fragment(orjson.dumps({str(b): w for b, w in nbrs.items()}))
        return {
            "pairs": {str(a): blobs[a] for a in changes.videos},
            "engagements": {str(a): n for a, n in changes.engagements.items()},
        }

    def load_json(self, raw: dict[str, Any]) -> None:
        self.pairs = {int(a): {int(b): w for b, w in n.items()} for a, n in raw["pairs"].items()}
        self.engagements = {int(a): n for a, n in raw["engagements"].items()}
        self._blobs = {}
        self._dirty = set(self.pairs)
