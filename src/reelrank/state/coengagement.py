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
        # Incremental snapshots: each video's neighbours and weights as `to_arrays` last
        # converted them, and the videos whose neighbours changed since.
        self._parts: dict[int, tuple[np.ndarray, np.ndarray]] = {}
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
        conversion can happen after the lock is released (`to_arrays`)."""
        pairs = self.pairs
        changed = {a: dict(pairs[a]) for a in self._dirty if a in pairs}
        self._dirty.clear()
        return GraphChanges(changed, list(pairs), dict(self.engagements))

    def to_arrays(self, changes: GraphChanges | None = None) -> dict[str, np.ndarray]:
        """The graph for a snapshot, from `changes` taken under the lock (taken here
        without one): every video with neighbours (`coengagement_src`, repeated once per
        neighbour) with its neighbours and raw weights in their order, and the engagement
        counts. Only the videos whose neighbours changed are converted again; the others
        reuse the arrays the last call (or the restore) made. One caller at a time."""
        if changes is None:
            changes = self.changes()
        parts = self._parts
        for a, nbrs in changes.changed.items():
            n = len(nbrs)
            parts[a] = (
                np.fromiter(nbrs.keys(), np.int64, n),
                np.fromiter(nbrs.values(), np.float64, n),
            )
        videos = changes.videos
        keys = [parts[a][0] for a in videos]
        counts = np.fromiter(map(len, keys), np.int64, len(keys))
        engaged = changes.engagements
        return {
            "coengagement_src": np.repeat(np.asarray(videos, np.int64), counts),
            "coengagement_dst": np.concatenate([np.zeros(0, np.int64), *keys]),
            "coengagement_weight": np.concatenate([np.zeros(0), *(parts[a][1] for a in videos)]),
            "coengagement_videos": np.fromiter(engaged.keys(), np.int64, len(engaged)),
            "coengagement_engagements": np.fromiter(engaged.values(), np.int64, len(engaged)),
        }

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> bool:
        """Restore the graph `to_arrays` saved; False when the arrays hold none (a
        snapshot from before the arrays: `load_json`)."""
        if "coengagement_src" not in arrays:
            return False
        src = arrays["coengagement_src"]
        # Own copies: the graph keeps slices of these, and a snapshot's arrays may be
        # views into its whole blob (`columnar.unpack`).
        dst, weight = (np.array(arrays[f"coengagement_{k}"]) for k in ("dst", "weight"))
        starts = np.flatnonzero(np.r_[True, src[1:] != src[:-1]])[: len(src)]
        ends = np.r_[starts[1:], len(src)][: len(starts)]
        keys, values = dst.tolist(), weight.tolist()
        self.pairs = {}
        self._parts = {}
        for a, lo, hi in zip(src[starts].tolist(), starts.tolist(), ends.tolist(), strict=True):
            self.pairs[a] = dict(zip(keys[lo:hi], values[lo:hi], strict=True))
            self._parts[a] = (dst[lo:hi], weight[lo:hi])
        self.engagements = dict(
            zip(
                arrays["coengagement_videos"].tolist(),
                arrays["coengagement_engagements"].tolist(),
                strict=True,
            )
        )
        self._dirty = set()
        return True

    def load_json(self, raw: dict[str, Any]) -> None:
        """Restore the graph from a snapshot written before `to_arrays`."""
        self.pairs = {int(a): {int(b): w for b, w in n.items()} for a, n in raw["pairs"].items()}
        self.engagements = {int(a): n for a, n in raw["engagements"].items()}
        self._parts = {}
        self._dirty = set(self.pairs)
