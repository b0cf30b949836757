"""Ranking and catalog metrics. A ranking is judged by the 0-based rank of the item the
user actually chose next in a list taken from the whole catalog (no sampled negatives)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np


def hit(rank: int | None, k: int) -> float:
    """HR@k of one test: 1 when the chosen item is among the first k."""
    return 1.0 if rank is not None and rank < k else 0.0


def ndcg(rank: int | None, k: int) -> float:
    """NDCG@k with one relevant item: 1 / log2(rank + 2) within the first k."""
    return 1.0 / math.log2(rank + 2) if rank is not None and rank < k else 0.0


def mrr(rank: int | None, k: int) -> float:
    """MRR@k: 1 / (rank + 1) within the first k."""
    return 1.0 / (rank + 1) if rank is not None and rank < k else 0.0


def rank_of(item: object, ranking: Sequence[object]) -> int | None:
    """The 0-based position of `item` in `ranking`, or None."""
    for i, x in enumerate(ranking):
        if x == item:
            return i
    return None


def auc(labels: Sequence[float] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float | None:
    """ROC AUC by the rank-sum (Mann-Whitney U) with ties averaged; None without both
    classes. A label above 0.5 is positive (0/1, booleans, or a soft label)."""
    y = np.asarray(labels, dtype=np.float64) > 0.5
    s = np.asarray(scores, dtype=np.float64)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    _, first, counts = np.unique(s[order], return_index=True, return_counts=True)
    ranks[order] = np.repeat(first + (counts - 1) / 2.0 + 1.0, counts)  # ties averaged
    return float((ranks[y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def coverage(recommended: Iterable[object], catalog_size: int) -> float:
    """Share of the catalog that appeared in any recommendation list."""
    return len(set(recommended)) / catalog_size if catalog_size else 0.0


def gini(exposures: Sequence[float]) -> float:
    """Gini coefficient of exposure counts over items (0: equal, toward 1: all to one).
    Items never exposed count as zeros: pass one entry per catalog item."""
    x = np.sort(np.asarray(exposures, dtype=np.float64))
    n = len(x)
    if n == 0 or x.sum() == 0:
        return 0.0
    cum = np.cumsum(x)
    return float((n + 1 - 2 * (cum / cum[-1]).sum()) / n)


def novelty(recommended_popularity: Iterable[float]) -> float:
    """Mean self-information -log2(p) of recommended items, p being each item's share of
    the interactions so far when it was recommended (unseen items count as one)."""
    values = [-math.log2(p) for p in recommended_popularity if p > 0]
    return float(np.mean(values)) if values else 0.0
