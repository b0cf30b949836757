"""The embedded store's database: the schema, and one connection guarded by a lock whose
writes run in IMMEDIATE transactions."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from pathlib import Path

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
    body BLOB,
    origin TEXT NOT NULL DEFAULT ''
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


class Database:
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
        changes = {r[1] for r in self.conn.execute("PRAGMA table_info(catalog_changes)")}
        if "origin" not in changes:  # change feeds created before writers were named
            self.conn.execute(
                "ALTER TABLE catalog_changes ADD COLUMN origin TEXT NOT NULL DEFAULT ''"
            )
        self.origin = uuid.uuid4().hex  # names this connection's writes in the change feed

    def write(self, synchronous: str | None = None) -> _Tx:
        return _Tx(self, synchronous)


class _Tx:
    """An IMMEDIATE transaction under the connection lock. With `synchronous` (e.g.
    NORMAL), that pragma holds for this commit only: in WAL mode such a commit skips the
    fsync and becomes durable with the next fully synchronous one."""

    def __init__(self, db: Database, synchronous: str | None = None) -> None:
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
