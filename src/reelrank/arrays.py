"""Arrays indexed by row that grow as rows are added: one doubling rule for every table
(catalog columns, counters, pools, vector indexes, serving tables)."""

from __future__ import annotations

from typing import Any

import numpy as np


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
