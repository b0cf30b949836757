"""The embedded logs and derived data: the event and impression logs, snapshots and
consumer offsets, and stored vectors."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import orjson

from ..schema import Event, EventType, Impression, constructed
from .sqlite_catalog import set_follow
from .sqlite_db import Database

_EVENT_COLS = "seq, event_id, type, user_id, video_id, request_id, ts, watch_ms, device, region"
_IMP_COLS = (
    "seq, request_id, position, user_id, video_id, source, score, model_version, ts, arms, features"
)
_EVENT_TYPES = {t.value: t for t in EventType}


class SQLiteEventLog:
    def __init__(self, db: Database) -> None:
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
            self._follow_edges(conn, self._db.origin, events, offsets)
        return offsets

    @staticmethod
    def _follow_edges(
        conn: sqlite3.Connection, origin: str, events: list[Event], offsets: list[int | None]
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
                set_follow(conn, origin, e.user_id, creator, e.type is EventType.FOLLOW)

    def read(self, after: int, limit: int) -> list[tuple[int, Event]]:
        with self._db.lock:
            rows = self._db.conn.execute(
                f"SELECT {_EVENT_COLS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, limit),
            ).fetchall()
        # Every field, in declaration order: `constructed` sets them at once (the trainer
        # reads every event; `model_construct`'s loop over the fields was a sixth of it).
        types = _EVENT_TYPES
        return [
            (
                r[0],
                constructed(
                    Event,
                    {
                        "event_id": r[1],
                        "type": types.get(r[2]) or EventType(r[2]),
                        "user_id": r[3],
                        "video_id": r[4],
                        "request_id": r[5],
                        "ts": r[6],
                        "watch_ms": r[7],
                        "device": r[8],
                        "region": r[9],
                    },
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
        return [
            (
                r[0],
                constructed(
                    Impression,
                    {
                        "request_id": r[1],
                        "position": r[2],
                        "user_id": r[3],
                        "video_id": r[4],
                        "source": r[5],
                        "score": r[6],
                        "model_version": r[7],
                        "ts": r[8],
                        "features": orjson.loads(r[10]) if r[10] is not None else None,
                        "arms": orjson.loads(r[9]) if r[9] is not None else None,
                    },
                ),
            )
            for r in rows
        ]

    def last_impression_offset(self) -> int:
        with self._db.lock:
            return int(
                self._db.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM impressions").fetchone()[0]
            )


def _fsync(path: Path, missing_ok: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        if missing_ok:
            return
        raise
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SQLiteState:
    """Snapshots live in files beside the database (`<db file>.<name>.snapshot`), written
    to a temporary file, synced and renamed over the last one: a snapshot of a million
    videos is hundreds of MB, which SQLite would write twice (log, then database) while
    holding the write lock every ingest waits for. Snapshots that older stores kept in
    the `snapshots` table are still read, and dropped once a file replaces them."""

    def __init__(self, db: Database, path: Path) -> None:
        self._db = db
        self._dir = path.parent
        self._stem = path.name

    def _file(self, name: str) -> Path:
        if not name.replace("_", "").isalnum():
            raise ValueError(f"snapshot name {name!r}: letters, digits and _ only")
        return self._dir / f"{self._stem}.{name}.snapshot"

    def save_snapshot(self, name: str, blob: bytes | Sequence[bytes | memoryview]) -> None:
        path = self._file(name)
        # First what the snapshot reflects: commits that skipped their fsync (served
        # impressions) are on disk before a snapshot naming their offsets is.
        _fsync(self._dir / f"{self._stem}-wal", missing_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            fh.writelines([blob] if isinstance(blob, bytes) else blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync(self._dir)  # the rename itself survives a power cut
        with self._db.lock:
            legacy = self._db.conn.execute(
                "SELECT 1 FROM snapshots WHERE name = ?", (name,)
            ).fetchone()
        if legacy:
            with self._db.write() as conn:
                conn.execute("DELETE FROM snapshots WHERE name = ?", (name,))

    def load_snapshot(self, name: str) -> bytes | None:
        path = self._file(name)
        if path.exists():
            return path.read_bytes()
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
    def __init__(self, db: Database) -> None:
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
