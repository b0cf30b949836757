"""Arrays indexed by row that grow as rows are added: one doubling rule for every table
(catalog columns, counters, pools, vector indexes, serving tables)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import repeat
from typing import Any

import numpy as np

# Items one C-level pass handles before the interpreter may switch threads: a pass over a
# million dict lookups holds the interpreter lock for 100 ms or more, and a request thread
# waiting for it waits that long; 50,000 at a time keeps each wait to a few milliseconds.
GIL_CHUNK = 50_000

Copy = Callable[[str, np.ndarray], np.ndarray]  # (name, array) -> a copy: copied, Mirror


def doubled(capacity: int, need: int) -> int:
    """The capacity to grow to for `need` rows: `capacity` doubled until it holds them
    (amortised O(1) per row added)."""
    capacity = max(capacity, 1)
    while capacity < need:
        capacity *= 2
    return capacity


def grown(old: np.ndarray, capacity: int, fill: Any = 0) -> np.ndarray:
    """A copy of `old` with `capacity` rows (the first axis); the new rows hold `fill`."""
    new = np.full((capacity, *old.shape[1:]), fill, dtype=old.dtype)
    new[: len(old)] = old
    return new


def copied(name: str, src: np.ndarray) -> np.ndarray:
    """A fresh copy of `src` (`Mirror`'s signature; `name` is not used)."""
    return src.copy()


class Mirror:
    """Copies of arrays into buffers kept from one call to the next, by name: a periodic
    copy of large arrays (a snapshot's, under the state lock) then writes memory that is
    already mapped instead of allocating fresh pages and faulting each one in, which at a
    million videos was most of the time the lock was held. A copy stays valid until the
    next copy under its name: one user at a time."""

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}

    def __call__(self, name: str, src: np.ndarray) -> np.ndarray:
        if src.ndim == 0:
            return src.copy()
        buf = self._buffers.get(name)
        fits = buf is not None and buf.dtype == src.dtype and buf.shape[1:] == src.shape[1:]
        if buf is None or not fits or len(buf) < len(src):
            have = len(buf) if buf is not None and fits else 0
            buf = np.empty((doubled(have, len(src)), *src.shape[1:]), src.dtype)
            self._buffers[name] = buf
        out = buf[: len(src)]
        np.copyto(out, src)
        return out

    @property
    def nbytes(self) -> int:
        """Memory the buffers hold."""
        return sum(b.nbytes for b in self._buffers.values())


def looked_up(get: Callable[[Any, int], Any], keys: Sequence[Any], default: int) -> np.ndarray:
    """`np.array([get(k, default) for k in keys], np.int64)`, by C-level passes of
    GIL_CHUNK keys (between them, other threads get the interpreter lock)."""
    out = np.empty(len(keys), dtype=np.int64)
    for start in range(0, len(keys), GIL_CHUNK):
        part = keys[start : start + GIL_CHUNK]
        out[start : start + len(part)] = np.fromiter(
            map(get, part, repeat(default)), np.int64, len(part)
        )
    return out


def numbered(keys: Sequence[Any], first: int) -> dict[Any, int]:
    """`dict(zip(keys, range(first, first + len(keys))))`, by C-level passes of
    GIL_CHUNK keys (a later repeat of a key wins, as in one pass)."""
    out: dict[Any, int] = {}
    for start in range(0, len(keys), GIL_CHUNK):
        part = keys[start : start + GIL_CHUNK]
        out.update(zip(part, range(first + start, first + start + len(part)), strict=True))
    return out
