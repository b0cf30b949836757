"""How many cells an approximate search scans, measured rather than guessed.

Which `nprobe` holds a recall depends on the vectors (tight topics or diffuse ones, 32
learned dimensions or 384 of a caption model) and on the queries (a user's mix of recent
videos lies between cells more than a video's own vector does). So the index keeps its
latest queries and measures: recall@TUNE_K of the search as served (`fetch(k)` keys from
the lists, scored exactly, the k best kept) against exact search, at the cap, half of it,
a quarter ... a sixteenth, and scans the fewest that reach the target. It measures at each
build, again whenever the index has doubled since, and once real queries replace the
stored vectors a first measurement had to use. At a million 128-dimensional caption
vectors a measurement takes one to two seconds of a background thread."""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import faiss
import numpy as np

from .cells import fetch

QUERY_MEMORY = 64  # latest queries kept
TUNE_QUERIES = 32  # queries a measurement uses
TUNE_K = 100  # the recall measured is recall@TUNE_K
TUNE_CHUNK = 131_072  # stored vectors scored per product when finding the exact answers


def exact_top(vectors: np.ndarray, live: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """(m, k) keys (rows of `vectors`, live ones only) of the k best inner products of
    each query, in chunks so the score matrix stays small."""
    m = len(queries)
    best_s = np.full((m, 0), -np.inf, np.float32)
    best_k = np.zeros((m, 0), np.int64)
    for start in range(0, len(live), TUNE_CHUNK):
        rows = start + np.flatnonzero(live[start : start + TUNE_CHUNK])
        s = np.concatenate([best_s, queries @ vectors[rows].T], axis=1)
        at = np.concatenate([best_k, np.broadcast_to(rows, (m, len(rows)))], axis=1)
        if s.shape[1] > k:
            top = np.argpartition(-s, k - 1, axis=1)[:, :k]
            s, at = np.take_along_axis(s, top, axis=1), np.take_along_axis(at, top, axis=1)
        best_s, best_k = s, at
    return best_k


def tuning_queries(
    recent: np.ndarray, vectors: np.ndarray, live: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, bool]:
    """Unit rows to measure on, and whether they are stored vectors: the latest
    TUNE_QUERIES queries served, or while fewer than half that came, stored vectors at
    random (a video's own vector is a "more like this" query; on the caption index at a
    million videos their recall by cells scanned ran slightly below that of users'
    content profiles)."""
    q = recent[-TUNE_QUERIES:]
    norms = np.linalg.norm(q, axis=1)
    q = q[norms > 0] / norms[norms > 0, None]
    stored = len(q) < TUNE_QUERIES // 2
    if stored:
        rows = np.flatnonzero(live)
        q = vectors[rng.choice(rows, min(TUNE_QUERIES, len(rows)), replace=False)]
    return np.ascontiguousarray(q, dtype=np.float32), stored


def tune_nprobe(
    ivf: Any,
    vectors: np.ndarray,
    live: np.ndarray,
    queries: np.ndarray,
    cap: int,
    target: float,
    check: Callable[[], None],
    guard: Callable[[], Any] = contextlib.nullcontext,
) -> tuple[int, float]:
    """The fewest cells, among `cap`, half of it ... a sixteenth, at which `ivf` (keyed by
    rows of `vectors`) finds at least `target` of the exact top TUNE_K of `queries` on
    average; `cap` when none below it does. Returns (cells, recall measured there).
    `check()` raises to give up; each search runs inside `guard()` (the index's read
    lock while the index serves)."""
    k = min(TUNE_K, int(live.sum()))
    truth = exact_top(vectors, live, queries, k)
    recall = 0.0
    for nprobe in sorted({max(1, cap >> i) for i in range(5)}):
        check()
        params = faiss.SearchParametersIVF(nprobe=nprobe)  # type: ignore[call-arg]
        with guard():
            _, got = ivf.search(queries, fetch(k), params=params)
        hits = 0
        for q, found, want in zip(queries, got, truth, strict=True):
            found = found[(found >= 0) & (found < len(vectors))]  # (grown since: not scored)
            served = found[np.argsort(-(vectors[found] @ q), kind="stable")[:k]]
            hits += len(np.intersect1d(served, want))
        recall = round(hits / (k * len(queries)), 4)
        if recall >= target:
            return nprobe, recall
    return cap, recall


class Tuner:
    """The latest queries of one index and the cells its approximate search scans."""

    def __init__(self, cap: int, target: float) -> None:
        self.cap = cap  # the most cells a query scans
        self.target = target  # recall@TUNE_K kept; 0: always `cap`
        self.queries: deque[np.ndarray] = deque(maxlen=QUERY_MEMORY)
        self.tuned: tuple[int, float] | None = None  # (cells, recall) of the last measurement
        self.count = 0  # live vectors at the last measurement
        self.on_stored = False  # the last measurement used stored vectors (too few queries)
        self.running = False  # a measurement outside a build is under way
        self._claim = threading.Lock()

    def record(self, query: np.ndarray) -> None:
        self.queries.append(query.copy())

    def recent(self, dim: int) -> np.ndarray:
        return np.array(list(self.queries), dtype=np.float32).reshape(-1, dim)

    def due(self, count: int) -> bool:
        """A measurement outside a build is due: the index has doubled since the last, or
        that one had to use stored vectors and real queries have come since."""
        if self.target <= 0 or self.tuned is None or self.running:
            return False
        queried = self.on_stored and len(self.queries) >= TUNE_QUERIES
        return count >= 2 * self.count or queried

    def claim(self, count: int) -> bool:
        """Whether a measurement is due and this caller is to run it (one at a time; the
        caller clears `running` when done)."""
        if not self.due(count):
            return False
        with self._claim:
            if not self.due(count):
                return False
            self.running = True
            return True

    def tune(
        self,
        ivf: Any,
        vectors: np.ndarray,
        live: np.ndarray,
        check: Callable[[], None],
        guard: Callable[[], Any] = contextlib.nullcontext,
    ) -> int:
        """Measure `ivf` over `vectors[live]` and keep the answer; the cells to scan."""
        rng = np.random.default_rng(len(self.queries))
        queries, stored = tuning_queries(self.recent(vectors.shape[1]), vectors, live, rng)
        found = tune_nprobe(ivf, vectors, live, queries, self.cap, self.target, check, guard)
        self.tuned, self.count, self.on_stored = found, int(live.sum()), stored
        return found[0]
