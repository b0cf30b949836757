"""The cells of an approximate index: faiss's inverted lists over k-means cells, the
vectors in them stored in half precision."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faiss
import numpy as np


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
