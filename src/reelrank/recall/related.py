"""Related videos: the related-videos model's best videos for the user's latest engaged
videos."""

from __future__ import annotations

import numpy as np

from ..pipeline.query import Query, Recalled
from ..rank.signals import related_seeds
from .base import top_by

REASON = "people who watched what you watched also engaged with this"


class RelatedRecall:
    name = "related"

    def recall(self, query: Query, quota: int) -> Recalled:
        fitted = query.related
        if fitted is None or query.user is None or not query.user.engaged:
            return Recalled.join([])
        scores = query.cache.get("related")
        if scores is None:  # shared with the rankers' related score of this request
            scores = query.cache["related"] = fitted.scores(related_seeds(query))
        cols = np.flatnonzero(scores > 0)
        best = top_by(cols, scores[cols], quota)
        rows = fitted.rows[best]
        rows = rows[rows < query.size]
        return Recalled.of(rows, REASON)
