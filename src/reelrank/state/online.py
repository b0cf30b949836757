"""The online state and the updater that folds the event log into it, in offset order."""

from __future__ import annotations

import io
import logging
import threading
import time
from typing import Any

import numpy as np
import orjson

from ..config import Settings
from ..index.vectors import VectorIndex
from ..schema import Event, EventType, Follow, Impression, ReviewStatus, User, Video
from ..storage import Store
from ..types import UserMutes
from .catalog import VideoTable
from .coengagement import CoEngagement
from .counters import VideoCounters
from .pools import PoolBook, max_age_seconds
from .popularity import Popularity
from .profiles import UserState
from .related import RelatedItems

log = logging.getLogger(__name__)

SNAPSHOT = "online_state"
READ_CHUNK = 5000

# How much an action moves the user's affinity for the video's hashtags, sound and creator.
AFFINITY_DELTAS: dict[EventType, float] = {
    EventType.FINISH: 1.0,
    EventType.REPLAY: 1.5,
    EventType.LIKE: 3.0,
    EventType.UNLIKE: -3.0,
    EventType.SHARE: 4.0,
    EventType.COMMENT: 2.0,
    EventType.FOLLOW: 2.0,
    EventType.UNFOLLOW: -2.0,
    EventType.SKIP: -0.5,
    EventType.NOT_INTERESTED: -4.0,
    EventType.REPORT: -4.0,
}
ENGAGEMENTS = {
    EventType.FINISH,
    EventType.REPLAY,
    EventType.LIKE,
    EventType.SHARE,
    EventType.COMMENT,
    EventType.FOLLOW,
}
_COUNTER_OF = {
    EventType.IMPRESSION: "impressions",
    EventType.PLAY: "plays",
    EventType.FINISH: "finishes",
    EventType.REPLAY: "replays",
    EventType.SHARE: "shares",
    EventType.COMMENT: "comments",
    EventType.FOLLOW: "follows",
    EventType.SKIP: "skips",
    EventType.NOT_INTERESTED: "not_interested",
    EventType.HIDE_CREATOR: "hides",
    EventType.HIDE_SOUND: "hides",
    EventType.REPORT: "reports",
}


class OnlineState:
    """Catalog columns, video counters, user profiles and follows, kept in memory.

    `lock` serialises writers (catalog upserts and event application); the feed path
    reads without it.
    """

    def __init__(self, settings: Settings, store: Store, content_dim: int) -> None:
        self.settings = settings
        self.store = store
        self.lock = threading.RLock()
        self._consume = threading.Lock()  # one consumer of the logs at a time
        self.table = VideoTable()
        self.counters = VideoCounters(settings.hotness_half_life_h * 3600.0)
        self.popularity = Popularity()
        self.coengagement = CoEngagement(
            window_s=settings.coengagement_window_s,
            max_neighbours=settings.coengagement_max_neighbours,
        )
        self.related = RelatedItems(
            max_videos=settings.related_max_videos,
            l2=settings.related_l2,
            window=settings.related_window,
        )
        # Caption and hashtag embeddings of approved videos, by row (content channel, MMR),
        # written by the content indexer (`content/indexer.py`).
        self.content = VectorIndex(
            content_dim, ann_min=settings.ann_min_vectors, nprobe=settings.ann_nprobe
        )
        self.pools = PoolBook(
            settings.pool_sizes,
            settings.pool_thresholds,
            settings.pool_weights,
            settings.pool_settle_s,
            settings.smoothing_strength,
            max_age_seconds(settings.pool_max_age_h),
            settings.pool_cool_heat,
            settings.pool_revive_heat,
            settings.pool_match_patience_s,
        )
        self.reporters: dict[int, set[str]] = {}  # video row -> distinct reporting users
        self.report_crossings: list[int] = []  # rows whose reports call for review
        self.mutes: dict[str, UserMutes] = {}  # user id -> muted keywords and hashtags
        self.resets: dict[str, tuple[float, int]] = {}  # user id -> (reset_at, generation)
        self.users: dict[str, UserState] = {}
        self.profiles: dict[str, User] = {}
        self.follows: dict[str, set[str]] = {}
        self.offset = 0  # last event-log offset folded in
        self.impression_offset = 0  # last impression-log offset folded in
        self.applied = 0
        # Incremental snapshots: each user's state as the last snapshot serialised it, and
        # the users reached through `user()` (every writer's way in) since then.
        self._user_blobs: dict[str, orjson.Fragment] = {}
        self._dirty_users: set[str] = set()
        self._snapshotting = threading.Lock()

    # -- users ---------------------------------------------------------------------------
    def user(self, user_id: str) -> UserState:
        """The user's state for a writer (under `lock`), created empty on first sight.
        Readers use `users.get`: a user reached here is serialised again by the next
        snapshot."""
        self._dirty_users.add(user_id)
        found = self.users.get(user_id)
        if found is None:
            s = self.settings
            found = UserState(s.affinity_half_life_h * 3600.0, s.seen_max, s.session_len)
            self.users[user_id] = found
        return found

    def add_follow(self, user_id: str, creator_id: str, persist: bool) -> None:
        if persist:
            self.store.catalog.add_follows([Follow(user_id=user_id, creator_id=creator_id)])
        self.follows.setdefault(user_id, set()).add(creator_id)

    def knows_user(self, user_id: str) -> bool:
        return user_id in self.users or user_id in self.profiles or user_id in self.follows

    # -- loading -------------------------------------------------------------------------
    def load(self) -> None:
        """Rebuild from the store: catalog, follows, the last snapshot, then the log tail
        (the content index is filled by its indexer, `ContentIndexer.fill`)."""
        with self.lock:
            for key, body in self.store.catalog.iter_controls("creator"):
                if body.get("suspended"):
                    self.table.suspend(key, True)
            for row, video in self.store.catalog.iter_videos():
                self.counters.ensure(row + 1)
                self.popularity.ensure(row + 1)
                self.pools.ensure(row + 1)
                self.table.upsert(row, video)
            for user in self.store.catalog.iter_users():
                self.profiles[user.id] = user
            for f in self.store.catalog.iter_follows():
                self.follows.setdefault(f.user_id, set()).add(f.creator_id)
            for key, body in self.store.catalog.iter_controls("user"):
                self.set_mutes(key, body.get("muted_keywords", []), body.get("muted_hashtags", []))
                if body.get("generation"):
                    self.resets[key] = (float(body["reset_at"]), int(body["generation"]))
            blob = self.store.state.load_snapshot(SNAPSHOT)
            if blob is not None:
                self._restore(blob)
            for key, (at, generation) in self.resets.items():  # resets after the snapshot
                state = self.user(key)
                if state.generation < generation:
                    state.reset(at)
                    state.generation = generation
        # Served impressions first: the events after them are joined to pool impressions.
        self.catch_up_impressions()
        replayed = self.catch_up()
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

    def mark_served(self, imp: Impression) -> None:
        """The video is seen, and counts toward today's creator and hashtag fatigue."""
        row = self.table.row_of(imp.video_id)
        if row < 0:
            return
        if imp.source == "pool":
            self.pools.on_served(row, imp.ts, (imp.request_id, imp.video_id))
        user = self.user(imp.user_id)
        user.seen.add(row)
        day = int(imp.ts // 86400)
        if day != user.fatigue_day:
            if day < user.fatigue_day:
                return  # a replayed impression of an earlier day
            user.fatigue_day = day
            user.served_creators = {}
            user.served_tags = {}
        creator = self.table.video(row).creator_id
        user.served_creators[creator] = user.served_creators.get(creator, 0) + 1
        for tag in self.table.tag_names(row):
            user.served_tags[tag] = user.served_tags.get(tag, 0) + 1

    # -- applying events -----------------------------------------------------------------
    def apply(self, event: Event) -> None:
        """Fold one event (already validated, deduplicated and logged) into the state."""
        row = self.table.row_of(event.video_id)
        if row < 0:  # validated against the catalog on ingest; tolerate a replay anyway
            return
        t, ts = event.type, event.ts
        if event.request_id is not None:  # engagement of a pool impression judges the pool
            self.pools.on_event((event.request_id, event.video_id), t)
        video = self.table.video(row)
        user = self.user(event.user_id)
        user.last_ts = max(user.last_ts, ts)
        user.seen.add(row)  # any interaction means the user has seen the video
        shapes_profile = ts > user.reset_at  # "reset my feed" forgets what came before
        counters = self.counters
        counter = _COUNTER_OF.get(t)
        delta = AFFINITY_DELTAS.get(t, 0.0)

        if t is EventType.WATCH:
            watched = float(event.watch_ms or 0)
            counters.add(row, "watch_ms", int(watched), ts)
            ratio = min(watched / max(float(video.duration_ms), 1.0), 2.0)
            delta = ratio - 0.3  # a short watch is a weak negative, a full one positive
        elif t is EventType.LIKE:
            if row in user.liked:
                return  # a second like of the same video changes nothing
            user.liked.add(row)
            if shapes_profile:
                user.recent_likes.append(row)
            counters.add(row, "likes", 1, ts)
        elif t is EventType.UNLIKE:
            if row not in user.liked:
                return
            user.liked.discard(row)
            if row in user.recent_likes:
                user.recent_likes.remove(row)
            counters.add(row, "likes", -1, ts)
        elif t is EventType.FOLLOW:
            # The follow graph lives in the catalog; replays write the same edge again.
            self.add_follow(event.user_id, video.creator_id, persist=True)
        elif t is EventType.UNFOLLOW:
            self.follows.get(event.user_id, set()).discard(video.creator_id)
            self.store.catalog.remove_follow(event.user_id, video.creator_id)
        elif t is EventType.HIDE_CREATOR:
            user.hidden_creators.add(video.creator_id)
        elif t is EventType.HIDE_SOUND and video.sound_id:
            user.hidden_sounds.add(video.sound_id)
        elif t in (EventType.NOT_INTERESTED, EventType.REPORT):
            user.not_interested.add(row)
            if t is EventType.REPORT:
                self._reported(row, video, event.user_id)

        if counter is not None:
            counters.add(row, counter, 1, ts)
        counters.heat(row, t, ts)
        self.popularity.add(row, t, ts)
        if not shapes_profile:
            self.applied += 1
            return
        if delta:
            self._move_affinity(user, row, delta, ts, creator_boost=t is EventType.FOLLOW)
        if t in ENGAGEMENTS or (t is EventType.WATCH and delta > 0.2):
            user.engagements += 1
            history = [(self.table.row_of(v), when) for v, _, when in user.session]
            self.coengagement.add(history, row, ts)
            if self.settings.related_max_videos:
                self.related.add(event.user_id, row)
                user.add_engaged(row)
            user.session.append((event.video_id, t.value, ts))
        self.applied += 1

    def _reported(self, row: int, video: Video, user_id: str) -> None:
        reporters = self.reporters.setdefault(row, set())
        reporters.add(user_id)
        over = len(reporters) - video.report_baseline >= self.settings.report_review_threshold
        if over and video.status is ReviewStatus.APPROVED and row not in self.report_crossings:
            self.report_crossings.append(row)

    def take_report_crossings(self) -> list[int]:
        """Rows whose reports call for human review since the last call."""
        with self.lock:
            rows, self.report_crossings = self.report_crossings, []
        return rows

    def set_mutes(self, user_id: str, keywords: list[str], hashtags: list[str]) -> None:
        if keywords or hashtags:
            self.mutes[user_id] = UserMutes.of(keywords, hashtags)
        else:
            self.mutes.pop(user_id, None)

    def _move_affinity(
        self, user: UserState, row: int, delta: float, ts: float, creator_boost: bool
    ) -> None:
        video = self.table.video(row)
        for tag in self.table.tag_names(row):
            user.tags.add(tag, delta, ts)
        if video.sound_id:
            user.sounds.add(video.sound_id, delta * 0.7, ts)
        user.creators.add(video.creator_id, delta * (3.0 if creator_boost else 0.7), ts)

    # -- snapshots -----------------------------------------------------------------------
    def snapshot(self) -> None:
        """Persist the state with the offsets it reflects (one atomic write).

        Under the writer lock only the users written since the last snapshot are
        serialised again; the others keep the bytes the last one made, so the lock is held
        for what changed, not for every user; the co-engagement graph's changes are copied
        under it and serialised after. One snapshot at a time, in the order taken."""
        with self._snapshotting:
            self._snapshot()

    def _snapshot(self) -> None:
        with self.lock:
            blobs, users = self._user_blobs, self.users
            for uid in self._dirty_users:
                found = users.get(uid)
                if found is not None:
                    blobs[uid] = orjson.Fragment(orjson.dumps(found.to_json()))
            self._dirty_users.clear()
            meta = {
                "offset": self.offset,
                "impression_offset": self.impression_offset,
                "size": self.table.size,
                "users": {uid: blobs[uid] for uid in users},
                "related_users": list(self.related.user_ids),
                "reporters": {str(r): sorted(u) for r, u in self.reporters.items()},
                "saved_at": time.time(),
            }
            arrays = self.counters.to_arrays(self.table.size)
            arrays.update(self.pools.to_arrays(self.table.size))
            arrays.update(self.popularity.to_arrays(self.table.size))
            arrays.update(self.related.to_arrays())
            graph = self.coengagement.changes()  # copies; serialised after the lock
        meta["coengagement"] = self.coengagement.to_json(graph)
        buf = io.BytesIO()
        arrays["meta"] = np.frombuffer(orjson.dumps(meta), dtype=np.uint8)
        np.savez(buf, **arrays)  # type: ignore[arg-type]
        self.store.state.save_snapshot(SNAPSHOT, buf.getvalue())

    def _restore(self, blob: bytes) -> None:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            meta: dict[str, Any] = orjson.loads(z["meta"].tobytes())
            arrays = {k: z[k] for k in z.files if k != "meta"}
        self.counters.load_arrays(arrays)
        self.pools.load_arrays(arrays)
        self.popularity.load_arrays(arrays)
        self.reporters = {int(r): set(u) for r, u in meta.get("reporters", {}).items()}
        s = self.settings
        for uid, raw in meta["users"].items():
            self.users[uid] = UserState.from_json(
                raw, s.affinity_half_life_h * 3600.0, s.seen_max, s.session_len
            )
        self._user_blobs.clear()
        self._dirty_users = set(self.users)  # the next snapshot serialises them afresh
        if "coengagement" in meta:
            self.coengagement.load_json(meta["coengagement"])
        self.related.load(arrays, meta.get("related_users", []))
        self.offset = int(meta["offset"])
        self.impression_offset = int(meta["impression_offset"])
