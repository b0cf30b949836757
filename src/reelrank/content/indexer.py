"""The content index's writer: embeds approved videos' captions and hashtags into the
content vector index (read by the content channel and the diversity policy), checks new
videos for embedding near-duplicates, and fills the index after a restart.

A fast embedder (hashed) embeds in the caller's thread. A slow one (MiniLM) embeds on a
background worker, so a catalog upsert never waits for the model: the video reaches the
content index a moment later (every other channel sees it at once). A slow embedder's
vectors are stored beside the records (`VectorStore`, with a fingerprint of the text
embedded), and a restart reads them back instead of embedding the catalog again; only
videos whose text changed, or that were never embedded, are embedded. A fast embedder's
vectors cost less to compute than to read, so they are not stored.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
from collections.abc import Callable

import numpy as np

from ..config import Settings
from ..index.vectors import VectorIndex
from ..schema import Video
from ..state.catalog import VideoTable
from ..storage import VectorStore
from .duplicates import near_duplicates
from .embed import Embedder, video_text

log = logging.getLogger(__name__)

SYNC_FILL_MAX = 20_000  # a loaded catalog up to this size is embedded before serving
CHUNK = 4096  # videos embedded per call


def fingerprint(text: str) -> str:
    """What a stored vector was computed from: a short hash of the embedded text."""
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


class ContentIndexer:
    def __init__(
        self,
        settings: Settings,
        table: VideoTable,
        index: VectorIndex,
        embedder: Embedder,
        vectors: VectorStore | None = None,
    ) -> None:
        if index.dim != embedder.dim:
            raise ValueError(f"content index dim {index.dim} != embedder dim {embedder.dim}")
        self.settings = settings
        self.table = table
        self.index = index
        self.embedder = embedder
        # Where a slow embedder's vectors are kept (None: not kept).
        self.vectors = vectors if embedder.slow else None
        self.space = f"content/{embedder.name}/{embedder.dim}"
        # The approximate index's cells are kept for any embedder (a few MB), so that a
        # restart does not train them again.
        self._cells = vectors
        index.on_trained = self._keep_cells
        self.restored = 0  # videos whose stored vector the last fill read back
        self.embedded = 0  # videos embedded since start
        self._lock = threading.Lock()  # guards the index against concurrent writers
        self._queue: queue.SimpleQueue[tuple[int, Video]] = queue.SimpleQueue()
        self._waiting = 0
        self._worker: threading.Thread | None = None
        self.filled = threading.Event()  # the loaded catalog is fully embedded
        # Called with (row, original row, cosine) for embedding near-duplicates found
        # while embedding new videos (the lifecycle marks them).
        self.on_near_duplicates: Callable[[list[tuple[int, int, float]]], None] | None = None

    def place(self, placed: list[tuple[int, Video]]) -> None:
        """Embed approved videos into the index; drop the others from it at once."""
        approved = self.table.approved  # servable: approved and the creator in good standing
        keep = [(r, v) for r, v in placed if approved[r]]
        drop = [r for r, v in placed if not approved[r]]
        if drop:
            with self._lock:
                self.index.remove(np.array(drop))
        if not keep:
            return
        if not self.embedder.slow:
            self._embed(keep, check=True)
            return
        with self._lock:
            self._waiting += len(keep)
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._embed_queued, name="reelrank-content", daemon=True
                )
                self._worker.start()
        for item in keep:
            self._queue.put(item)

    @property
    def waiting(self) -> int:
        """Approved videos queued for a slow embedder."""
        return self._waiting

    def fill(self) -> None:
        """Index every approved video of the loaded catalog: stored vectors whose text is
        unchanged are read back at once; the rest are embedded. More than SYNC_FILL_MAX
        to embed, or any number with a slow embedder, are embedded in the background, so
        a restart serves before every caption is embedded again; until `filled` is set
        the content channel sees part of the catalog."""
        table = self.table
        approved = [
            (r, v)
            for r, v in enumerate(table.records[: table.size])
            if v is not None and table.approved[r]
        ]
        self._seed_cells()
        small = len(approved) <= SYNC_FILL_MAX
        if small and self.vectors is not None:
            approved = self._restore(approved)  # about a second at SYNC_FILL_MAX
        if small and not self.embedder.slow:
            self._fill(approved)
        else:  # a large catalog's stored vectors are read back in the background too
            threading.Thread(
                target=self._fill,
                args=(approved, not small),
                name="reelrank-content-fill",
                daemon=True,
            ).start()

    def _keep_cells(self, centroids: np.ndarray, trained_at: int) -> None:
        """Store the approximate index's trained cells (ids 0..n-1, each marked with the
        cell count and the vectors they were trained on: rows of an earlier, larger
        training that are not overwritten do not match the mark and are ignored)."""
        if self._cells is None:
            return
        mark = f"{len(centroids)}:{trained_at}"
        try:
            self._cells.put_vectors(
                f"{self.space}/cells",
                [str(i) for i in range(len(centroids))],
                [mark] * len(centroids),
                centroids,
            )
        except Exception:  # derived data: a restart trains them again
            log.exception("keeping the content index's cells failed")

    def _seed_cells(self) -> None:
        """Give the index the cells kept by an earlier training, if any are stored."""
        if self._cells is None:
            return
        ids, marks, matrix = self._cells.load_vectors(f"{self.space}/cells")
        at = {i: j for j, i in enumerate(ids)}
        if "0" not in at:
            return
        mark = marks[at["0"]]
        try:
            n, trained_at = (int(x) for x in mark.split(":"))
        except ValueError:
            return
        rows = [at.get(str(i), -1) for i in range(n)]
        if min(rows) < 0 or any(marks[j] != mark for j in rows):
            return
        self.index.seed(matrix[rows], trained_at)

    def _restore(self, approved: list[tuple[int, Video]]) -> list[tuple[int, Video]]:
        """Index the stored vectors of `approved` whose text is unchanged; return the
        videos left to embed."""
        assert self.vectors is not None
        ids, prints, matrix = self.vectors.load_vectors(self.space)
        if not ids or matrix.shape[1] != self.embedder.dim:
            return approved
        stored = {i: (p, j) for j, (i, p) in enumerate(zip(ids, prints, strict=True))}
        hits: list[tuple[int, Video, int]] = []  # (row, record read, stored vector)
        rest: list[tuple[int, Video]] = []
        for r, v in approved:
            found = stored.get(v.id)
            if found is not None and found[0] == fingerprint(video_text(v)):
                hits.append((r, v, found[1]))
            else:
                rest.append((r, v))
        if hits:
            with self._lock:  # a video upserted meanwhile keeps what its upsert gave it
                records, ok = self.table.records, self.table.approved
                hits = [(r, v, j) for r, v, j in hits if records[r] is v and ok[r]]
                if hits:
                    rows = np.array([r for r, _, _ in hits], np.int64)
                    self.index.upsert(rows, matrix[[j for _, _, j in hits]])
            self.restored = len(hits)
            log.info(
                "content index: %d stored vectors read back, %d to embed", len(hits), len(rest)
            )
        return rest

    def _fill(self, placed: list[tuple[int, Video]], restore: bool = False) -> None:
        """Embed chunk by chunk (with `restore`, after reading stored vectors back). A
        video upserted meanwhile keeps the vector its upsert gave it (its record is no
        longer the one embedded here)."""
        try:
            if restore and self.vectors is not None:
                placed = self._restore(placed)
            for i in range(0, len(placed), CHUNK):
                self._embed(placed[i : i + CHUNK])
            log.info("content index filled: %d videos", len(self.index))
        except Exception:
            log.exception("filling the content index failed")
        finally:
            self.filled.set()

    def _embed(self, chunk: list[tuple[int, Video]], check: bool = False) -> None:
        """Embed and upsert; a video whose record changed meanwhile, or that stopped being
        servable, is skipped (its own upsert indexes the new record). With `check`, new
        videos are compared with the index first (embedding near-duplicates)."""
        texts = [video_text(v) for _, v in chunk]
        vectors = self.embedder.embed(texts)
        found: list[tuple[int, int, float]] = []
        with self._lock:
            records, approved = self.table.records, self.table.approved
            ok = [j for j, (r, v) in enumerate(chunk) if records[r] is v and approved[r]]
            if ok:
                rows = np.array([chunk[j][0] for j in ok])
                s = self.settings
                if check and s.duplicate_cosine > 0 and self.on_near_duplicates is not None:
                    found = near_duplicates(
                        self.index,
                        self.table,
                        rows,
                        vectors[ok],
                        s.duplicate_cosine,
                        s.duplicate_duration_ms,
                    )
                self.index.upsert(rows, vectors[ok])
            self.embedded += len(ok)
        if self.vectors is not None and ok:
            self.vectors.put_vectors(
                self.space,
                [chunk[j][1].id for j in ok],
                [fingerprint(texts[j]) for j in ok],
                vectors[ok],
            )
        if found and self.on_near_duplicates is not None:
            self.on_near_duplicates(found)

    def _embed_queued(self) -> None:
        while True:
            chunk = [self._queue.get()]
            while len(chunk) < CHUNK:
                try:
                    chunk.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._embed(chunk, check=True)
            except Exception:
                log.exception(
                    "embedding %d videos failed; they stay out of the content index", len(chunk)
                )
            with self._lock:
                self._waiting -= len(chunk)
