"""Acknowledged events survive a hard kill; state rebuilds to the same figures."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reelrank.engine import Engine
from reelrank.state.columnar import SPARSE_MIN, pack, unpack
from reelrank.state.snapshots import SNAPSHOT
from reelrank.storage import open_store

from .conftest import INGEST, KEYS, event, make_settings, video
from .server import ServerProcess

pytestmark = pytest.mark.slow


def test_acknowledged_events_survive_a_hard_kill(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, KEYS).start()
    acked: list[str] = []
    likes_acked = 0
    stop = threading.Event()
    try:
        with httpx.Client(base_url=server.url, headers=INGEST, timeout=10) as c:
            r = c.post("/v1/videos", json={"videos": [video(i) for i in range(20)]})
            assert r.status_code == 200

            def send() -> None:
                nonlocal likes_acked
                k = 0
                while not stop.is_set():
                    batch = [event("like", f"u{k}-{j}", f"v{j % 20}") for j in range(50)]
                    k += 1
                    try:
                        r = c.post("/v1/events", json={"events": batch})
                    except httpx.HTTPError:
                        return  # the server died mid-request: that batch was never acknowledged
                    if r.status_code == 200 and r.json()["accepted"] == len(batch):
                        acked.extend(e["event_id"] for e in batch)
                        likes_acked += len(batch)

            sender = threading.Thread(target=send)
            sender.start()
            while len(acked) < 2000:
                stop.wait(0.01)
            server.kill()
            stop.set()
            sender.join(timeout=10)
    finally:
        stop.set()
        server.stop()

    assert len(acked) >= 2000
    store = open_store(f"sqlite:///{tmp_path / 'reelrank.db'}")
    logged = {e.event_id for _, e in store.events.read(0, 10**9)}
    store.close()
    missing = set(acked) - logged
    assert not missing, f"{len(missing)} acknowledged events lost"

    # A restart rebuilds the state from the log: every acknowledged like is counted once.
    server = ServerProcess(tmp_path, KEYS).start()
    try:
        total = sum(
            httpx.get(f"{server.url}/v1/videos/v{j}").json()["counters"]["likes"] for j in range(20)
        )
        assert total == len(logged) >= likes_acked
        # Re-sending an acknowledged batch after the restart is still a duplicate.
        again = [event("like", "x", "v0", event_id=eid) for eid in acked[:50]]
        r = httpx.post(f"{server.url}/v1/events", json={"events": again}, headers=INGEST)
        assert r.json() == {"accepted": 0, "duplicates": 50, "rejected": []}
    finally:
        server.stop()


def test_restart_from_snapshot_matches_full_replay(tmp_path: Path) -> None:
    """Snapshot + log tail gives exactly the state a full replay of the log gives."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    eng = Engine(make_settings(tmp_path, store=url)).open()
    eng.upsert_videos([video(i, hashtags=[f"t{i % 3}"], creator_id=f"c{i % 4}") for i in range(30)])
    kinds = ["like", "finish", "share", "skip", "impression", "watch", "unlike", "comment"]
    first = [
        event(kinds[k % len(kinds)], f"u{k % 5}", f"v{k % 30}", watch_ms=1000 + k)
        for k in range(300)
    ]
    eng.ingest(first)
    eng.snapshot()
    second = [
        event(kinds[k % len(kinds)], f"u{k % 7}", f"v{(k * 7) % 30}", watch_ms=500 + k)
        for k in range(300)
    ]
    eng.ingest(second)
    expected_counts = eng.state.counters.totals[:30].copy()
    expected_tags = {u: s.tags.at(s.last_ts) for u, s in eng.state.users.items()}
    # Abandon the engine without close(): no final snapshot, as after a crash.
    eng._stop.set()
    eng.store.close()

    resumed = Engine(make_settings(tmp_path, store=url)).open()
    assert resumed.state.offset == 600
    assert (resumed.state.counters.totals[:30] == expected_counts).all()
    for u, tags in expected_tags.items():
        got = resumed.state.users[u].tags.at(resumed.state.users[u].last_ts)
        assert got.keys() == tags.keys()
        for k, v in tags.items():
            assert got[k] == pytest.approx(v)
    resumed.close()

    # The same log replayed from nothing (no snapshot) agrees too.
    src = open_store(url)
    mem = open_store("memory://")
    mem.catalog.upsert_videos([v for _, v in src.catalog.iter_videos()])
    mem.events.append([e for _, e in src.events.read(0, 10**9)], received_at=0.0)
    src.close()
    replay = Engine(make_settings(tmp_path), store=mem).open()
    assert (replay.state.counters.totals[:30] == expected_counts).all()
    replay.close()


def test_a_snapshot_after_a_snapshot_serialises_only_the_users_written_since(
    tmp_path: Path,
) -> None:
    """Incremental snapshots: a user no writer touched keeps the bytes of the last
    snapshot; users who engaged, were served a page or are new are serialised again; and
    the restored state is the live state, user by user."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    eng = Engine(make_settings(tmp_path, store=url)).open()
    eng.upsert_videos([video(i, hashtags=[f"t{i % 3}"]) for i in range(30)])
    eng.ingest([event("finish", f"u{k % 6}", f"v{k % 30}") for k in range(60)])
    eng.snapshot()
    before = dict(eng.state.user_blobs)
    assert set(before) == {f"u{k}" for k in range(6)}
    eng.ingest([event("like", "u1", "v3"), event("finish", "new", "v4")])  # engaged, new
    eng.feed("u2", n=5)  # served: today's fatigue and seen change
    eng.snapshot()
    after = eng.state.user_blobs
    assert {u for u in after if after[u] is before.get(u)} == {"u0", "u3", "u4", "u5"}
    live = {u: s.to_json() for u, s in eng.state.users.items()}
    # The per-video columns of the second snapshot are copied into the first one's
    # buffers: the restore must hold the second's values.
    columns = {
        "totals": eng.state.counters.totals[:30].copy(),
        "popularity": eng.state.popularity.values[:30].copy(),
        "pool_served": eng.state.pools.served[:30].copy(),
    }
    eng._stop.set()  # abandoned without a final snapshot, as after a crash
    eng.store.close()

    resumed = Engine(make_settings(tmp_path, store=url)).open()
    try:
        assert resumed.state.offset == 62
        assert {u: s.to_json() for u, s in resumed.state.users.items()} == live
        np.testing.assert_array_equal(resumed.state.counters.totals[:30], columns["totals"])
        np.testing.assert_array_equal(resumed.state.popularity.values[:30], columns["popularity"])
        np.testing.assert_array_equal(resumed.state.pools.served[:30], columns["pool_served"])
        # The first snapshot after a start serialises only the users written since it:
        # the others keep the bytes the restored snapshot held for them.
        assert resumed.state.dirty_users == set() and set(resumed.state.user_blobs) == set(live)
        restored = dict(resumed.state.user_blobs)
        resumed.ingest([event("like", "u4", "v9")])
        resumed.snapshot()
        kept = resumed.state.user_blobs
        assert {u for u in kept if kept[u] is restored[u]} == set(live) - {"u4"}
        live = {u: s.to_json() for u, s in resumed.state.users.items()}
    finally:
        resumed.close()
    again = Engine(make_settings(tmp_path, store=url)).open()
    try:
        assert {u: s.to_json() for u, s in again.state.users.items()} == live
    finally:
        again.close()


def test_restored_users_are_parsed_when_first_used_and_then_hold(tmp_path: Path) -> None:
    """A start keeps each restored user's snapshot bytes and parses a user on first use:
    a feed for the user, an event, or a listing of everyone. What each then holds is what
    the live engine held; a user an event reaches after a reader parsed them keeps the
    event (one parsed state per user, not one per reader)."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    eng = Engine(make_settings(tmp_path, store=url)).open()
    eng.upsert_videos([video(i, hashtags=[f"t{i % 4}"]) for i in range(16)])
    eng.ingest([event("like", f"u{k % 5}", f"v{k % 16}", ts=1.7e9 + k) for k in range(40)])
    live = {u: s.to_json() for u, s in eng.state.users.items()}
    eng.close()
    resumed = Engine(make_settings(tmp_path, store=url)).open()
    try:
        users = resumed.state.users
        assert len(users) == 5 and "u3" in users and set(users) == set(live)
        assert all(type(dict.get(users, u)) is bytes for u in live)  # none parsed yet
        assert users.get("u1").to_json() == live["u1"]
        assert type(dict.get(users, "u1")) is not bytes
        resumed.feed("u3", n=5)
        assert type(dict.get(users, "u3")) is not bytes
        first = users.get("u2")
        assert users["u2"] is first and users.get("u2") is first
        resumed.ingest([event("like", "u2", "v15", ts=1.7e9 + 99)])
        assert users.get("u2") is first and first.engagements == live["u2"]["engagements"] + 1
        assert type(dict.get(users, "u4")) is bytes
        assert users.get("missing") is None and users.get("missing", 7) == 7
        listed = {u: s.to_json() for u, s in users.items()}
        assert listed["u4"] == live["u4"] and listed["u0"] == live["u0"]
        assert not any(type(v) is bytes for v in dict.values(users))
    finally:
        resumed.close()


def test_the_coengagement_graph_is_serialised_incrementally_and_restores_whole(
    tmp_path: Path,
) -> None:
    """Only videos whose neighbours changed are serialised again; the graph restored from
    the snapshot is the live graph."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    eng = Engine(make_settings(tmp_path, store=url)).open()
    eng.upsert_videos([video(i) for i in range(12)])
    eng.ingest([event("like", f"u{k % 3}", f"v{k % 6}", ts=1.7e9 + k) for k in range(18)])
    eng.snapshot()
    graph = eng.state.coengagement
    before = dict(graph._parts)
    row = eng.state.table.row_of
    eng.ingest(
        [event("like", "late", "v7", ts=1.7e9 + 100), event("like", "late", "v8", ts=1.7e9 + 101)]
    )
    eng.snapshot()
    changed = {a for a in graph._parts if graph._parts[a] is not before.get(a)}
    assert changed == {row("v7"), row("v8")}
    live = {a: dict(n) for a, n in graph.pairs.items()}
    eng._stop.set()
    eng.store.close()
    resumed = Engine(make_settings(tmp_path, store=url)).open()
    try:
        restored = resumed.state.coengagement
        assert restored.pairs == live
        assert {a: list(n) for a, n in restored.pairs.items()} == {
            a: list(n) for a, n in live.items()
        }  # neighbours in their order: ties among them rank the same after a restart
        assert restored.engagements == graph.engagements
        assert not restored._dirty  # nothing to convert again before the next change
    finally:
        resumed.close()


def test_a_snapshot_in_the_earlier_json_form_still_restores(tmp_path: Path) -> None:
    """Snapshots written before users' bytes and the co-engagement graph were kept as
    arrays (both inside the JSON meta) restore the same state."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    eng = Engine(make_settings(tmp_path, store=url)).open()
    eng.upsert_videos([video(i, hashtags=[f"t{i % 3}"]) for i in range(12)])
    eng.ingest([event("like", f"u{k % 4}", f"v{k % 6}", ts=1.7e9 + k) for k in range(24)])
    eng.snapshot()
    live_users = {u: s.to_json() for u, s in eng.state.users.items()}
    live_pairs = {a: dict(n) for a, n in eng.state.coengagement.pairs.items()}
    blob = eng.store.state.load_snapshot(SNAPSHOT)
    eng._stop.set()
    eng.store.close()
    assert blob is not None
    arrays = unpack(blob)
    meta = orjson.loads(arrays.pop("meta").tobytes())
    data, ends = arrays.pop("user_json").tobytes(), np.cumsum(arrays.pop("user_json_lengths"))
    starts = [0, *ends[:-1].tolist()]
    meta["users"] = {
        u: orjson.loads(data[a:b])
        for u, a, b in zip(meta.pop("user_ids"), starts, ends.tolist(), strict=True)
    }
    src, dst, weight = (arrays.pop(f"coengagement_{k}") for k in ("src", "dst", "weight"))
    pairs: dict[str, dict[str, float]] = {}
    for a, b, w in zip(src.tolist(), dst.tolist(), weight.tolist(), strict=True):
        pairs.setdefault(str(a), {})[str(b)] = w
    engaged = zip(
        arrays.pop("coengagement_videos"), arrays.pop("coengagement_engagements"), strict=True
    )
    meta["coengagement"] = {"pairs": pairs, "engagements": {str(a): int(n) for a, n in engaged}}
    buf = io.BytesIO()
    np.savez(buf, meta=np.frombuffer(orjson.dumps(meta), dtype=np.uint8), **arrays)
    store = open_store(url)
    store.state.save_snapshot(SNAPSHOT, buf.getvalue())
    store.close()

    resumed = Engine(make_settings(tmp_path, store=url)).open()
    try:
        assert resumed.state.offset == 24
        assert resumed.state.dirty_users == set()  # restored, not folded from the log
        assert {u: s.to_json() for u, s in resumed.state.users.items()} == live_users
        assert resumed.state.coengagement.pairs == live_pairs
        resumed.snapshot()  # and writes the current form from there
    finally:
        resumed.close()
    again = Engine(make_settings(tmp_path, store=url)).open()
    try:
        assert {u: s.to_json() for u, s in again.state.users.items()} == live_users
        assert again.state.coengagement.pairs == live_pairs
    finally:
        again.close()


_DTYPES = st.sampled_from(["int8", "int16", "int32", "int64", "float32", "float64", "uint8"])


@settings(max_examples=60, deadline=None)
@given(
    shapes=st.lists(
        st.tuples(_DTYPES, st.lists(st.integers(0, 5), min_size=0, max_size=3)), max_size=5
    ),
    pieces=st.lists(st.binary(max_size=40), max_size=6),
    seed=st.integers(0, 2**16),
)
def test_the_columnar_snapshot_format_round_trips(
    shapes: list[tuple[str, list[int]]], pieces: list[bytes], seed: int
) -> None:
    """Whatever arrays (any dtype, shape, empty or 0-d) and pieces go in come out equal,
    with their dtypes and shapes, from the parts joined."""
    rng = np.random.default_rng(seed)
    arrays = {
        f"a{i}": (rng.standard_normal(shape) * 100).astype(dtype)
        for i, (dtype, shape) in enumerate(shapes)
    }
    arrays["strided"] = np.arange(12, dtype=np.int64).reshape(3, 4)[:, ::2]  # not contiguous
    # Long arrays with few non-zero rows are stored as those rows: any share of them.
    long = SPARSE_MIN + int(rng.integers(0, 50))
    for name, shape in (("sparse2d", (long, 3)), ("sparse1d", (long,))):
        a = np.zeros(shape, dtype=np.float64)
        a[rng.random(long) < rng.random()] = rng.standard_normal(shape[1:] or None)
        arrays[name] = a
    out = unpack(b"".join(pack(arrays, {"chunked": pieces})))
    assert set(out) == {*arrays, "chunked"}
    for name, a in arrays.items():
        assert out[name].dtype == a.dtype and out[name].shape == a.shape
        assert np.array_equal(out[name], a)
    assert out["chunked"].tobytes() == b"".join(pieces)
