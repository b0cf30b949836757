"""Related videos: the related-videos model's best videos for the user's latest engaged
videos."""

from __future__ import annotations

import numpy as np

from ..rank.signals import related_user_scores
from ..types import Query, Recalled
from .base import top_by

REASON = "people who watched what you watched also engaged with this"


class RelatedRecall:
    name = "related"

    def recall(self, query: Query, quota: int) -> Recalled:
        fitted, scores = query.related, related_user_scores(query)
        if fitted is None or scores is None:
            return Recalled.join([])
        cols = np.flatnonzero(scores > 0)
        best = top_by(cols, scores[cols], quota)
        rows = fitted.rows[best]
        rows = rows[rows < query.size]
        return Recalled.of(rows, REASON)
