"""The sample joiner: served impressions joined with the actions that follow them.

Each served impression (with the features it was scored with) waits for its actions,
keyed by (request_id, video_id), or by (user_id, video_id) for events that carry no
request id. Its window closes when event time passes `ts + window_s`, or earlier, when the
same user is seen viewing a video served after it (in a vertical feed the user has moved
on). On close it becomes one labelled example; an impression never viewed by the client
is dropped when `require_view` is set, since nobody saw it. An action that arrives after
the close updates the kept labels and, if they changed, emits a correction. Labels are
sets and maxima, so a repeated event never changes them.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..rank.model import HEADS
from ..schema import Event, EventType, Impression

NEGATIVE = {
    EventType.NOT_INTERESTED,
    EventType.REPORT,
    EventType.HIDE_CREATOR,
    EventType.HIDE_SOUND,
}
NEGATIVE_ACTIONS = frozenset(t.value for t in NEGATIVE)  # as `Pending.actions` holds them
LONG_VIEW_RATIO = 0.5
FINISH_RATIO = 0.95


@dataclass
class Pending:
    """One served impression and what its viewer has done so far."""

    imp: Impression
    duration_ms: float
    viewed: bool = False
    watch_ms: float = 0.0
    like_ts: float = -1.0  # newest like and unlike by event time: liked when like is newer,
    unlike_ts: float = -1.0  # so replaying either event changes nothing
    actions: set[str] = field(default_factory=set)
    emitted: tuple[float, ...] | None = None  # labels at the last emission
    seq: int = 0  # the impression's offset in the impression log (0: not from a log)

    def labels(self) -> tuple[float, ...]:
        a = self.actions
        ratio = min(self.watch_ms / max(self.duration_ms, 1.0), 1.0)
        finish = "finish" in a or "replay" in a or ratio >= FINISH_RATIO
        if finish:
            ratio = 1.0
        values = {
            "finish": finish,
            "long_view": finish or ratio >= LONG_VIEW_RATIO,
            "like": self.like_ts > self.unlike_ts,
            "share": "share" in a,
            "comment": "comment" in a,
            "follow": "follow" in a,
            "skip": "skip" in a and not finish,
            "negative": not a.isdisjoint(NEGATIVE_ACTIONS),
            "watch_ratio": ratio,
        }
        return tuple(float(values[h]) for h in HEADS)


@dataclass
class Example:
    """A labelled training example: the logged features and the labels (HEADS order)."""

    features: dict[str, Any]
    labels: np.ndarray
    ts: float
    request_id: str
    video_id: str
    correction: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "features": self.features,
            "labels": self.labels.tolist(),
            "ts": self.ts,
            "request_id": self.request_id,
            "video_id": self.video_id,
            "correction": self.correction,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Example:
        return cls(
            features=raw["features"],
            labels=np.asarray(raw["labels"], dtype=np.float32),
            ts=float(raw["ts"]),
            request_id=raw["request_id"],
            video_id=raw["video_id"],
            correction=bool(raw["correction"]),
        )


@dataclass
class JoinStats:
    impressions: int = 0
    events: int = 0
    joined_events: int = 0
    unjoined_events: int = 0
    examples: int = 0
    corrections: int = 0
    dropped_unviewed: int = 0
    session_closes: int = 0
    window_closes: int = 0


class SampleJoiner:
    def __init__(
        self,
        window_s: float = 30.0,
        require_view: bool = True,
        correction_window_s: float = 3600.0,
        max_open: int = 1_000_000,
        max_closed: int = 1_000_000,
    ) -> None:
        self.window_s = window_s
        self.require_view = require_view
        self.correction_window_s = correction_window_s
        self.max_open = max_open
        self.max_closed = max_closed
        self.open: dict[tuple[str, str], Pending] = {}
        self.closed: OrderedDict[tuple[str, str], tuple[float, Pending]] = OrderedDict()
        self.latest: dict[tuple[str, str], tuple[str, str]] = {}  # (user, video) -> key
        self.by_user: dict[str, list[tuple[str, str]]] = {}  # open keys in serve order
        self.orphans: dict[tuple[str, str], list[Event]] = {}
        self.deadlines: list[tuple[float, tuple[str, str]]] = []
        self.watermark = 0.0
        self.stats = JoinStats()

    # -- input ---------------------------------------------------------------------------
    def add_impression(self, imp: Impression, seq: int = 0) -> list[Example]:
        """Open the impression's window (`seq`: its offset in the impression log, which
        lets a checkpoint name it instead of copying it); events that arrived before it
        are applied."""
        key = (imp.request_id, imp.video_id)
        if key in self.open or key in self.closed:
            return []  # a replayed log record: already joined
        features = imp.features or {}
        pending = Pending(imp, float(features.get("duration_ms", 1.0)), seq=seq)
        self.open[key] = pending
        self.latest[(imp.user_id, imp.video_id)] = key
        self.by_user.setdefault(imp.user_id, []).append(key)
        heapq.heappush(self.deadlines, (imp.ts + self.window_s, key))
        self.stats.impressions += 1
        out: list[Example] = []
        for event in self.orphans.pop(key, []):
            out += self.add_event(event)
        if len(self.open) > self.max_open:
            out += self._close(next(iter(self.open)), "window")
        return out

    def add_event(self, event: Event) -> list[Example]:
        """Apply one action; may close earlier impressions or emit a correction."""
        self.stats.events += 1
        self.watermark = max(self.watermark, event.ts)
        if event.request_id is not None:
            key = (event.request_id, event.video_id)
        else:
            found = self.latest.get((event.user_id, event.video_id))
            if found is None:
                self.stats.unjoined_events += 1
                return []
            key = found
        pending = self.open.get(key)
        if pending is None:
            kept = self.closed.get(key)
            if kept is None:
                if event.request_id is not None and event.ts >= self.watermark - self.window_s:
                    self.orphans.setdefault(key, []).append(event)  # its impression may lag
                else:
                    self.stats.unjoined_events += 1
                return []
            return self._late(key, kept[1], event)
        self.stats.joined_events += 1
        self._update(pending, event)
        return self._close_earlier(pending)

    def _update(self, pending: Pending, event: Event) -> None:
        t = event.type
        pending.viewed = True
        if event.watch_ms is not None:
            pending.watch_ms = max(pending.watch_ms, float(event.watch_ms))
        if t is EventType.LIKE:
            pending.like_ts = max(pending.like_ts, event.ts)
        elif t is EventType.UNLIKE:
            pending.unlike_ts = max(pending.unlike_ts, event.ts)
        elif t not in (EventType.IMPRESSION, EventType.PLAY, EventType.WATCH):
            pending.actions.add(t.value)

    def _late(self, key: tuple[str, str], pending: Pending, event: Event) -> list[Example]:
        self.stats.joined_events += 1
        self._update(pending, event)
        labels = pending.labels()
        if labels == pending.emitted:
            return []
        pending.emitted = labels
        self.stats.corrections += 1
        return [self._example(pending, labels, correction=True)]

    # -- closing -------------------------------------------------------------------------
    def _close_earlier(self, current: Pending) -> list[Example]:
        """The user moved on to `current`: close what was served to them before it."""
        user = current.imp.user_id
        keys = self.by_user.get(user)
        if not keys:
            return []
        # A user's open impressions are kept in serve order: close those before this one.
        key = (current.imp.request_id, current.imp.video_id)
        try:
            i = keys.index(key)
        except ValueError:
            return []
        earlier = keys[:i]
        del keys[:i]
        out: list[Example] = []
        for k in earlier:
            self.stats.session_closes += 1
            out += self._close(k, "session", detached=True)
        return out

    def advance(self, watermark: float | None = None) -> list[Example]:
        """Close every window that ends at or before the watermark (event time)."""
        if watermark is not None:
            self.watermark = max(self.watermark, watermark)
        out: list[Example] = []
        while self.deadlines and self.deadlines[0][0] <= self.watermark:
            _, key = heapq.heappop(self.deadlines)
            if key in self.open:
                self.stats.window_closes += 1
                out += self._close(key, "window")
        for key in [
            k for k, evs in self.orphans.items() if evs[-1].ts < self.watermark - self.window_s
        ]:
            self.stats.unjoined_events += len(self.orphans.pop(key))
        self._prune_closed()
        return out

    def _close(self, key: tuple[str, str], why: str, detached: bool = False) -> list[Example]:
        pending = self.open.pop(key)
        user_keys = self.by_user.get(pending.imp.user_id)
        if user_keys is not None:
            if not detached:
                user_keys.remove(key)
            if not user_keys:
                del self.by_user[pending.imp.user_id]
        uv = (pending.imp.user_id, pending.imp.video_id)
        if self.latest.get(uv) == key:
            del self.latest[uv]
        if self.require_view and not pending.viewed:
            self.stats.dropped_unviewed += 1
            return []
        labels = pending.labels()
        pending.emitted = labels
        self.closed[key] = (self.watermark, pending)
        self.latest.setdefault(uv, key)  # late events without request id still find it
        return [self._example(pending, labels, correction=False)]

    def _prune_closed(self) -> None:
        horizon = self.watermark - self.correction_window_s
        while self.closed:
            key, (closed_at, pending) = next(iter(self.closed.items()))
            if closed_at >= horizon and len(self.closed) <= self.max_closed:
                break
            del self.closed[key]
            uv = (pending.imp.user_id, pending.imp.video_id)
            if self.latest.get(uv) == key:
                del self.latest[uv]

    def _example(self, pending: Pending, labels: tuple[float, ...], correction: bool) -> Example:
        if not correction:
            self.stats.examples += 1
        return Example(
            features=pending.imp.features or {},
            labels=np.array(labels, dtype=np.float32),
            ts=pending.imp.ts,
            request_id=pending.imp.request_id,
            video_id=pending.imp.video_id,
            correction=correction,
        )

    # -- checkpoints ---------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps. An impression read from the log is kept as its offset
        there (`seq`), not copied with its features: at a million videos the open and
        closed impressions are hundreds of MB, which every checkpoint wrote again."""

        def pend(p: Pending) -> dict[str, Any]:
            return {
                # its offset, or its fields (features shared: never mutated)
                **({"seq": p.seq} if p.seq else {"imp": dict(p.imp.__dict__)}),
                "duration_ms": p.duration_ms,
                "viewed": p.viewed,
                "watch_ms": p.watch_ms,
                "like_ts": p.like_ts,
                "unlike_ts": p.unlike_ts,
                "actions": sorted(p.actions),
                "emitted": list(p.emitted) if p.emitted is not None else None,
            }

        return {
            "open": [pend(p) for p in self.open.values()],
            "closed": [[t, pend(p)] for t, p in self.closed.values()],
            # fields as they are (the type an enum, which JSON writes as its value)
            "orphans": [dict(e.__dict__) for evs in self.orphans.values() for e in evs],
            "latest": [[u, v, r, w] for (u, v), (r, w) in self.latest.items()],
            "watermark": self.watermark,
            "stats": dict(self.stats.__dict__),
        }

    def load_state(
        self,
        raw: dict[str, Any],
        impressions: Callable[[list[int]], dict[int, Impression]] | None = None,
    ) -> int:
        """Restore `state()`; `impressions` reads the impressions it names by log offset
        (each offset's impression, or none when the log no longer holds it). An impression
        that cannot be read back is left out; how many is returned."""
        wanted = [r["seq"] for r in itertools.chain(raw["open"], (r for _, r in raw["closed"]))
                  if "seq" in r]  # fmt: skip
        found = impressions(wanted) if wanted and impressions is not None else {}

        def pend(r: dict[str, Any]) -> Pending | None:
            if "seq" in r:
                imp = found.get(r["seq"])
                if imp is None:
                    return None
            else:  # checked when it was logged, saved by `state`: not validated again
                imp = Impression.model_construct(**r["imp"])
            p = Pending(imp, r["duration_ms"], r["viewed"], r["watch_ms"], r["like_ts"],
                        r["unlike_ts"], set(r["actions"]), seq=r.get("seq", 0))  # fmt: skip
            p.emitted = tuple(r["emitted"]) if r["emitted"] is not None else None
            return p

        self.__init__(  # type: ignore[misc]
            self.window_s, self.require_view, self.correction_window_s, self.max_open,
            self.max_closed,
        )  # fmt: skip
        lost = 0
        for t, r in raw["closed"]:
            p = pend(r)
            if p is None:
                lost += 1
                continue
            key = (p.imp.request_id, p.imp.video_id)
            self.closed[key] = (t, p)
            self.latest[(p.imp.user_id, p.imp.video_id)] = key
        for r in raw["open"]:
            p = pend(r)
            if p is None:
                lost += 1
                continue
            key = (p.imp.request_id, p.imp.video_id)
            self.open[key] = p
            self.latest[(p.imp.user_id, p.imp.video_id)] = key
            self.by_user.setdefault(p.imp.user_id, []).append(key)
            heapq.heappush(self.deadlines, (p.imp.ts + self.window_s, key))
        for e in raw["orphans"]:
            ev = Event.model_construct(**{**e, "type": EventType(e["type"])})  # checked once
            self.orphans.setdefault((ev.request_id or "", ev.video_id), []).append(ev)
        self.latest = {(u, v): (r, w) for u, v, r, w in raw["latest"]}
        self.watermark = raw["watermark"]
        self.stats = JoinStats(**raw["stats"])
        return lost
