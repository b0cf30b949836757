"""Storage protocols. Everything outside `storage/` sees only these."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..schema import AuditEntry, Event, Follow, Impression, User, Video

# The tables a catalog change names.
VIDEOS, USERS, FOLLOWS, CONTROLS = "videos", "users", "follows", "controls"


@dataclass(frozen=True, slots=True)
class CatalogChange:
    """One committed catalog write, in commit order: which record changed, not its new
    value (a follower reads that with `get_video`, `get_user` or `get_control`).

    - `videos` / `users`: `key` is the id; `body` is None.
    - `follows`: `key` is the user id; `body` is `{"creator_id": ..., "following": bool}`,
      the edge as the write left it (`add_follows`, `remove_follow`, or a follow or
      unfollow event appended to the log).
    - `controls`: `key` is the control's key; `body` is `{"kind": ...}`.
    """

    seq: int
    table: str
    key: str
    body: dict[str, Any] | None = None
    origin: str = ""  # the `CatalogStore.origin` of the store object that wrote it


class CatalogStore(Protocol):
    """Videos, users and follows: the app's records, upserted by id. Every write also
    appends to the change feed (`changes`) in the same transaction, so any process can
    follow uploads, review decisions, hides, strikes, boosts, mutes and follows.

    `origin` names this opened store object (fresh each time a store is opened): changes
    carry the origin of the one that wrote them, so a process can tell its own writes from
    another's."""

    origin: str

    def upsert_videos(self, videos: list[Video]) -> list[tuple[int, bool]]:
        """Insert or replace; return (row, created) per video. Rows are stable forever."""

    def get_video(self, video_id: str) -> tuple[int, Video] | None:
        """The video and its row, or None."""

    def iter_videos(self) -> Iterator[tuple[int, Video]]:
        """Every video with its row, in row order."""

    def upsert_users(self, users: list[User]) -> list[bool]:
        """Insert or replace; return created per user."""

    def get_user(self, user_id: str) -> User | None:
        """The user, or None."""

    def iter_users(self) -> Iterator[User]:
        """Every user."""

    def add_follows(self, follows: list[Follow]) -> list[bool]:
        """Add edges; return True per edge that was new."""

    def remove_follow(self, user_id: str, creator_id: str) -> bool:
        """Remove an edge; True if it existed."""

    def iter_follows(self) -> Iterator[Follow]:
        """Every follow edge."""

    def put_control(self, kind: str, key: str, body: dict[str, Any]) -> None:
        """Replace the server-side control record of a user, creator or video (strikes,
        boosts, mutes, resets): state the app does not send, kept durably."""

    def iter_controls(self, kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every (key, body) control record of a kind."""

    def get_control(self, kind: str, key: str) -> dict[str, Any] | None:
        """One control record's body, or None."""

    def changes(self, after: int, limit: int) -> list[CatalogChange]:
        """Committed changes with seq > after, in commit order, at most limit."""

    def last_change(self) -> int:
        """The newest change's seq, 0 when none."""

    def append_audit(self, entries: list[AuditEntry]) -> list[int]:
        """Durably append audit entries; their sequence numbers."""

    def read_audit(
        self, target_kind: str | None, target_id: str | None, before: int | None, limit: int
    ) -> list[AuditEntry]:
        """Audit entries, newest first, optionally for one target, with seq < before."""


class EventLog(Protocol):
    """Append-only logs with offsets: client events (idempotent by event_id) and the
    server's own impression records."""

    def append(self, events: list[Event], received_at: float) -> list[int | None]:
        """Durably append; the offset per event, or None for a duplicate event_id (also
        within the batch). On return the accepted events survive a crash. An accepted
        follow or unfollow event adds or removes the user's edge to the video's creator
        in the catalog (with its change) in the same transaction: the follow graph is the
        catalog's, and folding the log never writes it."""

    def read(self, after: int, limit: int) -> list[tuple[int, Event]]:
        """Events with offset > after, in offset order, at most limit."""

    def last_offset(self) -> int:
        """The newest offset, 0 when empty."""

    def append_impressions(self, impressions: list[Impression]) -> None:
        """Append served-impression records."""

    def read_impressions(self, after: int, limit: int) -> list[tuple[int, Impression]]:
        """Impressions with offset > after, in offset order."""

    def last_impression_offset(self) -> int:
        """The newest impression offset, 0 when empty."""


class StateStore(Protocol):
    """Snapshots of online state and consumer offsets."""

    def save_snapshot(self, name: str, blob: bytes | Sequence[bytes | memoryview]) -> None:
        """Atomically replace the named snapshot with `blob`, or with its parts joined end
        to end (a large snapshot is written part by part, never joined in memory)."""

    def load_snapshot(self, name: str) -> bytes | None:
        """The named snapshot, or None."""

    def commit_offset(self, consumer: str, offset: int) -> None:
        """Record how far a consumer has processed a log."""

    def get_offset(self, consumer: str) -> int:
        """A consumer's committed offset, 0 if none."""


class VectorStore(Protocol):
    """Vectors derived from the records (content embeddings), kept beside them so a
    restart reads them instead of computing them again. Keyed by (space, id); a space
    names what computed them (e.g. `content/minilm/384`), and each vector carries the
    fingerprint of what it was computed from, so a reader can tell a stale one. Stored as
    float16: derived data, written without waiting for the disk."""

    def put_vectors(
        self, space: str, ids: list[str], fingerprints: list[str], vectors: np.ndarray
    ) -> None:
        """Insert or replace one vector per id (rows of `vectors`)."""

    def load_vectors(self, space: str) -> tuple[list[str], list[str], np.ndarray]:
        """Every (id, fingerprint) of the space and their vectors as one float32 matrix
        (rows in the same order; shape (0, 0) when the space is empty)."""


class Store(Protocol):
    """One opened backend playing every storage role."""

    url: str
    catalog: CatalogStore
    events: EventLog
    state: StateStore
    vectors: VectorStore

    def close(self) -> None:
        """Release connections; pending writes are already durable."""
