"""Catalog records another process wrote, applied here: uploads, review decisions, hides,
creators' strikes and boosts, read from the catalog's change feed.

Each process applies its own writes as it makes them; what another process writes to the
same store reaches this one's table, indexes and pools through these handlers, which see
only foreign changes (`CatalogFollower.on(..., foreign=True)`).
"""

from __future__ import annotations

from ..state.changes import CatalogFollower
from ..state.online import OnlineState
from ..storage import CONTROLS, VIDEOS, CatalogChange, CatalogStore
from .lifecycle import Lifecycle


class CatalogReplica:
    def __init__(
        self,
        catalog: CatalogStore,
        state: OnlineState,
        lifecycle: Lifecycle,
        follower: CatalogFollower,
    ) -> None:
        self.catalog = catalog
        self.state = state
        self.lifecycle = lifecycle
        self.applied = 0  # foreign records applied
        follower.on(VIDEOS, self._on_video, foreign=True)
        follower.on(CONTROLS, self._on_creator, kind="creator", foreign=True)
        follower.on(CONTROLS, self._on_video_control, kind="video", foreign=True)

    def _on_video(self, change: CatalogChange) -> None:
        found = self.catalog.get_video(change.key)
        if found is None:
            return
        row, video = found
        state, table, lifecycle = self.state, self.state.table, self.lifecycle
        with lifecycle.lock:
            current = table.records[row] if row < len(table.records) else None
            if current == video:  # already as written (a later change was applied first)
                return
            with state.lock:
                state.grow(row + 1)
            table.upsert(row, video)
            lifecycle.duplicates.add(row, video)
            lifecycle.track_pending(row, video)
            lifecycle.place([(row, video)], lifecycle.clock())
        self.applied += 1

    def _on_creator(self, change: CatalogChange) -> None:
        body = self.catalog.get_control("creator", change.key)
        if body is None:
            return
        lifecycle = self.lifecycle
        with lifecycle.lock:
            was = bool(lifecycle.creators.get(change.key, {}).get("suspended"))
            lifecycle.creators[change.key] = body
            if bool(body.get("suspended")) != was:
                lifecycle.suspend(change.key, bool(body.get("suspended")))
        self.applied += 1

    def _on_video_control(self, change: CatalogChange) -> None:
        body = self.catalog.get_control("video", change.key)
        if body is None:
            return
        with self.lifecycle.lock, self.state.lock:
            self.lifecycle.restore_boost(change.key, int(body.get("boost_granted", 0)))
        self.applied += 1
