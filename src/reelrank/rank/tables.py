"""The serving copy of an embedding table (`train/embedding.py` is the trainer's): rows
arrive as deltas published by the trainer, keyed by id, with the same default row 0."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..arrays import doubled, grown, numbered


class ServingTable:
    """The serving copy of a table: rows arrive as deltas from the trainer.

    Readers gather from `weight` without a lock: new rows are written before their id is
    published in `rows`, and growth swaps in a new array whole.
    """

    def __init__(self, name: str, dim: int) -> None:
        self.name = name
        self.dim = dim
        self.rows: dict[str, int] = {}
        self.free: list[int] = []
        self.weight = np.zeros((1024, dim), dtype=np.float32)
        self.size = 1  # row 0 is the default row

    def apply(self, delta: dict[str, Any]) -> list[str]:
        """Apply a delta; return the ids whose rows were added or removed."""
        if not self.rows and not self.free and self._load(delta):
            return list(self.rows)
        changed: list[str] = []
        for key in delta["evicted"]:
            row = self.rows.pop(key, None)
            if row is not None:
                self.free.append(row)
                changed.append(key)
        vectors = delta["vectors"]
        for key, vec in zip(delta["ids"], vectors, strict=True):
            if key == "":
                self.weight[0] = vec
                continue
            row = self.rows.get(key)
            if row is None:
                row = self.free.pop() if self.free else self._append()
                self.weight[row] = vec
                self.rows[key] = row
                changed.append(key)
            else:
                self.weight[row] = vec
        return changed

    def _load(self, delta: dict[str, Any]) -> bool:
        """An empty table takes a whole delta (a full model) in array operations, not a
        Python step per id: at a million videos per slot that is most of a full apply.
        False (nothing done) when the delta names an id twice."""
        keys = list(delta["ids"])
        vectors = np.asarray(delta["vectors"], dtype=np.float32).reshape(len(keys), self.dim)
        if "" in keys:  # the default row
            at = keys.index("")
            default = vectors[at]
            keys.pop(at)
            vectors = np.delete(vectors, at, axis=0)
        else:
            default = None
        rows = numbered(keys, 1)
        if len(rows) != len(keys):
            return False
        weight = np.zeros((doubled(len(self.weight), len(keys) + 1), self.dim), np.float32)
        weight[0] = self.weight[0] if default is None else default
        weight[1 : len(keys) + 1] = vectors
        self.weight = weight  # written before the ids are published
        self.size = len(keys) + 1
        self.rows = rows
        return True

    def _append(self) -> int:
        if self.size >= len(self.weight):
            self.weight = grown(self.weight, doubled(len(self.weight), self.size + 1))
        self.size += 1
        return self.size - 1

    def lookup(self, keys: Sequence[str | None]) -> np.ndarray:
        rows = self.rows
        return np.array([rows.get(k, 0) if k is not None else 0 for k in keys], dtype=np.int64)
