"""The catalog's change feed in use: the fold never writes the catalog, and a process
follows what another process wrote to the same store."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from reelrank.engine import Engine
from reelrank.state.snapshots import SNAPSHOT

from .conftest import event, make_settings, video

T = 1_700_000_000.0


def _catalog() -> list[dict[str, Any]]:
    return [video(i, creator_id=f"c{i % 3}", created_at=T + i) for i in range(12)]


def _edges(eng: Engine) -> set[tuple[str, str]]:
    return {(f.user_id, f.creator_id) for f in eng.store.catalog.iter_follows()}


def test_replaying_the_log_never_writes_the_catalog(tmp_path: Path) -> None:
    """A restart replays follow and unfollow events from an older snapshot: the follow
    graph stays as the catalog last wrote it (here by the follows API, after the events),
    and the replay appends no catalog change."""
    url = f"sqlite:///{tmp_path / 'f.db'}"
    eng = Engine(make_settings(tmp_path, store=url)).open()
    eng.upsert_videos(_catalog())
    eng.snapshot()
    early = eng.store.state.load_snapshot(SNAPSHOT)
    assert early is not None
    eng.ingest(
        [
            event("follow", "u1", "v1", ts=T + 100),  # creator c1
            event("follow", "u1", "v2", ts=T + 101),  # creator c2
            event("unfollow", "u1", "v1", ts=T + 102),
            event("like", "u1", "v4", ts=T + 103),
        ]
    )
    assert eng.state.follows["u1"] == {"c2"}
    # The app follows c1 again through the catalog API, after the unfollow event.
    eng.add_follows([{"user_id": "u1", "creator_id": "c1"}])
    assert eng.state.follows["u1"] == {"c1", "c2"}
    eng.close()
    # The restart replays the whole log: the snapshot it finds predates the events.
    eng = Engine(make_settings(tmp_path, store=url))
    eng.store.state.save_snapshot(SNAPSHOT, early)
    head = eng.store.catalog.last_change()
    eng.open()
    try:
        assert eng.state.offset == 4  # replayed
        assert eng.state.users["u1"].liked  # the like was folded again
        assert eng.store.catalog.last_change() == head  # nothing written to the catalog
        assert _edges(eng) == {("u1", "c1"), ("u1", "c2")}
        assert eng.state.follows["u1"] == {"c1", "c2"}  # the graph as the catalog holds it
    finally:
        eng.close()


def test_a_process_follows_what_another_wrote_to_the_same_store(tmp_path: Path) -> None:
    """Two engines over one SQLite file, as two processes would be: follows (through the
    API and through events), mutes, a feed reset and an experiment written by one reach
    the other through the change feed, and only after it reads the feed."""
    url = f"sqlite:///{tmp_path / 'two.db'}"
    a = Engine(make_settings(tmp_path, store=url)).open()
    a.upsert_videos(_catalog())
    b = Engine(make_settings(tmp_path / "b", store=url)).open()
    b._stop.set()  # b's background followers stand down: this test reads for it
    for t in b._threads:
        t.join()
    try:
        a.ingest([event("like", "u1", "v3", ts=time.time())])
        a.add_follows([{"user_id": "u1", "creator_id": "c0"}])
        a.ingest([event("follow", "u1", "v2", ts=time.time())])
        a.set_user_controls("u1", {"muted_keywords": ["Spoilers"], "muted_hashtags": []})
        a.create_experiment(
            {"id": "ex1", "arms": [{"name": "control"}, {"name": "b", "overrides": {}}]}
        )
        assert "u1" not in b.state.follows and "u1" not in b.state.mutes
        b.state.catch_up()
        assert b.state.users["u1"].liked and b.state.users["u1"].tags.values
        assert b.follow_catalog() >= 4
        assert b.state.follows["u1"] == {"c0", "c2"}
        mutes = b.state.mutes["u1"]
        assert mutes.keywords == ["spoilers"]
        assert "ex1" in b.experiments.experiments
        a.reset_user("u1")
        assert b.state.users["u1"].generation == 0
        b.follow_catalog()
        assert b.state.users["u1"].generation == 1
        assert not b.state.users["u1"].tags.values  # the profile is forgotten there too
        a.ingest([event("unfollow", "u1", "v2", ts=time.time())])
        b.follow_catalog()
        assert b.state.follows["u1"] == {"c0"}
    finally:
        b.close()
        a.close()


def _served(eng: Engine, user: str) -> set[str]:
    return {it.video_id for it in eng.feed(user, n=20, record=False).items}


def test_uploads_hides_strikes_and_boosts_reach_another_process(tmp_path: Path) -> None:
    """What one process writes to the catalog (uploads, a hide, a strike that suspends a
    creator, a boost) reaches another over the same store through the change feed; the
    other's own writes are not applied a second time."""
    url = f"sqlite:///{tmp_path / 'ops.db'}"
    a = Engine(make_settings(tmp_path, store=url, strikes_to_suspend=1)).open()
    b = Engine(make_settings(tmp_path / "b", store=url, strikes_to_suspend=1)).open()
    b._stop.set()  # b reads the feed when this test says so
    for t in b._threads:
        t.join()
    try:
        now = time.time()
        a.upsert_videos([video(i, creator_id=f"c{i % 3}", created_at=now - 60) for i in range(9)])
        assert b.state.table.size == 0 and not _served(b, "u1")
        b.follow_catalog()
        assert b.state.table.size == 9 and b.replica.applied == 9
        assert _served(b, "u1") == {f"v{i}" for i in range(9)}
        assert int(b.state.pools.testing(9).size) == 9  # new videos get a first audience
        a.lifecycle.hide("v4", True, "spam", "alice")
        a.lifecycle.strike("c1", True, "repeat offender", "alice")  # v1, v4, v7
        a.lifecycle.boost("v0", 25, "launch", "alice")
        b.follow_catalog()
        assert _served(b, "u1") == {"v0", "v2", "v3", "v5", "v6", "v8"}
        row = b.state.table.row_of("v0")
        assert int(b.state.pools.boost_left[row]) == 25
        # and the pool channel's list of boosted rows, read by b's feeds before, has it
        assert b.state.pools.boosted(b.state.table.size).tolist() == [row]
        assert b.lifecycle.video_state("v4")["status"] == "hidden"
        # b's own upload is applied once, when b writes it, not again from the feed.
        b.upsert_videos([video("own", creator_id="c9", created_at=now - 60)])
        mine = b.state.table.video(b.state.table.row_of("vown"))
        applied = b.replica.applied
        b.follow_catalog()
        assert b.replica.applied == applied
        assert b.state.table.video(b.state.table.row_of("vown")) is mine
        a.follow_catalog()
        assert "vown" in _served(a, "u2")
    finally:
        b.close()
        a.close()
