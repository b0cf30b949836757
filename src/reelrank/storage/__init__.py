"""Storage backends chosen by URL; the only package that imports database drivers."""

from __future__ import annotations

from ..errors import StorageError
from .base import (
    CONTROLS,
    FOLLOWS,
    USERS,
    VIDEOS,
    CatalogChange,
    CatalogStore,
    EventLog,
    StateStore,
    Store,
    VectorStore,
)

__all__ = [
    "CONTROLS",
    "FOLLOWS",
    "USERS",
    "VIDEOS",
    "CatalogChange",
    "CatalogStore",
    "EventLog",
    "StateStore",
    "Store",
    "VectorStore",
    "open_store",
]


def open_store(url: str, synchronous: str = "FULL") -> Store:
    """Open the backend a URL names: `sqlite:///path` or `memory://`."""
    if url.startswith("sqlite:///"):
        from .sqlite import SQLiteStore

        return SQLiteStore(url, synchronous=synchronous)
    if url == "memory://" or url.startswith("memory://"):
        from .memory import MemoryStore

        return MemoryStore(url)
    raise StorageError(f"unsupported store URL {url!r}: use sqlite:///path or memory://")
