"""Fresh: the newest approved videos, in the user's language first when known."""

from __future__ import annotations

import numpy as np

from ..types import Query, Recalled
from .base import Cached, top_by

LIST_LEN = 2000


def _newest(query: Query) -> np.ndarray:
    rows = np.flatnonzero(query.table.approved[: query.size])
    return top_by(rows, query.table.created_at[rows], LIST_LEN)


class FreshRecall:
    name = "fresh"
    cheap = True  # a precomputed list: runs past the recall budget

    def __init__(self, refresh_s: float = 2.0, background: bool = True) -> None:
        self._newest = Cached(refresh_s, _newest, background)

    def recall(self, query: Query, quota: int) -> Recalled:
        rows: np.ndarray = self._newest.get(query)  # type: ignore[assignment]
        rows = rows[rows < query.size]  # the shared list may come from a larger catalog
        language = query.table.languages.get(query.language) if query.language else -1
        if language >= 0:
            same = query.table.language[rows] == language
            rows = np.concatenate([rows[same], rows[~same]])
        return Recalled.of(rows[:quota], "new video")
