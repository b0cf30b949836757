"""The cells of an approximate index: faiss's inverted lists over k-means cells, the
vectors in them stored in half precision."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import faiss
import numpy as np

WARM_ITERS = 4  # k-means iterations of a warm-started training (a fresh one runs ten)


def ivf_index(quantizer: Any, dim: int, nlist: int) -> Any:
    """An inverted-file index over `quantizer`'s cells, vectors stored in half precision."""
    return faiss.IndexIVFScalarQuantizer(
        quantizer, dim, nlist, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
    )


def cluster(
    ivf: Any, sample: np.ndarray, start: np.ndarray | None, iters: int, check: Callable[[], None]
) -> None:
    """k-means of `sample` into `ivf`'s quantizer (spherical, with `ivf.cp`, as
    `ivf.train` would), from the cells `start` or from random points, one iteration per
    faiss call with `check()` (which raises to give up) before each; then the codes."""
    dim = sample.shape[1]
    centroids = start
    for _ in range(iters):
        check()
        clustering = faiss.Clustering(dim, ivf.nlist, ivf.cp)
        clustering.niter = 1
        if centroids is not None:  # the last iteration's cells: k-means goes on
            faiss.copy_array_to_vector(centroids.ravel(), clustering.centroids)
        clustering.train(sample, ivf.quantizer)  # leaves the cells in the quantizer
        centroids = faiss.vector_to_array(clustering.centroids).reshape(-1, dim)
    ivf.train(sample[: ivf.nlist])  # only the codes: the quantizer holds nlist cells
    assert ivf.is_trained and ivf.quantizer.ntotal == ivf.nlist


def fetch(k: int) -> int:
    """Keys an approximate search asks its lists for to return k: a few more, so that the
    exact scores, not the half-precision codes, decide which k are returned."""
    return k + k // 8 + 8


def trained_ivf(
    dim: int,
    vecs: np.ndarray,
    seed: tuple[np.ndarray, int] | None,
    warm: tuple[np.ndarray, int] | None,
    check: Callable[[], None],
) -> tuple[Any, np.ndarray | None, int]:
    """Empty lists over trained cells for `vecs`: `seed`'s cells as they are, `warm`'s
    refined by WARM_ITERS k-means iterations on a sample of 32 vectors a cell, or about
    4 sqrt(n) cells trained afresh (ten iterations, 64 a cell). Returns the index, the
    centroids trained (None when seeded) and the vector count the cells were first
    trained on. `check()` raises to give up."""
    quantizer = faiss.IndexFlatIP(dim)
    rng = np.random.default_rng(0)
    if seed is not None:
        centroids, trained_at = seed
        quantizer.add(centroids)  # a quantizer holding the centroids: trained
        ivf: Any = ivf_index(quantizer, dim, len(centroids))
        ivf.train(vecs[: len(centroids)])  # the cells are given: this trains only the codes
        assert ivf.is_trained
        return ivf, None, trained_at
    if warm is not None:
        centroids, trained_at = warm
        ivf = ivf_index(quantizer, dim, len(centroids))
        sample = vecs[rng.permutation(len(vecs))[: len(centroids) * 32]]
        cluster(ivf, sample, centroids, WARM_ITERS, check)
        return ivf, quantizer.reconstruct_n(0, ivf.nlist), trained_at
    nlist = max(16, int(4 * math.sqrt(len(vecs))))
    nlist = min(nlist, max(1, len(vecs) // 39))
    ivf = ivf_index(quantizer, dim, nlist)
    sample = vecs[rng.permutation(len(vecs))[: nlist * 64]]
    cluster(ivf, sample, None, ivf.cp.niter, check)
    return ivf, quantizer.reconstruct_n(0, nlist), len(vecs)
