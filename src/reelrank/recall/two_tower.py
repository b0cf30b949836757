"""Two-tower retrieval: the user's vector against every approved video's, by nearest
neighbour search (exact, then faiss IVF once the catalog is large).

`RetrievalIndex` keeps the video vectors in step with the model: every
`two_tower_refresh_s` after new weights arrive it recomputes all of them into a new index
and swaps it in; videos uploaded or edited in between are placed (or removed) at once with
the current weights. A new index's cells start from the last index's (a few k-means
iterations follow the model's drift), so a rebuild costs the vectors and their placement,
not a clustering from scratch.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np

from ..index.vectors import VectorIndex
from ..rank.learned import ModelServer
from ..schema import ReviewStatus, Video
from ..state.catalog import VideoTable
from ..types import Query, Recalled

log = logging.getLogger(__name__)

CHUNK = 65_536  # videos embedded per numpy call during a full refresh


class RetrievalIndex:
    """Every approved video's vector under one retrieval model, `kind` "two_tower" or
    "sequence" (the sequence model's item embeddings)."""

    def __init__(
        self,
        model: ModelServer,
        table: VideoTable,
        refresh_s: float,
        ann_min: int,
        nprobe: int,
        kind: str = "two_tower",
        stop: threading.Event | None = None,
        recall: float = 0.0,
    ) -> None:
        self.model = model
        self.stop = stop  # set when the process stops: a rebuild under way is given up
        self.kind = kind
        if kind == "two_tower":
            self._version, self._vectors = model.retrieval_version, model.tt_video_vectors
            self._user = model.tt_user_vector
        elif kind == "sequence":
            self._version, self._vectors = model.sequence_version, model.seq_video_vectors
            self._user = model.seq_user_vector
        else:
            raise ValueError(f"unknown retrieval index kind {kind!r}")
        self.table = table
        self.refresh_s = refresh_s
        self.ann_min = ann_min
        self.nprobe = nprobe
        self.recall = recall  # recall@100 the index's cells scanned are tuned to (0: nprobe)
        self.index: VectorIndex | None = None
        self.version: tuple[int, int] | None = None  # model versions the index was built with
        self.built_at = 0.0
        self.build_s = 0.0
        self._refreshing = threading.Lock()  # one refresh at a time
        self._lock = threading.Lock()  # guards `_building` and `_pending`
        self._building = False
        self._build_started = 0.0  # monotonic time the running (or last) refresh began
        self._pending: list[tuple[int, Video]] = []  # placed while a refresh runs

    def _new_index(self, dim: int) -> VectorIndex:
        # built synchronously: the refresh already runs off the request path
        return VectorIndex(
            dim, ann_min=self.ann_min, nprobe=self.nprobe, background=False, recall=self.recall
        )

    def refresh(self, force: bool = False) -> bool:
        """Recompute every approved video's vector if the model changed and the last
        refresh is older than `refresh_s` (or `force`). True when it rebuilt."""
        with self._refreshing:
            return self._refresh(force)

    def _refresh(self, force: bool) -> bool:
        version = self._version()
        if version is None:
            return False
        wait = max(self.refresh_s, 10.0 * self.build_s)  # at most a tenth of a core
        due = self.index is None or (
            version != self.version and time.monotonic() - self.built_at >= wait
        )
        if not (due or force):
            return False
        started = time.perf_counter()
        with self._lock:
            self._building = True
            self._build_started = time.monotonic()
        try:
            size = self.table.size
            rows = np.flatnonzero(self.table.approved[:size])
            vectors = []
            for i in range(0, len(rows), CHUNK):
                if self._stopping():
                    return False
                vectors.append(self._vectors(rows[i : i + CHUNK]))
            dim = vectors[0].shape[1] if vectors else self._vectors(rows[:0]).shape[1]
            index = self._new_index(dim)
            index.cancel = self.stop
            earlier = self.index.cells() if self.index is not None else None
            if earlier is not None:  # the model moved a little: refine its cells, not anew
                index.warm_start(*earlier)
            if self.index is not None:  # its users' queries tune the new index's cells
                index.remember(self.index)
            if len(rows):  # at ann_min or more, this upsert trains the IVF index once
                index.upsert(rows, np.concatenate(vectors))
            if self._stopping():
                return False
            with self._lock:  # videos placed during the build, in order, then the swap
                self._place(index, self._pending)
                self.index = index
        finally:
            with self._lock:  # on failure too: stale placements are never replayed later
                self._pending = []
                self._building = False
        self.version = version
        self.built_at = time.monotonic()
        self.build_s = time.perf_counter() - started
        log.info("%s index rebuilt: %d videos in %.2f s", self.kind, len(rows), self.build_s)
        return True

    def _stopping(self) -> bool:
        if self.stop is None or not self.stop.is_set():
            return False
        log.info("%s index rebuild given up: stopping", self.kind)
        return True

    def place(self, placed: list[tuple[int, Video]]) -> None:
        """New or edited videos: vectors with the current weights (approved only)."""
        with self._lock:
            if self._building:
                self._pending.extend(placed)
            if self.index is not None:
                self._place(self.index, placed)

    def _place(self, index: VectorIndex, placed: list[tuple[int, Video]]) -> None:
        if not placed or self._version() is None:
            return
        keep = np.array([r for r, v in placed if v.status is ReviewStatus.APPROVED], np.int64)
        drop = np.array([r for r, v in placed if v.status is not ReviewStatus.APPROVED], np.int64)
        if len(keep):
            index.upsert(keep, self._vectors(keep))
        if len(drop):
            index.remove(drop)

    def user_vector(self, query: Query) -> np.ndarray | None:
        if self.index is None or self._version() is None:
            return None
        return self._user(query)

    def remember_best(self, query: Query, vec: np.ndarray, scores: np.ndarray) -> None:
        """The best score in the index for this user, from a search already made (its
        first result), so `relative_scores` need not search again."""
        if len(scores):
            query.cache.setdefault(f"{self.kind}_best", (vec, float(scores[0])))

    def relative_scores(self, query: Query, rows: np.ndarray) -> np.ndarray | None:
        """Each row's score for the user less the best score in the index, so 0 is the
        model's first choice in the whole catalog (a scale that does not depend on which
        other candidates a request has); None without a model, an index or a user vector."""
        key = f"{self.kind}_best"
        if key not in query.cache:
            vec = self.user_vector(query)
            index = self.index
            best = None
            if vec is not None and index is not None:
                _, scores = index.search(vec, 1)
                best = (vec, float(scores[0])) if len(scores) else None
            query.cache[key] = best
        found = query.cache[key]
        if found is None or not len(rows):
            return None if found is None else np.zeros(0)
        vec, best = found
        return np.asarray(self._vectors(rows) @ vec - best, dtype=np.float64)

    def status(self) -> dict[str, Any]:
        index = self.index
        return {
            "ready": index is not None,
            "videos": len(index) if index is not None else 0,
            "approximate": bool(index is not None and index.approximate),
            # (lists scanned per query, recall@100 measured there) at the last build
            "ann_tuned": list(index.tuner.tuned)
            if index is not None and index.tuner.tuned
            else None,
            "model_version": list(self.version) if self.version else None,
            "last_build_s": round(self.build_s, 3) if index is not None else None,
            "age_s": round(time.monotonic() - self.built_at, 1) if index is not None else None,
            # seconds into a rebuild under way (the index above serves meanwhile), else None
            "building_s": (
                round(time.monotonic() - self._build_started, 1) if self._building else None
            ),
        }


class TwoTowerRecall:
    """The videos nearest the user's vector from the two-tower model's index."""

    name = "two_tower"

    def __init__(self, retrieval: RetrievalIndex | None = None) -> None:
        self.retrieval = retrieval  # None: the channel recalls nothing

    def recall(self, query: Query, quota: int) -> Recalled:
        retrieval = self.retrieval
        if retrieval is None:
            return Recalled.join([])
        index = retrieval.index
        vec = retrieval.user_vector(query)
        if vec is None or index is None:
            return Recalled.join([])
        keys, scores = index.search(vec, quota)
        retrieval.remember_best(query, vec, scores)
        keys = keys[keys < query.size]
        return Recalled.of(keys, "picked for you by the retrieval model")


class SequenceRecall:
    """The videos the sequence model expects next, from the user's latest engagements."""

    name = "sequence"

    def __init__(self, retrieval: RetrievalIndex | None = None) -> None:
        self.retrieval = retrieval  # the sequence model's index; None: recalls nothing

    def recall(self, query: Query, quota: int) -> Recalled:
        retrieval = self.retrieval
        if retrieval is None:
            return Recalled.join([])
        index = retrieval.index
        vec = retrieval.user_vector(query)
        if vec is None or index is None:
            return Recalled.join([])
        keys, scores = index.search(vec, quota)
        retrieval.remember_best(query, vec, scores)
        keys = keys[keys < query.size]
        return Recalled.of(keys, "what viewers with your latest watches went on to enjoy")
