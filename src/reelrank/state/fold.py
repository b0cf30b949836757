"""The fold: events in, online state changed, no I/O.

`StateFold` holds the state the request path reads (catalog columns, video counters,
popularity, co-engagement, related videos, traffic pools, users, profiles, follows, mutes)
and folds events and served impressions into it. It holds no store: whoever reads the logs
(`OnlineState`) feeds it, and replaying the log changes memory only. The follow graph is
the catalog's (a follow event's edge is written with the event, `EventLog.append`); the
fold applies edges through `follow` as the catalog change feed reports them.
"""

from __future__ import annotations

import threading
from typing import Any

from ..config import Settings
from ..index.vectors import VectorIndex
from ..schema import Event, EventType, Impression, ReviewStatus, User, Video
from ..types import UserMutes
from .catalog import VideoTable
from .coengagement import CoEngagement
from .counters import VideoCounters
from .pools import PoolBook, max_age_seconds
from .popularity import Popularity
from .profiles import UserState, UserStates
from .related import RelatedItems

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


class StateFold:
    """The online state and the fold of events into it.

    `lock` serialises writers (catalog upserts and event application); the feed path
    reads without it.
    """

    def __init__(self, settings: Settings, content_dim: int) -> None:
        self.settings = settings
        self.lock = threading.RLock()
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
            content_dim,
            ann_min=settings.ann_min_vectors,
            nprobe=settings.ann_nprobe,
            recall=settings.ann_recall,
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
        self.users = UserStates(
            settings.affinity_half_life_h * 3600.0, settings.seen_max, settings.session_len
        )
        self.profiles: dict[str, User] = {}
        self.follows: dict[str, set[str]] = {}
        self.applied = 0
        # Incremental snapshots (`snapshots.py`): each user's state as the last snapshot
        # serialised it, and the users reached through `user()` (every writer's way in)
        # since then.
        self.user_blobs: dict[str, bytes] = {}
        self.dirty_users: set[str] = set()

    def grow(self, size: int) -> None:
        """The per-video arrays events write to (counters, popularity, pools) hold at least
        `size` rows (under `lock`: they grow in place)."""
        self.counters.ensure(size)
        self.popularity.ensure(size)
        self.pools.ensure(size)

    # -- users ---------------------------------------------------------------------------
    def user(self, user_id: str) -> UserState:
        """The user's state for a writer (under `lock`), created empty on first sight.
        Readers use `users.get`: a user reached here is serialised again by the next
        snapshot."""
        self.dirty_users.add(user_id)
        found = self.users.get(user_id)
        if found is None:
            s = self.settings
            found = UserState(s.affinity_half_life_h * 3600.0, s.seen_max, s.session_len)
            self.users[user_id] = found
        return found

    def follow(self, user_id: str, creator_id: str, following: bool) -> None:
        """Apply one edge of the catalog's follow graph."""
        if following:
            self.follows.setdefault(user_id, set()).add(creator_id)
        else:
            found = self.follows.get(user_id)
            if found is not None:
                found.discard(creator_id)

    def knows_user(self, user_id: str) -> bool:
        return user_id in self.users or user_id in self.profiles or user_id in self.follows

    def set_controls(self, user_id: str, body: dict[str, Any]) -> None:
        """Apply the user's stored control record: mutes, and a feed reset newer than the
        one applied (under `lock`)."""
        self.set_mutes(user_id, body.get("muted_keywords", []), body.get("muted_hashtags", []))
        generation = int(body.get("generation") or 0)
        if not generation or self.resets.get(user_id, (0.0, 0))[1] >= generation:
            return
        self.resets[user_id] = (float(body["reset_at"]), generation)
        if user_id in self.users:
            self.reset_user(user_id)

    def reset_user(self, user_id: str) -> None:
        """Bring the user's state up to their latest stored reset (under `lock`)."""
        at, generation = self.resets.get(user_id, (0.0, 0))
        state = self.user(user_id)
        if state.generation < generation:
            state.reset(at)
            state.generation = generation

    def mark_served(self, imp: Impression) -> None:
        """The video is seen, and counts toward today's creator and hashtag fatigue."""
        self.mark_page([imp])

    def mark_page(self, page: list[Impression]) -> None:
        """`mark_served` for the impressions of one page (one user at one time): the
        user's state is looked up once."""
        table = self.table
        rows = []
        for imp in page:
            row = table.row_of(imp.video_id)
            if row < 0:
                continue
            if imp.source == "pool":
                self.pools.on_served(row, imp.ts, (imp.request_id, imp.video_id))
            rows.append(row)
        if not rows:
            return
        user = self.user(page[0].user_id)
        for row in rows:
            user.seen.add(row)
        day = int(page[0].ts // 86400)
        if day != user.fatigue_day:
            if day < user.fatigue_day:
                return  # a replayed impression of an earlier day
            user.fatigue_day = day
            user.served_creators = {}
            user.served_tags = {}
        creators, tags = user.served_creators, user.served_tags
        for row in rows:
            creator = table.video(row).creator_id
            creators[creator] = creators.get(creator, 0) + 1
            for tag in table.tag_names(row):
                tags[tag] = tags.get(tag, 0) + 1

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
