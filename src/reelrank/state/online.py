"""The online state over a store: loads it, follows the event and impression logs and the
catalog's change feed into the fold, in offset order, and snapshots it."""

from __future__ import annotations

import logging
import threading

from ..config import Settings
from ..schema import Event
from ..storage import CONTROLS, FOLLOWS, CatalogChange, Store
from .changes import CatalogFollower
from .fold import StateFold
from .snapshots import Snapshots

log = logging.getLogger(__name__)

READ_CHUNK = 5000


class OnlineState(StateFold):
    """The fold, fed from the store. It reads the logs and the catalog and writes only
    its snapshot: replaying the log never writes the catalog."""

    def __init__(self, settings: Settings, store: Store, content_dim: int) -> None:
        super().__init__(settings, content_dim)
        self.store = store
        self._consume = threading.Lock()  # one consumer of the logs at a time
        self.offset = 0  # last event-log offset folded in
        self.impression_offset = 0  # last impression-log offset folded in
        self.snapshots = Snapshots(self, store.state)
        self.catalog_changes = CatalogFollower(store.catalog)
        self.catalog_changes.on(FOLLOWS, self._on_follow)
        self.catalog_changes.on(CONTROLS, self._on_user_controls, kind="user")

    def _on_follow(self, change: CatalogChange) -> None:
        assert change.body is not None
        with self.lock:
            self.follow(change.key, change.body["creator_id"], change.body["following"])

    def _on_user_controls(self, change: CatalogChange) -> None:
        body = self.store.catalog.get_control("user", change.key)
        if body is not None:
            with self.lock:
                self.set_controls(change.key, body)

    # -- loading -------------------------------------------------------------------------
    def load(self) -> None:
        """Rebuild from the store: catalog, follows, the last snapshot, then the log tail
        (the content index is filled by its indexer, `ContentIndexer.fill`)."""
        catalog = self.store.catalog
        with self.lock:
            self.catalog_changes.start_at_head()
            for key, body in catalog.iter_controls("creator"):
                if body.get("suspended"):
                    self.table.suspend(key, True)
            self.table.load(list(catalog.iter_videos()))
            self.grow(self.table.size)
            for user in catalog.iter_users():
                self.profiles[user.id] = user
            for f in catalog.iter_follows():
                self.follow(f.user_id, f.creator_id, True)
            for key, body in catalog.iter_controls("user"):
                self.set_controls(key, body)
            offsets = self.snapshots.restore()
            if offsets is not None:
                self.offset, self.impression_offset = offsets
            for key in self.resets:  # resets after the snapshot
                self.reset_user(key)
        # Served impressions first: the events after them are joined to pool impressions.
        self.catch_up_impressions()
        replayed = self.catch_up()
        self.catalog_changes.catch_up()
        log.info(
            "state loaded: %d videos, %d users, offset %d (%d events replayed)",
            self.table.size,
            len(self.users),
            self.offset,
            replayed,
        )

    def catch_up(self) -> int:
        """Fold every event after `offset` into the state; return how many."""
        n = 0
        with self._consume:
            while True:
                batch = self.store.events.read(self.offset, READ_CHUNK)
                if not batch:
                    return n
                for offset, event in batch:
                    # Per event, so a feed request never waits for a whole batch.
                    with self.lock:
                        self.apply(event)
                        self.offset = offset
                n += len(batch)

    def apply_logged(self, logged: list[tuple[int, Event]]) -> None:
        """Fold events this process just appended (offset order); anything the log holds
        before them that the state has not seen is read from the log first."""
        if not logged:
            return
        with self._consume:
            if self.offset == logged[0][0] - 1:
                for offset, event in logged:
                    if offset != self.offset + 1:
                        break
                    with self.lock:
                        self.apply(event)
                        self.offset = offset
        self.catch_up()

    def catch_up_impressions(self) -> int:
        """Mark as seen every served impression after `impression_offset`."""
        n = 0
        with self._consume, self.lock:
            while True:
                batch = self.store.events.read_impressions(self.impression_offset, READ_CHUNK)
                if not batch:
                    return n
                for offset, imp in batch:
                    self.mark_served(imp)
                    self.impression_offset = offset
                n += len(batch)

    def lag(self) -> int:
        """Events in the log the state has not folded yet."""
        return self.store.events.last_offset() - self.offset

    def snapshot(self) -> None:
        """Persist the state with the offsets it reflects (one atomic write)."""
        self.snapshots.save(lambda: (self.offset, self.impression_offset))
