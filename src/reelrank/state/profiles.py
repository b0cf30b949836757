"""Per-user online state: decayed affinities, session, seen set and the user's controls."""

from __future__ import annotations

import itertools
import threading
from array import array
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson

AFFINITY_CAP = 200  # keys kept per kind; the weakest go first
RECENT_LIKES = 50  # liked video rows kept as profile signals (cleared by a reset)
ENGAGED_MAX = 200  # engaged video rows kept per user: the related-videos model's input


@dataclass
class Affinities:
    """key -> decayed weight, each stored with the time it was last updated."""

    half_life_s: float
    values: dict[str, tuple[float, float]] = field(default_factory=dict)

    def add(self, key: str, delta: float, ts: float) -> None:
        value, t = self.values.get(key, (0.0, ts))
        if ts >= t:
            value = value * 2.0 ** (-(ts - t) / self.half_life_s) + delta
            t = ts
        else:  # a late event: decay its contribution to the stored time instead
            value += delta * 2.0 ** (-(t - ts) / self.half_life_s)
        self.values[key] = (value, t)
        if len(self.values) > AFFINITY_CAP:
            weakest = min(self.values, key=lambda k: abs(self.values[k][0]))
            del self.values[weakest]

    def at(self, now: float) -> dict[str, float]:
        """Every weight decayed to `now`."""
        h = self.half_life_s
        return {k: v * 2.0 ** (-max(now - t, 0.0) / h) for k, (v, t) in list(self.values.items())}

    def top(self, now: float, k: int) -> list[tuple[str, float]]:
        """The k strongest positive weights."""
        ranked = sorted(self.at(now).items(), key=lambda kv: -kv[1])
        return [(key, w) for key, w in ranked[:k] if w > 0]


class BoundedSet:
    """An insertion-ordered set that forgets its oldest members past `cap`."""

    def __init__(self, cap: int, items: list[Any] | None = None) -> None:
        self.cap = cap
        self._items: dict[Any, None] = dict.fromkeys(items or ())

    def add(self, item: Any) -> None:
        items = self._items
        if item in items:
            return
        items[item] = None
        if len(items) > self.cap:
            del items[next(iter(items))]

    def discard(self, item: Any) -> None:
        self._items.pop(item, None)

    def __contains__(self, item: Any) -> bool:
        return item in self._items

    def __len__(self) -> int:
        return len(self._items)

    def members_of(self, items: list[Any]) -> set[Any]:
        """Which of `items` are in the set (one pass in C, not a Python loop)."""
        return self._items.keys() & items

    def to_list(self) -> list[Any]:
        return list(self._items)

    def recent(self, k: int) -> list[Any]:
        """The k newest members, newest first."""
        return list(itertools.islice(reversed(self._items), k))


@dataclass
class UserState:
    """Everything the feed needs to know about one user, updated event by event."""

    half_life_s: float
    seen_max: int
    session_len: int
    tags: Affinities = field(init=False)
    sounds: Affinities = field(init=False)
    creators: Affinities = field(init=False)
    session: deque[tuple[str, str, float]] = field(init=False)
    seen: BoundedSet = field(init=False)
    liked: BoundedSet = field(init=False)  # every like, so a repeated like counts once
    recent_likes: deque[int] = field(init=False)  # newest last; a profile signal
    engaged: array[int] = field(init=False)  # distinct engaged video rows, newest last
    hidden_creators: set[str] = field(default_factory=set)
    hidden_sounds: set[str] = field(default_factory=set)
    not_interested: set[int] = field(default_factory=set)  # video rows
    last_ts: float = 0.0
    engagements: int = 0
    fatigue_day: int = -1  # the UTC day the served counts below belong to
    served_creators: dict[str, int] = field(default_factory=dict)
    served_tags: dict[str, int] = field(default_factory=dict)
    reset_at: float = 0.0  # "reset my feed": events up to this time no longer shape it
    generation: int = 0  # resets so far; the model knows the user afresh after each

    def __post_init__(self) -> None:
        self.tags = Affinities(self.half_life_s)
        self.sounds = Affinities(self.half_life_s)
        self.creators = Affinities(self.half_life_s)
        self.session = deque(maxlen=self.session_len)
        self.seen = BoundedSet(self.seen_max)
        self.liked = BoundedSet(self.seen_max)
        self.recent_likes = deque(maxlen=RECENT_LIKES)
        self.engaged = array("i")

    def add_engaged(self, row: int) -> None:
        """`row` becomes the newest of the user's engaged videos (once, at most
        ENGAGED_MAX kept)."""
        engaged = self.engaged
        if row in engaged:
            engaged.remove(row)
        elif len(engaged) >= ENGAGED_MAX:
            del engaged[0]
        engaged.append(row)

    def reset(self, at: float) -> None:
        """Forget the learned profile (affinities, session, recent likes and engaged
        videos); keep the seen set and the user's own controls (hides, not interested)."""
        self.tags.values.clear()
        self.sounds.values.clear()
        self.creators.values.clear()
        self.session.clear()
        self.recent_likes.clear()
        del self.engaged[:]
        self.engagements = 0
        self.reset_at = max(self.reset_at, at)
        self.generation += 1

    @property
    def model_key(self) -> str | None:
        """The suffix the model's user id carries after a reset, or None."""
        return f"#reset{self.generation}" if self.generation else None

    def to_json(self) -> dict[str, Any]:
        return {
            "tags": self.tags.values,
            "sounds": self.sounds.values,
            "creators": self.creators.values,
            "session": list(self.session),
            "seen": self.seen.to_list(),
            "liked": self.liked.to_list(),
            "hidden_creators": sorted(self.hidden_creators),
            "hidden_sounds": sorted(self.hidden_sounds),
            "not_interested": sorted(self.not_interested),
            "last_ts": self.last_ts,
            "engagements": self.engagements,
            "fatigue_day": self.fatigue_day,
            "served_creators": self.served_creators,
            "served_tags": self.served_tags,
            "recent_likes": list(self.recent_likes),
            "engaged": self.engaged.tolist(),
            "reset_at": self.reset_at,
            "generation": self.generation,
        }

    @classmethod
    def from_json(
        cls, raw: dict[str, Any], half_life_s: float, seen_max: int, session_len: int
    ) -> UserState:
        user = cls(half_life_s, seen_max, session_len)
        for kind in ("tags", "sounds", "creators"):
            getattr(user, kind).values = {k: (v[0], v[1]) for k, v in raw[kind].items()}
        user.session.extend(tuple(s) for s in raw["session"])
        user.seen = BoundedSet(seen_max, raw["seen"])
        user.liked = BoundedSet(seen_max, raw["liked"])
        user.hidden_creators = set(raw["hidden_creators"])
        user.hidden_sounds = set(raw["hidden_sounds"])
        user.not_interested = set(raw["not_interested"])
        user.last_ts = raw["last_ts"]
        user.engagements = raw["engagements"]
        user.fatigue_day = raw.get("fatigue_day", -1)
        user.served_creators = dict(raw.get("served_creators", {}))
        user.served_tags = dict(raw.get("served_tags", {}))
        user.recent_likes.extend(raw.get("recent_likes", reversed(user.liked.recent(RECENT_LIKES))))
        user.engaged = array("i", raw.get("engaged", ()))
        user.reset_at = raw.get("reset_at", 0.0)
        user.generation = raw.get("generation", 0)
        return user


class UserStates(dict[str, Any]):
    """Users' online state by id. A user restored from a snapshot is held as the bytes the
    snapshot wrote and parsed on first use (`get`, `[]`, `values`, `items`, `pop`): a
    start with a million users' state pays for the users who come back, not for all of
    them up front. Keys, `in` and `len` cover every user, parsed or not."""

    def __init__(self, half_life_s: float, seen_max: int, session_len: int) -> None:
        super().__init__()
        self._args = (half_life_s, seen_max, session_len)
        self._parsing = threading.Lock()  # a reader and a writer parse a user once

    def restore(self, user_id: str, raw: bytes) -> None:
        """Hold the user's snapshot bytes until the user is first used."""
        dict.__setitem__(self, user_id, raw)

    def _parse(self, user_id: str, raw: bytes) -> UserState:
        user = UserState.from_json(orjson.loads(raw), *self._args)
        with self._parsing:
            found = dict.get(self, user_id)
            if found is raw:
                dict.__setitem__(self, user_id, user)
                return user
        return self[user_id]  # parsed (or replaced) meanwhile: that one holds

    def get(self, user_id: str, default: Any = None) -> Any:
        found = dict.get(self, user_id, default)
        return self._parse(user_id, found) if type(found) is bytes else found

    def __getitem__(self, user_id: str) -> UserState:
        found = dict.__getitem__(self, user_id)
        return self._parse(user_id, found) if type(found) is bytes else found

    def _parse_all(self) -> None:
        for user_id, found in list(dict.items(self)):
            if type(found) is bytes:
                self._parse(user_id, found)

    def values(self) -> Any:
        self._parse_all()
        return dict.values(self)

    def items(self) -> Any:
        self._parse_all()
        return dict.items(self)

    def pop(self, user_id: str, *default: Any) -> Any:
        found = dict.pop(self, user_id, *default)
        return (
            UserState.from_json(orjson.loads(found), *self._args) if type(found) is bytes else found
        )
