"""The heuristic scorer: smoothed engagement rates fused with the user's affinities.

score = sum_x w_x * lift_x  +  w_affinity * slog(affinity)  +  w_hotness * hot

lift_x is a video's smoothed rate of action x (finish, like, share, skip) over the
catalog's rate, with `smoothing_strength` pseudo-views at the catalog rate; affinity sums
the user's decayed weights for the video's hashtags, sound and creator (plus a bonus for
followed creators and onboarding interests); hot is log hotness scaled to [0, 1] among the
candidates. It is the cold-start ranker and the fallback when a learned ranker fails.
"""

from __future__ import annotations

import numpy as np

from ..pipeline.query import Candidates, Query
from ..state.counters import C

MODEL_VERSION = "heuristic-1"
RATES = ("finish", "like", "share", "skip")
_COUNTER = {"finish": "finishes", "like": "likes", "share": "shares", "skip": "skips"}
_DEFAULT_PRIOR = {"finish": 0.3, "like": 0.05, "share": 0.01, "skip": 0.3}
FOLLOW_BONUS = 3.0
INTEREST_BONUS = 1.0


def slog(x: np.ndarray) -> np.ndarray:
    """Signed log1p: keeps the sign, tames the scale."""
    return np.sign(x) * np.log1p(np.abs(x))


class HeuristicScorer:
    name = "heuristic"
    model_version = MODEL_VERSION

    def __init__(self, weights: dict[str, float], smoothing: float) -> None:
        self.weights = weights
        self.smoothing = smoothing

    def views(self, query: Query, rows: np.ndarray) -> np.ndarray:
        totals = query.counters.totals
        return np.maximum(totals[rows, C["impressions"]], totals[rows, C["plays"]]).astype(float)

    def lifts(self, query: Query, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Smoothed rate / catalog rate per action, for these rows."""
        counters = query.counters
        cat = counters.catalog_totals
        cat_views = float(max(cat[C["impressions"]], cat[C["plays"]]))
        views = self.views(query, rows)
        m = self.smoothing
        out = {}
        for x in RATES:
            i = C[_COUNTER[x]]
            prior = cat[i] / cat_views if cat_views >= 100 and cat[i] > 0 else _DEFAULT_PRIOR[x]
            rate = (counters.totals[rows, i] + m * prior) / (views + m)
            out[x] = np.clip(rate / prior, 0.0, 5.0)
        return out

    def affinity(self, query: Query, rows: np.ndarray) -> np.ndarray:
        """The user's summed affinity for each video's hashtags, sound and creator."""
        table = query.table
        aff = np.zeros(len(rows))
        tag_w = dict(query.tag_affinity)
        if query.profile is not None:
            for tag in query.profile.interests:
                tag_w[tag] = tag_w.get(tag, 0.0) + INTEREST_BONUS
        if tag_w:
            ids = np.array([table.tags.get(t) for t in tag_w], dtype=np.int64)
            ws = np.array(list(tag_w.values()))
            known = ids >= 0
            ids, ws = ids[known], ws[known]
            if len(ids):
                order = np.argsort(ids)
                ids, ws = ids[order], ws[order]
                tags = table.tag_ids[rows]  # (n, MAX_TAGS)
                pos = np.clip(np.searchsorted(ids, tags), 0, len(ids) - 1)
                hit = (ids[pos] == tags) & (tags >= 0)
                aff += np.where(hit, ws[pos], 0.0).sum(axis=1)
        for names, col, weights in (
            (table.sounds, table.sound, query.sound_affinity),
            (table.creators, table.creator, query.creator_affinity),
        ):
            if weights:
                lookup = {names.get(k): w for k, w in weights.items()}
                aff += np.array([lookup.get(v, 0.0) for v in col[rows].tolist()])
        if query.follows:
            followed = [table.creators.get(c) for c in query.follows]
            aff += FOLLOW_BONUS * np.isin(table.creator[rows], followed)
        return aff

    def score(self, query: Query, cands: Candidates) -> np.ndarray:
        """(n,) float scores for (n,) candidates, in their order."""
        rows = cands.rows
        if len(rows) == 0:
            return np.zeros(0)
        w = self.weights
        lifts = self.lifts(query, rows)
        score = sum(w[x] * lifts[x] for x in RATES)
        score = score + w["affinity"] * slog(self.affinity(query, rows))
        hot = np.log1p(np.maximum(query.counters.hotness[rows], 0.0))
        top = hot.max()
        if top > 0:
            score = score + w["hotness"] * hot / top
        return np.asarray(score, dtype=np.float64)
