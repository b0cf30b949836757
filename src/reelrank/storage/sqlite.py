"""The embedded default: one SQLite file in WAL mode holding every role."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ..errors import StorageError
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

SCHEMA = """
CREATE TABLE IF NOT EXISTS videos (
    row INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS follows (
    user_id TEXT NOT NULL,
    creator_id TEXT NOT NULL,
    PRIMARY KEY (user_id, creator_id)
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    user_id TEXT NOT NULL,
    video_id TEXT NOT NULL,
    request_id TEXT,
    ts REAL NOT NULL,
    watch_ms INTEGER,
    device TEXT,
    region TEXT,
    received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS impressions (
    seq INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    video_id TEXT NOT NULL,
    source TEXT NOT NULL,
    score REAL NOT NULL,
    model_version TEXT NOT NULL,
    ts REAL NOT NULL,
    arms TEXT,
    features BLOB
);
CREATE TABLE IF NOT EXISTS controls (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target_kind TEXT NOT NULL,
    target_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail BLOB
);
CREATE INDEX IF NOT EXISTS audit_target ON audit (target_kind, target_id, seq);
CREATE TABLE IF NOT EXISTS snapshots (
    name TEXT PRIMARY KEY,
    blob BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS catalog_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tbl TEXT NOT NULL,
    key TEXT NOT NULL,
    body BLOB
);
CREATE TABLE IF NOT EXISTS vectors (
    space TEXT NOT NULL,
    id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    vec BLOB NOT NULL,
    PRIMARY KEY (space, id)
);
CREATE TABLE IF NOT EXISTS consumer_offsets (
    consumer TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
);
"""

_EVENT_COLS = "seq, event_id, type, user_id, video_id, request_id, ts, watch_ms, device, region"
_IMP_COLS = (
    "seq, request_id, position, user_id, video_id, source, score, model_version, ts, arms, features"
)


class _Db:
    """One connection guarded by a lock; writes run in IMMEDIATE transactions."""

    def __init__(self, path: Path, synchronous: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(
            path, check_same_thread=False, isolation_level=None, timeout=30.0
        )
        self.lock = threading.RLock()
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.synchronous = synchronous.upper()
        self.conn.execute(f"PRAGMA synchronous={self.synchronous}")
        self.conn.execute("PRAGMA busy_timeout=30000")
        self.conn.executescript(SCHEMA)
        columns = {r[1] for r in self.conn.execute("PRAGMA table_info(impressions)")}
        if "features" not in columns:  # stores created before features were logged
            self.conn.execute("ALTER TABLE impressions ADD COLUMN features BLOB")
        if "arms" not in columns:  # stores created before experiment arms were logged
            self.conn.execute("ALTER TABLE impressions ADD COLUMN arms TEXT")

    def write(self, synchronous: str | None = None) -> _Tx:
        return _Tx(self, synchronous)


class _Tx:
    """An IMMEDIATE transaction under the connection lock. With `synchronous` (e.g.
    NORMAL), that pragma holds for this commit only: in WAL mode such a commit skips the
    fsync and becomes durable with the next fully synchronous one."""

    def __init__(self, db: _Db, synchronous: str | None = None) -> None:
        self.db = db
        self.synchronous = synchronous

    def __enter__(self) -> sqlite3.Connection:
        self.db.lock.acquire()
        try:
            if self.synchronous:
                self.db.conn.execute(f"PRAGMA synchronous={self.synchronous}")
            self.db.conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._restore()
            self.db.lock.release()
            raise
        return self.db.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            self.db.conn.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            try:
                self._restore()
            finally:
                self.db.lock.release()

    def _restore(self) -> None:
        if self.synchronous:
            self.db.conn.execute(f"PRAGMA synchronous={self.db.synchronous}")


def _record(conn: sqlite3.Connection, changes: list[tuple[str, str, Any]]) -> None:
    """Append catalog changes inside the caller's write transaction."""
    if changes:
        conn.executemany(
            "INSERT INTO catalog_changes (tbl, key, body) VALUES (?, ?, ?)",
            [(t, k, None if b is None else orjson.dumps(b)) for t, k, b in changes],
        )


def _set_follow(conn: sqlite3.Connection, user_id: str, creator_id: str, on: bool) -> bool:
    """Add or remove one edge inside the caller's transaction, recording the change when
    the edge changed; True when it did."""
    if on:
        sql = "INSERT OR IGNORE INTO follows (user_id, creator_id) VALUES (?, ?)"
    else:
        sql = "DELETE FROM follows WHERE user_id = ? AND creator_id = ?"
    changed = conn.execute(sql, (user_id, creator_id)).rowcount == 1
    if changed:
        _record(conn, [(FOLLOWS, user_id, {"creator_id": creator_id, "following": on})])
    return changed


class SQLiteCatalog:
    def __init__(self, db: _Db) -> None:
        self._db = db

    def upsert_videos(self, videos: list[Video]) -> list[tuple[int, bool]]:
        out: list[tuple[int, bool]] = []
        with self._db.write() as conn:
            for video in videos:
                body = orjson.dumps(video.model_dump(mode="json"))
                found = conn.execute("SELECT row FROM videos WHERE id = ?", (video.id,)).fetchone()
                if found:
                    conn.execute("UPDATE videos SET body = ? WHERE row = ?", (body, found[0]))
                    out.append((found[0], False))
                else:
                    cur = conn.execute(
                        "INSERT INTO videos (row, id, body) VALUES "
                        "((SELECT COALESCE(MAX(row), -1) + 1 FROM videos), ?, ?)",
                        (video.id, body),
                    )
                    out.append((int(cur.lastrowid or 0), True))
            _record(conn, [(VIDEOS, v.id, None) for v in videos])
        return out

    def get_video(self, video_id: str) -> tuple[int, Video] | None:
        with self._db.lock:
            found = self._db.conn.execute(
                "SELECT row, body FROM videos WHERE id = ?", (video_id,)
            ).fetchone()
        return (found[0], Video.model_validate_json(found[1])) if found else None

    def iter_videos(self) -> Iterator[tuple[int, Video]]:
        with self._db.lock:
            rows = self._db.conn.execute("SELECT row, body FROM videos ORDER BY row").fetchall()
        for row, body in rows:
            yield row, Video.stored(orjson.loads(body))

    def upsert_users(self, users: list[User]) -> list[bool]:
        out = []
        with self._db.write() as conn:
            for user in users:
                body = orjson.dumps(user.model_dump(mode="json"))
                cur = conn.execute(
                    "INSERT INTO users (id, body) VALUES (?, ?) ON CONFLICT(id) DO NOTHING",
                    (user.id, body),
                )
                created = cur.rowcount == 1
                if not created:
                    conn.execute("UPDATE users SET body = ? WHERE id = ?", (body, user.id))
                out.append(created)
            _record(conn, [(USERS, u.id, None) for u in users])
        return out

    def get_user(self, user_id: str) -> User | None:
        with self._db.lock:
            found = self._db.conn.execute(
                "SELECT body FROM users WHERE id = ?", (user_id,)
            ).fetchone()
        return User.model_validate_json(found[0]) if found else None

    def iter_users(self) -> Iterator[User]:
        with self._db.lock:
            rows = self._db.conn.execute("SELECT body FROM users").fetchall()
        for (body,) in rows:
            yield User.stored(orjson.loads(body))

    def add_follows(self, follows: list[Follow]) -> list[bool]:
        out = []
        with self._db.write() as conn:
            for f in follows:
                out.append(_set_follow(conn, f.user_id, f.creator_id, True))
        return out

    def remove_follow(self, user_id: str, creator_id: str) -> bool:
        with self._db.write() as conn:
            return _set_follow(conn, user_id, creator_id, False)

    def iter_follows(self) -> Iterator[Follow]:
        with self._db.lock:
            rows = self._db.conn.execute("SELECT user_id, creator_id FROM follows").fetchall()
        for user_id, creator_id in rows:
            yield Follow(user_id=user_id, creator_id=creator_id)

    def put_control(self, kind: str, key: str, body: dict[str, Any]) -> None:
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO controls (kind, key, body) VALUES (?, ?, ?) "
                "ON CONFLICT(kind, key) DO UPDATE SET body = excluded.body",
                (kind, key, orjson.dumps(body)),
            )
            _record(conn, [(CONTROLS, key, {"kind": kind})])

    def iter_controls(self, kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
        with self._db.lock:
            rows = self._db.conn.execute(
                "SELECT key, body FROM controls WHERE kind = ? ORDER BY key", (kind,)
            ).fetchall()
        for key, body in rows:
            yield key, orjson.loads(body)

    def get_control(self, kind: str, key: str) -> dict[str, Any] | None:
        with self._db.lock:
            found = self._db.conn.execute(
                "SELECT body FROM controls WHERE kind = ? AND key = ?", (kind, key)
            ).fetchone()
        return orjson.loads(found[0]) if found else None

    def changes(self, after: int, limit: int) -> list[CatalogChange]:
        with self._db.lock:
            rows = self._db.conn.execute(
                "SELECT seq, tbl, key, body FROM catalog_changes WHERE seq > ? "
                "ORDER BY seq LIMIT ?",
                (after, limit),
            ).fetchall()
        return [
            CatalogChange(seq, tbl, key, None if body is None else orjson.loads(body))
            for seq, tbl, key, body in rows
        ]

    def last_change(self) -> int:
        with self._db.lock:
            (last,) = self._db.conn.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM catalog_changes"
            ).fetchone()
        return int(last)

    def append_audit(self, entries: list[AuditEntry]) -> list[int]:
        out = []
        with self._db.write() as conn:
            for e in entries:
                cur = conn.execute(
                    "INSERT INTO audit (ts, actor, action, target_kind, target_id, reason, "
                    "detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        e.ts,
                        e.actor,
                        e.action,
                        e.target_kind,
                        e.target_id,
                        e.reason,
                        None if e.detail is None else orjson.dumps(e.detail),
                    ),
                )
                out.append(int(cur.lastrowid or 0))
        return out

    def read_audit(
        self, target_kind: str | None, target_id: str | None, before: int | None, limit: int
    ) -> list[AuditEntry]:
        where: list[str] = []
        args: list[Any] = []
        if target_kind is not None:
            where.append("target_kind = ?")
            args.append(target_kind)
        if target_id is not None:
            where.append("target_id = ?")
            args.append(target_id)
        if before is not None:
            where.append("seq < ?")
            args.append(before)
        sql = "SELECT seq, ts, actor, action, target_kind, target_id, reason, detail FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ?"
        with self._db.lock:
            rows = self._db.conn.execute(sql, (*args, limit)).fetchall()
        return [
            AuditEntry(
                seq=r[0],
                ts=r[1],
                actor=r[2],
                action=r[3],
                target_kind=r[4],
                target_id=r[5],
                reason=r[6],
                detail=None if r[7] is None else orjson.loads(r[7]),
            )
            for r in rows
        ]


class SQLiteEventLog:
    def __init__(self, db: _Db) -> None:
        self._db = db

    def append(self, events: list[Event], received_at: float) -> list[int | None]:
        if not events:
            return []
        with self._db.write() as conn:
            ids = [e.event_id for e in events]
            known: set[str] = set()
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                marks = ",".join("?" * len(chunk))
                known.update(
                    r[0]
                    for r in conn.execute(
                        f"SELECT event_id FROM events WHERE event_id IN ({marks})", chunk
                    )
                )
            (last,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()
            offsets: list[int | None] = []
            rows = []
            for e in events:
                if e.event_id in known:
                    offsets.append(None)
                    continue
                known.add(e.event_id)
                last += 1
                offsets.append(last)
                rows.append(
                    (
                        last,
                        e.event_id,
                        e.type.value,
                        e.user_id,
                        e.video_id,
                        e.request_id,
                        e.ts,
                        e.watch_ms,
                        e.device,
                        e.region,
                        received_at,
                    )
                )
            conn.executemany(
                f"INSERT INTO events ({_EVENT_COLS}, received_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            self._follow_edges(conn, events, offsets)
        return offsets

    @staticmethod
    def _follow_edges(
        conn: sqlite3.Connection, events: list[Event], offsets: list[int | None]
    ) -> None:
        """The follow graph's edges for the accepted follow and unfollow events, in log
        order, in the append's transaction."""
        creators: dict[str, str | None] = {}
        for e, offset in zip(events, offsets, strict=True):
            if offset is None or e.type not in (EventType.FOLLOW, EventType.UNFOLLOW):
                continue
            if e.video_id not in creators:
                found = conn.execute(
                    "SELECT body FROM videos WHERE id = ?", (e.video_id,)
                ).fetchone()
                creators[e.video_id] = orjson.loads(found[0])["creator_id"] if found else None
            creator = creators[e.video_id]
            if creator is not None:
                _set_follow(conn, e.user_id, creator, e.type is EventType.FOLLOW)

    def read(self, after: int, limit: int) -> list[tuple[int, Event]]:
        with self._db.lock:
            rows = self._db.conn.execute(
                f"SELECT {_EVENT_COLS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, limit),
            ).fetchall()
        return [
            (
                r[0],
                Event.model_construct(
                    event_id=r[1],
                    type=EventType(r[2]),
                    user_id=r[3],
                    video_id=r[4],
                    request_id=r[5],
                    ts=r[6],
                    watch_ms=r[7],
                    device=r[8],
                    region=r[9],
                ),
            )
            for r in rows
        ]

    def last_offset(self) -> int:
        with self._db.lock:
            return int(
                self._db.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
            )

    def append_impressions(self, impressions: list[Impression]) -> None:
        if not impressions:
            return
        # Served impressions may lose their last fraction of a second in a crash (they are
        # rebuilt from nothing else), so their commits skip the fsync events pay for.
        with self._db.write(synchronous="NORMAL") as conn:
            (last,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM impressions").fetchone()
            conn.executemany(
                f"INSERT INTO impressions ({_IMP_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        last + i + 1,
                        m.request_id,
                        m.position,
                        m.user_id,
                        m.video_id,
                        m.source,
                        m.score,
                        m.model_version,
                        m.ts,
                        orjson.dumps(m.arms).decode() if m.arms else None,
                        orjson.dumps(m.features) if m.features is not None else None,
                    )
                    for i, m in enumerate(impressions)
                ],
            )

    def read_impressions(self, after: int, limit: int) -> list[tuple[int, Impression]]:
        with self._db.lock:
            rows = self._db.conn.execute(
                f"SELECT {_IMP_COLS} FROM impressions WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, limit),
            ).fetchall()
        names = _IMP_COLS.split(", ")[1:-2]
        return [
            (
                r[0],
                Impression.model_construct(
                    **dict(zip(names, r[1:-2], strict=True)),
                    arms=orjson.loads(r[-2]) if r[-2] is not None else None,
                    features=orjson.loads(r[-1]) if r[-1] is not None else None,
                ),
            )
            for r in rows
        ]

    def last_impression_offset(self) -> int:
        with self._db.lock:
            return int(
                self._db.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM impressions").fetchone()[0]
            )


class SQLiteState:
    def __init__(self, db: _Db) -> None:
        self._db = db

    def save_snapshot(self, name: str, blob: bytes) -> None:
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO snapshots (name, blob) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET blob = excluded.blob",
                (name, blob),
            )

    def load_snapshot(self, name: str) -> bytes | None:
        with self._db.lock:
            found = self._db.conn.execute(
                "SELECT blob FROM snapshots WHERE name = ?", (name,)
            ).fetchone()
        return bytes(found[0]) if found else None

    def commit_offset(self, consumer: str, offset: int) -> None:
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO consumer_offsets (consumer, seq) VALUES (?, ?) "
                "ON CONFLICT(consumer) DO UPDATE SET seq = excluded.seq",
                (consumer, offset),
            )

    def get_offset(self, consumer: str) -> int:
        with self._db.lock:
            found = self._db.conn.execute(
                "SELECT seq FROM consumer_offsets WHERE consumer = ?", (consumer,)
            ).fetchone()
        return int(found[0]) if found else 0


class SQLiteVectors:
    def __init__(self, db: _Db) -> None:
        self._db = db

    def put_vectors(
        self, space: str, ids: list[str], fingerprints: list[str], vectors: np.ndarray
    ) -> None:
        if not ids:
            return
        half = np.ascontiguousarray(vectors, dtype=np.float16)
        rows = [
            (space, i, f, half[j].tobytes())
            for j, (i, f) in enumerate(zip(ids, fingerprints, strict=True))
        ]
        # Derived data: a commit that skips the fsync (durable with the next full one).
        with self._db.write(synchronous="NORMAL") as conn:
            conn.executemany(
                "INSERT INTO vectors (space, id, fingerprint, vec) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(space, id) DO UPDATE SET fingerprint = excluded.fingerprint, "
                "vec = excluded.vec",
                rows,
            )

    def load_vectors(self, space: str) -> tuple[list[str], list[str], np.ndarray]:
        with self._db.lock:
            rows = self._db.conn.execute(
                "SELECT id, fingerprint, vec FROM vectors WHERE space = ?", (space,)
            ).fetchall()
        if not rows:
            return [], [], np.zeros((0, 0), dtype=np.float32)
        dim = len(rows[0][2]) // 2
        flat = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float16)
        return (
            [r[0] for r in rows],
            [r[1] for r in rows],
            flat.reshape(len(rows), dim).astype(np.float32),
        )


class SQLiteStore:
    """`sqlite:///path/to/file.db`: catalog, logs and snapshots in one WAL database."""

    def __init__(self, url: str, synchronous: str = "FULL") -> None:
        path = url[len("sqlite:///") :]
        if not path:
            raise StorageError(f"store URL {url!r} names no file")
        try:
            self._db = _Db(Path(path), synchronous)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open {url}: {exc}") from exc
        self.url = url
        self.catalog: CatalogStore = SQLiteCatalog(self._db)
        self.events: EventLog = SQLiteEventLog(self._db)
        self.state: StateStore = SQLiteState(self._db)
        self.vectors: VectorStore = SQLiteVectors(self._db)

    def close(self) -> None:
        with self._db.lock:
            self._db.conn.close()
