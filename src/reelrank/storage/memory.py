"""`memory://`: every role in process memory, for tests and throwaway runs."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, Generic, TypeVar

import numpy as np

from ..schema import AuditEntry, Event, EventType, Follow, Impression, User, Video
from .base import (
    CONTROLS,
    FOLLOWS,
    USERS,
    VIDEOS,
    CatalogChange,
    CatalogStore,
    EventLog,
    StateStore,
    VectorStore,
)

T = TypeVar("T")


class MemoryCatalog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._videos: list[Video] = []
        self._video_rows: dict[str, int] = {}
        self._users: dict[str, User] = {}
        self._follows: set[tuple[str, str]] = set()
        self._controls: dict[tuple[str, str], dict[str, Any]] = {}
        self._audit: list[AuditEntry] = []
        self._changes: list[CatalogChange] = []
        self.origin = uuid.uuid4().hex

    def _record(self, table: str, key: str, body: dict[str, Any] | None = None) -> None:
        """Append a change (under `_lock`)."""
        seq = len(self._changes) + 1
        self._changes.append(CatalogChange(seq, table, key, body, self.origin))

    def set_follow(self, user_id: str, creator_id: str, on: bool) -> bool:
        """Add or remove one edge (under `_lock`); True when it changed."""
        edge = (user_id, creator_id)
        if (edge in self._follows) == on:
            return False
        if on:
            self._follows.add(edge)
        else:
            self._follows.discard(edge)
        self._record(FOLLOWS, user_id, {"creator_id": creator_id, "following": on})
        return True

    def creator_of(self, video_id: str) -> str | None:
        row = self._video_rows.get(video_id)
        return None if row is None else self._videos[row].creator_id

    def upsert_videos(self, videos: list[Video]) -> list[tuple[int, bool]]:
        out = []
        with self._lock:
            for video in videos:
                row = self._video_rows.get(video.id)
                if row is None:
                    row = len(self._videos)
                    self._videos.append(video)
                    self._video_rows[video.id] = row
                    out.append((row, True))
                else:
                    self._videos[row] = video
                    out.append((row, False))
                self._record(VIDEOS, video.id)
        return out

    def get_video(self, video_id: str) -> tuple[int, Video] | None:
        row = self._video_rows.get(video_id)
        return None if row is None else (row, self._videos[row])

    def iter_videos(self) -> Iterator[tuple[int, Video]]:
        with self._lock:
            videos = list(self._videos)
        yield from enumerate(videos)

    def upsert_users(self, users: list[User]) -> list[bool]:
        out = []
        with self._lock:
            for u in users:
                out.append(u.id not in self._users)
                self._users[u.id] = u
                self._record(USERS, u.id)
        return out

    def get_user(self, user_id: str) -> User | None:
        return self._users.get(user_id)

    def iter_users(self) -> Iterator[User]:
        with self._lock:
            users = list(self._users.values())
        yield from users

    def add_follows(self, follows: list[Follow]) -> list[bool]:
        out = []
        with self._lock:
            for f in follows:
                out.append(self.set_follow(f.user_id, f.creator_id, True))
        return out

    def remove_follow(self, user_id: str, creator_id: str) -> bool:
        with self._lock:
            return self.set_follow(user_id, creator_id, False)

    def iter_follows(self) -> Iterator[Follow]:
        with self._lock:
            edges = sorted(self._follows)
        for user_id, creator_id in edges:
            yield Follow(user_id=user_id, creator_id=creator_id)

    def put_control(self, kind: str, key: str, body: dict[str, Any]) -> None:
        with self._lock:
            self._controls[(kind, key)] = dict(body)
            self._record(CONTROLS, key, {"kind": kind})

    def iter_controls(self, kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
        with self._lock:
            found = sorted((k, dict(b)) for (c, k), b in self._controls.items() if c == kind)
        yield from found

    def get_control(self, kind: str, key: str) -> dict[str, Any] | None:
        with self._lock:
            found = self._controls.get((kind, key))
        return None if found is None else dict(found)

    def changes(self, after: int, limit: int) -> list[CatalogChange]:
        with self._lock:
            return self._changes[after : after + limit]

    def last_change(self) -> int:
        return len(self._changes)

    def append_audit(self, entries: list[AuditEntry]) -> list[int]:
        out = []
        with self._lock:
            for e in entries:
                seq = len(self._audit) + 1
                self._audit.append(e.model_copy(update={"seq": seq}))
                out.append(seq)
        return out

    def read_audit(
        self, target_kind: str | None, target_id: str | None, before: int | None, limit: int
    ) -> list[AuditEntry]:
        with self._lock:
            found = [
                e
                for e in reversed(self._audit)
                if (target_kind is None or e.target_kind == target_kind)
                and (target_id is None or e.target_id == target_id)
                and (before is None or e.seq < before)
            ]
        return found[:limit]


class _Rows(Generic[T]):
    """An append-only list read by offset (the first row is offset 1); rows at or below
    `released` are dropped, and offsets keep counting past them. Callers hold the log's
    lock."""

    def __init__(self) -> None:
        self.rows: list[T] = []
        self.released = 0

    def last(self) -> int:
        return self.released + len(self.rows)

    def read(self, after: int, limit: int) -> list[tuple[int, T]]:
        after = max(after, self.released)  # released rows are gone
        start = after - self.released
        return [(after + i + 1, r) for i, r in enumerate(self.rows[start : start + limit])]

    def release(self, upto: int) -> None:
        n = min(max(upto - self.released, 0), len(self.rows))
        del self.rows[:n]
        self.released += n


class MemoryEventLog:
    def __init__(self, catalog: MemoryCatalog) -> None:
        self._catalog = catalog  # holds the follow graph that follow events change
        self._lock = threading.Lock()
        self._events: _Rows[Event] = _Rows()
        self._ids: set[str] = set()
        self._impressions: _Rows[Impression] = _Rows()

    def append(self, events: list[Event], received_at: float) -> list[int | None]:
        out: list[int | None] = []
        with self._lock:
            for e in events:
                if e.event_id in self._ids:
                    out.append(None)
                    continue
                self._ids.add(e.event_id)
                self._events.rows.append(e)
                out.append(self._events.last())
                if e.type in (EventType.FOLLOW, EventType.UNFOLLOW):
                    with self._catalog._lock:
                        creator = self._catalog.creator_of(e.video_id)
                        if creator is not None:
                            on = e.type is EventType.FOLLOW
                            self._catalog.set_follow(e.user_id, creator, on)
        return out

    def read(self, after: int, limit: int) -> list[tuple[int, Event]]:
        with self._lock:
            return self._events.read(after, limit)

    def last_offset(self) -> int:
        return self._events.last()

    def append_impressions(self, impressions: list[Impression]) -> None:
        with self._lock:
            self._impressions.rows.extend(impressions)

    def read_impressions(self, after: int, limit: int) -> list[tuple[int, Impression]]:
        with self._lock:
            return self._impressions.read(after, limit)

    def last_impression_offset(self) -> int:
        return self._impressions.last()

    def release(self, events_upto: int, impressions_upto: int) -> None:
        """Drop the events and impressions at or below these offsets, which their only
        reader has consumed (a replay's trainer log: without this it holds every page's
        features, gigabytes over a long log). Offsets keep counting; event ids stay
        known, so a duplicate is still refused."""
        with self._lock:
            self._events.release(events_upto)
            self._impressions.release(impressions_upto)


class MemoryState:
    def __init__(self) -> None:
        self._snapshots: dict[str, bytes] = {}
        self._offsets: dict[str, int] = {}

    def save_snapshot(self, name: str, blob: bytes | Sequence[bytes | memoryview]) -> None:
        self._snapshots[name] = bytes(blob) if isinstance(blob, bytes) else b"".join(blob)

    def load_snapshot(self, name: str) -> bytes | None:
        return self._snapshots.get(name)

    def commit_offset(self, consumer: str, offset: int) -> None:
        self._offsets[consumer] = offset

    def get_offset(self, consumer: str) -> int:
        return self._offsets.get(consumer, 0)


class MemoryVectors:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spaces: dict[str, dict[str, tuple[str, np.ndarray]]] = {}

    def put_vectors(
        self, space: str, ids: list[str], fingerprints: list[str], vectors: np.ndarray
    ) -> None:
        half = np.asarray(vectors, dtype=np.float16)
        with self._lock:
            found = self._spaces.setdefault(space, {})
            for j, (i, f) in enumerate(zip(ids, fingerprints, strict=True)):
                found[i] = (f, half[j].copy())

    def load_vectors(self, space: str) -> tuple[list[str], list[str], np.ndarray]:
        with self._lock:
            items = list(self._spaces.get(space, {}).items())
        if not items:
            return [], [], np.zeros((0, 0), dtype=np.float32)
        matrix = np.stack([v for _, (_, v) in items]).astype(np.float32)
        return [i for i, _ in items], [f for _, (f, _) in items], matrix


class MemoryStore:
    """Nothing survives the process; everything else behaves as the SQLite store does."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        catalog = MemoryCatalog()
        self.catalog: CatalogStore = catalog
        self.events: EventLog = MemoryEventLog(catalog)
        self.state: StateStore = MemoryState()
        self.vectors: VectorStore = MemoryVectors()

    def close(self) -> None:
        pass
