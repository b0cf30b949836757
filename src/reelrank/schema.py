"""The records every stage shares: videos, users, follows, events, served impressions.

Input models validate what clients send (`extra="forbid"` so a typo is an error, not a
silently ignored field); the same classes are the records the engine passes around.
"""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from .errors import InvalidInput

MAX_ID_LEN = 128
MAX_WATCH_MS = 24 * 3600 * 1000


class EventType(StrEnum):
    """What a user did to a video."""

    IMPRESSION = "impression"
    PLAY = "play"
    WATCH = "watch"
    FINISH = "finish"
    REPLAY = "replay"
    LIKE = "like"
    UNLIKE = "unlike"
    SHARE = "share"
    COMMENT = "comment"
    FOLLOW = "follow"
    UNFOLLOW = "unfollow"
    SKIP = "skip"
    NOT_INTERESTED = "not_interested"
    HIDE_CREATOR = "hide_creator"
    HIDE_SOUND = "hide_sound"
    REPORT = "report"


class ReviewStatus(StrEnum):
    """Where a video stands in review; only `approved` videos are ever served."""

    APPROVED = "approved"
    PENDING_REVIEW = "pending_review"  # held by machine review or reports for a person
    REJECTED = "rejected"
    HIDDEN = "hidden"  # taken down by an operator


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _as_id(value: Any) -> Any:
    # Apps often key records by integers; accept them as their decimal string.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


def _as_epoch(value: Any) -> Any:
    """Unix seconds (number) or ISO 8601 (naive means UTC) -> float seconds."""
    if isinstance(value, bool):
        raise ValueError("expected Unix seconds or an ISO 8601 time")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("expected Unix seconds or an ISO 8601 time") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        seconds = parsed.timestamp()
    else:
        raise ValueError("expected Unix seconds or an ISO 8601 time")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError("must be a positive finite time")
    return seconds


def _as_tag(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip().lstrip("#").lower()
    return value


Id = Annotated[str, BeforeValidator(_as_id), Field(min_length=1, max_length=MAX_ID_LEN)]
Epoch = Annotated[float, BeforeValidator(_as_epoch)]
Tag = Annotated[str, BeforeValidator(_as_tag), Field(min_length=1, max_length=64)]
Code = Annotated[str, Field(min_length=1, max_length=32)]

_STRICT = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)


class VideoIn(BaseModel):
    """A video as an app sends it."""

    model_config = _STRICT

    id: Id
    creator_id: Id
    caption: str = Field(default="", max_length=4000)
    hashtags: list[Tag] = Field(default_factory=list, max_length=30)
    sound_id: Id | None = None
    duration_ms: int = Field(gt=0, le=MAX_WATCH_MS)
    language: Code | None = None
    region: Code | None = None
    created_at: Epoch = Field(default_factory=time.time)
    media_hash: Id | None = None  # the app's hash of the media file, for re-upload checks


class Video(VideoIn):
    """A catalog video with its review state, set by review and operators, never by the
    client: an upsert of an existing video keeps it (see content.review.Reviewer)."""

    status: ReviewStatus = ReviewStatus.APPROVED
    status_reason: str | None = None
    reviewed_by: str | None = None  # who decided the status: "machine", or a person
    duplicate_of: str | None = None  # the original this video re-uploads (no fresh pool)
    report_baseline: int = 0  # distinct reporters already seen by the last human review

    @classmethod
    def stored(cls, raw: dict[str, Any]) -> Video:
        """A record the store wrote from a validated Video (`model_dump(mode="json")`):
        rebuilt without validating again, which dominates loading a large catalog."""
        fields = dict(raw)
        status = fields.get("status", "approved")
        fields["status"] = _STATUSES.get(status) or ReviewStatus(status)
        if cls is Video and tuple(raw) == _VIDEO_FIELDS:  # every field, as stored, in order
            return constructed(cls, fields)
        return cls.model_construct(**fields)


_VIDEO_FIELDS = tuple(Video.model_fields)
_STATUSES = {s.value: s for s in ReviewStatus}
_M = TypeVar("_M", bound=BaseModel)


def constructed(cls: type[_M], fields: dict[str, Any]) -> _M:
    """What `cls.model_construct(**fields)` makes when `fields` holds every field in
    declaration order, set at once: at a million stored records its loop over the fields
    was most of reading the catalog, and of the trainer reading the logs
    (tests/test_catalog_table.py and tests/test_storage_contract.py hold them equal)."""
    if cls.__pydantic_post_init__:  # a model with a post-init hook gets it called
        return cls.model_construct(**fields)
    model = cls.__new__(cls)
    setattr_ = object.__setattr__
    setattr_(model, "__dict__", fields)
    setattr_(model, "__pydantic_fields_set__", set(fields))
    setattr_(model, "__pydantic_extra__", None)
    setattr_(model, "__pydantic_private__", None)
    return model


class User(BaseModel):
    """A viewer; `interests` are onboarding picks (hashtags or topics)."""

    model_config = _STRICT

    id: Id
    language: Code | None = None
    region: Code | None = None
    interests: list[Tag] = Field(default_factory=list, max_length=50)

    @classmethod
    def stored(cls, raw: dict[str, Any]) -> User:
        """A record the store wrote from a validated User, rebuilt without validation."""
        if cls is User and tuple(raw) == _USER_FIELDS:  # every field, as stored, in order
            return constructed(cls, dict(raw))
        return cls.model_construct(**raw)


_USER_FIELDS = tuple(User.model_fields)


Keyword = Annotated[str, Field(min_length=1, max_length=64)]


class UserControls(BaseModel):
    """What a user chose not to see: whole words in captions or hashtags, and hashtags.
    Each call replaces the previous lists."""

    model_config = _STRICT

    muted_keywords: list[Keyword] = Field(default_factory=list, max_length=200)
    muted_hashtags: list[Tag] = Field(default_factory=list, max_length=200)


class Follow(BaseModel):
    """A user follows a creator."""

    model_config = _STRICT

    user_id: Id
    creator_id: Id


class Event(BaseModel):
    """One thing a user did; `event_id` is the client-chosen idempotency key."""

    model_config = _STRICT

    event_id: Id
    type: EventType
    user_id: Id
    video_id: Id
    request_id: Id | None = None
    ts: Epoch
    watch_ms: int | None = Field(default=None, ge=0, le=MAX_WATCH_MS)
    device: Code | None = None
    region: Code | None = None

    @model_validator(mode="after")
    def _watch_needs_time(self) -> Event:
        if self.type is EventType.WATCH and self.watch_ms is None:
            raise ValueError("watch_ms: required for a watch event")
        return self


class Impression(BaseModel):
    """A video the server put on a feed page: the record later actions are joined to."""

    request_id: str
    position: int
    user_id: str
    video_id: str
    source: str
    score: float
    model_version: str
    ts: float
    features: dict[str, Any] | None = None  # what the ranker saw, for training
    arms: dict[str, str] | None = None  # experiment id -> arm the user was served under


class AuditEntry(BaseModel):
    """One decision about a video or creator: who made it, what, and why."""

    seq: int = 0  # assigned by the store, increasing
    ts: float
    actor: str  # "machine", "reports", or the person named in an admin call
    action: str  # e.g. review.hold, review.approve, review.reject, video.hide, creator.strike
    target_kind: str  # "video" or "creator"
    target_id: str
    reason: str
    detail: dict[str, Any] | None = None


def describe_errors(exc: ValidationError, where: str) -> list[tuple[str, str]]:
    """(field path, problem) for each error; `where` names the item, e.g. `events[3]`."""
    out = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        out.append((f"{where}.{loc}" if loc else where, msg))
    return out


def parse(model: type[BaseModel], raw: Any, where: str) -> Any:
    """Validate one raw item; raise InvalidInput naming the field on failure."""
    if not isinstance(raw, dict):
        raise InvalidInput(where, "expected a JSON object")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = describe_errors(exc, where)
        raise InvalidInput(
            problems[0][0], problems[0][1], text="; ".join(f"{f}: {m}" for f, m in problems)
        ) from None
