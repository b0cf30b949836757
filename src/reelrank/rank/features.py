"""The learned ranker's inputs, computed once at serve time and logged with each
impression, so that training sees exactly what serving saw.

Sparse slots are string ids, one embedding table per slot; `hashtag` holds up to MAX_TAGS
ids, mean-pooled. Dense features are scaled to roughly [-3, 3]. Besides the video's rates
and the user's affinities they carry what each app weighs differently, for the ranker to
learn from the app's own log: popularity at five horizons (relative to the catalog's
mean, so that the scale carries from one app to another), co-engagement with the user's
latest videos, the related-videos model's score, the sequence model's score, and which
recall channels found the video and how high (a learned fusion of the channels).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..state.catalog import MAX_TAGS
from ..state.popularity import HORIZONS
from ..types import Query
from .signals import Affinity, candidate_signals, slog
from .two_tower import HISTORY

SINGLE_SLOTS = ("user", "video", "creator", "sound", "region", "language", "device", "hour")
VIDEO_SLOTS = ("video", "creator", "sound")  # resolved through the catalog's columns
CONTEXT_SLOTS = ("user", "region", "language", "device", "hour")  # one value per request
TAG_SLOT = "hashtag"
SLOTS = (*SINGLE_SLOTS, TAG_SLOT)
CHANNELS = (  # recall channels the ranker knows by name (one flag each)
    "following",
    "pool",
    "session",
    "item2item",
    "related",
    "sequence",
    "two_tower",
    "content",
    "interest",
    "trending",
    "popular",
    "fresh",
    "explore",
)
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
    *(f"pop_{name}" for name, _ in HORIZONS),
    "coengaged",
    "related",
    "sequence_score",
    "recall_position",
    *(f"channel_{name}" for name in CHANNELS),
)

# An impression record's flag: logged only for the champion/challenger comparison to judge
# the rankers on, never learned from (the replay's own picks of each ranker: see
# `evaluate/replay.py`).
JUDGE_ONLY = "judge_only"


@dataclass
class CandidateFeatures:
    """Features of n candidates for one request."""

    rows: np.ndarray  # (n,) catalog video rows
    context: dict[str, str | None]  # the request-level slots
    dense: np.ndarray  # (n, len(DENSE)) float32
    history: list[str]  # the user's latest engaged videos, newest first (two-tower input)
    heuristic: np.ndarray | None = None  # (n,) the heuristic scorer's scores, when known

    def record(self, query: Query, i: int) -> dict[str, Any]:
        """The JSON-able features of candidate i, as logged with its impression."""
        return self.records(query, [i])[0]

    def records(self, query: Query, at: Any) -> list[dict[str, Any]]:
        """`record` of each candidate index in `at`, the arrays converted once."""
        table = query.table
        at = np.asarray(at, dtype=np.int64)
        rows = self.rows[at].tolist()
        durations = table.duration_ms[self.rows[at]].astype(np.float64).tolist()
        # the watch-time term's yardstick when the page was scored, so training values
        # watch time as serving did (`rank/value.py`)
        mean_ms = round(table.mean_duration_s * 1000.0, 1)
        dense = self.dense[at].astype(np.float64).round(5).tolist()
        # the heuristic's score, for the champion/challenger comparison in training
        heuristic = (
            None if self.heuristic is None else self.heuristic[at].astype(np.float64).tolist()
        )
        out = []
        for j, row in enumerate(rows):
            video = table.video(row)
            record: dict[str, Any] = {
                "duration_ms": durations[j],
                "mean_duration_ms": mean_ms,
                "slots": {
                    **self.context,
                    "video": video.id,
                    "creator": video.creator_id,
                    "sound": video.sound_id,
                },
                "hashtags": table.tag_names(row),
                "dense": dense[j],
                "history": self.history,
            }
            if heuristic is not None:
                record["heuristic"] = round(heuristic[j], 6)
            out.append(record)
        return out


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


@dataclass
class RecallView:
    """What recall said of candidates: flags (n, len(CHANNELS)) and best relative place."""

    flags: np.ndarray
    position: np.ndarray

    @classmethod
    def of(cls, bits: np.ndarray, position: np.ndarray, names: list[str]) -> RecallView:
        """From `Candidates.channels` bit masks over the pipeline's channel `names`."""
        flags = np.zeros((len(bits), len(CHANNELS)), dtype=np.float32)
        for i, name in enumerate(names):
            if name in CHANNELS:
                flags[:, CHANNELS.index(name)] = (bits >> i) & 1
        return cls(flags, position)

    @classmethod
    def none(cls, n: int) -> RecallView:
        """Rows no channel returned."""
        return cls(np.zeros((n, len(CHANNELS)), dtype=np.float32), np.ones(n))


def extract(
    query: Query,
    rows: np.ndarray,
    smoothing: float,
    recall: RecallView | None = None,
    sequence: np.ndarray | None = None,
) -> CandidateFeatures:
    """Dense features for candidate rows, vectorised. rows: (n,) -> dense (n, D).
    `recall` says which channels returned each row (None: none did); `sequence` is the
    sequence model's score of each row less its best score in the catalog (None: no
    model yet)."""
    counters = query.counters
    table = query.table
    # The request's signals (the heuristic scorer computed them for every candidate).
    signals, at = candidate_signals(query, rows, smoothing)

    def pick(values: np.ndarray) -> np.ndarray:
        return values if at is None else values[at]

    lifts = {x: pick(v) for x, v in signals.lifts(query).items()}
    a = signals.affinity(query)
    aff = Affinity(pick(a.tags), pick(a.interests), pick(a.sound), pick(a.creator),
                   pick(a.followed))  # fmt: skip
    hot = counters.hotness[rows] * counters.decay_factor(query.request.now)
    age_h = np.maximum(query.request.now - table.created_at[rows], 0.0) / 3600.0
    engagements = query.user.engagements if query.user is not None else 0
    cols = [
        lifts["finish"] - 1.0,
        lifts["like"] - 1.0,
        lifts["share"] - 1.0,
        lifts["skip"] - 1.0,
        np.log1p(pick(signals.views(query))) / 3.0,
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
    n = len(rows)
    if query.popularity is not None:
        rel = query.popularity.relative(rows, query.size)
        cols += list(np.log1p(rel.T) / 2.0)
    else:
        cols += [np.zeros(n)] * len(HORIZONS)
    cols.append(slog(pick(signals.coengaged(query))))
    cols.append(pick(signals.related(query)))
    cols.append(np.zeros(n) if sequence is None else np.asarray(sequence, np.float64) / 2.0)
    recall = recall if recall is not None else RecallView.none(n)
    cols.append(recall.position)
    cols += list(recall.flags.T)
    dense = np.clip(np.stack(cols, axis=1), -5.0, 5.0).astype(np.float32)
    return CandidateFeatures(
        rows=rows, context=context_of(query), dense=dense, history=history_of(query)
    )


def tag_keys(hashtags: list[str]) -> list[str | None]:
    """A video's hashtag slot: MAX_TAGS entries, None-padded."""
    keys: list[str | None] = list(hashtags[:MAX_TAGS])
    return keys + [None] * (MAX_TAGS - len(keys))
