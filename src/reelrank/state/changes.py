"""Following the catalog's change feed: writes any process made, applied in commit order."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ..storage import CatalogChange, CatalogStore

log = logging.getLogger(__name__)

READ_CHUNK = 1000

Handler = Callable[[CatalogChange], None]


class CatalogFollower:
    """Reads `CatalogStore.changes` after the last seq it applied and hands each change to
    the handlers registered for its table (and, for controls, its kind).

    Changes this process wrote come back too: a handler is idempotent (it applies the
    record as the change left it), so a process's own writes, applied at once for
    read-your-writes, are applied again harmlessly; or it asks for `foreign` changes
    only, where applying costs more (video records)."""

    def __init__(self, catalog: CatalogStore) -> None:
        self.catalog = catalog
        self.seq = 0
        self._handlers: dict[tuple[str, str | None], list[tuple[Handler, bool]]] = {}
        self._lock = threading.Lock()  # one reader at a time, changes in order

    def on(
        self, table: str, handler: Handler, kind: str | None = None, foreign: bool = False
    ) -> None:
        """Call `handler` for every change to `table` (controls: of `kind`); with
        `foreign`, only for changes another store object wrote (this process applied its
        own as it wrote them)."""
        self._handlers.setdefault((table, kind), []).append((handler, foreign))

    def start_at_head(self) -> None:
        """Skip every change committed so far (call before loading the catalog whole:
        what commits during the load is applied again by the next `catch_up`)."""
        self.seq = self.catalog.last_change()

    def catch_up(self) -> int:
        """Apply every change after `seq`; return how many were read."""
        n = 0
        with self._lock:
            while True:
                batch = self.catalog.changes(self.seq, READ_CHUNK)
                if not batch:
                    return n
                for change in batch:
                    kind = change.body.get("kind") if change.body else None
                    own = change.origin == self.catalog.origin
                    for handler, foreign in self._handlers.get((change.table, kind), ()):
                        if foreign and own:
                            continue
                        try:
                            handler(change)
                        except Exception:  # one bad record must not stop the feed
                            log.exception("catalog change %s not applied", change)
                    self.seq = change.seq
                n += len(batch)
