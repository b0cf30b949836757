"""The content lifecycle: review on upload, the human review queue, reports, duplicates,
traffic pools and operator controls, every decision written to the audit log.

A change of a video's review state is one path (`_change`): the record is written to the
catalog, the in-memory table updated, the video placed in or dropped from the content
and two-tower indexes, and the audit entry appended; the feed's approved filter reads the
table, so an unapproved video leaves every channel, cache and pool at once.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from ..clock import Clock
from ..config import Settings
from ..errors import InvalidInput, NotFound
from ..metrics import Metrics
from ..schema import AuditEntry, ReviewStatus, Video, VideoIn
from ..state.online import OnlineState
from ..state.pools import Stage
from .duplicates import DuplicateIndex, UploadBatch, duplicate_finding
from .indexer import ContentIndexer
from .operations import OperatorControls
from .review import (
    MACHINE,
    REPORTS,
    Outcome,
    Review,
    Reviewer,
    actor_label,
    checked_actor,
    checked_reason,
    default_checks,
    machine_entry,
)

if TYPE_CHECKING:
    from ..recall.two_tower import RetrievalIndex

log = logging.getLogger(__name__)

EXCLUDED = -2  # pool tier of a video that never gets a pool (a re-upload)


class Lifecycle(OperatorControls):
    def __init__(
        self,
        settings: Settings,
        state: OnlineState,
        retrieval: list[RetrievalIndex],
        content: ContentIndexer,
        metrics: Metrics,
        catalog_lock: threading.RLock,
        clock: Clock = time.time,  # pool timers and audit times: an EventClock in replays
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.state = state
        self.store = state.store
        self.table = state.table
        self.pools = state.pools
        self.retrieval = retrieval  # the retrieval indexes new and edited videos go into
        self.content = content  # and the content index
        self.metrics = metrics
        self.lock = catalog_lock
        s = settings
        self.reviewer = Reviewer(
            default_checks(
                s.banned_terms,
                s.rejected_terms,
                s.review_max_hashtags,
                s.review_max_duration_ms,
                s.review_classifier,
                s.review_classifier_hold,
                s.review_classifier_reject,
            )
        )
        self.duplicates = DuplicateIndex(self.table, s.duplicate_duration_ms)
        self.pending: dict[int, None] = {}  # rows awaiting human review, oldest first
        self.creators: dict[str, dict[str, Any]] = {}  # creator id -> strikes, suspended
        self.boosts: dict[str, int] = {}  # video id -> impressions granted in all
        content.on_near_duplicates = self.mark_near_duplicates

    # -- start-up --------------------------------------------------------------------------
    def load(self) -> None:
        """Index the loaded catalog; put young approved videos without pool state in
        their first pool; restore boosts the snapshot has not seen."""
        now = self.clock()
        for key, body in self.store.catalog.iter_controls("creator"):
            self.creators[key] = body
        with self.lock, self.state.lock:
            table = self.table
            for row in range(table.size):
                video = table.records[row]
                if video is None:
                    continue
                self.duplicates.add(row, video)
                if video.status is ReviewStatus.PENDING_REVIEW:
                    self.pending[row] = None
                self._maybe_enter_pool(row, video, now)
            for key, body in self.store.catalog.iter_controls("video"):
                self.restore_boost(key, int(body.get("boost_granted", 0)))
            self.pools.version += 1

    # -- upload ------------------------------------------------------------------------------
    def review(self, video: VideoIn, batch: UploadBatch) -> Review:
        """Machine review of one upload (call under the catalog lock); `batch` holds the
        videos reviewed before it in the same upload."""
        row = self.table.row_of(video.id)
        previous = self.table.video(row) if row >= 0 else None
        extra = []
        duplicate_of = None
        found = self.duplicates.find(video, batch)
        if found is not None and (previous is None or previous.duplicate_of is None):
            original, how = found
            extra.append(duplicate_finding(original, how))
            duplicate_of = original.id
        review = self.reviewer.review(video, previous, extra, duplicate_of)
        batch.add(review.video)
        return review

    def placed(
        self, placed: list[tuple[int, Video]], reviews: list[Review], new: list[bool]
    ) -> None:
        """After the catalog write and table upsert of reviewed uploads (catalog lock)."""
        now = self.clock()
        entries = []
        for (row, video), review, created in zip(placed, reviews, new, strict=True):
            self.duplicates.add(row, video)
            self.track_pending(row, video)
            if created or (not review.kept and self._decision_changed(review)):
                entries.append(machine_entry(video, review))
        if entries:  # before any near-duplicate marks, which come after in the log
            self.store.catalog.append_audit(entries)
            for e in entries:
                status = e.detail["status"]  # type: ignore[index]
                self.metrics.review_decisions.labels(actor_label(e.actor), status).inc()
        self.place(placed, now)

    @staticmethod
    def _decision_changed(review: Review) -> bool:
        return bool(review.findings) or review.video.status is not ReviewStatus.APPROVED

    def place(self, placed: list[tuple[int, Video]], now: float) -> None:
        """Videos whose record or servability changed, already in the table: into (or out
        of) the content and retrieval indexes, then their first pool (catalog lock held)."""
        self.content.place(placed)  # may mark embedding near-duplicates: read them back
        for index in self.retrieval:
            index.place(placed)
        with self.state.lock:
            for row, _ in placed:
                self._maybe_enter_pool(row, self.table.video(row), now)

    def suspend(self, creator_id: str, suspended: bool) -> None:
        """Stop (or resume) distributing a creator's videos (catalog lock held)."""
        changed = self.table.suspend(creator_id, suspended)
        self.place([(r, self.table.video(r)) for r in changed], self.clock())

    def restore_boost(self, video_id: str, granted: int) -> None:
        """A stored boost total: the impressions still owed (catalog and state locks)."""
        row = self.table.row_of(video_id)
        if row < 0 or not granted:
            return
        self.boosts[video_id] = granted
        self.pools.ensure(row + 1)
        left = granted - int(self.pools.boost_used[row])
        self.pools.boost_left[row] = max(left, 0)
        self.pools.boost_version += 1

    def track_pending(self, row: int, video: Video) -> None:
        if video.status is ReviewStatus.PENDING_REVIEW:
            self.pending.setdefault(row, None)
        else:
            self.pending.pop(row, None)

    def _maybe_enter_pool(self, row: int, video: Video, now: float) -> None:
        """A servable video that never had a pool gets its first (state lock held)."""
        pools = self.pools
        pools.ensure(row + 1)
        if video.duplicate_of is not None:
            if pools.tier[row] == -1:
                pools.tier[row] = EXCLUDED
            elif pools.stage[row] in (Stage.TESTING, Stage.JUDGING):
                pools.stage[row] = Stage.NONE  # found a re-upload after it entered
                pools.version += 1
            return
        if self.table.approved[row] and pools.eligible(row, video.created_at, now):
            pools.enter(row, now)
            self.metrics.pool_transitions.labels("testing").inc()

    # -- one path for every state change -----------------------------------------------------
    def _change(self, row: int, video: Video, entry: AuditEntry) -> None:
        """Write a changed record, apply it everywhere, and audit it (catalog lock held)."""
        self._change_many([(row, video, entry)])

    def _change_many(self, changes: list[tuple[int, Video, AuditEntry]]) -> None:
        if not changes:
            return
        self.store.catalog.upsert_videos([video for _, video, _ in changes])
        placed = []
        for row, video, _ in changes:
            self.table.upsert(row, video)
            self.track_pending(row, video)
            placed.append((row, video))
        self.place(placed, self.clock())
        self.store.catalog.append_audit([entry for _, _, entry in changes])
        for _, video, entry in changes:
            self.metrics.review_decisions.labels(actor_label(entry.actor), video.status.value).inc()

    def _video(self, video_id: str) -> tuple[int, Video]:
        row = self.table.row_of(video_id)
        if row < 0:
            raise NotFound(f"unknown video {video_id!r}")
        return row, self.table.video(row)

    def _entry(
        self, actor: str, action: str, kind: str, target: str, reason: str, **detail: Any
    ) -> AuditEntry:
        return AuditEntry(
            ts=self.clock(),
            actor=actor,
            action=action,
            target_kind=kind,
            target_id=target,
            reason=reason,
            detail=detail or None,
        )

    # -- human review ------------------------------------------------------------------------
    def review_queue(self, limit: int, offset: int) -> dict[str, Any]:
        """Videos awaiting a person, oldest hold first."""
        rows = list(self.pending)
        out = []
        for row in rows[offset : offset + limit]:
            video = self.table.records[row]
            if video is None or video.status is not ReviewStatus.PENDING_REVIEW:
                continue
            out.append(
                {
                    "video": video.model_dump(mode="json"),
                    "reason": video.status_reason,
                    "held_by": video.reviewed_by,
                    "reports": len(self.state.reporters.get(row, ())),
                }
            )
        return {"pending": len(rows), "offset": offset, "items": out}

    def decide(self, video_id: str, decision: Any, reason: Any, reviewer: Any) -> dict[str, Any]:
        """A person approves or rejects a video (from any state)."""
        if decision not in ("approve", "reject"):
            raise InvalidInput("decision", "must be 'approve' or 'reject'")
        actor, why = checked_actor(reviewer), checked_reason(reason)
        with self.lock:
            row, video = self._video(video_id)
            status = ReviewStatus.APPROVED if decision == "approve" else ReviewStatus.REJECTED
            reporters = len(self.state.reporters.get(row, ()))
            changed = video.model_copy(
                update={
                    "status": status,
                    "status_reason": why,
                    "reviewed_by": actor,
                    "report_baseline": reporters,
                }
            )
            self._change(
                row,
                changed,
                self._entry(
                    actor,
                    f"review.{decision}",
                    "video",
                    video_id,
                    why,
                    status=status.value,
                    previous=video.status.value,
                ),
            )
        return self.video_state(video_id)

    def process_reports(self) -> int:
        """Send videos whose distinct reporters passed the threshold back to review."""
        held = 0
        for row in self.state.take_report_crossings():
            with self.lock:
                video = self.table.records[row]
                if video is None or video.status is not ReviewStatus.APPROVED:
                    continue
                count = len(self.state.reporters.get(row, ()))
                if count - video.report_baseline < self.settings.report_review_threshold:
                    continue
                why = f"reported by {count} users"
                changed = video.model_copy(
                    update={
                        "status": ReviewStatus.PENDING_REVIEW,
                        "status_reason": why,
                        "reviewed_by": REPORTS,
                    }
                )
                self._change(
                    row,
                    changed,
                    self._entry(REPORTS, "review.hold", "video", video.id, why, reporters=count),
                )
                held += 1
        return held

    def mark_near_duplicates(self, found: list[tuple[int, int, float]]) -> None:
        """Embedding near-duplicates found while indexing new videos."""
        with self.lock:
            changes = []
            for row, original_row, cosine in found:
                video = self.table.records[row]
                original = self.table.records[original_row]
                if video is None or original is None or video.duplicate_of is not None:
                    continue
                original = self.duplicates.root(original)
                finding = duplicate_finding(original, f"content similarity {cosine:.2f}")
                update: dict[str, Any] = {
                    "duplicate_of": original.id,
                    "status_reason": finding.describe(),
                }
                if finding.outcome is not Outcome.APPROVE and video.reviewed_by == MACHINE:
                    update["status"] = (
                        ReviewStatus.REJECTED
                        if finding.outcome is Outcome.REJECT
                        else ReviewStatus.PENDING_REVIEW
                    )
                elif video.status is not ReviewStatus.APPROVED:
                    update.pop("status_reason")  # keep the reason it is not approved
                changed = video.model_copy(update=update)
                entry = self._entry(
                    MACHINE,
                    "review.duplicate",
                    "video",
                    video.id,
                    finding.describe(),
                    duplicate_of=original.id,
                    cosine=cosine,
                    status=changed.status.value,
                )
                changes.append((row, changed, entry))
            self._change_many(changes)

    # -- pools -------------------------------------------------------------------------------
    def evaluate_pools(self, now: float | None = None) -> int:
        """Judge settled pools, cool and revive; return the transitions made."""
        now = self.clock() if now is None else now
        with self.state.lock:
            moves = self.pools.evaluate(now, self.state.counters, self.table.size)
        for m in moves:
            self.metrics.pool_transitions.labels(m.stage.name.lower()).inc()
        return len(moves)

    def pools_summary(self) -> dict[str, Any]:
        return {
            **self.pools.summary(self.table.size),
            "settings": {
                "sizes": self.settings.pool_sizes,
                "thresholds": self.settings.pool_thresholds,
                "weights": self.settings.pool_weights,
                "settle_s": self.settings.pool_settle_s,
                "boost_budget": self.settings.boost_budget,
            },
        }
