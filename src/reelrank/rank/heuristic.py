"""The heuristic scorer: smoothed engagement rates fused with the user's affinities.

score = sum_x w_x * lift_x  +  w_affinity * slog(affinity)  +  w_coengaged * slog(co)
        +  w_related * related  +  w_hotness * hot

lift_x is a video's smoothed rate of action x (finish, like, share, skip) over the
catalog's rate, with `smoothing_strength` pseudo-views at the catalog rate; affinity sums
the user's decayed weights for the video's hashtags, sound and creator (plus a bonus for
followed creators and onboarding interests); co is the video's co-engagement with the
user's latest engaged videos (item-to-item evidence, the newest seed weighing most);
related is the related-videos model's score (EASE over everyone's recent engagements,
1 for the user's best video, `state/related.py`); hot is log hotness scaled to [0, 1]
among the candidates. It is the cold-start ranker and the fallback when a learned ranker
fails.
"""

from __future__ import annotations

import numpy as np

from ..types import Candidates, Query
from .signals import RATES, Affinity, candidate_signals, slog

MODEL_VERSION = "heuristic-3"
FOLLOW_BONUS = 3.0
INTEREST_BONUS = 1.0


def summed(a: Affinity) -> np.ndarray:
    """The affinity the heuristic scores: hashtags, sound and creator, plus bonuses for
    onboarding interests and followed creators."""
    out: np.ndarray = (
        a.tags + INTEREST_BONUS * a.interests + a.sound + a.creator + FOLLOW_BONUS * a.followed
    )
    return out


class HeuristicScorer:
    name = "heuristic"
    model_version = MODEL_VERSION

    def __init__(self, weights: dict[str, float], smoothing: float) -> None:
        self.weights = weights
        self.smoothing = smoothing

    def score(self, query: Query, cands: Candidates) -> np.ndarray:
        """(n,) float scores for (n,) candidates, in their order."""
        rows = cands.rows
        if len(rows) == 0:
            return np.zeros(0)
        w = self.weights
        if query.assignment.score_weights:  # an experiment arm's weights
            w = {**w, **query.assignment.score_weights}
        # The request's signals, computed once for its candidates (the learned ranker's
        # features of any of them read the same ones).
        signals, at = candidate_signals(query, rows, self.smoothing)

        def pick(values: np.ndarray) -> np.ndarray:
            return values if at is None else values[at]

        lifts = signals.lifts(query)
        score = sum(w[x] * pick(lifts[x]) for x in RATES)
        score = score + w["affinity"] * slog(pick(summed(signals.affinity(query))))
        if w.get("coengaged"):
            score = score + w["coengaged"] * slog(pick(signals.coengaged(query)))
        if w.get("related"):
            score = score + w["related"] * pick(signals.related(query))
        hot = np.log1p(np.maximum(query.counters.hotness[rows], 0.0))
        top = hot.max()
        if top > 0:
            score = score + w["hotness"] * hot / top
        return np.asarray(score, dtype=np.float64)
