"""The recall-source contract and shared helpers."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np

from ..state.catalog import Postings
from ..types import Query, Recalled


class RecallSource(Protocol):
    """One candidate channel. It may return fewer rows than `quota`, never more, and
    may return rows the filters will remove (unapproved, seen, hidden).

    A channel whose class sets `cheap = True` reads a precomputed list (O(quota) per
    request): the pipeline runs it even when the recall budget is spent, and reads it
    deeper when the other channels leave a page short."""

    name: str

    def recall(self, query: Query, quota: int) -> Recalled: ...


def top_by(rows: np.ndarray, key: np.ndarray, k: int) -> np.ndarray:
    """The k rows with the largest key, best first (key is indexed by position in rows)."""
    if k <= 0 or len(rows) == 0:
        return rows[:0]
    if len(rows) > k:
        part = np.argpartition(-key, k - 1)[:k]
        rows, key = rows[part], key[part]
    return rows[np.argsort(-key, kind="stable")]


class HotLists:
    """The hottest rows under each key of a Postings index, kept for up to `ttl_s` of the
    requests' clock (and recomputed at once when the key's postings change), so a request
    takes a short list instead of ranking every video under a popular hashtag. Channels
    that rank the same postings by the same hotness may share one."""

    def __init__(self, ttl_s: float, length: int = 500, max_keys: int = 100_000) -> None:
        self.ttl_s = ttl_s
        self.length = length
        self.max_keys = max_keys
        self._lists: dict[tuple[int, int], tuple[np.ndarray, float, np.ndarray]] = {}

    def top(
        self, postings: Postings, key: int, hot: np.ndarray, size: int, k: int, now: float
    ) -> np.ndarray:
        """Up to k of the key's hottest rows below `size`, hottest first, as of `now` (the
        request's time: a replay's lists age on its event clock)."""
        rows = postings.rows(key)
        cache_key = (id(postings), key)
        found = self._lists.get(cache_key)
        if found is None or found[0] is not rows or not 0 <= now - found[1] <= self.ttl_s:
            if len(self._lists) >= self.max_keys:
                self._lists.clear()  # rare; bounds memory over many keys
            top = top_by(rows, hot[rows], self.length)
            found = (rows, now, top)
            self._lists[cache_key] = found
        top = found[2]
        return top[top < size][:k]


@functools.lru_cache(maxsize=1)
def _refresher() -> ThreadPoolExecutor:
    """One background thread for every cached list's recomputation (submitting never
    waits for a thread to start)."""
    return ThreadPoolExecutor(1, thread_name_prefix="reelrank-recall-cache")


class Cached:
    """A value recomputed at most every `ttl_s` seconds of the requests' clock (or sooner
    when the catalog grew, so new videos show up within a quarter second). Ages are read
    from the request's `now`: the wall clock when serving, the event clock in a replay or
    simulation, so a replayed request sees lists as fresh as a served one would.

    A cheap value (last computed in under INLINE_S) is recomputed by the request that
    finds it stale, the others keep the previous one meanwhile. An expensive one (a large
    catalog) is recomputed on a background thread while every request keeps the previous
    value, so no request pays for it; without `background` (event-clocked engines, whose
    results must not depend on a thread's timing) the request that finds it stale does.
    """

    INLINE_S = 0.002

    def __init__(
        self, ttl_s: float, compute: Callable[[Query], object], background: bool = True
    ) -> None:
        self.ttl_s = ttl_s
        self.background = background
        self._compute = compute
        self._value: object = None
        self._key: tuple[int, float] = (-1, 0.0)
        self._cost = 0.0  # seconds the last computation took
        self._lock = threading.Lock()

    def get(self, query: Query) -> object:
        size, stamp = self._key
        age = query.request.now - stamp  # negative when a request's clock went back: stale
        fresh = 0 <= age < self.ttl_s and (size == query.size or age < min(self.ttl_s, 0.25))
        if self._value is not None and fresh:
            return self._value
        if self._value is not None and self.background and self._cost >= self.INLINE_S:
            if self._lock.acquire(blocking=False):
                _refresher().submit(self._refresh, query)
            return self._value
        if self._lock.acquire(blocking=self._value is None):
            self._refresh(query)
        return self._value

    def _refresh(self, query: Query) -> None:
        """Recompute; the caller holds `_lock`, released here."""
        try:
            started = time.perf_counter()
            value = self._compute(query)
            self._cost = time.perf_counter() - started
            self._value = value
            self._key = (query.size, query.request.now)
        finally:
            self._lock.release()
