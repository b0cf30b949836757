"""The parameter channel: the trainer publishes model parameters, serving applies them.

Entries are (seq, kind, version, blob) in publish order. Kinds: `full` (a complete model a
server can start from), `sparse` (embedding rows touched since the last sync), `dense`
(the network weights) and `status` (the trainer's metrics). Backends by URL:
`sqlite:///path/params.db` (its own file, so trainer writes never wait on event ingest)
and `memory://`.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Protocol

from ..errors import StorageError

Entry = tuple[int, str, str, bytes]


class ParamChannel(Protocol):
    def publish(self, kind: str, version: str, blob: bytes) -> int:
        """Append an entry; return its seq."""

    def read(self, after: int, limit: int = 64, full_blobs: bool = True) -> list[Entry]:
        """Entries with seq > after, oldest first; with `full_blobs=False` a `full`
        entry comes with an empty blob (`blob(seq)` reads it), so a server that already
        holds its version never reads hundreds of MB."""

    def blob(self, seq: int) -> bytes | None:
        """One entry's blob; None once it is pruned."""

    def latest(self, kind: str, blob: bool = True) -> Entry | None:
        """The newest entry of a kind (with an empty blob when `blob` is False)."""

    def prune(self, before: int) -> None:
        """Drop entries with seq < before, except the newest `status`."""

    def close(self) -> None: ...


class MemoryParams:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[Entry] = []
        self._seq = 0

    def publish(self, kind: str, version: str, blob: bytes) -> int:
        with self._lock:
            self._seq += 1
            self._entries.append((self._seq, kind, version, blob))
            return self._seq

    def read(self, after: int, limit: int = 64, full_blobs: bool = True) -> list[Entry]:
        with self._lock:
            found = [e for e in self._entries if e[0] > after][:limit]
        if full_blobs:
            return found
        return [(seq, kind, v, b"" if kind == "full" else b) for seq, kind, v, b in found]

    def blob(self, seq: int) -> bytes | None:
        with self._lock:
            return next((e[3] for e in self._entries if e[0] == seq), None)

    def latest(self, kind: str, blob: bool = True) -> Entry | None:
        with self._lock:
            found = [e for e in self._entries if e[1] == kind]
        if not found:
            return None
        return found[-1] if blob else (*found[-1][:3], b"")

    def prune(self, before: int) -> None:
        with self._lock:
            statuses = [e[0] for e in self._entries if e[1] == "status"]
            newest = statuses[-1] if statuses else 0
            self._entries = [e for e in self._entries if e[0] >= before or e[0] == newest]

    def close(self) -> None:
        pass


class SQLiteParams:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA busy_timeout=30000")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS params (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
            "kind TEXT NOT NULL, version TEXT NOT NULL, ts REAL NOT NULL, blob BLOB NOT NULL)"
        )

    def publish(self, kind: str, version: str, blob: bytes) -> int:
        with self._lock:
            cur = self._conn.execute(
                "INSERT INTO params (kind, version, ts, blob) VALUES (?, ?, ?, ?)",
                (kind, version, time.time(), blob),
            )
            return int(cur.lastrowid or 0)

    def read(self, after: int, limit: int = 64, full_blobs: bool = True) -> list[Entry]:
        blob = "blob" if full_blobs else "CASE WHEN kind = 'full' THEN x'' ELSE blob END"
        with self._lock:
            rows = self._conn.execute(
                f"SELECT seq, kind, version, {blob} FROM params WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, limit),
            ).fetchall()
        return [(r[0], r[1], r[2], bytes(r[3])) for r in rows]

    def blob(self, seq: int) -> bytes | None:
        with self._lock:
            r = self._conn.execute("SELECT blob FROM params WHERE seq = ?", (seq,)).fetchone()
        return bytes(r[0]) if r else None

    def latest(self, kind: str, blob: bool = True) -> Entry | None:
        column = "blob" if blob else "x''"
        with self._lock:
            r = self._conn.execute(
                f"SELECT seq, kind, version, {column} FROM params "
                "WHERE kind = ? ORDER BY seq DESC LIMIT 1",
                (kind,),
            ).fetchone()
        return (r[0], r[1], r[2], bytes(r[3])) if r else None

    def prune(self, before: int) -> None:
        with self._lock:
            self._conn.execute(
                "DELETE FROM params WHERE seq < ? AND NOT (kind = 'status' AND seq = "
                "(SELECT MAX(seq) FROM params WHERE kind = 'status'))",
                (before,),
            )

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def open_params(url: str) -> ParamChannel:
    """`sqlite:///path/params.db` or `memory://`."""
    if url.startswith("sqlite:///"):
        try:
            return SQLiteParams(Path(url[len("sqlite:///") :]))
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open {url}: {exc}") from exc
    if url.startswith("memory://"):
        return MemoryParams()
    raise StorageError(f"unsupported parameter channel URL {url!r}")
