"""Embedding tables: admission, expiry, capacity, row-wise Adagrad, deltas, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from reelrank.rank.tables import ServingTable
from reelrank.train.embedding import (
    DEFAULT_ROW,
    EmbeddingTable,
    pack_sequences,
    unpack_sequences,
)

DIM = 4


def table(**kw: object) -> EmbeddingTable:
    kw.setdefault("min_count", 1)
    return EmbeddingTable("slot", DIM, **kw)  # type: ignore[arg-type]


def admit(t: EmbeddingTable, *keys: str, ts: float = 0.0) -> list[int]:
    return t.lookup(list(keys), admit=True, ts=ts).tolist()


def serving_vector(s: ServingTable, key: str) -> np.ndarray:
    return s.weight[s.lookup([key])[0]]


def trainer_vector(t: EmbeddingTable, key: str) -> np.ndarray:
    return t.weight[t.lookup([key])[0]].numpy()


# -- admission -----------------------------------------------------------------------------
def test_an_id_is_admitted_only_after_min_count_sightings() -> None:
    t = table(min_count=3)
    assert admit(t, "a") == [DEFAULT_ROW]
    assert "a" not in t.rows and t.pending["a"] == 1
    assert admit(t, "a") == [DEFAULT_ROW]
    assert "a" not in t.rows and t.pending["a"] == 2
    assert len(t) == 0
    (row,) = admit(t, "a")
    assert row != DEFAULT_ROW
    assert t.rows["a"] == row and t.ids[row] == "a"
    assert "a" not in t.pending
    assert len(t) == 1
    assert admit(t, "a") == [row]  # stays put
    assert t.lookup(["a"]).tolist() == [row]


def test_sightings_within_one_batch_count() -> None:
    t = table(min_count=3)
    rows = admit(t, "b", "x", "b", "b", "b")
    assert rows[:3] == [DEFAULT_ROW] * 3
    assert rows[3] == rows[4] != DEFAULT_ROW
    assert rows[3] == t.rows["b"]
    assert t.pending == {"x": 1}


def test_lookups_without_admit_never_admit_or_count() -> None:
    t = table(min_count=1)
    for _ in range(5):
        assert t.lookup(["a", "b", None]).tolist() == [DEFAULT_ROW] * 3
    assert len(t) == 0 and not t.pending
    t2 = table(min_count=2)
    admit(t2, "a")
    t2.lookup(["a"] * 10)  # serving-style reads: still one sighting
    assert t2.pending["a"] == 1 and "a" not in t2.rows


def test_missing_ids_get_the_default_row() -> None:
    t = table()
    (ra,) = admit(t, "a")
    assert t.lookup([None, "a", "zzz"]).tolist() == [DEFAULT_ROW, ra, DEFAULT_ROW]
    rows = t.lookup([None, "a", "zzz"], admit=True).tolist()
    assert rows[:2] == [DEFAULT_ROW, ra] and rows[2] not in (DEFAULT_ROW, ra)
    assert set(t.rows) == {"a", "zzz"}


# -- expiry --------------------------------------------------------------------------------
def test_expiry_frees_rows_not_updated_and_new_ids_reuse_them() -> None:
    t = table(expire_s=100.0)
    ra, rb, rc = admit(t, "a", "b", "c", ts=1000.0)
    t.apply_gradients(np.array([rb]), torch.ones(1, DIM), lr=0.1, ts=1080.0)
    assert t.expire(now=1100.0) == 0  # exactly expire_s old is not yet stale
    assert t.expire(now=1100.5) == 2  # a and c: last updated at 1000
    assert set(t.rows) == {"b"}
    assert t.ids[ra] is None and t.ids[rc] is None
    assert t.lookup(["a", "c", "b"]).tolist() == [DEFAULT_ROW, DEFAULT_ROW, rb]
    assert t.evicted == {"a", "c"}
    size = len(t.ids)
    rd, re = admit(t, "d", "e", ts=1101.0)
    assert {rd, re} == {ra, rc}  # freed rows are reused ...
    assert len(t.ids) == size  # ... instead of new ones
    assert t.accum[rd] == 0.0 and t.last_update[rd] == 1101.0  # a fresh row
    (ra2,) = admit(t, "a", ts=1102.0)  # a comes back: a new row of its own
    assert ra2 not in (rb, rd, re) and t.rows["a"] == ra2
    assert "a" not in t.evicted
    assert t.expire(now=1150.0) == 0  # b updated at 1080, the rest later


def test_expiry_keeps_the_default_row() -> None:
    t = table(expire_s=1.0)
    admit(t, "a", ts=1.0)
    t.expire(now=1e9)
    assert DEFAULT_ROW not in t.free
    assert admit(t, "b", ts=2.0) != [DEFAULT_ROW]


# -- capacity ------------------------------------------------------------------------------
def test_capacity_bounds_rows_and_refusals_are_counted() -> None:
    t = table(capacity=4)  # the default row plus three ids
    rows = admit(t, "a", "b", "c", "d", "e")
    assert rows[:3] == [1, 2, 3]
    assert rows[3:] == [DEFAULT_ROW, DEFAULT_ROW]
    assert t.refused == 2
    assert len(t) == 3
    assert t.lookup(["d", "e"]).tolist() == [DEFAULT_ROW, DEFAULT_ROW]
    assert t.weight.shape[0] <= 4
    t.expire(now=t.expire_s + 1.0)  # everything admitted at ts 0 is stale
    assert admit(t, "d", ts=t.expire_s + 1.0) != [DEFAULT_ROW]  # room again


def test_capacity_must_hold_the_default_row() -> None:
    with pytest.raises(ValueError):
        EmbeddingTable("slot", DIM, capacity=1)


def test_memory_stays_bounded_under_a_million_distinct_ids() -> None:
    capacity, pending_max, batch = 20_000, 30_000, 10_000
    t = EmbeddingTable("slot", DIM, capacity=capacity, min_count=2, pending_max=pending_max,
                       expire_s=25.0)  # fmt: skip
    n_batches = 1_000_000 // batch
    admitted_last = []
    for b in range(n_batches):
        ids = [f"id{b * batch + i}" for i in range(batch)]
        seen_twice = ids[: batch // 4]  # a quarter comes back within the batch
        ts = 0.0 if b < 10 else 10.0 * b
        t.lookup(ids + seen_twice, admit=True, ts=ts)
        if b >= 10:
            t.expire(now=ts)
        assert len(t.rows) <= capacity - 1
        assert len(t.ids) <= capacity
        assert len(t.pending) <= pending_max
        assert t.weight.shape[0] <= capacity and t.accum.shape[0] <= capacity
        assert len(t.last_update) <= capacity
        assert len(t.rows) + len(t.free) == len(t.ids) - 1
        admitted_last = seen_twice
    assert t.refused > 0  # the table did fill up (all at ts 0) ...
    rows = t.lookup(admitted_last)  # ... and expiry made room for the newest ids
    assert (rows != DEFAULT_ROW).all()
    assert len(set(rows.tolist())) == len(admitted_last)
    assert t.lookup(["id0", "id5"]).tolist() == [DEFAULT_ROW, DEFAULT_ROW]


# -- row-wise Adagrad ----------------------------------------------------------------------
def test_apply_gradients_is_rowwise_adagrad_with_repeated_rows_summed() -> None:
    t = table()
    ra, rb, rc = admit(t, "a", "b", "c", ts=1.0)
    before = t.weight.clone()
    acc_before = t.accum.clone()
    g = torch.tensor(
        [[1.0, 0.0, -2.0, 0.5], [0.5, 0.5, 0.5, 0.5], [1.0, 2.0, 0.0, 0.5]]
    )  # rows a, b, a
    lr = 0.1
    t.apply_gradients(np.array([ra, rb, ra]), g, lr=lr, ts=5.0)
    ga = g[0] + g[2]
    gb = g[1]
    acc_a = float((ga * ga).mean())
    acc_b = float((gb * gb).mean())
    assert float(t.accum[ra]) == pytest.approx(acc_a)
    assert float(t.accum[rb]) == pytest.approx(acc_b)
    torch.testing.assert_close(t.weight[ra], before[ra] - lr * ga / np.sqrt(acc_a + 1e-8))
    torch.testing.assert_close(t.weight[rb], before[rb] - lr * gb / np.sqrt(acc_b + 1e-8))
    # untouched rows (c and the default row) are exactly as they were
    for r in (DEFAULT_ROW, rc):
        assert torch.equal(t.weight[r], before[r])
        assert t.accum[r] == acc_before[r]
    assert t.last_update[ra] == t.last_update[rb] == 5.0
    assert t.last_update[rc] == 1.0
    # the accumulator grows, so the same gradient moves the row less next time
    w1 = t.weight[rb].clone()
    t.apply_gradients(np.array([rb]), gb.unsqueeze(0), lr=lr, ts=6.0)
    assert float(t.accum[rb]) == pytest.approx(2 * acc_b)
    step2 = (w1 - t.weight[rb]).abs().sum()
    step1 = (before[rb] - w1).abs().sum()
    assert step2 < step1
    torch.testing.assert_close(t.weight[rb], w1 - lr * gb / np.sqrt(2 * acc_b + 1e-8))


def test_last_update_never_goes_back_in_time() -> None:
    t = table()
    (ra,) = admit(t, "a", ts=10.0)
    t.apply_gradients(np.array([ra]), torch.ones(1, DIM), lr=0.1, ts=50.0)
    t.apply_gradients(np.array([ra]), torch.ones(1, DIM), lr=0.1, ts=20.0)  # out of order
    assert t.last_update[ra] == 50.0


# -- deltas --------------------------------------------------------------------------------
def test_take_delta_returns_exactly_the_touched_rows_then_nothing() -> None:
    t = table()
    ra, rb, rc = admit(t, "a", "b", "c")
    t.take_delta()
    t.apply_gradients(np.array([rc, ra, rc]), torch.ones(3, DIM), lr=0.1, ts=1.0)
    d = t.take_delta()
    assert d["ids"] == ["a", "c"]  # row order
    assert d["default"] is False
    assert d["evicted"] == []
    np.testing.assert_array_equal(d["vectors"], t.weight[[ra, rc]].numpy())
    assert d["vectors"].shape == (2, DIM)
    empty = t.take_delta()
    assert empty["ids"] == [] and empty["evicted"] == []
    assert empty["vectors"].shape == (0, DIM)
    # the default row travels as the id ""
    t.apply_gradients(np.array([DEFAULT_ROW, rb]), torch.ones(2, DIM), lr=0.1, ts=2.0)
    d = t.take_delta()
    assert d["ids"] == ["", "b"] and d["default"] is True
    np.testing.assert_array_equal(d["vectors"][0], t.weight[DEFAULT_ROW].numpy())
    # a delta is a copy: later training does not change it
    t.apply_gradients(np.array([rb]), torch.ones(1, DIM), lr=0.1, ts=3.0)
    assert not np.array_equal(d["vectors"][1], t.weight[rb].numpy())


def test_take_delta_reports_evictions_once() -> None:
    t = table(expire_s=10.0)
    ra, _ = admit(t, "a", "b", ts=0.0)
    t.apply_gradients(np.array([ra]), torch.ones(1, DIM), lr=0.1, ts=0.0)
    t.expire(now=100.0)
    d = t.take_delta()
    assert d["evicted"] == ["a", "b"]
    assert d["ids"] == []  # a was touched, but its row is gone
    assert t.take_delta()["evicted"] == []


def _assert_serving_matches(t: EmbeddingTable, s: ServingTable) -> None:
    assert set(s.rows) == set(t.rows)
    np.testing.assert_array_equal(s.weight[DEFAULT_ROW], t.weight[DEFAULT_ROW].numpy())
    for key in t.rows:
        np.testing.assert_array_equal(serving_vector(s, key), trainer_vector(t, key))


def test_serving_table_follows_full_and_incremental_deltas() -> None:
    rng = np.random.default_rng(0)
    t = table(expire_s=50.0)
    admit(t, *[f"k{i}" for i in range(30)], ts=0.0)
    t.apply_gradients(np.arange(1, 31), torch.randn(30, DIM), lr=0.1, ts=0.0)
    s = ServingTable("slot", DIM)
    changed = s.apply(t.full_delta())
    assert sorted(changed) == sorted(f"k{i}" for i in range(30))
    t.take_delta()
    _assert_serving_matches(t, s)
    for step in range(1, 8):
        ts = 20.0 * step
        new = [f"n{step}-{i}" for i in range(5)]
        rows = t.lookup(new + [f"k{i}" for i in rng.choice(30, 5)], admit=True, ts=ts)
        t.apply_gradients(rows, torch.randn(len(rows), DIM), lr=0.1, ts=ts)
        t.apply_gradients(np.array([DEFAULT_ROW]), torch.randn(1, DIM), lr=0.1, ts=ts)
        t.expire(now=ts)
        d = t.take_delta()
        s.apply(d)
        _assert_serving_matches(t, s)
        for gone in d["evicted"]:
            assert gone not in s.rows
            assert s.lookup([gone]).tolist() == [DEFAULT_ROW]
    assert s.size <= len(t.ids)  # evicted serving rows are recycled
    # a fresh serving table started from full_delta agrees with the incremental one
    fresh = ServingTable("slot", DIM)
    fresh.apply(t.full_delta())
    _assert_serving_matches(t, fresh)


def test_serving_table_apply_reports_added_and_removed_ids() -> None:
    s = ServingTable("slot", DIM)
    v = np.ones((2, DIM), np.float32)
    assert s.apply({"ids": ["a", "b"], "vectors": v, "evicted": [], "default": False}) == [
        "a",
        "b",
    ]
    ra = s.rows["a"]
    # an update of a known id is no change of membership
    assert s.apply({"ids": ["a"], "vectors": 2 * v[:1], "evicted": [], "default": False}) == []
    assert s.rows["a"] == ra and (s.weight[ra] == 2.0).all()
    out = s.apply({"ids": ["c"], "vectors": 3 * v[:1], "evicted": ["a"], "default": False})
    assert out == ["a", "c"]
    assert "a" not in s.rows and s.rows["c"] == ra  # the freed row went to c
    assert (s.weight[ra] == 3.0).all()
    assert s.lookup(["a", "b", "c", None]).tolist() == [0, s.rows["b"], ra, 0]


def test_serving_table_grows_past_its_initial_size() -> None:
    s = ServingTable("slot", DIM)
    n = 3000
    vecs = np.arange(n * DIM, dtype=np.float32).reshape(n, DIM)
    s.apply({"ids": [f"k{i}" for i in range(n)], "vectors": vecs, "evicted": []})
    assert len(s.rows) == n
    np.testing.assert_array_equal(s.weight[s.lookup(["k2999"])[0]], vecs[2999])
    np.testing.assert_array_equal(s.weight[s.lookup(["k0"])[0]], vecs[0])


# -- checkpoints ---------------------------------------------------------------------------
def test_state_round_trip_keeps_rows_ids_and_pending_counts() -> None:
    t = EmbeddingTable("slot", DIM, min_count=3, expire_s=10.0, capacity=2000)
    keys = [f"k{i}" for i in range(1500)]  # more than the initial 1024 rows
    for _ in range(3):
        t.lookup(keys, admit=True, ts=0.0)
    t.lookup(["p1", "p1", "p2"], admit=True, ts=0.0)  # pending: p1 twice, p2 once
    rows = t.lookup(keys[:100], ts=0.0)
    t.apply_gradients(rows, torch.randn(100, DIM), lr=0.1, ts=20.0)
    t.expire(now=15.0)  # frees the other 1400
    t.lookup(["new"] * 3, admit=True, ts=16.0)  # reuses one freed row
    t.refused = 7
    state = t.state()
    r = EmbeddingTable("slot", DIM, min_count=3, expire_s=10.0, capacity=2000, seed=99)
    r.load_state(state)
    assert r.rows == t.rows
    assert r.ids == t.ids
    assert r.pending == t.pending == {"p1": 2, "p2": 1}
    assert r.refused == 7
    assert sorted(r.free) == sorted(t.free)
    n = len(t.ids)
    assert torch.equal(r.weight[:n], t.weight[:n])
    assert torch.equal(r.accum[:n], t.accum[:n])
    np.testing.assert_array_equal(r.last_update[:n], t.last_update[:n])
    for key in ("k5", "k99", "new"):
        np.testing.assert_array_equal(trainer_vector(r, key), trainer_vector(t, key))
    assert r.lookup(["k500"]).tolist() == [DEFAULT_ROW]  # expired stays expired
    # a pending id needs only its remaining sightings
    assert admit(r, "p1") != [DEFAULT_ROW]
    assert admit(r, "p2") == [DEFAULT_ROW]
    # new admissions after a restore go to freed rows, not past the end
    before = len(r.ids)
    admit(r, *[f"z{i}" for i in range(10)] * 3)
    assert len(r.ids) == before
    assert not r.touched and not r.evicted  # a restored table starts with no pending delta


@given(st.lists(st.lists(st.text(max_size=4), max_size=6), max_size=8))
def test_packed_sequences_come_back_exactly(seqs: list[list[str]]) -> None:
    """Any ids (empty, repeated, with the newline the packed form joins on) and any
    sequences (empty ones too) come back as they went in."""
    packed = pack_sequences(seqs)
    assert packed["codes"].dtype == torch.int32 and len(packed["lengths"]) == len(seqs)
    assert unpack_sequences(packed) == seqs


def test_a_restored_table_initialises_new_rows_like_the_original() -> None:
    original = table(seed=3)
    admit(original, "a", "b")
    restored = table(seed=3)  # the trainer rebuilds its tables with the same seeds
    restored.load_state(original.state())
    admit(original, "c")
    admit(restored, "c")
    np.testing.assert_array_equal(trainer_vector(restored, "c"), trainer_vector(original, "c"))


@given(
    keys=st.lists(st.text("abcdef", min_size=1, max_size=3), max_size=60),
    default_at=st.one_of(st.none(), st.integers(0, 60)),
)
def test_an_empty_table_takes_a_whole_delta_as_rows_in_delta_order(
    keys: list[str], default_at: int | None
) -> None:
    """An empty serving table (a full model arriving) holds every id in a row of its own,
    in delta order after the default row, with the id's last vector; duplicates and all."""
    ids = list(keys)
    if default_at is not None:
        ids.insert(min(default_at, len(ids)), "")
    vectors = np.arange(len(ids) * DIM, dtype=np.float32).reshape(len(ids), DIM)
    s = ServingTable("slot", DIM)
    got = s.apply({"ids": ids, "vectors": vectors, "evicted": []})
    rows: dict[str, int] = {}
    last: dict[str, np.ndarray] = {}
    for key, vec in zip(ids, vectors, strict=True):
        if key:
            rows.setdefault(key, len(rows) + 1)
        last[key] = vec
    assert s.rows == rows and got == list(rows) and s.size == len(rows) + 1
    for key, vec in last.items():
        np.testing.assert_array_equal(s.weight[rows.get(key, 0)], vec)
    if "" not in last:
        assert not s.weight[0].any()
