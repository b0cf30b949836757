"""The embedded default: one SQLite file in WAL mode holding every role."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ..errors import StorageError
from .base import CatalogStore, EventLog, StateStore, VectorStore
from .sqlite_catalog import SQLiteCatalog
from .sqlite_db import Database
from .sqlite_logs import SQLiteEventLog, SQLiteState, SQLiteVectors

__all__ = ["SQLiteCatalog", "SQLiteEventLog", "SQLiteState", "SQLiteStore", "SQLiteVectors"]


class SQLiteStore:
    """`sqlite:///path/to/file.db`: catalog and logs in one WAL database, the state
    snapshots in files beside it."""

    def __init__(self, url: str, synchronous: str = "FULL") -> None:
        path = url[len("sqlite:///") :]
        if not path:
            raise StorageError(f"store URL {url!r} names no file")
        try:
            self._db = Database(Path(path), synchronous)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open {url}: {exc}") from exc
        self.url = url
        self.catalog: CatalogStore = SQLiteCatalog(self._db)
        self.events: EventLog = SQLiteEventLog(self._db)
        self.state: StateStore = SQLiteState(self._db, Path(path))
        self.vectors: VectorStore = SQLiteVectors(self._db)

    def close(self) -> None:
        with self._db.lock:
            self._db.conn.close()
