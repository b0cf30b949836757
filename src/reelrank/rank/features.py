"""The learned ranker's inputs, computed once at serve time and logged with each
impression, so that training sees exactly what serving saw.

Sparse slots are string ids, one embedding table per slot; `hashtag` holds up to MAX_TAGS
ids, mean-pooled. Dense features are scaled to roughly [-3, 3].
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..pipeline.query import Query
from ..state.catalog import MAX_TAGS
from .signals import affinity, rate_lifts, slog, views
from .two_tower import HISTORY

SINGLE_SLOTS = ("user", "video", "creator", "sound", "region", "language", "device", "hour")
VIDEO_SLOTS = ("video", "creator", "sound")  # resolved through the catalog's columns
CONTEXT_SLOTS = ("user", "region", "language", "device", "hour")  # one value per request
TAG_SLOT = "hashtag"
SLOTS = (*SINGLE_SLOTS, TAG_SLOT)
DENSE = (
    "finish_lift",
    "like_lift",
    "share_lift",
    "skip_lift",
    "log_views",
    "log_hotness",
    "log_age_h",
    "log_duration_s",
    "tag_affinity",
    "sound_affinity",
    "creator_affinity",
    "followed",
    "interest_match",
    "log_user_engagements",
)


@dataclass
class CandidateFeatures:
    """Features of n candidates for one request."""

    rows: np.ndarray  # (n,) catalog video rows
    context: dict[str, str | None]  # the request-level slots
    dense: np.ndarray  # (n, len(DENSE)) float32
    history: list[str]  # the user's latest engaged videos, newest first (two-tower input)

    def record(self, query: Query, i: int) -> dict[str, Any]:
        """The JSON-able features of candidate i, as logged with its impression."""
        table = query.table
        row = int(self.rows[i])
        video = table.video(row)
        return {
            "duration_ms": float(table.duration_ms[row]),
            "slots": {
                **self.context,
                "video": video.id,
                "creator": video.creator_id,
                "sound": video.sound_id,
            },
            "hashtags": table.tag_names(row),
            "dense": [round(float(x), 5) for x in self.dense[i]],
            "history": self.history,
        }


def context_of(query: Query) -> dict[str, str | None]:
    req = query.request
    hour = time.gmtime(req.now).tm_hour
    return {
        "user": query.model_user_id,
        "region": query.region,
        "language": query.language,
        "device": req.device,
        "hour": str(hour),
    }


def history_of(query: Query, k: int = HISTORY) -> list[str]:
    """The user's most recently engaged videos, newest first, without repeats."""
    if query.user is None:
        return []
    out: list[str] = []
    for video_id, _, _ in reversed(list(query.user.session)):
        if video_id not in out:
            out.append(video_id)
            if len(out) == k:
                break
    return out


def extract(query: Query, rows: np.ndarray, smoothing: float) -> CandidateFeatures:
    """Dense features for candidate rows, vectorised. rows: (n,) -> dense (n, D)."""
    counters = query.counters
    table = query.table
    lifts = rate_lifts(query, rows, smoothing)
    aff = affinity(query, rows)
    hot = counters.hotness[rows] * counters.decay_factor(query.request.now)
    age_h = np.maximum(query.request.now - table.created_at[rows], 0.0) / 3600.0
    engagements = query.user.engagements if query.user is not None else 0
    cols = [
        lifts["finish"] - 1.0,
        lifts["like"] - 1.0,
        lifts["share"] - 1.0,
        lifts["skip"] - 1.0,
        np.log1p(views(query, rows)) / 3.0,
        slog(hot) / 3.0,
        np.log1p(age_h) / 3.0,
        np.log1p(table.duration_ms[rows] / 1000.0) / 3.0,
        slog(aff.tags),
        slog(aff.sound),
        slog(aff.creator),
        aff.followed,
        np.minimum(aff.interests, 3.0),
        np.full(len(rows), np.log1p(engagements) / 3.0),
    ]
    dense = np.clip(np.stack(cols, axis=1), -5.0, 5.0).astype(np.float32)
    return CandidateFeatures(
        rows=rows, context=context_of(query), dense=dense, history=history_of(query)
    )


def tag_keys(hashtags: list[str]) -> list[str | None]:
    """A video's hashtag slot: MAX_TAGS entries, None-padded."""
    keys: list[str | None] = list(hashtags[:MAX_TAGS])
    return keys + [None] * (MAX_TAGS - len(keys))
