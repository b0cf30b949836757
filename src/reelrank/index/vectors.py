"""Vectors keyed by video row, searched by inner product: exact, or approximate with faiss.

The index always keeps the exact matrix (the test oracle, the source for training the
approximate index, and the scores it returns). Once `ann_min` vectors are live, a
background thread trains a faiss IVF index (inverted lists over k-means cells; at most
`nprobe` cells scanned per query, with `recall` the fewest that keep it on the latest
queries, `tuning.py`) and swaps it in; until then, and whenever `exact=True` is
asked, search is a matrix product. IVF was chosen over HNSW by `benchmarks/bench_ann.py`:
at a million 32-dimensional vectors (4,000 cells) nprobe 128 gives recall@100 0.973
against exact search at p99 under 1 ms, with 50,000+ upserts/s and removal; HNSW (hnswlib,
M=32, efSearch=400) gave 0.776 at 2,000 upserts/s and took five minutes to build. The
lists hold each vector in half precision (faiss's fp16 scalar quantiser): a scan reads
half the memory of float32 lists, with the same recall (`bench_ann.py`), and the keys
found are scored again exactly from the matrix."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import faiss
import numpy as np
import torch

from ..arrays import doubled, grown
from .cells import fetch, trained_ivf
from .rwlock import RWLock
from .tuning import Tuner

log = logging.getLogger(__name__)

faiss.omp_set_num_threads(1)  # one query per request: threads cost more than they save


ADD_CHUNK = 131_072  # vectors placed in the lists per call during a build


class _Cancelled(Exception):
    """A build given up because `VectorIndex.cancel` was set."""


class VectorIndex:
    """Unit vectors by integer key (a video row); top-k by inner product."""

    def __init__(
        self,
        dim: int,
        ann_min: int = 10_000,
        nprobe: int = 128,
        background: bool = True,
        recall: float = 0.0,
    ) -> None:
        self.dim = dim
        self.ann_min = ann_min
        self.nprobe = nprobe  # the most cells a query scans
        self.tuner = Tuner(nprobe, recall)  # with recall > 0, the fewest cells that keep it
        self.background = background
        self.vectors = np.zeros((1024, dim), dtype=np.float32)
        self.live = np.zeros(1024, dtype=bool)
        self.count = 0  # live vectors
        self.end = 0  # one past the largest key ever set: exact search scans [:end]
        self._lock = RWLock()
        self._ivf: Any = None
        self._trained_at = 0  # live count when the approximate index was last trained
        self._building = False
        self._build_lock = threading.Lock()
        self._pending: list[tuple[np.ndarray, np.ndarray | None]] = []  # writes during a build
        self.trainings = 0  # approximate indexes trained (k-means) since this one was made
        # Called from the build with (cells' centroids, vectors they were trained on) after
        # each training, to keep them for a restart (see `seed`).
        self.on_trained: Callable[[np.ndarray, int], None] | None = None
        self._seed: tuple[np.ndarray, int] | None = None
        # Set to give up a build at its next step (the process is stopping): search stays
        # as it was (exact, or the last approximate index).
        self.cancel: threading.Event | None = None
        self._warm: tuple[np.ndarray, int] | None = None
        self.refinements = 0  # trainings that started from an earlier index's cells

    # -- writes ----------------------------------------------------------------------------
    def upsert(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Set the vectors of `keys` (new or replaced); they are normalised to unit length.
        A key repeated in one batch takes its last vector."""
        keys = np.asarray(keys, dtype=np.int64)
        if len(keys) == 0:
            return
        if int(keys.min()) < 0:
            raise ValueError("vector keys must not be negative")
        vecs = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(keys), self.dim)
        ascending = len(keys) < 2 or bool((keys[1:] > keys[:-1]).all())  # distinct, no sort
        if not ascending and len(np.unique(keys)) < len(keys):
            last = len(keys) - 1 - np.unique(keys[::-1], return_index=True)[1]
            keys, vecs = keys[last], vecs[last]
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        vecs = (vecs / np.where(norms > 0, norms, 1.0)).astype(np.float32)
        with self._lock.write():
            need = int(keys.max()) + 1
            if need > len(self.live):
                self._grow(need)
            self.count += int((~self.live[keys]).sum())
            self.vectors[keys] = vecs
            self.live[keys] = True
            self.end = max(self.end, need)
            if self._ivf is not None:
                self._ivf.remove_ids(keys)
                self._ivf.add_with_ids(vecs, keys)
            if self._building:
                self._pending.append((keys, vecs))
        self._maybe_build()
        self._maybe_tune()

    def remove(self, keys: np.ndarray) -> None:
        """Drop `keys` (unknown keys are ignored); the next query no longer returns them."""
        keys = np.unique(np.asarray(keys, dtype=np.int64))
        keys = keys[(keys >= 0) & (keys < len(self.live))]
        if len(keys) == 0:
            return
        with self._lock.write():
            keys = keys[self.live[keys]]
            self.count -= len(keys)
            self.live[keys] = False
            if self._ivf is not None and len(keys):
                self._ivf.remove_ids(keys)
            if self._building:
                self._pending.append((keys, None))

    def _grow(self, need: int) -> None:
        cap = doubled(len(self.live), need)
        self.vectors, self.live = grown(self.vectors, cap), grown(self.live, cap, False)

    # -- the approximate index -----------------------------------------------------------
    @property
    def approximate(self) -> bool:
        return self._ivf is not None

    @property
    def building(self) -> bool:
        """An approximate index is being trained (searches meanwhile use the last one)."""
        return self._building

    def _maybe_build(self) -> None:
        if self._building or self.count < self.ann_min:
            return
        if self._ivf is not None and self.count < 4 * self._trained_at:
            return
        self._building = True  # one scheduled build; _build takes it from here
        if self.background:
            threading.Thread(target=self._build, name="reelrank-ann-build", daemon=True).start()
        else:
            self._build()

    def seed(self, centroids: np.ndarray, trained_at: int) -> None:
        """Cells of an earlier training (their centroids, trained on `trained_at` vectors)
        for the next build to use instead of training: at a million vectors training is
        most of a build (about 80 of 140 s at 128 dimensions), so a restart's approximate
        index is ready in the time it takes to add the vectors. Ignored when of another
        dimension, and by a build over 4x the vectors they were trained on or fewer
        vectors than cells (it trains afresh, as it would have)."""
        centroids = np.asarray(centroids, dtype=np.float32)
        shaped = centroids.ndim == 2 and len(centroids) > 0 and centroids.shape[1] == self.dim
        if shaped and trained_at > 0 and np.isfinite(centroids).all():
            self._seed = (np.ascontiguousarray(centroids), int(trained_at))

    def warm_start(self, centroids: np.ndarray, trained_at: int) -> None:
        """Cells of an index over an earlier version of these vectors (a retrieval model
        a few minutes older) for the next build to start k-means from: `WARM_ITERS`
        iterations on half the sample instead of ten from random points, continuing one
        clustering across rebuilds. Ignored as `seed` is: another dimension, or a build
        over 4x the vectors they were first trained on (it trains afresh)."""
        centroids = np.asarray(centroids, dtype=np.float32)
        shaped = centroids.ndim == 2 and len(centroids) > 0 and centroids.shape[1] == self.dim
        if shaped and trained_at > 0 and np.isfinite(centroids).all():
            self._warm = (np.ascontiguousarray(centroids), int(trained_at))

    def cells(self) -> tuple[np.ndarray, int] | None:
        """The approximate index's cell centroids and the vector count they were first
        trained on (for `warm_start` or `seed`), None while search is exact."""
        with self._lock.read():
            ivf, trained_at = self._ivf, self._trained_at
        if ivf is None:
            return None
        return ivf.quantizer.reconstruct_n(0, ivf.nlist), trained_at

    def build_now(self) -> None:
        """Train and swap in the approximate index in this thread (tests and benchmarks);
        a build already running finishes first."""
        self._build()

    def _build(self) -> None:
        with self._build_lock:  # one build at a time, so none swaps in a stale index
            with self._lock.write():
                self._building = True
                self._pending = []
            try:
                self._train_and_swap()
            except _Cancelled:
                log.info("building the approximate index was abandoned: stopping")
            except Exception:
                log.exception("building the approximate index failed; exact search continues")
            finally:
                with self._lock.write():
                    self._building = False
                    self._pending = []  # a failed build leaves nothing to replay later

    def _train_and_swap(self) -> None:
        with self._lock.read():
            keys = np.flatnonzero(self.live)
            vecs = self.vectors[keys]
        seed, warm = self._seed, self._warm
        if seed is not None and len(keys) >= 4 * seed[1]:
            self._seed = seed = None  # outgrown: trained afresh, as it would have been
        if seed is not None and len(seed[0]) > len(keys):
            seed = None  # fewer vectors than cells: kept for a later build
        if warm is not None and len(keys) >= 4 * warm[1]:
            self._warm = warm = None
        if warm is not None and len(warm[0]) * 39 > len(keys):
            warm = None  # too few vectors to refine every cell: kept for a later build
        if seed is not None:
            self._seed = warm = None
        elif warm is not None:
            self._warm = None
        ivf, trained, trained_at = trained_ivf(self.dim, vecs, seed, warm, self._check_cancel)
        self.refinements += warm is not None
        nlist = ivf.nlist
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]
        ivf.nprobe = self.nprobe
        for start in range(0, len(keys), ADD_CHUNK):  # a stop waits for one chunk at most
            self._check_cancel()
            ivf.add_with_ids(vecs[start : start + ADD_CHUNK], keys[start : start + ADD_CHUNK])
        if self.tuner.target > 0:  # not serving yet: measured without the read lock
            ivf.nprobe = self.tuner.tune(
                ivf, self.vectors, self.live[: self.end], self._check_cancel
            )
        with self._lock.write():
            for pk, pv in self._pending:  # writes that raced the build, in order
                ivf.remove_ids(pk)
                if pv is not None:
                    ivf.add_with_ids(pv, pk)
            self._pending = []
            self._ivf = ivf
            self._trained_at = trained_at
        if trained is None:
            log.info("approximate index built: %d vectors in %d stored cells", len(keys), nlist)
            return
        if warm is None:
            self.trainings += 1
        how = "refined from earlier cells" if warm is not None else "trained"
        log.info("approximate index %s: %d vectors, %d cells", how, len(keys), nlist)
        if self.on_trained is not None:
            self.on_trained(trained, trained_at)

    def remember(self, other: VectorIndex) -> None:
        """The queries an index of the same kind served (a rebuild's predecessor), to tune on."""
        self.tuner.queries.extend(other.tuner.queries)

    def _maybe_tune(self) -> None:
        if self._building or not self.tuner.claim(self.count):
            return
        if self.background:
            threading.Thread(target=self._tune, name="reelrank-ann-tune", daemon=True).start()
        else:
            self._tune()

    def _tune(self) -> None:
        """Measure the serving index again (never beside a build: it measures its own)."""
        if self._build_lock.acquire(blocking=False):
            try:
                ivf, live, read = self._ivf, self.live[: self.end], self._lock.read
                cells = self.tuner.tune(ivf, self.vectors, live, self._check_cancel, read)
                with self._lock.write():
                    ivf.nprobe = cells
            except _Cancelled:
                pass
            except Exception:
                log.exception("measuring the approximate index failed; its cells scanned stay")
                self.tuner.count, self.tuner.on_stored = self.count, False  # not till doubled
            finally:
                self._build_lock.release()
        self.tuner.running = False

    def _check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise _Cancelled

    # -- reads ---------------------------------------------------------------------------
    def search(
        self, query: np.ndarray, k: int, exact: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k keys with the largest inner product with `query`, best first, and their
        scores. Approximate once the index is large enough, unless `exact`."""
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, self.dim)
        if k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        self.tuner.record(q[0])
        self._maybe_tune()
        with self._lock.read():
            ivf = None if exact else self._ivf
            if ivf is not None:
                _, keys = ivf.search(q, fetch(k))
                keys = keys[0][keys[0] >= 0]
                scores = self.vectors[keys] @ q[0]  # exact scores of the keys found
                order = np.lexsort((keys, -scores))[:k]  # ties by key
                return keys[order].astype(np.int64), scores[order]
            n = self.end
            scores = self.vectors[:n] @ q[0]
            if self.count < n:  # rows removed or never filled score nothing
                scores[~self.live[:n]] = -np.inf
            live = min(k, self.count)
        if live <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        # torch's top-k selects and sorts about three times faster than numpy's
        # argpartition + argsort over a catalog's scores.
        got, at = torch.topk(torch.from_numpy(scores), live, sorted=True)
        top, best = at.numpy(), got.numpy()
        ok = np.isfinite(best)
        return top[ok].astype(np.int64), best[ok].astype(np.float32)

    def search_many(
        self, queries: np.ndarray, k: int, nprobe: int | None = None, min_score: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top k for each of m queries: keys (m, k), -1 padded, and scores (m, k), -inf
        padded. `nprobe` overrides the cells scanned (few suffice for near-duplicates);
        with `min_score`, only keys scoring at least that are returned (cheaper when
        exact: no full ranking)."""
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        m = len(q)
        keys = np.full((m, k), -1, dtype=np.int64)
        scores = np.full((m, k), -np.inf, dtype=np.float32)
        if k <= 0 or m == 0:
            return keys, scores
        with self._lock.read():
            ivf = self._ivf
            if ivf is not None:
                params = faiss.SearchParametersIVF(nprobe=nprobe or ivf.nprobe)  # type: ignore[call-arg]
                _, got_k = ivf.search(q, fetch(k), params=params)
                ok = got_k >= 0
                # exact scores of the keys found, each row best first again (ties by key)
                got_s = np.einsum("mkd,md->mk", self.vectors[np.where(ok, got_k, 0)], q)
                got_s[~ok] = -np.inf
                if min_score is not None:
                    got_s[got_s < min_score] = -np.inf
                order = np.lexsort((got_k, -got_s), axis=1)[:, :k]
                got_k = np.take_along_axis(got_k, order, axis=1)
                got_s = np.take_along_axis(got_s, order, axis=1)
                ok = np.isfinite(got_s)
                keys[ok], scores[ok] = got_k[ok], got_s[ok]
                return keys, scores
            n = self.end
            live = self.live[:n]
            take = min(k, int(live.sum()))
            if take == 0:
                return keys, scores
            block = max(1, 16_000_000 // max(n, 1))  # bounds the (block, n) score matrix
            for start in range(0, m, block):
                part = q[start : start + block] @ self.vectors[:n].T
                part[:, ~live] = -np.inf
                if min_score is not None:
                    for i, j in zip(*np.nonzero(part >= min_score), strict=True):
                        row = start + int(i)
                        free = np.flatnonzero(keys[row] < 0)
                        worst = int(np.argmin(scores[row]))
                        if len(free):
                            keys[row, free[0]], scores[row, free[0]] = j, part[i, j]
                        elif part[i, j] > scores[row, worst]:
                            keys[row, worst], scores[row, worst] = j, part[i, j]
                    continue
                top = np.argpartition(-part, take - 1, axis=1)[:, :take]
                top_s = np.take_along_axis(part, top, axis=1)
                order = np.argsort(-top_s, axis=1, kind="stable")
                keys[start : start + block, :take] = np.take_along_axis(top, order, axis=1)
                scores[start : start + block, :take] = np.take_along_axis(top_s, order, axis=1)
        return keys, scores

    def vector(self, key: int) -> np.ndarray | None:
        """A copy of the stored unit vector of a key, or None."""
        if 0 <= key < len(self.live) and self.live[key]:
            return self.vectors[key].copy()
        return None

    def vectors_of(self, keys: np.ndarray) -> np.ndarray:
        """(n, dim) stored vectors; zero rows for unknown keys."""
        keys = np.asarray(keys, dtype=np.int64)
        vectors, live = self.vectors, self.live  # one consistent pair of arrays
        ok = (keys >= 0) & (keys < len(live))
        out = np.zeros((len(keys), self.dim), dtype=np.float32)
        idx = keys[ok]
        out[ok] = np.where(live[idx, None], vectors[idx], 0.0)
        return out

    def __len__(self) -> int:
        return self.count
