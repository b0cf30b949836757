"""Closed-loop simulations of the content lifecycle on an in-process engine.

`pool_simulation`: a back catalog with simulated viewers, then new uploads with a planted
quality; viewers fetch pages and react (world.react: enjoyment grows with the viewer's
taste for the topic and with quality) while pools are judged. Reports, per planted
class, how far new videos climbed, and the precision and recall of reaching the top
tier (being promoted into the last one) as a detector of planted-good videos, and the
AUC of the last judged quality as one.

`cold_start_simulation`: brand-new users, each engaging only with one topic, fetch pages
until they have engaged ten times; reports the topic's share of the first page against
the page after those engagements.

Both run on the engine's clock: on an event-clocked engine (`Engine(..., clock=
EventClock(start))`) each round of pages takes `ROUND_S` simulated seconds and the
engine's jobs run between rounds, so a seed gives the same run on any machine; on a wall
clock engine the rounds take what the machine takes.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import numpy as np

from ..engine import Engine
from ..evaluate.metrics import auc
from ..state.pools import BASELINE_MIN
from .world import TOPICS, World, make_world, react

_ids = itertools.count()
ROUND_S = 10.0  # simulated seconds a round of pages takes on an event-clocked engine
PAGE_S = 5.0  # and a newcomer's page


def back_catalog(n_videos: int, n_viewers: int, seed: int, now: float | None = None) -> World:
    """A world whose videos are all older than any first-pool age (two weeks or more
    before `now`, the wall clock by default)."""
    now = time.time() if now is None else now
    return make_world(n_videos, n_viewers, seed=seed, now=now - 20 * 86400)


def _later(engine: Engine, seconds: float) -> None:
    """Simulated time passes on an event-clocked engine (a wall clock passes by itself)."""
    if engine.event_clock is not None:
        engine.event_clock.advance(engine.clock() + seconds)


def _round(
    engine: Engine, world: World, rng: np.random.Generator, n: int, by_id: dict[str, Any]
) -> int:
    """Every viewer fetches a page and sends their reactions at once, as an app does
    (so a pool is judged on engagement that has arrived); returns the events sent."""
    sent = 0
    for viewer in world.viewers:
        page = engine.feed(viewer.id, n=n)
        now = engine.clock()
        events: list[dict[str, Any]] = []
        for item in page.items:
            vid = item.video_id
            events += react(
                viewer,
                by_id[vid],
                world.topic_of[vid],
                world.quality[vid],
                rng,
                page.request_id,
                now,
            )
        if events:
            engine.ingest(events)
        sent += len(events)
    _later(engine, ROUND_S)
    if engine.event_clock is not None:
        engine.tick()  # logs the pages, then judges, cools and revives pools
    else:
        engine.flush_impressions()
        engine.lifecycle_tick()
    return sent


def _uploads(
    engine: Engine,
    world: World,
    by_id: dict[str, Any],
    rng: np.random.Generator,
    n: int,
    prefix: str,
    planted: list[float] | None,
) -> list[dict[str, Any]]:
    """n new videos on random topics; quality alternates between the `planted` means
    (sd 0.05), or follows the world's Beta(2, 2) when None."""
    now = engine.clock()
    out: list[dict[str, Any]] = []
    for i in range(n):
        topic = TOPICS[int(rng.integers(len(TOPICS)))]
        vid = f"{prefix}{i}"
        if planted is None:
            quality = float(rng.beta(2, 2))
        else:
            quality = float(np.clip(rng.normal(planted[i % len(planted)], 0.05), 0.0, 1.0))
        record: dict[str, Any] = {
            "id": vid,
            "creator_id": f"{prefix}creator{i}",
            "caption": f"{topic} upload {i} take {int(rng.integers(10**6))}",
            "hashtags": [topic],
            "sound_id": f"{prefix}sound{i}",
            "duration_ms": int(rng.integers(8_000, 40_000)),
            "language": "en",
            "created_at": now,
        }
        out.append(record)
        world.videos.append(record)
        world.topic_of[vid] = topic
        world.quality[vid] = quality
        by_id[vid] = record
    return out


def pool_simulation(
    engine: Engine,
    world: World,
    new_videos: int = 60,
    warm_rounds: int = 3,
    warm_uploads: int = 20,
    max_rounds: int = 40,
    page: int = 10,
    seed: int = 11,
) -> dict[str, Any]:
    """Upload `new_videos` with planted quality (half near 0.9, half near 0.1) after
    `warm_rounds` on the back catalog and `warm_uploads` earlier new videos; run until
    every new video's pools have settled (or `max_rounds`); report the funnel by
    planted class."""
    rng = np.random.default_rng(seed)
    engine.upsert_videos(world.videos)
    engine.upsert_users(
        [{"id": v.id, "region": v.region, "interests": v.interests} for v in world.viewers]
    )
    by_id = {v["id"]: v for v in world.videos}
    for _ in range(warm_rounds):
        _round(engine, world, rng, page, by_id)
    # A running system has judged pools before: earlier uploads of every quality set
    # each tier's baseline (the rates of pool audiences) before the measured ones come.
    if warm_uploads:
        engine.upsert_videos(_uploads(engine, world, by_id, rng, warm_uploads, "early", None))
        for _ in range(max_rounds):
            if engine.state.pools.tier_totals[0, 0] >= BASELINE_MIN:
                break
            _round(engine, world, rng, page, by_id)
    uploads = _uploads(engine, world, by_id, rng, new_videos, "new", [0.9, 0.1])
    engine.upsert_videos(uploads)
    top = len(engine.settings.pool_sizes) - 1
    rounds = 0
    for rounds in range(1, max_rounds + 1):  # noqa: B007 - reported below
        _round(engine, world, rng, page, by_id)
        states = [engine.lifecycle.video_state(v["id"])["pool"] for v in uploads]
        if all(s["stage"] in ("stopped", "graduated", "cooled") for s in states):
            break
    states = [engine.lifecycle.video_state(v["id"])["pool"] for v in uploads]

    def reached_top(s: dict[str, Any]) -> bool:
        """Promoted into the last tier (whatever its judgement there later says)."""
        return s["tier"] is not None and s["tier"] == top

    def graduated(s: dict[str, Any]) -> bool:
        return s["stage"] in ("graduated", "cooled")

    good = [world.quality[v["id"]] >= 0.5 for v in uploads]
    top_hit = [reached_top(s) for s in states]
    tiers = [s["tier"] if s["tier"] is not None else -1 for s in states]
    true_pos = sum(g and t for g, t in zip(good, top_hit, strict=True))
    promoted = sum(top_hit)
    n_good = sum(good)

    # The judged quality as a detector of the planted class (videos judged at least once).
    judged = [
        (s["last_quality"], g) for s, g in zip(states, good, strict=True) if "last_quality" in s
    ]
    quality_auc = auc([g for _, g in judged], [q for q, _ in judged])

    def share(cls: bool, cond: Any) -> float:
        members = [s for s, g in zip(states, good, strict=True) if g == cls]
        return sum(bool(cond(s)) for s in members) / max(len(members), 1)

    return {
        "new_videos": new_videos,
        "warm_uploads": warm_uploads,
        "rounds": rounds,
        "pool_sizes": engine.settings.pool_sizes,
        "thresholds": engine.settings.pool_thresholds,
        "good_reached_top": share(True, reached_top),
        "bad_reached_top": share(False, reached_top),
        "good_graduated": share(True, graduated),
        "bad_graduated": share(False, graduated),
        "good_stopped_at_first": share(True, lambda s: s["stage"] == "stopped" and s["tier"] == 0),
        "bad_stopped_at_first": share(False, lambda s: s["stage"] == "stopped" and s["tier"] == 0),
        "precision": true_pos / promoted if promoted else None,
        "quality_auc": quality_auc,
        "recall": true_pos / n_good if n_good else None,
        "unsettled": sum(s["stage"] in ("testing", "judging") for s in states),
        "mean_tier_good": float(np.mean([t for t, g in zip(tiers, good, strict=True) if g])),
        "mean_tier_bad": float(np.mean([t for t, g in zip(tiers, good, strict=True) if not g])),
        "last_quality_good": [
            s.get("last_quality") for s, g in zip(states, good, strict=True) if g
        ],
        "last_quality_bad": [
            s.get("last_quality") for s, g in zip(states, good, strict=True) if not g
        ],
        "funnel": engine.lifecycle.pools_summary()["funnel"],
    }


def cold_start_simulation(
    engine: Engine, world: World, users: int = 12, engagements: int = 10, page: int = 10,
    seed: int = 5,
) -> dict[str, Any]:  # fmt: skip
    """New users, each loving one topic (engaging only with it, skipping the rest):
    the topic's share of the first page and of the page after `engagements`."""
    rng = np.random.default_rng(seed)
    counts: dict[str, int] = {}
    for topic in world.topic_of.values():
        counts[topic] = counts.get(topic, 0) + 1
    topics = sorted(counts, key=lambda t: -counts[t])[: max(users, 1)]
    by_id = {v["id"]: v for v in world.videos}
    first, after, pages_needed = [], [], []
    for k in range(users):
        topic = topics[k % len(topics)]
        uid = f"newcomer{k}-{next(_ids)}"
        engine.upsert_users([{"id": uid, "language": "en"}])
        engaged = 0
        shares = []
        for _ in range(30):
            feed = engine.feed(uid, n=page)
            hits = [world.topic_of[it.video_id] == topic for it in feed.items]
            shares.append(sum(hits) / max(len(hits), 1))
            if engaged >= engagements:
                break
            now = engine.clock()
            events = []
            for it, hit in zip(feed.items, hits, strict=True):
                duration = int(by_id[it.video_id]["duration_ms"])

                def ev(kind: str, **extra: Any) -> dict[str, Any]:
                    return {
                        "event_id": f"{uid}-{next(_ids)}",  # noqa: B023
                        "type": kind,
                        "user_id": uid,  # noqa: B023
                        "video_id": it.video_id,  # noqa: B023 - used at once
                        "request_id": feed.request_id,  # noqa: B023
                        "ts": now,  # noqa: B023
                        **extra,
                    }

                events.append(ev("impression"))
                if hit and engaged < engagements:
                    engaged += 1
                    events += [ev("watch", watch_ms=duration), ev("finish")]
                    if rng.random() < 0.5:
                        events.append(ev("like"))
                else:
                    events.append(ev("skip", watch_ms=duration // 10))
            engine.ingest(events)
            _later(engine, PAGE_S)
        first.append(shares[0])
        after.append(shares[-1])
        pages_needed.append(len(shares) - 1)
    return {
        "users": users,
        "engagements": engagements,
        "topic_catalog_share": float(np.mean([counts[t] / len(world.topic_of) for t in topics])),
        "first_page_share": float(np.mean(first)),
        "share_after": float(np.mean(after)),
        "pages_to_engage": float(np.mean(pages_needed)),
        "per_user_after": [round(x, 2) for x in after],
    }
