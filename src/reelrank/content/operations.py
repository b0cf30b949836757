"""Operator controls and reads of the content lifecycle: hide, boost and strike, each
audited, and the state of a video or creator as the admin API shows it. `Lifecycle`
mixes this in; what the controls need of it is declared here."""

from __future__ import annotations

import threading
from typing import Any

from ..config import Settings
from ..errors import Conflict, InvalidInput, NotFound
from ..schema import AuditEntry, ReviewStatus, Video
from ..state.catalog import VideoTable
from ..state.online import OnlineState
from ..state.pools import PoolBook
from ..storage import Store
from .review import checked_actor, checked_reason


class OperatorControls:
    settings: Settings
    state: OnlineState
    store: Store
    table: VideoTable
    pools: PoolBook
    lock: threading.RLock
    creators: dict[str, dict[str, Any]]  # creator id -> strikes, suspended
    boosts: dict[str, int]  # video id -> impressions granted in all

    def _video(self, video_id: str) -> tuple[int, Video]:
        raise NotImplementedError

    def _change(self, row: int, video: Video, entry: AuditEntry) -> None:
        raise NotImplementedError

    def _entry(
        self, actor: str, action: str, kind: str, target: str, reason: str, **detail: Any
    ) -> AuditEntry:
        raise NotImplementedError

    def suspend(self, creator_id: str, suspended: bool) -> None:
        raise NotImplementedError

    # -- operator controls -------------------------------------------------------------------
    def hide(self, video_id: str, hidden: bool, reason: Any, operator: Any) -> dict[str, Any]:
        actor, why = checked_actor(operator), checked_reason(reason)
        with self.lock:
            row, video = self._video(video_id)
            if not hidden and video.status is not ReviewStatus.HIDDEN:
                raise Conflict(f"video {video_id!r} is {video.status.value}, not hidden")
            status = ReviewStatus.HIDDEN if hidden else ReviewStatus.APPROVED
            changed = video.model_copy(
                update={"status": status, "status_reason": why, "reviewed_by": actor}
            )
            self._change(
                row,
                changed,
                self._entry(
                    actor,
                    "video.hide" if hidden else "video.unhide",
                    "video",
                    video_id,
                    why,
                    previous=video.status.value,
                ),
            )
        return self.video_state(video_id)

    def boost(self, video_id: str, impressions: Any, reason: Any, operator: Any) -> dict[str, Any]:
        """Heat a video: `impressions` more through exploration slots, within the budget."""
        actor, why = checked_actor(operator), checked_reason(reason)
        if isinstance(impressions, bool) or not isinstance(impressions, int) or impressions < 1:
            raise InvalidInput("impressions", "a whole number of at least 1")
        with self.lock:
            row, video = self._video(video_id)
            if not self.table.approved[row]:
                raise Conflict(f"video {video_id!r} is not servable ({video.status.value})")
            with self.state.lock:
                left = self.settings.boost_budget - self.pools.boost_outstanding()
                if impressions > left:
                    raise Conflict(
                        f"boost budget: {left} of {self.settings.boost_budget} impressions "
                        f"left, {impressions} asked"
                    )
                granted = self.boosts.get(video_id, 0) + impressions
                self.store.catalog.put_control("video", video_id, {"boost_granted": granted})
                self.boosts[video_id] = granted
                self.pools.boost(row, impressions)
            self.store.catalog.append_audit(
                [self._entry(actor, "video.boost", "video", video_id, why, impressions=impressions)]
            )
        return self.video_state(video_id)

    def strike(self, creator_id: str, add: bool, reason: Any, operator: Any) -> dict[str, Any]:
        """Add a strike (suspending at `strikes_to_suspend`), or clear them (reinstate)."""
        actor, why = checked_actor(operator), checked_reason(reason)
        with self.lock:
            if self.table.creators.get(creator_id) < 0:
                raise NotFound(f"unknown creator {creator_id!r}")
            record = dict(self.creators.get(creator_id, {"strikes": 0, "suspended": False}))
            record["strikes"] = record.get("strikes", 0) + 1 if add else 0
            suspended = record["strikes"] >= self.settings.strikes_to_suspend
            was = bool(record.get("suspended"))
            record["suspended"] = suspended
            self.store.catalog.put_control("creator", creator_id, record)
            self.creators[creator_id] = record
            if suspended != was:
                self.suspend(creator_id, suspended)
            action = "creator.strike" if add else "creator.reinstate"
            if suspended and not was:
                action = "creator.suspend"
            self.store.catalog.append_audit(
                [
                    self._entry(
                        actor,
                        action,
                        "creator",
                        creator_id,
                        why,
                        strikes=record["strikes"],
                        suspended=suspended,
                    )
                ]
            )
        return self.creator_state(creator_id)

    # -- reads -------------------------------------------------------------------------------
    def video_state(self, video_id: str) -> dict[str, Any]:
        row, video = self._video(video_id)
        return {
            "id": video.id,
            "status": video.status.value,
            "status_reason": video.status_reason,
            "reviewed_by": video.reviewed_by,
            "duplicate_of": video.duplicate_of,
            "servable": bool(self.table.approved[row]),
            "reports": len(self.state.reporters.get(row, ())),
            "pool": self.pools.describe(row, self.state.counters),
        }

    def creator_state(self, creator_id: str) -> dict[str, Any]:
        c = self.table.creators.get(creator_id)
        if c < 0:
            raise NotFound(f"unknown creator {creator_id!r}")
        record = self.creators.get(creator_id, {})
        return {
            "id": creator_id,
            "strikes": int(record.get("strikes", 0)),
            "suspended": bool(record.get("suspended", False)),
            "strikes_to_suspend": self.settings.strikes_to_suspend,
            "videos": len(self.table.by_creator.rows(c)),
        }

    def audit(
        self, kind: str | None, target: str | None, before: int | None, limit: int
    ) -> dict[str, Any]:
        if kind not in (None, "video", "creator"):
            raise InvalidInput("target_kind", "must be 'video' or 'creator'")
        entries = self.store.catalog.read_audit(kind, target, before, limit)
        return {
            "entries": [e.model_dump(mode="json") for e in entries],
            "next_before": entries[-1].seq if len(entries) == limit else None,
        }
