"""A collisionless embedding table: every admitted id owns a row.

Ids map to rows through a dict that grows on demand (no hashing, so no collisions). An id
is admitted only after `min_count` sightings; until then it shares the default row 0.
Rows not updated for `expire_s` (in event time) are freed and reused, and `capacity`
bounds the rows, so memory stays bounded under a stream of ever-new ids; the sightings of
not-yet-admitted ids are kept in a bounded, oldest-first-evicted counter for the same
reason. Sparse updates use row-wise Adagrad (one accumulator per row), so an update
touches only the rows in the batch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

DEFAULT_ROW = 0


class EmbeddingTable:
    """Rows of `dim` floats for string ids of one feature slot."""

    def __init__(
        self,
        name: str,
        dim: int,
        capacity: int = 1 << 20,
        min_count: int = 1,
        expire_s: float = 7 * 86400.0,
        pending_max: int = 1 << 18,
        init_std: float = 0.05,
        seed: int = 0,
    ) -> None:
        if capacity < 2:
            raise ValueError("capacity must hold the default row and one id")
        self.name = name
        self.dim = dim
        self.capacity = capacity
        self.min_count = min_count
        self.expire_s = expire_s
        self.pending_max = pending_max
        self.init_std = init_std
        self._rng = np.random.default_rng(seed)
        self.rows: dict[str, int] = {}
        self.ids: list[str | None] = [None]  # row -> id; row 0 is the shared default
        self.free: list[int] = []
        self.pending: dict[str, int] = {}  # sightings of ids not admitted yet
        size = min(capacity, 1024)
        self.weight = torch.zeros(size, dim)
        self.accum = torch.zeros(size)
        self.last_update = np.zeros(size, dtype=np.float64)
        self.weight[0] = self._init_rows(1)[0]
        self.touched: set[int] = set()
        self.evicted: set[str] = set()
        self.refused = 0  # admissions refused because the table was full

    # -- rows ----------------------------------------------------------------------------
    def __len__(self) -> int:
        """Admitted ids (the default row not counted)."""
        return len(self.rows)

    def _init_rows(self, n: int) -> torch.Tensor:
        return torch.from_numpy(
            self._rng.normal(0.0, self.init_std, (n, self.dim)).astype(np.float32)
        )

    def _grow(self) -> None:
        size = min(self.capacity, len(self.accum) * 2)
        weight = torch.zeros(size, self.dim)
        weight[: len(self.weight)] = self.weight
        accum = torch.zeros(size)
        accum[: len(self.accum)] = self.accum
        last = np.zeros(size, dtype=np.float64)
        last[: len(self.last_update)] = self.last_update
        self.weight, self.accum, self.last_update = weight, accum, last

    def _new_row(self, key: str, ts: float) -> int:
        if self.free:
            row = self.free.pop()
            self.ids[row] = key
        else:
            row = len(self.ids)
            if row >= self.capacity:
                self.refused += 1
                return DEFAULT_ROW
            if row >= len(self.accum):
                self._grow()
            self.ids.append(key)
        self.rows[key] = row
        self.weight[row] = self._init_rows(1)[0]
        self.accum[row] = 0.0
        self.last_update[row] = ts
        self.evicted.discard(key)
        return row

    def lookup(self, keys: list[str | None], admit: bool = False, ts: float = 0.0) -> np.ndarray:
        """(n,) rows for ids; unknown, unadmitted or missing ids get the default row.

        With admit=True (training), each call counts a sighting and admits an id once it
        has been seen `min_count` times.
        """
        out = np.zeros(len(keys), dtype=np.int64)
        rows = self.rows
        for i, key in enumerate(keys):
            if key is None:
                continue
            row = rows.get(key)
            if row is None and admit:
                seen = self.pending.pop(key, 0) + 1
                if seen >= self.min_count:
                    row = self._new_row(key, ts)
                else:
                    self.pending[key] = seen
                    if len(self.pending) > self.pending_max:
                        del self.pending[next(iter(self.pending))]
            if row is not None:
                out[i] = row
        return out

    # -- training ------------------------------------------------------------------------
    def apply_gradients(self, rows: np.ndarray, grad: torch.Tensor, lr: float, ts: float) -> None:
        """Row-wise Adagrad on the rows of one batch; repeated rows have their gradients
        summed first. rows: (n,) int64, grad: (n, dim)."""
        index = torch.from_numpy(rows)
        uniq, inverse = torch.unique(index, return_inverse=True)
        g = torch.zeros(len(uniq), self.dim).index_add_(0, inverse, grad)
        self.accum[uniq] += (g * g).mean(dim=1)
        self.weight[uniq] -= lr * g / torch.sqrt(self.accum[uniq] + 1e-8).unsqueeze(1)
        touched = uniq.numpy()
        self.last_update[touched] = np.maximum(self.last_update[touched], ts)
        self.touched.update(touched.tolist())

    def expire(self, now: float) -> int:
        """Free rows not updated since now - expire_s; return how many."""
        n = len(self.ids)
        stale = np.flatnonzero(self.last_update[1:n] < now - self.expire_s) + 1
        freed = 0
        for row in stale.tolist():
            key = self.ids[row]
            if key is None:
                continue
            del self.rows[key]
            self.ids[row] = None
            self.free.append(row)
            self.touched.discard(row)
            self.evicted.add(key)
            freed += 1
        return freed

    # -- sync ----------------------------------------------------------------------------
    def take_delta(self) -> dict[str, Any]:
        """The rows updated and ids evicted since the last call (for serving)."""
        rows = sorted(r for r in self.touched if r == DEFAULT_ROW or self.ids[r] is not None)
        delta = {
            "ids": ["" if r == DEFAULT_ROW else self.ids[r] for r in rows],
            "default": DEFAULT_ROW in rows,
            "vectors": self.weight[rows].numpy().copy()
            if rows
            else np.zeros((0, self.dim), np.float32),
            "evicted": sorted(self.evicted),
        }
        self.touched.clear()
        self.evicted.clear()
        return delta

    def full_delta(self) -> dict[str, Any]:
        """Every live row, as a delta a fresh serving table can start from."""
        rows = [DEFAULT_ROW, *sorted(self.rows.values())]
        return {
            "ids": ["", *[self.ids[r] for r in rows[1:]]],
            "default": True,
            "vectors": self.weight[rows].numpy().copy(),
            "evicted": [],
        }

    # -- checkpoints ---------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        n = len(self.ids)
        return {
            "weight": self.weight[:n].clone(),
            "accum": self.accum[:n].clone(),
            "last_update": torch.from_numpy(self.last_update[:n].copy()),
            "ids_packed": pack_sequences([["" if k is None else k for k in self.ids]]),
            "pending_packed": pack_sequences([self.pending]),
            "pending_counts": list(self.pending.values()),
            "refused": self.refused,
            "rng": json.dumps(self._rng.bit_generator.state),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        if "ids_packed" in state:
            (ids,) = unpack_sequences(state["ids_packed"])
            (pending,) = unpack_sequences(state["pending_packed"])
        else:  # a checkpoint written before the packed form
            ids, pending = state["ids"], state["pending_ids"]
        n = len(ids)
        while len(self.accum) < n:
            self._grow()
        self.weight[:n] = state["weight"]
        self.accum[:n] = state["accum"]
        self.last_update[:n] = state["last_update"].numpy()
        self.ids = [None if (i and not k) else k for i, k in enumerate(ids)]
        self.ids[0] = None
        self.rows = {k: i for i, k in enumerate(self.ids) if k is not None}
        self.free = [i for i, k in enumerate(self.ids) if i and k is None]
        self.pending = dict(zip(pending, state["pending_counts"], strict=True))
        self.refused = int(state["refused"])
        self._rng.bit_generator.state = json.loads(state["rng"])
        self.touched.clear()
        self.evicted.clear()


# -- compact id sequences for checkpoints ------------------------------------------------
def pack_sequences(seqs: Iterable[Iterable[str]]) -> dict[str, Any]:
    """Sequences of ids as a checkpoint holds them: each distinct id once (one string,
    newline-joined: ids hold no control characters) and int32 codes with each sequence's
    length. Pickled, that is four objects instead of one per id: at a million queued ids,
    seconds less at every stop."""
    codes: dict[str, int] = {}
    lengths: list[int] = []
    flat: list[int] = []
    for seq in seqs:
        before = len(flat)
        flat.extend(codes.setdefault(v, len(codes)) for v in seq)
        lengths.append(len(flat) - before)
    vocab = list(codes)
    joined = "\n".join(vocab)
    return {
        "vocab": joined if joined.count("\n") == max(len(vocab) - 1, 0) else vocab,
        "vocab_size": len(vocab),
        "codes": torch.tensor(flat, dtype=torch.int32),
        "lengths": torch.tensor(lengths, dtype=torch.int32),
    }


def unpack_sequences(packed: dict[str, Any]) -> list[list[str]]:
    """The sequences `pack_sequences` packed, in order."""
    vocab = packed["vocab"]
    if isinstance(vocab, str):
        vocab = vocab.split("\n") if packed["vocab_size"] else []
    ids = [vocab[c] for c in packed["codes"].tolist()]
    out: list[list[str]] = []
    at = 0
    for n in packed["lengths"].tolist():
        out.append(ids[at : at + n])
        at += n
    return out
