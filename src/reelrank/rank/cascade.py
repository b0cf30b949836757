"""Pre-rank, rank, fall back: the learned ranker while it is the champion, the heuristic
otherwise.

The learned ranker serves once the trainer has learned from `model_min_examples` examples
and only while it orders recent traffic better than the heuristic scorer does (the
trainer's champion/challenger comparison, `train/champion.py`); until then the heuristic
scores and the response says why. Any failure in the learned path falls back to the
heuristic, is counted, and never fails the request.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..metrics import Metrics
from ..types import Candidates, Query
from .features import CandidateFeatures, RecallView, extract
from .heuristic import HeuristicScorer
from .learned import ModelServer
from .value import fuse_scores

if TYPE_CHECKING:
    from ..recall.two_tower import RetrievalIndex

log = logging.getLogger(__name__)


@dataclass
class Ranked:
    cands: Candidates  # what survived pre-rank, in the same order as scores
    scores: np.ndarray
    features: CandidateFeatures | None  # the learned ranker's inputs, when it scored
    model_version: str
    ranker: str  # "learned" or "heuristic"
    note: str | None = None  # why the heuristic scored, when it did
    heuristic: np.ndarray | None = None  # the heuristic's score of every candidate given


CHANNEL_BEST = 0.1  # the share of each channel's list kept past the pre-ranker


def sequence_feature(
    query: Query, rows: np.ndarray, index: RetrievalIndex | None
) -> np.ndarray | None:
    """The sequence model's score of each row relative to its first choice in the catalog
    (the ranker's `sequence_score` feature), None before the model and its `index`."""
    return index.relative_scores(query, rows) if index is not None else None


def _ranks(x: np.ndarray) -> np.ndarray:
    """Each value's place in ascending order (ties by position), as floats."""
    out = np.empty(len(x))
    out[np.argsort(x, kind="stable")] = np.arange(len(x))
    return out


class RankCascade:
    name = "rank"

    def __init__(
        self,
        heuristic: HeuristicScorer,
        server: ModelServer | None,
        fusion_weights: dict[str, float],
        prerank_keep: int,
        metrics: Metrics,
        holdout: float = 0.0,
        sequence: RetrievalIndex | None = None,
    ) -> None:
        self.heuristic = heuristic
        self.sequence = sequence  # the sequence model's video index, for its feature
        self.server = server
        self.fusion_weights = fusion_weights
        self.prerank_keep = prerank_keep
        self.metrics = metrics
        self.holdout = holdout  # share of pages the ranker that is not the champion serves
        self.channel_names: list[str] = []  # the pipeline's, for the recall features

    def recall_view(self, cands: Candidates) -> RecallView:
        """Which channels returned each candidate, for the ranker's features."""
        if cands.channels is None or cands.position is None:
            return RecallView.none(len(cands))
        return RecallView.of(cands.channels, cands.position, self.channel_names)

    def prerank(
        self,
        query: Query,
        cands: Candidates,
        heuristic: np.ndarray,
        protect: np.ndarray | None,
    ) -> np.ndarray:
        """Indices of the `prerank_keep` best by heuristic rank + learned user.video rank,
        plus every channel's own best (the first tenth of each channel's list: what one
        signal, a sequence or co-engagement, ranks first must reach the ranker even when
        the cheap scores miss it) and the `protect`ed candidates (videos owed pool
        impressions: the policy's exploration slots need them whatever they score)."""
        if len(cands) <= self.prerank_keep:
            return np.arange(len(cands))
        assert self.server is not None
        fused = _ranks(heuristic) + _ranks(self.server.dot(query, cands.rows))
        keep = np.zeros(len(cands), dtype=bool)
        keep[np.argpartition(-fused, self.prerank_keep - 1)[: self.prerank_keep]] = True
        if cands.position is not None:
            keep |= cands.position <= CHANNEL_BEST
        if protect is not None:
            keep |= protect
        return np.flatnonzero(keep)

    def _held_out(self, query: Query) -> bool:
        """Whether this page goes to the ranker that is not the champion (a share
        `holdout` of pages, by the request id), so that live traffic keeps measuring both
        (the champion/challenger comparison of pages served by each). While served pages
        are being logged but the comparison has not settled which ranker earns more, the
        share is a half: an A/B test that settles in hundreds of pages instead of the
        holdout's thousands."""
        server = self.server
        if not self.holdout or server is None or server.policy != "champion":
            return False
        share = self.holdout
        champion = server.champion
        served = champion.get("served") or {}
        logged = sum(served[r]["impressions"] for r in ("learned", "heuristic")) if served else 0
        if logged and not champion.get("settled"):
            share = 0.5
        digest = zlib.crc32(query.request.request_id.encode()) / 2**32
        return digest < share

    def learned_scores(self, query: Query, cands: Candidates, view: RecallView) -> np.ndarray:
        """The learned fusion of every candidate (no pre-rank), for offline comparison
        with the heuristic; the model must be trained."""
        assert self.server is not None
        feats = extract(
            query,
            cands.rows,
            self.heuristic.smoothing,
            view,
            sequence_feature(query, cands.rows, self.sequence),
        )
        table = query.table
        return fuse_scores(
            self.server.predict(feats),
            self.fusion_weights,
            table.duration_ms[cands.rows] / 1000.0,
            table.mean_duration_s,
        )

    def rank(self, query: Query, cands: Candidates, protect: np.ndarray | None = None) -> Ranked:
        server = self.server
        note = None
        arm = query.assignment
        heuristic = self.heuristic.score(query, cands)
        held_out = self._held_out(query)
        if server is None:
            note = "learned ranker disabled"
        elif arm.ranker == "heuristic":
            note = "experiment arm: heuristic ranker"
        elif not server.trained():
            note = server.not_ready_note()
        elif server.ready() and held_out:
            note = "champion holdout: the challenger serves this page, so both stay measured"
        elif not server.ready() and not held_out:
            note = server.not_ready_note()
        elif len(cands):
            try:
                at = self.prerank(query, cands, heuristic, protect)
                kept = cands.take(at)
                feats = extract(
                    query,
                    kept.rows,
                    self.heuristic.smoothing,
                    self.recall_view(kept),
                    sequence_feature(query, kept.rows, self.sequence),
                )
                feats.heuristic = heuristic[at]
                probs = server.predict(feats)
                weights = self.fusion_weights
                if arm.fusion_weights:
                    weights = {**weights, **arm.fusion_weights}
                table = query.table
                scores = fuse_scores(
                    probs, weights, table.duration_ms[kept.rows] / 1000.0, table.mean_duration_s
                )
                if not np.isfinite(scores).all():
                    raise ValueError("the learned ranker produced non-finite scores")
                self.metrics.ranker_requests.labels("learned").inc()
                return Ranked(kept, scores, feats, server.version(), "learned", None, heuristic)
            except Exception:
                log.exception("learned ranker failed; the heuristic scores this request")
                self.metrics.ranker_fallbacks.labels("error").inc()
                note = "learned ranker failed; heuristic fallback"
        self.metrics.ranker_requests.labels("heuristic").inc()
        return Ranked(
            cands, heuristic, None, self.heuristic.model_version, "heuristic", note, heuristic
        )
