"""The catalog use case: videos (reviewed on upload), users and follows, each written
durably and then applied to the online state; and the video detail read."""

from __future__ import annotations

import threading
import time
from typing import Any

from ..config import Settings
from ..content.duplicates import UploadBatch
from ..content.lifecycle import Lifecycle
from ..content.review import Review
from ..errors import InvalidInput, NotFound
from ..metrics import Metrics
from ..schema import Follow, User, VideoIn, parse
from ..state.online import OnlineState
from ..storage import CatalogStore


def check_batch(items: Any, field: str) -> list[Any]:
    """A batch must be a list; its items are checked one by one."""
    if not isinstance(items, list):
        raise InvalidInput(field, "expected a list")
    return items


class CatalogService:
    def __init__(
        self,
        settings: Settings,
        catalog: CatalogStore,
        state: OnlineState,
        lifecycle: Lifecycle,
        metrics: Metrics,
        lock: threading.RLock,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.state = state
        self.lifecycle = lifecycle
        self.metrics = metrics
        self.lock = lock  # serialises catalog writers (shared with the user controls)

    def upsert_videos(self, raws: Any) -> list[dict[str, Any]]:
        """Review and upsert videos; one result per item, errors included."""
        raws = check_batch(raws, "videos")
        results: list[dict[str, Any]] = [{} for _ in raws]
        valid: list[tuple[int, VideoIn]] = []
        for i, raw in enumerate(raws):
            try:
                video_in: VideoIn = parse(VideoIn, raw, f"videos[{i}]")
                if video_in.created_at > time.time() + self.settings.max_future_skew_s:
                    raise InvalidInput(f"videos[{i}].created_at", "lies too far in the future")
            except InvalidInput as exc:
                results[i] = {"index": i, "error": str(exc)}
                continue
            valid.append((i, video_in))
        last: dict[str, int] = {v.id: j for j, (_, v) in enumerate(valid)}
        state = self.state
        with self.lock:
            # A video repeated in one batch: its last record is the one reviewed and kept.
            batch = UploadBatch()
            reviews: list[Review] = [
                self.lifecycle.review(v, batch) for j, (_, v) in enumerate(valid) if last[v.id] == j
            ]
            rows = self.catalog.upsert_videos([r.video for r in reviews])
            if rows:
                with state.lock:
                    state.grow(max(r for r, _ in rows) + 1)
            placed = []
            for review, (row, _) in zip(reviews, rows, strict=True):
                state.table.upsert(row, review.video)
                placed.append((row, review.video))
            self.lifecycle.placed(placed, reviews, [created for _, created in rows])
            outcome = {
                r.video.id: (row, created) for r, (row, created) in zip(reviews, rows, strict=True)
            }
            for i, video_in in valid:
                row, created = outcome[video_in.id]
                video = state.table.video(row)  # as placed (near-duplicates marked)
                results[i] = {
                    "index": i,
                    "id": video.id,
                    "result": "created" if created else "updated",
                    "status": video.status.value,
                }
                if video.status_reason:
                    results[i]["status_reason"] = video.status_reason
                if video.duplicate_of:
                    results[i]["duplicate_of"] = video.duplicate_of
        self.metrics.upserts.labels("video").inc(len(valid))
        self.metrics.videos.set(state.table.size)
        return results

    def upsert_users(self, raws: Any) -> list[dict[str, Any]]:
        raws = check_batch(raws, "users")
        results: list[dict[str, Any]] = [{} for _ in raws]
        valid: list[tuple[int, User]] = []
        for i, raw in enumerate(raws):
            try:
                valid.append((i, parse(User, raw, f"users[{i}]")))
            except InvalidInput as exc:
                results[i] = {"index": i, "error": str(exc)}
        with self.lock:
            created = self.catalog.upsert_users([u for _, u in valid])
            for (i, user), new in zip(valid, created, strict=True):
                self.state.profiles[user.id] = user
                results[i] = {"index": i, "id": user.id, "result": "created" if new else "updated"}
        self.metrics.upserts.labels("user").inc(len(valid))
        return results

    def add_follows(self, raws: Any) -> list[dict[str, Any]]:
        raws = check_batch(raws, "follows")
        results: list[dict[str, Any]] = [{} for _ in raws]
        valid: list[tuple[int, Follow]] = []
        for i, raw in enumerate(raws):
            try:
                valid.append((i, parse(Follow, raw, f"follows[{i}]")))
            except InvalidInput as exc:
                results[i] = {"index": i, "error": str(exc)}
        with self.lock:
            added = self.catalog.add_follows([f for _, f in valid])
            for (i, f), new in zip(valid, added, strict=True):
                with self.state.lock:
                    self.state.follow(f.user_id, f.creator_id, True)
                results[i] = {
                    "index": i,
                    "user_id": f.user_id,
                    "creator_id": f.creator_id,
                    "result": "created" if new else "unchanged",
                }
        self.metrics.upserts.labels("follow").inc(len(valid))
        return results

    def video_detail(self, video_id: str) -> dict[str, Any]:
        table, counters = self.state.table, self.state.counters
        row = table.row_of(video_id)
        if row < 0:
            raise NotFound(f"unknown video {video_id!r}")
        video = table.video(row)
        now = time.time()
        return {
            "video": video.model_dump(mode="json"),
            "status": video.status.value,
            "counters": counters.totals_of(row),
            "decayed": counters.decayed_of(row, now),
            "hotness": round(float(counters.hotness[row]) * counters.decay_factor(now), 4),
            "lifecycle": self.lifecycle.video_state(video_id),
        }
