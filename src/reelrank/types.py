"""The values the stages of the feed path exchange: the request, the hydrated query, the
user's experiment arms and mutes, candidate arrays.

The ground floor: this module imports no other part of reelrank at run time. The classes
of the state it points to are named for type checking only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .schema import User
    from .state.catalog import VideoTable
    from .state.coengagement import CoEngagement
    from .state.counters import VideoCounters
    from .state.popularity import Popularity
    from .state.profiles import UserState
    from .state.related import Fitted


@dataclass(frozen=True)
class Assignment:
    """The arms a user is in right now, and what those arms change."""

    arms: dict[str, str] = field(default_factory=dict)  # experiment id -> arm name
    fusion_weights: dict[str, float] | None = None
    score_weights: dict[str, float] | None = None
    recall_quotas: dict[str, int] | None = None
    exploration_fraction: float | None = None
    ranker: str | None = None


NO_ASSIGNMENT = Assignment()


class UserMutes:
    """A user's muted keywords (whole words in captions and hashtags) and hashtags."""

    def __init__(self, keywords: list[str], hashtags: list[str], pattern: re.Pattern[str] | None):
        self.keywords = keywords
        self.hashtags = hashtags
        self.pattern = pattern

    @classmethod
    def of(cls, keywords: list[str], hashtags: list[str]) -> UserMutes:
        words = sorted({k.strip().lower() for k in keywords if k.strip()})
        pattern = (
            re.compile(r"(?<!\w)(" + "|".join(map(re.escape, words)) + r")(?!\w)", re.IGNORECASE)
            if words
            else None
        )
        tags = sorted({h.strip().lstrip("#").lower() for h in hashtags if h.strip()})
        return cls(words, tags, pattern)


@dataclass(frozen=True)
class FeedRequest:
    """Who asks, for how many videos, in which context."""

    user_id: str
    n: int
    request_id: str
    now: float
    region: str | None = None
    device: str | None = None
    language: str | None = None


@dataclass
class Query:
    """The request hydrated with the user's state (step 2 of the request path)."""

    request: FeedRequest
    table: VideoTable
    counters: VideoCounters
    size: int  # rows below this are safe to read for the whole request
    user: UserState | None
    profile: User | None
    follows: frozenset[str]
    region: str | None
    language: str | None
    coengagement: CoEngagement | None = None
    mutes: UserMutes | None = None  # the user's muted keywords and hashtags
    assignment: Assignment = NO_ASSIGNMENT  # the user's experiment arms and overrides
    popularity: Popularity | None = None  # engagement at several horizons
    related: Fitted | None = None  # the related-videos model's last fit
    cache: dict[str, Any] = field(default_factory=dict)  # per-request values (user vectors)
    tag_affinity: dict[str, float] = field(default_factory=dict)
    sound_affinity: dict[str, float] = field(default_factory=dict)
    creator_affinity: dict[str, float] = field(default_factory=dict)

    @property
    def model_user_id(self) -> str:
        """The user's id for the model: a fresh one after each "reset my feed"."""
        key = self.user.model_key if self.user is not None else None
        return self.request.user_id + key if key else self.request.user_id

    @property
    def is_cold(self) -> bool:
        """A user with no engagement history yet."""
        return self.user is None or self.user.engagements == 0


@dataclass
class Candidates:
    """Parallel arrays, one entry per candidate video.

    `channels` and `position`, when set, say which channels returned the video (bit i for
    channel i, all of them, not only `source`) and its best place in their lists (0 the
    top, 1 the end): the learned ranker's view of recall.
    """

    rows: np.ndarray  # (n,) int64 video rows
    source: np.ndarray  # (n,) int16 index into the pipeline's channel names
    reason: np.ndarray  # (n,) object: the channel's reason text
    channels: np.ndarray | None = None  # (n,) int64 bit mask of recalling channels
    position: np.ndarray | None = None  # (n,) float, best relative place in a channel

    @classmethod
    def empty(cls) -> Candidates:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int16), np.zeros(0, object))

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, mask_or_index: np.ndarray) -> Candidates:
        return Candidates(
            self.rows[mask_or_index],
            self.source[mask_or_index],
            self.reason[mask_or_index],
            None if self.channels is None else self.channels[mask_or_index],
            None if self.position is None else self.position[mask_or_index],
        )

    @classmethod
    def concat(cls, parts: list[Candidates]) -> Candidates:
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.rows for p in parts]),
            np.concatenate([p.source for p in parts]),
            np.concatenate([p.reason for p in parts]),
        )

    def with_recall_view(self) -> Candidates:
        """Fill `channels` and `position` from duplicates across channels (before the
        duplicate filter keeps only the first)."""
        n = len(self.rows)
        if n == 0:
            return Candidates(self.rows, self.source, self.reason, np.zeros(0, np.int64),
                              np.zeros(0))  # fmt: skip
        # Per video row, in arrays as long as the largest row: cheaper than grouping the
        # candidates with a sort. Rows are catalog rows, up to millions, so the arrays are
        # left uninitialised but for the candidates' own entries.
        rows = self.rows
        span = int(rows.max()) + 1
        bits = np.empty(span, np.int64)
        bits[rows] = 0
        np.bitwise_or.at(bits, rows, np.left_shift(1, self.source.astype(np.int64)))
        # each channel's part is contiguous and in its own order
        starts = np.flatnonzero(np.r_[True, self.source[1:] != self.source[:-1]])
        lengths = np.diff(np.r_[starts, n])
        place = np.arange(n) - np.repeat(starts, lengths)
        rel = place / np.repeat(np.maximum(lengths - 1, 1), lengths)
        best = np.empty(span)
        best[rows] = 1.0
        np.minimum.at(best, rows, rel)
        return Candidates(rows, self.source, self.reason, bits[rows], best[rows])


def marked(rows: np.ndarray, among: np.ndarray) -> np.ndarray:
    """(n,) True where a row is one of `among`: a mark per row in an array as long as the
    largest row, cheaper than `np.isin`'s sort for candidate lists. Rows are catalog rows
    (up to millions), so only the entries read are initialised."""
    if len(rows) == 0:
        return np.zeros(0, dtype=bool)
    marks = np.empty(int(rows.max()) + 1, dtype=bool)
    marks[rows] = False
    marks[among[(among >= 0) & (among < len(marks))]] = True
    return marks[rows]


@dataclass
class Recalled:
    """What one recall source returns: rows and a reason per row."""

    rows: np.ndarray
    reasons: np.ndarray

    @classmethod
    def of(cls, rows: np.ndarray, reason: str) -> Recalled:
        rows = np.asarray(rows, dtype=np.int64)
        reasons = np.empty(len(rows), dtype=object)
        reasons.fill(reason)  # several times faster than np.full for object arrays
        return cls(rows, reasons)

    @classmethod
    def join(cls, parts: list[Recalled]) -> Recalled:
        if not parts:
            return cls(np.zeros(0, np.int64), np.zeros(0, object))
        return cls(
            np.concatenate([p.rows for p in parts]), np.concatenate([p.reasons for p in parts])
        )
