"""One contract suite for every storage backend (the protocols in storage/base.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from reelrank.errors import StorageError
from reelrank.schema import AuditEntry, Event, Follow, Impression, User, Video
from reelrank.storage import Store, open_store
from reelrank.storage.params import open_params

from .conftest import video


def _video(i: int | str, **fields: Any) -> Video:
    fields.setdefault("created_at", 1_700_000_000.0)
    return Video.model_validate(video(i, **fields))


def _event(event_id: str, kind: str = "like", user: str = "u1", vid: str = "v1", **f: Any) -> Event:
    raw: dict[str, Any] = {
        "event_id": event_id,
        "type": kind,
        "user_id": user,
        "video_id": vid,
        "ts": 1_700_000_100.0,
    }
    raw.update(f)
    return Event.model_validate(raw)


def _impression(request_id: str, position: int, vid: str = "v1") -> Impression:
    return Impression(
        request_id=request_id,
        position=position,
        user_id="u1",
        video_id=vid,
        source="trending",
        score=0.5 + position,
        model_version="heuristic-test",
        ts=1_700_000_200.0 + position,
        # the second of a page carries what the ranker saw and the arms it was served under
        features={"heuristic": 0.25, "tags": [3, 4]} if position == 1 else None,
        arms={"exp1": "b"} if position == 1 else None,
    )


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    yield s
    s.close()


# -- catalog: videos -----------------------------------------------------------------------


def test_video_rows_are_dense_from_zero_and_flag_created(store: Store) -> None:
    got = store.catalog.upsert_videos([_video(i) for i in range(3)])
    assert got == [(0, True), (1, True), (2, True)]
    got = store.catalog.upsert_videos([_video(3), _video(4)])
    assert got == [(3, True), (4, True)]


def test_video_update_keeps_its_row_and_replaces_the_record(store: Store) -> None:
    store.catalog.upsert_videos([_video(i) for i in range(3)])
    changed = _video(1, caption="new caption", hashtags=["cats", "dogs"], region="br")
    got = store.catalog.upsert_videos([changed, _video(9)])
    assert got == [(1, False), (3, True)]

    found = store.catalog.get_video("v1")
    assert found is not None
    row, record = found
    assert row == 1
    assert record == changed
    assert record.caption == "new caption"
    assert record.hashtags == ["cats", "dogs"]
    assert record.region == "br"
    # Neighbours are untouched.
    assert store.catalog.get_video("v0") == (0, _video(0))
    assert store.catalog.get_video("v2") == (2, _video(2))


def test_same_video_twice_in_one_batch_gets_one_row(store: Store) -> None:
    first = _video(7, caption="first")
    second = _video(7, caption="second")
    got = store.catalog.upsert_videos([first, second, _video(8)])
    assert got == [(0, True), (0, False), (1, True)]
    assert store.catalog.get_video("v7") == (0, second)
    assert [r for r, _ in store.catalog.iter_videos()] == [0, 1]


def test_rows_stay_stable_after_many_updates(store: Store) -> None:
    store.catalog.upsert_videos([_video(i) for i in range(5)])
    for round_ in range(3):
        got = store.catalog.upsert_videos([_video(i, caption=f"r{round_}") for i in (4, 0, 2)])
        assert got == [(4, False), (0, False), (2, False)]
    assert store.catalog.upsert_videos([_video(5)]) == [(5, True)]


def test_get_video_unknown_is_none(store: Store) -> None:
    assert store.catalog.get_video("nope") is None
    store.catalog.upsert_videos([_video(1)])
    assert store.catalog.get_video("nope") is None


def test_video_status_and_reason_round_trip(store: Store) -> None:
    held = _video(1, status="pending_review", status_reason="banned_terms: spam")
    store.catalog.upsert_videos([held])
    found = store.catalog.get_video("v1")
    assert found is not None
    assert found[1].status.value == "pending_review"
    assert found[1].status_reason == "banned_terms: spam"
    assert found[1] == held


def test_iter_videos_yields_every_video_in_row_order(store: Store) -> None:
    assert list(store.catalog.iter_videos()) == []
    ids = ["zeta", "alpha", "mid", "beta"]
    store.catalog.upsert_videos([_video(i) for i in ids])
    store.catalog.upsert_videos([_video("alpha", caption="updated")])
    got = list(store.catalog.iter_videos())
    assert [r for r, _ in got] == [0, 1, 2, 3]
    assert [v.id for _, v in got] == ["vzeta", "valpha", "vmid", "vbeta"]
    assert got[1][1].caption == "updated"


# -- catalog: users ------------------------------------------------------------------------


def test_users_created_then_updated(store: Store) -> None:
    u1 = User.model_validate({"id": "u1", "region": "us", "interests": ["cats"]})
    u2 = User.model_validate({"id": "u2"})
    assert store.catalog.upsert_users([u1, u2]) == [True, True]
    u1b = User.model_validate({"id": "u1", "region": "br", "interests": ["dogs", "#Food"]})
    u3 = User.model_validate({"id": "u3", "language": "pt"})
    assert store.catalog.upsert_users([u1b, u3]) == [False, True]

    got = store.catalog.get_user("u1")
    assert got == u1b
    assert got is not None and got.region == "br" and got.interests == ["dogs", "food"]
    assert store.catalog.get_user("u404") is None
    assert sorted(u.id for u in store.catalog.iter_users()) == ["u1", "u2", "u3"]
    assert {u.id: u for u in store.catalog.iter_users()}["u1"] == u1b


def test_same_user_twice_in_one_batch_is_created_once(store: Store) -> None:
    a = User.model_validate({"id": "dup", "region": "us"})
    b = User.model_validate({"id": "dup", "region": "br"})
    assert store.catalog.upsert_users([a, b]) == [True, False]
    assert store.catalog.get_user("dup") == b


# -- catalog: follows ----------------------------------------------------------------------


def _edges(store: Store) -> set[tuple[str, str]]:
    return {(f.user_id, f.creator_id) for f in store.catalog.iter_follows()}


def test_follows_add_is_true_only_when_new(store: Store) -> None:
    f = Follow(user_id="u1", creator_id="c1")
    g = Follow(user_id="u1", creator_id="c2")
    h = Follow(user_id="u2", creator_id="c1")
    assert store.catalog.add_follows([f, g]) == [True, True]
    assert store.catalog.add_follows([f, h, h]) == [False, True, False]
    assert _edges(store) == {("u1", "c1"), ("u1", "c2"), ("u2", "c1")}


def test_remove_follow(store: Store) -> None:
    store.catalog.add_follows(
        [Follow(user_id="u1", creator_id="c1"), Follow(user_id="u1", creator_id="c2")]
    )
    assert store.catalog.remove_follow("u1", "c1") is True
    assert store.catalog.remove_follow("u1", "c1") is False
    assert store.catalog.remove_follow("u2", "c2") is False  # wrong user: not the same edge
    assert _edges(store) == {("u1", "c2")}
    # Re-adding a removed edge is new again.
    assert store.catalog.add_follows([Follow(user_id="u1", creator_id="c1")]) == [True]
    assert _edges(store) == {("u1", "c1"), ("u1", "c2")}


def test_iter_follows_empty(store: Store) -> None:
    assert list(store.catalog.iter_follows()) == []


# -- catalog: controls and the audit log ---------------------------------------------------


def test_controls_replace_by_kind_and_key(store: Store) -> None:
    store.catalog.put_control("creator", "c1", {"strikes": 1})
    store.catalog.put_control("creator", "c2", {"strikes": 2})
    store.catalog.put_control("user", "c1", {"reset_at": 5.0})
    store.catalog.put_control("creator", "c1", {"strikes": 3, "suspended": True})
    assert list(store.catalog.iter_controls("creator")) == [
        ("c1", {"strikes": 3, "suspended": True}),
        ("c2", {"strikes": 2}),
    ]
    assert list(store.catalog.iter_controls("user")) == [("c1", {"reset_at": 5.0})]
    assert list(store.catalog.iter_controls("video")) == []


def test_get_control_reads_one_record(store: Store) -> None:
    store.catalog.put_control("user", "u1", {"muted_keywords": ["x"]})
    store.catalog.put_control("creator", "u1", {"strikes": 1})
    assert store.catalog.get_control("user", "u1") == {"muted_keywords": ["x"]}
    assert store.catalog.get_control("creator", "u1") == {"strikes": 1}
    assert store.catalog.get_control("video", "u1") is None


# -- catalog: the change feed ----------------------------------------------------------------


def _changes(store: Store, after: int = 0) -> list[tuple[str, str, Any]]:
    return [(c.table, c.key, c.body) for c in store.catalog.changes(after, 1000)]


def test_every_catalog_write_appends_its_change_in_commit_order(store: Store) -> None:
    assert store.catalog.last_change() == 0 and store.catalog.changes(0, 10) == []
    store.catalog.upsert_videos([_video(1), _video(2)])
    store.catalog.upsert_users([User(id="u1")])
    store.catalog.add_follows([Follow(user_id="u1", creator_id="c1")])
    store.catalog.add_follows([Follow(user_id="u1", creator_id="c1")])  # unchanged: no change
    store.catalog.put_control("user", "u1", {"muted_keywords": ["x"]})
    assert store.catalog.remove_follow("u1", "c1") is True
    assert store.catalog.remove_follow("u1", "c1") is False  # nothing removed: no change
    store.catalog.upsert_videos([_video(1, caption="edited")])  # an update is a change too
    assert _changes(store) == [
        ("videos", "v1", None),
        ("videos", "v2", None),
        ("users", "u1", None),
        ("follows", "u1", {"creator_id": "c1", "following": True}),
        ("controls", "u1", {"kind": "user"}),
        ("follows", "u1", {"creator_id": "c1", "following": False}),
        ("videos", "v1", None),
    ]
    seqs = [c.seq for c in store.catalog.changes(0, 100)]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert store.catalog.last_change() == seqs[-1]


def test_changes_page_after_a_seq(store: Store) -> None:
    store.catalog.upsert_videos([_video(i) for i in range(7)])
    first = store.catalog.changes(0, 3)
    assert [c.key for c in first] == ["v0", "v1", "v2"]
    rest = store.catalog.changes(first[-1].seq, 100)
    assert [c.key for c in rest] == ["v3", "v4", "v5", "v6"]
    assert store.catalog.changes(rest[-1].seq, 100) == []


def test_changes_name_the_store_object_that_wrote_them(store: Store, tmp_path: Path) -> None:
    store.catalog.upsert_videos([_video(1)])
    store.events.append([_event("f1", "follow", vid="v1")], received_at=1.0)
    origins = {c.origin for c in store.catalog.changes(0, 100)}
    assert origins == {store.catalog.origin} and store.catalog.origin
    if store.url.startswith("sqlite:"):  # a second writer on the same file
        other = open_store(store.url)
        try:
            assert other.catalog.origin != store.catalog.origin
            other.catalog.upsert_users([User(id="u9")])
            last = store.catalog.changes(0, 100)[-1]
            assert (last.table, last.key, last.origin) == ("users", "u9", other.catalog.origin)
        finally:
            other.close()


def test_follow_events_write_the_edge_with_the_event(store: Store) -> None:
    store.catalog.upsert_videos([_video(1, creator_id="ca"), _video(2, creator_id="cb")])
    head = store.catalog.last_change()
    got = store.events.append(
        [
            _event("f1", "follow", user="u1", vid="v1"),
            _event("f2", "follow", user="u1", vid="v2"),
            _event("f1", "follow", user="u9", vid="v1"),  # a duplicate id: not accepted
            _event("x1", "like", user="u1", vid="v2"),
            _event("n1", "unfollow", user="u1", vid="v2"),
            _event("f3", "follow", user="u2", vid="missing"),  # no such video: no edge
        ],
        received_at=1.0,
    )
    assert got == [1, 2, None, 3, 4, 5]
    assert _edges(store) == {("u1", "ca")}
    assert _changes(store, head) == [
        ("follows", "u1", {"creator_id": "ca", "following": True}),
        ("follows", "u1", {"creator_id": "cb", "following": True}),
        ("follows", "u1", {"creator_id": "cb", "following": False}),
    ]
    # A repeated event changes nothing: neither the log nor the graph.
    assert store.events.append([_event("n1", "unfollow", user="u1", vid="v2")], 2.0) == [None]
    store.catalog.add_follows([Follow(user_id="u1", creator_id="cb")])
    assert store.events.append([_event("n1", "unfollow", user="u1", vid="v2")], 3.0) == [None]
    assert _edges(store) == {("u1", "ca"), ("u1", "cb")}


# -- stored vectors --------------------------------------------------------------------------


def test_vectors_put_replace_and_load_by_space(store: Store) -> None:
    ids, prints, matrix = store.vectors.load_vectors("content/m/4")
    assert ids == [] and prints == [] and matrix.shape == (0, 0)
    a = np.array([[0.5, -0.25, 0.125, 1.0], [0.1, 0.2, 0.3, 0.4]], dtype=np.float32)
    store.vectors.put_vectors("content/m/4", ["v1", "v2"], ["f1", "f2"], a)
    store.vectors.put_vectors("content/other/2", ["v1"], ["g1"], np.ones((1, 2), np.float32))
    store.vectors.put_vectors("content/m/4", ["v2"], ["f2b"], -a[1:])  # v2 re-embedded
    ids, prints, matrix = store.vectors.load_vectors("content/m/4")
    got = {i: (p, matrix[j]) for j, (i, p) in enumerate(zip(ids, prints, strict=True))}
    assert set(got) == {"v1", "v2"} and matrix.dtype == np.float32 and matrix.shape == (2, 4)
    assert got["v1"][0] == "f1" and got["v2"][0] == "f2b"
    assert np.allclose(got["v1"][1], a[0], atol=1e-3)  # stored as float16
    assert np.allclose(got["v2"][1], -a[1], atol=1e-3)
    ids, prints, matrix = store.vectors.load_vectors("content/other/2")
    assert ids == ["v1"] and prints == ["g1"] and matrix.shape == (1, 2)


def _audit(i: int, target: str = "v1", kind: str = "video") -> AuditEntry:
    return AuditEntry(
        ts=1_700_000_000.0 + i,
        actor="alice" if i % 2 else "machine",
        action="review.hold",
        target_kind=kind,
        target_id=target,
        reason=f"reason {i}",
        detail={"i": i} if i % 2 else None,
    )


def test_audit_appends_in_order_and_reads_newest_first(store: Store) -> None:
    seqs = store.catalog.append_audit([_audit(0), _audit(1, "v2"), _audit(2, "c1", "creator")])
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    everything = store.catalog.read_audit(None, None, None, 10)
    assert [e.reason for e in everything] == ["reason 2", "reason 1", "reason 0"]
    assert everything[1].actor == "alice" and everything[1].detail == {"i": 1}
    assert everything[2].detail is None and everything[2].seq == seqs[0]
    only = store.catalog.read_audit("video", "v2", None, 10)
    assert [e.target_id for e in only] == ["v2"]
    assert [e.target_kind for e in store.catalog.read_audit("creator", None, None, 10)] == [
        "creator"
    ]
    page = store.catalog.read_audit(None, None, everything[0].seq, 1)
    assert [e.reason for e in page] == ["reason 1"]


# -- event log -----------------------------------------------------------------------------


def test_append_returns_offsets_one_to_n(store: Store) -> None:
    log = store.events
    assert log.last_offset() == 0
    assert log.read(0, 10) == []
    assert log.append([_event(f"e{i}") for i in range(4)], received_at=1.0) == [1, 2, 3, 4]
    assert log.append([_event("e4"), _event("e5")], received_at=2.0) == [5, 6]
    assert log.last_offset() == 6


def test_append_empty_batch(store: Store) -> None:
    assert store.events.append([], received_at=1.0) == []
    assert store.events.last_offset() == 0


def test_duplicate_event_id_within_one_batch_is_none(store: Store) -> None:
    batch = [_event("a"), _event("b"), _event("a", kind="share"), _event("c"), _event("b")]
    assert store.events.append(batch, received_at=1.0) == [1, 2, None, 3, None]
    assert store.events.last_offset() == 3
    got = store.events.read(0, 10)
    assert [(o, e.event_id) for o, e in got] == [(1, "a"), (2, "b"), (3, "c")]
    # The first copy wins: the duplicate's different type was not stored.
    assert got[0][1].type.value == "like"


def test_duplicate_event_id_across_batches_is_none(store: Store) -> None:
    assert store.events.append([_event("a"), _event("b")], received_at=1.0) == [1, 2]
    got = store.events.append([_event("b"), _event("c"), _event("a")], received_at=2.0)
    assert got == [None, 3, None]
    assert store.events.append([_event("a")], received_at=3.0) == [None]
    assert store.events.last_offset() == 3
    assert [e.event_id for _, e in store.events.read(0, 10)] == ["a", "b", "c"]


def test_read_returns_events_in_offset_order_with_paging(store: Store) -> None:
    events = [
        _event(
            f"e{i}",
            kind="watch" if i % 3 == 0 else "like",
            user=f"u{i % 2}",
            vid=f"v{i}",
            watch_ms=1000 * i if i % 3 == 0 else None,
            request_id=f"r{i}" if i % 2 else None,
            device="ios" if i % 2 else None,
            region="br" if i == 4 else None,
            ts=1_700_000_000.0 + i,
        )
        for i in range(10)
    ]
    store.events.append(events[:6], received_at=1.0)
    store.events.append(events[6:], received_at=2.0)

    everything = store.events.read(0, 100)
    assert [o for o, _ in everything] == list(range(1, 11))
    assert [e for _, e in everything] == events  # every field round-trips

    assert [(o, e.event_id) for o, e in store.events.read(0, 3)] == [
        (1, "e0"),
        (2, "e1"),
        (3, "e2"),
    ]
    assert [(o, e.event_id) for o, e in store.events.read(3, 3)] == [
        (4, "e3"),
        (5, "e4"),
        (6, "e5"),
    ]
    assert [(o, e.event_id) for o, e in store.events.read(8, 100)] == [(9, "e8"), (10, "e9")]
    assert store.events.read(10, 5) == []
    assert store.events.read(42, 5) == []
    assert store.events.read(0, 0) == []

    # Paging with the last offset seen visits every event exactly once.
    seen: list[int] = []
    after = 0
    while page := store.events.read(after, 4):
        assert len(page) <= 4
        seen.extend(o for o, _ in page)
        after = page[-1][0]
    assert seen == list(range(1, 11))


def test_read_event_fields(store: Store) -> None:
    e = _event("w1", kind="watch", watch_ms=1234, request_id="req", device="android", region="mx")
    store.events.append([e], received_at=5.0)
    ((offset, got),) = store.events.read(0, 1)
    assert offset == 1
    assert got.type.value == "watch"
    assert got.watch_ms == 1234
    assert (got.request_id, got.device, got.region) == ("req", "android", "mx")
    assert got.ts == pytest.approx(1_700_000_100.0)
    # The whole record, its fields in declaration order (as a dump or a log line shows them).
    assert got == e
    assert list(got.model_dump()) == list(Event.model_fields)


# -- impressions ---------------------------------------------------------------------------


def test_impressions_append_read_and_last_offset(store: Store) -> None:
    log = store.events
    assert log.last_impression_offset() == 0
    assert log.read_impressions(0, 10) == []
    first = [_impression("r1", p, f"v{p}") for p in range(3)]
    second = [_impression("r2", p, f"v{p + 3}") for p in range(2)]
    log.append_impressions(first)
    log.append_impressions([])
    log.append_impressions(second)
    assert log.last_impression_offset() == 5

    got = log.read_impressions(0, 100)
    assert [o for o, _ in got] == [1, 2, 3, 4, 5]
    assert [m for _, m in got] == first + second
    assert all(list(m.model_dump()) == list(Impression.model_fields) for _, m in got)
    assert [(o, m.video_id) for o, m in log.read_impressions(2, 2)] == [(3, "v2"), (4, "v3")]
    assert log.read_impressions(5, 10) == []

    # Impressions are a separate log: they do not move the event offsets.
    assert log.last_offset() == 0
    assert log.append([_event("x")], received_at=1.0) == [1]
    assert log.last_impression_offset() == 5


# -- state: snapshots and consumer offsets -------------------------------------------------


def test_snapshots_save_replace_load(store: Store) -> None:
    st = store.state
    assert st.load_snapshot("online_state") is None
    st.save_snapshot("online_state", b"\x00first\xff")
    st.save_snapshot("other", b"other")
    assert st.load_snapshot("online_state") == b"\x00first\xff"
    st.save_snapshot("online_state", b"second")
    assert st.load_snapshot("online_state") == b"second"
    assert st.load_snapshot("other") == b"other"
    st.save_snapshot("empty", b"")
    assert st.load_snapshot("empty") == b""
    assert st.load_snapshot("missing") is None


def test_snapshot_is_a_copy(store: Store) -> None:
    blob = bytearray(b"abc")
    store.state.save_snapshot("s", bytes(blob))
    blob[0] = ord("z")
    loaded = store.state.load_snapshot("s")
    assert loaded == b"abc"
    assert isinstance(loaded, bytes)


def test_consumer_offsets(store: Store) -> None:
    st = store.state
    assert st.get_offset("state") == 0
    st.commit_offset("state", 17)
    st.commit_offset("trainer", 3)
    assert st.get_offset("state") == 17
    st.commit_offset("state", 25)
    assert st.get_offset("state") == 25
    assert st.get_offset("trainer") == 3
    assert st.get_offset("unknown") == 0


def test_store_url_is_kept(store: Store, store_url: str) -> None:
    assert store.url == store_url


# -- backend selection and durability -----------------------------------------------------


@pytest.mark.parametrize("url", ["bogus://x", "postgres://h/db", "sqlite://relative.db", ""])
def test_unsupported_url_raises_storage_error(url: str) -> None:
    with pytest.raises(StorageError):
        open_store(url)


def test_sqlite_url_without_a_path_raises_storage_error() -> None:
    with pytest.raises(StorageError):
        open_store("sqlite:///")


def test_sqlite_data_survives_close_and_reopen(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sub' / 'durable.db'}"
    s = open_store(url)
    videos = [_video(i) for i in range(3)]
    s.catalog.upsert_videos(videos)
    s.catalog.upsert_videos([_video(1, caption="edited")])
    s.catalog.upsert_users([User.model_validate({"id": "u1", "interests": ["cats"]})])
    s.catalog.add_follows([Follow(user_id="u1", creator_id="c2")])
    events = [_event(f"e{i}", vid=f"v{i}") for i in range(3)]
    assert s.events.append(events, received_at=1.0) == [1, 2, 3]
    s.events.append_impressions([_impression("r1", 0), _impression("r1", 1)])
    s.state.save_snapshot("online_state", b"snap-bytes")
    s.state.commit_offset("state", 2)
    s.close()

    s = open_store(url)
    try:
        got = list(s.catalog.iter_videos())
        assert [r for r, _ in got] == [0, 1, 2]
        assert got[0][1] == videos[0]
        assert got[1][1].caption == "edited"
        assert s.catalog.get_user("u1") == User.model_validate({"id": "u1", "interests": ["cats"]})
        assert _edges(s) == {("u1", "c2")}
        assert s.events.last_offset() == 3
        assert [e for _, e in s.events.read(0, 10)] == events
        assert s.events.last_impression_offset() == 2
        assert [m.position for _, m in s.events.read_impressions(0, 10)] == [0, 1]
        assert s.state.load_snapshot("online_state") == b"snap-bytes"
        assert s.state.get_offset("state") == 2
        # Rows and offsets continue where they stopped; old ids are still duplicates.
        assert s.catalog.upsert_videos([_video(3), _video(0)]) == [(3, True), (0, False)]
        assert s.events.append([_event("e1"), _event("e9")], received_at=2.0) == [None, 4]
        s.events.append_impressions([_impression("r2", 0)])
        assert s.events.last_impression_offset() == 3
    finally:
        s.close()


def test_sqlite_snapshots_are_files_beside_the_database(tmp_path: Path) -> None:
    """A snapshot is a file next to the database, written in parts; one that an older
    version kept in the database's `snapshots` table is still read, and is dropped from
    the table once a file replaces it; a temporary file left by a crash mid-write is not
    read."""
    import sqlite3

    url = f"sqlite:///{tmp_path / 'db' / 'a.db'}"
    s = open_store(url)
    s.close()
    con = sqlite3.connect(tmp_path / "db" / "a.db")
    with con:
        con.execute("INSERT INTO snapshots (name, blob) VALUES ('online_state', x'0102')")
    con.close()
    s = open_store(url)
    try:
        assert s.state.load_snapshot("online_state") == b"\x01\x02"  # the older place
        s.state.save_snapshot("online_state", [b"ab", memoryview(b"cd"), b""])
        assert (tmp_path / "db" / "a.db.online_state.snapshot").read_bytes() == b"abcd"
        (tmp_path / "db" / "a.db.online_state.snapshot.tmp").write_bytes(b"torn")
        assert s.state.load_snapshot("online_state") == b"abcd"
        with pytest.raises(ValueError, match="snapshot name"):
            s.state.save_snapshot("../escape", b"x")
    finally:
        s.close()
    con = sqlite3.connect(tmp_path / "db" / "a.db")
    assert con.execute("SELECT COUNT(*) FROM snapshots").fetchone()[0] == 0
    con.close()
    s = open_store(url)
    try:
        assert s.state.load_snapshot("online_state") == b"abcd"
    finally:
        s.close()


def test_memory_stores_are_independent() -> None:
    a, b = open_store("memory://"), open_store("memory://")
    a.catalog.upsert_videos([_video(1)])
    a.events.append([_event("e1")], received_at=1.0)
    assert b.catalog.get_video("v1") is None
    assert b.events.last_offset() == 0
    assert b.catalog.upsert_videos([_video(2)]) == [(0, True)]


def test_the_memory_log_releases_what_its_reader_consumed_and_keeps_counting() -> None:
    """A replay's trainer log drops what the trainer has read (`release`): reads and
    offsets go on as before, released rows are not read again, and a released event's id
    is still refused as a duplicate."""
    log = open_store("memory://").events
    assert log.append([_event(f"e{i}") for i in range(5)], 0.0) == [1, 2, 3, 4, 5]
    log.append_impressions([_impression("r1", p, f"v{p}") for p in range(4)])
    release = log.release  # type: ignore[attr-defined]
    release(3, 2)
    assert log.last_offset() == 5 and log.last_impression_offset() == 4
    assert [(o, e.event_id) for o, e in log.read(3, 10)] == [(4, "e3"), (5, "e4")]
    assert [o for o, _ in log.read(0, 10)] == [4, 5]  # below the release: gone, not re-read
    assert [(o, m.video_id) for o, m in log.read_impressions(2, 10)] == [(3, "v2"), (4, "v3")]
    assert log.append([_event("e1"), _event("e9")], 0.0) == [None, 6]
    assert [(o, e.event_id) for o, e in log.read(5, 10)] == [(6, "e9")]
    release(100, 100)  # past the end: everything read so far, offsets unchanged
    assert log.read(0, 10) == [] and log.last_offset() == 6
    assert log.read_impressions(0, 10) == [] and log.last_impression_offset() == 4


# -- the parameter channel -----------------------------------------------------------------
@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_the_parameter_channel_reads_headers_blobs_and_prunes(kind: str, tmp_path: Path) -> None:
    """Entries in publish order; a full model's blob only when asked for (`full_blobs`,
    `blob`); pruning drops what came before a seq except the newest status."""
    channel = open_params("memory://" if kind == "memory" else f"sqlite:///{tmp_path}/p.db")
    try:
        published = [
            ("status", "v1", b"s1"),
            ("full", "v1", b"F" * 1000),
            ("sparse", "v2", b"rows"),
            ("status", "v2", b"s2"),
            ("full", "v2", b"G" * 1000),
            ("dense", "v3", b"weights"),
        ]
        seqs = [channel.publish(*e) for e in published]
        assert seqs == sorted(seqs) and len(set(seqs)) == 6
        assert channel.read(0, 100) == [(s, *e) for s, e in zip(seqs, published, strict=True)]
        heads = channel.read(seqs[0], 3, full_blobs=False)
        assert heads == [(seqs[1], "full", "v1", b""), (seqs[2], "sparse", "v2", b"rows"),
                         (seqs[3], "status", "v2", b"s2")]  # fmt: skip
        assert channel.blob(seqs[4]) == b"G" * 1000
        assert channel.blob(max(seqs) + 1) is None
        assert channel.latest("full") == (seqs[4], "full", "v2", b"G" * 1000)
        assert channel.latest("full", blob=False) == (seqs[4], "full", "v2", b"")
        assert channel.latest("nothing") is None
        channel.prune(seqs[4])
        assert [e[0] for e in channel.read(0, 100)] == [seqs[3], seqs[4], seqs[5]]
        assert channel.blob(seqs[1]) is None  # pruned
        channel.publish("status", "v3", b"s3")
        channel.prune(max(seqs) + 100)
        assert [e[1:] for e in channel.read(0, 100)] == [("status", "v3", b"s3")]
    finally:
        channel.close()
