"""Pre-rank, rank, fall back: the learned ranker when it is ready, the heuristic otherwise.

Until the trainer has learned from `model_min_examples` examples, the heuristic scores and
the response says so; any failure in the learned path falls back to the heuristic, is
counted, and never fails the request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..metrics import Metrics
from ..pipeline.query import Candidates, Query
from .features import CandidateFeatures, extract
from .heuristic import HeuristicScorer
from .learned import ModelServer, fuse_scores

log = logging.getLogger(__name__)


@dataclass
class Ranked:
    cands: Candidates  # what survived pre-rank, in the same order as scores
    scores: np.ndarray
    features: CandidateFeatures | None  # the learned ranker's inputs, when it scored
    model_version: str
    ranker: str  # "learned" or "heuristic"
    note: str | None = None  # why the heuristic scored, when it did


def _ranks(x: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(x, kind="stable"), kind="stable").astype(np.float64)


class RankCascade:
    name = "rank"

    def __init__(
        self,
        heuristic: HeuristicScorer,
        server: ModelServer | None,
        fusion_weights: dict[str, float],
        prerank_keep: int,
        metrics: Metrics,
    ) -> None:
        self.heuristic = heuristic
        self.server = server
        self.fusion_weights = fusion_weights
        self.prerank_keep = prerank_keep
        self.metrics = metrics

    def prerank(self, query: Query, cands: Candidates, protect: np.ndarray | None) -> Candidates:
        """Keep the `prerank_keep` best by heuristic rank + learned user.video rank, plus
        the `protect`ed candidates (videos owed pool impressions: the policy's
        exploration slots need them whatever they score)."""
        if len(cands) <= self.prerank_keep:
            return cands
        assert self.server is not None
        fused = _ranks(self.heuristic.score(query, cands)) + _ranks(
            self.server.dot(query, cands.rows)
        )
        keep = np.zeros(len(cands), dtype=bool)
        keep[np.argpartition(-fused, self.prerank_keep - 1)[: self.prerank_keep]] = True
        if protect is not None:
            keep |= protect
        return cands.take(keep)

    def rank(self, query: Query, cands: Candidates, protect: np.ndarray | None = None) -> Ranked:
        server = self.server
        note = None
        arm = query.assignment
        if server is None:
            note = "learned ranker disabled"
        elif arm.ranker == "heuristic":
            note = "experiment arm: heuristic ranker"
        elif not server.ready():
            note = (
                f"learned ranker warming up ({server.examples} of {server.min_examples} examples)"
            )
        elif len(cands):
            try:
                kept = self.prerank(query, cands, protect)
                feats = extract(query, kept.rows, self.heuristic.smoothing)
                probs = server.predict(feats)
                weights = self.fusion_weights
                if arm.fusion_weights:
                    weights = {**weights, **arm.fusion_weights}
                scores = fuse_scores(probs, weights)
                if not np.isfinite(scores).all():
                    raise ValueError("the learned ranker produced non-finite scores")
                self.metrics.ranker_requests.labels("learned").inc()
                return Ranked(kept, scores, feats, server.version(), "learned")
            except Exception:
                log.exception("learned ranker failed; the heuristic scores this request")
                self.metrics.ranker_fallbacks.labels("error").inc()
                note = "learned ranker failed; heuristic fallback"
        self.metrics.ranker_requests.labels("heuristic").inc()
        return Ranked(
            cands,
            self.heuristic.score(query, cands),
            None,
            self.heuristic.model_version,
            "heuristic",
            note,
        )
