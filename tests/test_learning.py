"""The feed adapts to what a user does, at once (the next request)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from reelrank.engine import Engine
from reelrank.sim.world import make_world, react

from .conftest import event, make_settings, video

TOPICS = ["cats", "dogs", "cooking", "dance", "travel", "gaming", "comedy", "cars", "art", "diy"]


def _catalog() -> list[dict]:
    return [
        video(
            f"{t}{i}",
            creator_id=f"{t}-creator{i % 6}",
            sound_id=f"{t}-sound{i % 5}",
            hashtags=[t],
            caption=f"a {t} video",
        )
        for t in TOPICS
        for i in range(30)
    ]


def _share(eng: Engine, user: str, tag: str, n: int = 20) -> float:
    items = eng.feed(user, n=n).items
    assert items
    return sum(tag in eng.video_detail(it.video_id)["video"]["hashtags"] for it in items) / len(
        items
    )


def test_liking_a_hashtag_raises_its_share_in_the_next_feed(tmp_path: Path) -> None:
    eng = Engine(make_settings(tmp_path)).open()
    try:
        eng.upsert_videos(_catalog())
        before = _share(eng, "u1", "cats")
        assert before <= 0.3  # a cold-start page mixes topics
        likes = [event("like", "u1", f"vcats{i}") for i in range(5)]
        assert eng.ingest(likes).accepted == 5
        after = _share(eng, "u1", "cats")
        assert after >= 0.5
        assert after >= before + 0.3
        # Another user sees #cats only through its new popularity: far less of it.
        assert _share(eng, "u2", "cats") <= after - 0.3
    finally:
        eng.close()


def test_not_interested_pushes_a_topic_down(tmp_path: Path) -> None:
    eng = Engine(make_settings(tmp_path)).open()
    try:
        eng.upsert_videos(_catalog())
        eng.ingest([event("like", "u1", f"vdogs{i}") for i in range(3)])
        assert _share(eng, "u1", "dogs") >= 0.5
        eng.ingest([event("not_interested", "u1", f"vdogs{i}") for i in range(10, 16)])
        assert _share(eng, "u1", "dogs") <= 0.3
    finally:
        eng.close()


def test_simulated_viewers_get_more_of_what_they_like_over_time(tmp_path: Path) -> None:
    """Planted tastes: the share of served items matching them rises as viewers engage."""
    eng = Engine(make_settings(tmp_path)).open()
    world = make_world(n_videos=1500, n_viewers=40, seed=3)
    eng.upsert_videos(world.videos)
    eng.upsert_users([{"id": v.id, "region": v.region} for v in world.viewers])
    by_id = {v["id"]: v for v in world.videos}
    rng = np.random.default_rng(0)
    rounds = []
    try:
        for _ in range(8):
            hits = total = 0
            for viewer in world.viewers:
                feed = eng.feed(viewer.id, n=8)
                events = []
                for it in feed.items:
                    topic = world.topic_of[it.video_id]
                    hits += viewer.likes_topic(topic) > 0.5
                    total += 1
                    events += react(
                        viewer,
                        by_id[it.video_id],
                        topic,
                        world.quality[it.video_id],
                        rng,
                        feed.request_id,
                        time.time(),
                    )
                eng.ingest(events)
            rounds.append(hits / total)
    finally:
        eng.close()
    first, last = rounds[0], float(np.mean(rounds[-3:]))
    print("match rate per round", [round(r, 2) for r in rounds])
    assert last >= first + 0.2, rounds


def test_every_served_item_is_logged_as_an_impression(tmp_path: Path) -> None:
    """Server-side impressions carry the request id, position, source and model version,
    and a served video counts as seen even after a restart from the store."""
    url = f"sqlite:///{tmp_path / 'imp.db'}"
    eng = Engine(make_settings(tmp_path, store=url)).open()
    eng.upsert_videos(_catalog())
    feed = eng.feed("u9", n=7)
    eng.flush_impressions()
    logged = [m for _, m in eng.store.events.read_impressions(0, 100)]
    assert [m.video_id for m in logged] == [it.video_id for it in feed.items]
    assert [m.position for m in logged] == list(range(7))
    assert {m.request_id for m in logged} == {feed.request_id}
    assert [m.source for m in logged] == [it.source for it in feed.items]
    assert {m.model_version for m in logged} == {feed.model_version}
    # Crash without a snapshot: the impression log alone restores the seen set.
    eng._stop.set()
    eng.store.close()
    again = Engine(make_settings(tmp_path, store=url)).open()
    try:
        served = {it.video_id for it in feed.items}
        later = {it.video_id for _ in range(5) for it in again.feed("u9", n=20).items}
        assert not served & later
    finally:
        again.close()
