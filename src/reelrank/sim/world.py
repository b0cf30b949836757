"""A generated short-video world: topics, creators, sounds, videos and viewers whose
tastes are planted, so whether the feed learns them can be measured."""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

TOPICS = [
    "cats", "dogs", "cooking", "fitness", "dance", "comedy", "travel", "gaming",
    "music", "fashion", "beauty", "diy", "science", "cars", "football", "art",
    "books", "gardening", "skate", "magic", "baking", "pranks", "asmr", "history",
]  # fmt: skip
REGIONS = ["us", "gb", "br", "in", "jp", "de"]
LANGUAGES = {"us": "en", "gb": "en", "br": "pt", "in": "hi", "jp": "ja", "de": "de"}


@dataclass
class Viewer:
    """A simulated user with a planted taste over topics."""

    id: str
    region: str
    taste: dict[str, float]  # topic -> probability of enjoying a video of it
    interests: list[str] = field(default_factory=list)

    def likes_topic(self, topic: str) -> float:
        return self.taste.get(topic, 0.05)


@dataclass
class World:
    videos: list[dict[str, Any]]
    viewers: list[Viewer]
    topic_of: dict[str, str]  # video id -> main topic
    quality: dict[str, float]  # video id -> planted quality in [0, 1]


def make_world(
    n_videos: int = 2000,
    n_viewers: int = 200,
    n_creators: int | None = None,
    seed: int = 7,
    now: float | None = None,
) -> World:
    """A catalog where each creator sticks to one or two topics and viewers love 2-3."""
    rng = np.random.default_rng(seed)
    now = time.time() if now is None else now
    n_creators = n_creators or max(5, n_videos // 12)
    n_sounds = max(5, n_videos // 8)
    creator_topics = [
        list(rng.choice(TOPICS, size=rng.integers(1, 3), replace=False)) for _ in range(n_creators)
    ]
    creator_region = rng.choice(REGIONS, size=n_creators)
    sound_pop = 1.0 / np.arange(1, n_sounds + 1) ** 1.1
    sound_pop /= sound_pop.sum()
    videos, topic_of, quality = [], {}, {}
    for i in range(n_videos):
        c = int(rng.integers(n_creators))
        topic = str(rng.choice(creator_topics[c]))
        extra = [str(t) for t in rng.choice(TOPICS, size=rng.integers(0, 2), replace=False)]
        vid = f"v{i}"
        region = str(creator_region[c])
        videos.append(
            {
                "id": vid,
                "creator_id": f"c{c}",
                "caption": f"{topic} clip {i}",
                "hashtags": list(dict.fromkeys([topic, *extra])),
                "sound_id": f"s{int(rng.choice(n_sounds, p=sound_pop))}",
                "duration_ms": int(np.clip(rng.lognormal(math.log(25_000), 0.6), 3_000, 180_000)),
                "language": LANGUAGES[region],
                "region": region,
                "created_at": now - float(rng.uniform(0, 14 * 86400)),
            }
        )
        topic_of[vid] = topic
        quality[vid] = float(rng.beta(2, 2))
    viewers = []
    for u in range(n_viewers):
        loved = [str(t) for t in rng.choice(TOPICS, size=rng.integers(2, 4), replace=False)]
        taste = {t: float(rng.uniform(0.6, 0.95)) for t in loved}
        interests = loved[:1] if rng.random() < 0.5 else []
        viewers.append(Viewer(f"u{u}", str(rng.choice(REGIONS)), taste, interests))
    return World(videos, viewers, topic_of, quality)


_counter = itertools.count()


def react(
    viewer: Viewer,
    video: dict[str, Any],
    topic: str,
    quality: float,
    rng: np.random.Generator,
    request_id: str | None,
    now: float,
) -> list[dict[str, Any]]:
    """The events one viewer sends for one video shown to them."""
    enjoy = viewer.likes_topic(topic) * (0.5 + 0.5 * quality)
    base = {"user_id": viewer.id, "video_id": video["id"], "request_id": request_id}

    def ev(kind: str, **extra: Any) -> dict[str, Any]:
        return {
            "event_id": f"{viewer.id}-{next(_counter)}-{now:.3f}",
            "type": kind,
            "ts": now,
            **base,
            **extra,
        }

    out = [ev("impression"), ev("play")]
    if rng.random() > enjoy:
        watched = int(video["duration_ms"] * rng.uniform(0.02, 0.2))
        out += [ev("watch", watch_ms=watched), ev("skip", watch_ms=watched)]
        if rng.random() < 0.03:
            out.append(ev("not_interested"))
        return out
    ratio = float(rng.uniform(0.7, 1.0))
    out.append(ev("watch", watch_ms=int(video["duration_ms"] * ratio)))
    if ratio > 0.9:
        out.append(ev("finish"))
    if rng.random() < enjoy * 0.5:
        out.append(ev("like"))
    if rng.random() < enjoy * 0.1:
        out.append(ev("share"))
    if rng.random() < enjoy * 0.08:
        out.append(ev("comment"))
    if rng.random() < enjoy * 0.03:
        out.append(ev("follow"))
    return out
