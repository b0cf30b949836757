"""VectorIndex: exact search is the oracle; the approximate (IVF) index must agree with it
closely, see every write at once, and survive concurrent readers, writers and builds."""

from __future__ import annotations

import threading
import time
from typing import Any

import faiss
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reelrank.index.cells as cells_module
import reelrank.index.tuning as tuning
import reelrank.index.vectors as vectors_module
from reelrank.index.vectors import VectorIndex

NEVER = 10**12  # ann_min that is never reached: only build_now() trains the IVF index


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """Unit vectors around 256 shared topic centres, like learned video vectors."""
    centres = np.random.default_rng(12345).normal(size=(256, dim))
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(256, size=n)] + 0.6 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def built(n: int, dim: int = 16, seed: int = 0) -> tuple[VectorIndex, np.ndarray]:
    """An index over n clustered vectors (keys 0..n-1) with the IVF index trained."""
    idx = VectorIndex(dim, ann_min=NEVER, background=False)
    x = clustered(n, dim, seed)
    idx.upsert(np.arange(n), x)
    idx.build_now()
    assert idx.approximate
    return idx, x


def top_key(idx: VectorIndex, q: np.ndarray, exact: bool = False) -> int | None:
    keys, _ = idx.search(q, 1, exact=exact)
    return int(keys[0]) if len(keys) else None


def assert_matches_model(idx: VectorIndex, model: dict[int, np.ndarray], q: np.ndarray, k: int,
                         exact: bool) -> None:  # fmt: skip
    """search(q, k) returns exactly the top-k live keys of the model, best first. An
    approximate search picks its keys by the half-precision codes of its lists: a left-out
    key may beat a returned one by their error (2^-11 of each unit component) at most."""
    keys, scores = idx.search(q, k, exact=exact)
    slack = 1e-4 if exact or not idx.approximate else 1e-4 + 2e-3 * float(np.linalg.norm(q))
    assert keys.dtype == np.int64
    assert len(keys) == len(scores) == min(k, len(model))
    assert len(set(keys.tolist())) == len(keys), "a key returned twice"
    assert set(keys.tolist()) <= set(model), "a key that is not live was returned"
    if not model or k <= 0:
        return
    live = np.array(sorted(model), dtype=np.int64)
    true = np.array([model[int(key)] for key in live]) @ np.asarray(q, dtype=np.float64)
    order = np.argsort(-true, kind="stable")
    want = live[order[:k]]
    # the reported scores are the true scores of the returned keys, best first
    got_true = np.array([true[np.searchsorted(live, key)] for key in keys])
    np.testing.assert_allclose(scores, got_true, rtol=0, atol=1e-4)
    assert np.all(np.diff(scores) <= 1e-5), "not best first"
    # no live key left out scores better than the worst returned one (tie-safe)
    left_out = np.setdiff1d(live, keys)
    if len(left_out):
        best_left = max(true[np.searchsorted(live, key)] for key in left_out)
        assert best_left <= got_true.min() + slack
    # and with no near-ties among the top k + 1, the order is exactly the brute-force one
    top = np.sort(true)[::-1][: k + 1]
    if len(top) < 2 or np.min(-np.diff(top)) > slack:
        assert keys.tolist() == want.tolist()


# -- exact search against a brute-force model -------------------------------------------------

KEY = st.integers(0, 40)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("upsert"), st.lists(KEY, min_size=1, max_size=8, unique=True)),
        st.tuples(
            st.just("remove"),
            st.lists(st.integers(-5, 60), min_size=1, max_size=8, unique=True),  # unknown too
        ),
    ),
    min_size=1,
    max_size=25,
)


def apply(idx: VectorIndex, model: dict[int, np.ndarray], op: tuple[str, list[int]],
          rng: np.random.Generator) -> None:  # fmt: skip
    kind, keys = op
    if kind == "upsert":
        # well-separated random floats, at random scales: upsert must normalise
        vecs = rng.normal(size=(len(keys), idx.dim)) * rng.uniform(0.1, 10, size=(len(keys), 1))
        idx.upsert(np.array(keys), vecs)
        for key, vec in zip(keys, vecs, strict=True):
            model[key] = unit(vec)  # a re-upsert replaces the old vector
    else:
        idx.remove(np.array(keys))
        for key in keys:
            model.pop(key, None)


def check_all(idx: VectorIndex, model: dict[int, np.ndarray], rng: np.random.Generator,
              exact: bool) -> None:  # fmt: skip
    assert len(idx) == len(model)
    for key in range(-2, 45):
        stored = idx.vector(key)
        if key in model:
            assert stored is not None
            np.testing.assert_allclose(stored, model[key], atol=1e-5)
        else:
            assert stored is None
    probe = np.array([-1, *range(45), 10**6])
    want = np.array([model.get(int(key), np.zeros(idx.dim)) for key in probe])
    np.testing.assert_allclose(idx.vectors_of(probe), want, atol=1e-5)
    queries = [rng.normal(size=idx.dim) for _ in range(3)]
    queries += [model[key] for key in list(model)[:2]]  # a live key's own vector
    for q in queries:
        for k in (1, 3, 10, 100):
            assert_matches_model(idx, model, q, k, exact=exact)


@settings(max_examples=60, deadline=None)
@given(dim=st.integers(2, 6), ops=OPS, seed=st.integers(0, 2**32 - 1))
def test_exact_search_equals_brute_force(dim: int, ops: list[Any], seed: int) -> None:
    rng = np.random.default_rng(seed)
    idx = VectorIndex(dim, ann_min=NEVER, background=False)
    model: dict[int, np.ndarray] = {}
    for op in ops:
        apply(idx, model, op, rng)
        assert len(idx) == len(model)
        assert_matches_model(idx, model, rng.normal(size=dim), 5, exact=True)
    assert not idx.approximate
    check_all(idx, model, rng, exact=True)
    check_all(idx, model, rng, exact=False)  # below ann_min the default path is exact too


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dim=st.integers(2, 6), before=OPS, after=OPS, seed=st.integers(0, 2**32 - 1))
def test_small_ivf_index_follows_writes_exactly(
    dim: int, before: list[Any], after: list[Any], seed: int
) -> None:
    """With a few hundred vectors at most there are fewer cells than nprobe, so the IVF
    search is exhaustive and must equal brute force after any mix of writes."""
    rng = np.random.default_rng(seed)
    idx = VectorIndex(dim, ann_min=NEVER, background=False)
    model: dict[int, np.ndarray] = {}
    apply(idx, model, ("upsert", [0]), rng)  # something to train on
    for op in before:
        apply(idx, model, op, rng)
    if not model:
        apply(idx, model, ("upsert", [1]), rng)
    idx.build_now()
    assert idx.approximate
    for op in after:
        apply(idx, model, op, rng)
        assert_matches_model(idx, model, rng.normal(size=dim), 5, exact=False)
    check_all(idx, model, rng, exact=False)
    check_all(idx, model, rng, exact=True)


def test_len_counts_live_keys() -> None:
    idx = VectorIndex(4, ann_min=NEVER, background=False)
    rng = np.random.default_rng(0)
    assert len(idx) == 0
    idx.upsert(np.arange(10), rng.normal(size=(10, 4)))
    assert len(idx) == 10
    idx.upsert(np.arange(5, 15), rng.normal(size=(10, 4)))  # 5 re-upserts, 5 new
    assert len(idx) == 15
    idx.remove(np.array([0, 1, 100, -3]))  # unknown keys ignored
    assert len(idx) == 13
    idx.remove(np.array([0, 1]))  # already gone
    assert len(idx) == 13
    idx.upsert(np.array([0]), rng.normal(size=(1, 4)))  # back again
    assert len(idx) == 14
    idx.upsert(np.array([5000]), rng.normal(size=(1, 4)))  # far key: storage grows
    assert len(idx) == 15
    idx.upsert(np.array([], dtype=np.int64), np.zeros((0, 4)))
    assert len(idx) == 15
    idx.build_now()
    idx.upsert(np.array([2, 20]), rng.normal(size=(2, 4)))  # 1 re-upsert, 1 new
    idx.remove(np.array([3, 3000]))
    assert len(idx) == 15
    assert len(idx.search(rng.normal(size=4), 100)[0]) == 15
    assert len(idx.search(rng.normal(size=4), 100, exact=True)[0]) == 15


def test_search_edge_cases() -> None:
    idx = VectorIndex(3, ann_min=NEVER, background=False)
    keys, scores = idx.search(np.ones(3), 5)
    assert len(keys) == len(scores) == 0
    idx.upsert(np.array([7]), np.array([[0.0, 3.0, 4.0]]))
    np.testing.assert_allclose(idx.vector(7), [0, 0.6, 0.8], atol=1e-6)
    assert len(idx.search(np.ones(3), 0)[0]) == 0
    keys, scores = idx.search(np.array([0.0, 0.6, 0.8]), 5)
    assert keys.tolist() == [7]
    np.testing.assert_allclose(scores, [1.0], atol=1e-6)
    idx.remove(np.array([7]))
    assert len(idx.search(np.ones(3), 5)[0]) == 0


# -- the approximate index ---------------------------------------------------------------------


def test_ivf_recall_at_50_against_exact() -> None:
    n, dim = 20_000, 32
    idx = VectorIndex(dim, ann_min=NEVER, background=False)
    x = clustered(n, dim, 1)
    idx.upsert(np.arange(n), x)
    assert not idx.approximate
    idx.build_now()
    assert idx.approximate
    recalls = []
    for i, q in enumerate(clustered(100, dim, 2)):
        approx, approx_scores = idx.search(q, 50)
        exact, exact_scores = idx.search(q, 50, exact=True)
        if i < 20:  # the oracle itself, at this size, against a brute-force ranking
            true = x @ q
            want = np.argsort(-true, kind="stable")[:50]
            np.testing.assert_allclose(exact_scores, true[want], atol=1e-5)
            if np.min(-np.diff(true[np.argsort(-true)[:51]])) > 1e-5:
                assert exact.tolist() == want.tolist()
        assert len(approx) == 50
        assert np.all(np.diff(approx_scores) <= 1e-6)
        recalls.append(len(set(approx.tolist()) & set(exact.tolist())) / 50)
    assert np.mean(recalls) >= 0.9, np.mean(recalls)


def test_ivf_sees_new_removed_and_moved_keys_at_once() -> None:
    n, dim = 5_000, 16
    idx, x = built(n, dim)
    rng = np.random.default_rng(7)

    # a new key is found by the very next search for its own vector
    new = clustered(50, dim, 8)
    for i, vec in enumerate(new):
        key = n + 100 + i
        idx.upsert(np.array([key]), vec[None, :])
        assert top_key(idx, vec) == key
    fresh = np.arange(10_000, 10_100)  # a batch of new keys
    fresh_vecs = clustered(100, dim, 9)
    idx.upsert(fresh, fresh_vecs)
    for key, vec in zip(fresh, fresh_vecs, strict=True):
        assert top_key(idx, vec) == key

    # a removed key is never returned again
    gone = rng.choice(n, size=200, replace=False)
    idx.remove(gone)
    gone_set = set(gone.tolist())
    for key in gone[:50]:
        keys, _ = idx.search(x[key], 100)
        assert not gone_set & set(keys.tolist())
    for q in clustered(50, dim, 10):
        keys, _ = idx.search(q, 200)
        assert not gone_set & set(keys.tolist())

    # a re-upserted key moves: its old vector no longer finds it first, its new one does
    moved = [int(k) for k in rng.choice(np.setdiff1d(np.arange(n), gone), 50, replace=False)]
    targets = clustered(len(moved), dim, 11)
    for key, vec in zip(moved, targets, strict=True):
        old = x[key].copy()
        idx.upsert(np.array([key]), vec[None, :] * 3.0)  # not unit: normalised on the way in
        assert top_key(idx, vec) == key
        assert top_key(idx, old) != key
        keys, scores = idx.search(old, 100)
        if key in keys.tolist():  # may still be near, but never with its old score
            assert scores[keys.tolist().index(key)] < 0.9999
        np.testing.assert_allclose(idx.vector(key), vec, atol=1e-5)

    assert len(idx) == n + 50 + 100 - 200
    assert idx.approximate


# -- concurrency -------------------------------------------------------------------------------


@pytest.mark.parametrize("approximate", [True, False], ids=["ivf", "exact"])
def test_concurrent_searches_never_see_removed_keys(approximate: bool) -> None:
    n, dim = 4_000, 16
    idx = VectorIndex(dim, ann_min=NEVER, background=False)
    x = clustered(n, dim, 0)
    idx.upsert(np.arange(n), x)
    if approximate:
        idx.build_now()
    rng = np.random.default_rng(1)
    removed_up_front = rng.choice(n, size=300, replace=False)
    idx.remove(removed_up_front)
    banned = set(removed_up_front.tolist())
    rest = np.setdiff1d(np.arange(n), removed_up_front)
    to_drop = rest[:150]  # removed during the churn, one at a time, never re-upserted
    to_move = rest[400:1200]  # re-upserted and removed-then-upserted during the churn
    dropped: list[int] = []  # appended after remove() returns
    errors: list[BaseException] = []
    done = threading.Event()

    def churn() -> None:
        try:
            crng = np.random.default_rng(2)
            next_new = n
            for i, key in enumerate(to_drop.tolist()):
                idx.remove(np.array([key]))
                dropped.append(key)
                m = crng.choice(to_move, size=4, replace=False)
                idx.upsert(m, crng.normal(size=(4, dim)))
                idx.remove(m[:1])
                idx.upsert(m[:1], crng.normal(size=(1, dim)))
                idx.upsert(np.arange(next_new, next_new + 3), crng.normal(size=(3, dim)))
                if i % 3 == 0:
                    idx.remove(np.arange(next_new, next_new + 1))
                next_new += 3
        except BaseException as e:
            errors.append(e)
        finally:
            done.set()

    def search(seed: int) -> None:
        try:
            srng = np.random.default_rng(seed)
            while not done.is_set():
                before = set(dropped) | banned  # removed before this search started
                pool = to_drop if srng.random() < 0.7 else removed_up_front
                q = x[int(srng.choice(pool))]  # a removed key would come first
                keys, scores = idx.search(q, 20, exact=bool(srng.random() < 0.2))
                assert len(keys) == len(scores) == 20
                assert not before & set(keys.tolist())
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=search, args=(s,)) for s in range(2)]
    threads.append(threading.Thread(target=churn))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors[0]
    gone = banned | set(dropped)
    assert len(dropped) == len(to_drop)
    for key in list(gone)[:200]:
        assert top_key(idx, x[key]) not in gone
    assert idx.approximate == approximate


# -- the background build ----------------------------------------------------------------------


def wait_for_approximate(idx: VectorIndex, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not idx.approximate and time.monotonic() < deadline:
        time.sleep(0.01)
    assert idx.approximate, "the background build never swapped the IVF index in"


def test_background_build_switches_on_and_keeps_writes_made_meanwhile() -> None:
    dim = 16
    idx = VectorIndex(dim, ann_min=2_000, background=True)
    x = clustered(3_000, dim, 0)
    idx.upsert(np.arange(1_900), x[:1_900])
    assert not idx.approximate
    idx.upsert(np.arange(1_900, 2_100), x[1_900:2_100])  # crosses ann_min: the build starts
    # writes right after the crossing, most of them while the build is running
    new_keys = np.arange(2_100, 3_000)
    for i in range(0, len(new_keys), 10):
        idx.upsert(new_keys[i : i + 10], x[2_100 + i : 2_110 + i])
    gone = np.arange(0, 200)
    idx.remove(gone)
    moved = np.arange(200, 300)
    moved_to = clustered(100, dim, 5)
    idx.upsert(moved, moved_to)
    wait_for_approximate(idx)
    assert len(idx) == 2_800
    for key in new_keys:
        assert top_key(idx, x[key]) == key
    for key in gone:
        assert top_key(idx, x[key]) not in set(gone.tolist())
    for key, vec in zip(moved, moved_to, strict=True):
        assert top_key(idx, vec) == key
        assert top_key(idx, x[key]) != key


class GatedFaiss:
    """faiss, except that building the IVF index in the background thread waits for `go`
    (or raises, with `fail`): the build's snapshot is taken, but it has not swapped in yet."""

    def __init__(self, fail: bool = False) -> None:
        self.entered = threading.Event()
        self.go = threading.Event()
        self.fail = fail

    def __getattr__(self, name: str) -> Any:
        return getattr(faiss, name)

    def IndexIVFScalarQuantizer(self, *args: Any) -> Any:  # the name faiss uses
        if threading.current_thread().name == "reelrank-ann-build":
            self.entered.set()
            assert self.go.wait(30)
            if self.fail:
                raise RuntimeError("training failed")
        return faiss.IndexIVFScalarQuantizer(*args)


def join_builds() -> None:
    for t in threading.enumerate():
        if t.name == "reelrank-ann-build":
            t.join(timeout=30)
            assert not t.is_alive()


def start_gated_build(monkeypatch: pytest.MonkeyPatch, gate: GatedFaiss, dim: int = 16,
                      n: int = 3_000) -> tuple[VectorIndex, np.ndarray]:  # fmt: skip
    monkeypatch.setattr(cells_module, "faiss", gate)  # where the lists are made
    idx = VectorIndex(dim, ann_min=n, background=True)
    x = clustered(n, dim, 0)
    idx.upsert(np.arange(n), x)
    assert gate.entered.wait(30), "crossing ann_min did not start a background build"
    return idx, x


def test_writes_during_a_background_build_are_replayed(monkeypatch: pytest.MonkeyPatch) -> None:
    gate = GatedFaiss()
    idx, x = start_gated_build(monkeypatch, gate)
    rng = np.random.default_rng(3)
    new = rng.normal(size=(100, 16))
    idx.upsert(np.arange(5_000, 5_100), new)  # new keys
    idx.remove(np.arange(0, 100))  # removed keys in the snapshot
    idx.upsert(np.arange(5_000, 5_010), -new[:10])  # re-upsert a key added during the build
    idx.remove(np.arange(5_090, 5_100))  # remove a key added during the build
    moved = rng.normal(size=(50, 16))
    idx.upsert(np.arange(100, 150), moved)  # re-upsert keys in the snapshot
    assert not idx.approximate
    gate.go.set()
    wait_for_approximate(idx)
    assert len(idx) == 3_000 - 100 + 90
    for i, key in enumerate(range(5_000, 5_090)):
        assert top_key(idx, new[i] if key >= 5_010 else -new[i]) == key
    for key in range(5_000, 5_010):
        assert top_key(idx, new[key - 5_000]) != key
    removed = set(range(100)) | set(range(5_090, 5_100))
    for q in [*x[:100], *new[90:]]:
        keys, _ = idx.search(q, 50)
        assert not removed & set(keys.tolist())
    for i, key in enumerate(range(100, 150)):
        assert top_key(idx, moved[i]) == key


# -- regressions -------------------------------------------------------------------------------


@pytest.mark.parametrize("approximate", [True, False], ids=["ivf", "exact"])
def test_a_key_repeated_in_one_batch_is_one_key(approximate: bool) -> None:
    """Once counted twice, and added twice to the inverted lists, so that remove() left a
    copy behind that the IVF search kept returning."""
    idx = VectorIndex(8, ann_min=NEVER, background=False)
    idx.upsert(np.arange(3_000), clustered(3_000, 8, 0))
    if approximate:
        idx.build_now()
    v = unit(np.random.default_rng(0).normal(size=(2, 8)))
    idx.upsert(np.array([9_000, 9_000]), v)  # the last vector wins
    assert len(idx) == 3_001
    np.testing.assert_allclose(idx.vector(9_000), v[1], atol=1e-6)
    assert top_key(idx, v[1]) == 9_000
    keys, _ = idx.search(v[1], 10)
    assert keys.tolist().count(9_000) == 1
    idx.remove(np.array([7, 7]))
    assert len(idx) == 3_000
    idx.remove(np.array([9_000]))
    assert len(idx) == 2_999
    for vec in v:
        assert 9_000 not in idx.search(vec, 10)[0].tolist()


def test_build_now_during_a_background_build_loses_no_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two builds side by side once let the last one to finish swap in an index without the
    writes made after the other one finished."""
    gate = GatedFaiss()
    idx, x = start_gated_build(monkeypatch, gate)
    errors: list[BaseException] = []

    def build_now() -> None:
        try:
            idx.build_now()
        except BaseException as e:
            errors.append(e)

    other = threading.Thread(target=build_now)
    other.start()
    other.join(timeout=0.5)  # it may finish at once, or wait for the running build
    idx.remove(np.array([5]))
    idx.upsert(np.array([7_000]), -x[6][None, :])
    gate.go.set()
    other.join(timeout=30)
    assert not other.is_alive()
    join_builds()
    assert not errors, errors[0]
    assert idx.approximate
    assert 5 not in idx.search(x[5], 10)[0].tolist()
    assert top_key(idx, -x[6]) == 7_000
    idx.remove(np.array([8]))
    idx.upsert(np.array([7_001]), -x[9][None, :])
    assert 8 not in idx.search(x[8], 10)[0].tolist()
    assert top_key(idx, -x[9]) == 7_001
    assert len(idx) == 3_000


def test_a_failed_build_does_not_replay_stale_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The writes queued by a build that failed were once replayed by the next build, over
    newer state."""
    gate = GatedFaiss(fail=True)
    idx, _ = start_gated_build(monkeypatch, gate)
    v = unit(np.random.default_rng(0).normal(size=16))
    idx.upsert(np.array([8_000]), v[None, :])  # queued for replay by the running build
    gate.go.set()
    join_builds()
    assert not idx.approximate
    idx.remove(np.array([8_000]))
    monkeypatch.setattr(cells_module, "faiss", faiss)
    idx.build_now()
    assert idx.approximate
    assert 8_000 not in idx.search(v, 10)[0].tolist()


def test_negative_keys_are_refused_and_vectors_are_copies() -> None:
    idx = VectorIndex(4)
    with pytest.raises(ValueError, match="negative"):
        idx.upsert(np.array([3, -1]), np.ones((2, 4)))
    assert len(idx) == 0  # nothing of the refused batch was written
    idx.upsert(np.array([3]), np.array([[1.0, 0, 0, 0]]))
    held = idx.vector(3)
    idx.upsert(np.array([3]), np.array([[0, 1.0, 0, 0]]))
    assert held is not None and held[0] == pytest.approx(1.0)  # the caller's copy stands


def test_an_index_seeded_with_kept_cells_builds_without_training_and_answers_the_same() -> None:
    """A restart's index reuses the cells its predecessor trained (handed over by
    `on_trained`): no k-means, the same answers; cells of another dimension, or outgrown
    (4x the vectors they were trained on), are trained afresh."""
    n, dim = 5_000, 16
    x = clustered(n, dim, 1)
    first = VectorIndex(dim, ann_min=NEVER, background=False)
    kept: list[tuple[np.ndarray, int]] = []
    first.on_trained = lambda cells, at: kept.append((cells, at))
    first.upsert(np.arange(n), x)
    first.build_now()
    assert first.trainings == 1 and len(kept) == 1
    cells, trained_at = kept[0]
    assert trained_at == n and cells.shape[1] == dim

    second = VectorIndex(dim, ann_min=NEVER, background=False)
    second.seed(cells, trained_at)
    second.upsert(np.arange(n), x)
    second.build_now()
    assert second.approximate and second.trainings == 0
    for q in clustered(30, dim, 2):
        a, a_scores = first.search(q, 20)
        b, b_scores = second.search(q, 20)
        assert a.tolist() == b.tolist()
        np.testing.assert_array_equal(a_scores, b_scores)

    other = VectorIndex(dim + 1, ann_min=NEVER, background=False)
    other.seed(cells, trained_at)  # another dimension: ignored
    other.upsert(np.arange(n), clustered(n, dim + 1, 1))
    other.build_now()
    assert other.trainings == 1

    grown = VectorIndex(dim, ann_min=NEVER, background=False)
    grown.seed(cells, trained_at // 4)  # the index now holds 4x what they were trained on
    grown.upsert(np.arange(n), x)
    grown.build_now()
    assert grown.trainings == 1


def test_a_warm_started_index_refines_earlier_cells_to_where_the_vectors_moved() -> None:
    """A retrieval model's next index starts k-means from the last index's cells: after
    the vectors moved (a rotation, as a model's space drifts between rebuilds) the
    refined cells follow them (recall as good as exact search at a small nprobe, where
    the stale cells lose a sixth of it) and each cell stays the one it started from, so
    rebuilds continue one clustering. Limits as for `seed`."""
    n, dim = 20_000, 32
    x = clustered(n, dim, 1)
    first = VectorIndex(dim, ann_min=NEVER, nprobe=8, background=False)
    assert first.cells() is None  # exact search: no cells yet
    first.upsert(np.arange(n), x)
    first.build_now()
    found = first.cells()
    assert found is not None
    cells, trained_at = found
    assert trained_at == n and cells.shape == (512, dim)
    cells = cells[np.random.default_rng(3).permutation(len(cells))]  # any order is kept

    rng = np.random.default_rng(7)
    a = rng.normal(size=(dim, dim)) * 0.2
    rot, r = np.linalg.qr(np.eye(dim) + a - a.T)
    rot = rot * np.sign(np.diag(r))  # a proper rotation near the identity
    moved = (x @ rot).astype(np.float32)
    queries = clustered(100, dim, 2) @ rot

    def recall(idx: VectorIndex) -> float:
        got = []
        for q in queries:
            approx, _ = idx.search(q, 50)
            exact, _ = idx.search(q, 50, exact=True)
            got.append(len(set(approx.tolist()) & set(exact.tolist())) / 50)
        return float(np.mean(got))

    warm = VectorIndex(dim, ann_min=NEVER, nprobe=8, background=False)
    warm.warm_start(cells, trained_at)
    warm.upsert(np.arange(n), moved)
    warm.build_now()
    assert warm.refinements == 1 and warm.trainings == 0
    refined = warm.cells()
    assert refined is not None and refined[1] == trained_at
    followed = unit(cells @ rot)
    assert np.mean(np.sum(unit(refined[0]) * followed, axis=1)) > 0.7  # cell i stayed cell i

    stale = VectorIndex(dim, ann_min=NEVER, nprobe=8, background=False)
    stale.seed(cells, trained_at)  # the old cells as they were
    stale.upsert(np.arange(n), moved)
    stale.build_now()
    assert recall(warm) >= 0.97
    assert recall(stale) <= recall(warm) - 0.08

    other = VectorIndex(dim + 1, ann_min=NEVER, background=False)
    other.warm_start(cells, trained_at)  # another dimension: ignored
    other.upsert(np.arange(n), clustered(n, dim + 1, 1))
    other.build_now()
    assert other.trainings == 1 and other.refinements == 0

    few = VectorIndex(dim, ann_min=NEVER, background=False)
    few.warm_start(cells, trained_at)  # 512 cells need 39 vectors each: kept for later
    few.upsert(np.arange(1000), moved[:1000])
    few.build_now()
    assert few.trainings == 1 and few.refinements == 0
    few.upsert(np.arange(n), moved)
    few.build_now()
    assert few.refinements == 1

    grown = VectorIndex(dim, ann_min=NEVER, background=False)
    grown.warm_start(cells, n // 4)  # 4x the vectors the cells were first trained on
    grown.upsert(np.arange(n), moved)
    grown.build_now()
    assert grown.trainings == 1 and grown.refinements == 0


def test_a_cancelled_build_gives_up_and_search_stays_as_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`cancel` set (the process is stopping) gives a build up between its steps: no
    approximate index is swapped in, searches stay exact and right; cleared, the next
    build goes through."""
    monkeypatch.setattr(vectors_module, "ADD_CHUNK", 1000)
    n, dim = 5_000, 16
    x = clustered(n, dim, 1)
    idx = VectorIndex(dim, ann_min=NEVER, background=False)
    idx.upsert(np.arange(n), x)
    cancel = idx.cancel = threading.Event()
    q = x[7]
    # The stop arrives during the k-means (after one of its ten iterations), then during
    # the additions to the lists (after one chunk of five).
    for owner, name in [
        (faiss.Clustering, "train"),
        (faiss.IndexIVFScalarQuantizer, "add_with_ids"),
    ]:
        calls = []
        real = getattr(owner, name)

        def then_stop(self: Any, *args: Any, real: Any = real, calls: list[int] = calls) -> None:
            calls.append(1)
            real(self, *args)
            cancel.set()

        monkeypatch.setattr(owner, name, then_stop)
        idx.build_now()
        assert len(calls) == 1 and not idx.approximate and not idx.building, name
        assert idx.search(q, 5)[0][0] == 7
        monkeypatch.setattr(owner, name, real)
        cancel.clear()
    idx.build_now()
    assert idx.approximate and idx.search(q, 5)[0][0] == 7


def spread(n: int, dim: int, noise: float, seed: int) -> np.ndarray:
    """Unit vectors around 256 topic centres at `noise`: tight topics are easy for the
    cells (a query's neighbours share its cell), diffuse ones need many cells scanned."""
    centres = np.random.default_rng(777).normal(size=(256, dim))
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(256, size=n)] + noise * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def recall_at_100(idx: VectorIndex, queries: np.ndarray) -> float:
    hits = 0
    for q in queries:
        approx, _ = idx.search(q, 100)
        exact, _ = idx.search(q, 100, exact=True)
        hits += len(np.intersect1d(approx, exact))
    return hits / (100 * len(queries))


def tuned_index(noise: float, recall: float, nprobe: int = 64) -> tuple[VectorIndex, np.ndarray]:
    n, dim = 20_000, 16
    idx = VectorIndex(dim, ann_min=NEVER, nprobe=nprobe, background=False, recall=recall)
    x = spread(n, dim, noise, 1)
    idx.upsert(np.arange(n), x)
    for q in spread(40, dim, noise, 2):  # served before the build: what it tunes on
        idx.search(q, 10)
    idx.build_now()
    assert idx.approximate
    return idx, x


def test_the_cells_scanned_are_the_fewest_that_hold_the_recall_asked() -> None:
    """Each build measures recall@100 against exact search on the latest queries and scans
    the fewest cells (the cap, half, a quarter ...) that reach `recall`: few on tight
    topics, more on diffuse ones, and fresh queries of the same kind keep that recall."""
    tight, _ = tuned_index(0.15, 0.98)
    diffuse, _ = tuned_index(0.9, 0.98)
    assert tight.tuner.tuned is not None and diffuse.tuner.tuned is not None
    (tight_cells, tight_recall), (diffuse_cells, diffuse_recall) = (
        tight.tuner.tuned,
        diffuse.tuner.tuned,
    )
    assert tight_cells < diffuse_cells <= 64, (tight_cells, diffuse_cells)
    assert tight_recall >= 0.98 and (diffuse_recall >= 0.98 or diffuse_cells == 64)
    assert tight._ivf.nprobe == tight_cells and not tight.tuner.on_stored
    # Fresh queries (not the ones tuned on) hold about the recall measured.
    assert recall_at_100(tight, spread(60, 16, 0.15, 3)) >= 0.95
    assert recall_at_100(diffuse, spread(60, 16, 0.9, 3)) >= min(diffuse_recall, 0.98) - 0.03
    # The fewest: half the cells falls short on the queries it was tuned on.
    assert tight_cells > 64 >> 4
    live, rng = tight.live[: tight.end], np.random.default_rng(0)
    queries, stored = tuning.tuning_queries(tight.tuner.recent(16), tight.vectors, live, rng)
    assert not stored
    half = tuning.tune_nprobe(
        tight._ivf, tight.vectors, live, queries, tight_cells // 2, 0.98, lambda: None
    )
    assert half[1] < 0.98


def test_without_a_recall_target_the_index_scans_nprobe_cells() -> None:
    idx, _ = tuned_index(0.15, 0.0, nprobe=48)
    assert idx.tuner.tuned is None and idx._ivf.nprobe == 48


def test_the_index_measures_again_once_queries_come_and_when_it_has_doubled() -> None:
    """A build before any query measures on stored vectors; once TUNE_QUERIES queries have
    come it measures on them, and again when the index has doubled since (a catalog that
    grew from a first build at ann_min to a million would otherwise keep cells chosen at
    ann_min)."""
    n, dim = 12_000, 16
    x = spread(2 * n, dim, 0.5, 5)
    idx = VectorIndex(dim, ann_min=NEVER, nprobe=64, background=False, recall=0.98)
    idx.upsert(np.arange(n), x[:n])
    idx.build_now()
    assert idx.tuner.tuned is not None and idx.tuner.on_stored and idx.tuner.count == n
    for q in spread(tuning.TUNE_QUERIES, dim, 0.5, 6):
        idx.search(q, 10)  # the last of these measures (background=False: at once)
    assert not idx.tuner.on_stored and idx.tuner.count == n and not idx.tuner.running
    cells, recall = idx.tuner.tuned
    assert idx._ivf.nprobe == cells and (recall >= 0.98 or cells == 64)
    idx.upsert(np.arange(n, 2 * n - 1), x[n:-1])
    assert idx.tuner.count == n  # not yet doubled
    idx.upsert(np.array([2 * n - 1]), x[-1:])
    assert idx.tuner.count == 2 * n and idx._ivf.nprobe == idx.tuner.tuned[0]


def test_tuning_queries_are_the_latest_served_or_stored_vectors() -> None:
    """The latest TUNE_QUERIES queries served (exact searches too), as unit rows (zero ones
    dropped); while fewer than half that came, live stored vectors picked at random.
    Queries carry over to a rebuilt index with `remember`."""
    rng = np.random.default_rng(0)
    stored = spread(500, 8, 0.5, 4)
    live = np.ones(500, bool)
    live[:250] = False
    idx = VectorIndex(8, ann_min=NEVER, background=False)
    served = rng.normal(size=(50, 8)).astype(np.float32)
    for q in served:
        idx.search(q, 3)
    idx.search(np.zeros(8, np.float32), 3)  # a zero query tells nothing of recall
    got, from_stored = tuning.tuning_queries(idx.tuner.recent(8), stored, live, rng)
    assert got.shape == (tuning.TUNE_QUERIES - 1, 8) and not from_stored
    np.testing.assert_allclose(got, unit(served[-(tuning.TUNE_QUERIES - 1) :]), atol=1e-6)
    rebuilt = VectorIndex(8, ann_min=NEVER, background=False)
    rebuilt.remember(idx)
    np.testing.assert_array_equal(rebuilt.tuner.recent(8), idx.tuner.recent(8))
    few = VectorIndex(8, ann_min=NEVER, background=False)
    for q in served[:5]:
        few.search(q, 3)
    fallback, from_stored = tuning.tuning_queries(few.tuner.recent(8), stored, live, rng)
    assert from_stored and len(fallback) == tuning.TUNE_QUERIES
    assert all(any(np.allclose(f, s) for s in stored[250:]) for f in fallback)


def test_a_measurement_that_fails_is_not_retried_on_every_search(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A measurement that raises leaves the cells scanned as they were and is not tried
    again before the index doubles (not once a search)."""
    n, dim = 12_000, 16
    idx = VectorIndex(dim, ann_min=NEVER, nprobe=64, background=False, recall=0.98)
    idx.upsert(np.arange(n), spread(n, dim, 0.5, 7))
    idx.build_now()
    cells = idx._ivf.nprobe
    calls = []

    def broken(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        raise RuntimeError("measurement failed")

    monkeypatch.setattr(tuning, "tune_nprobe", broken)
    for q in spread(3 * tuning.TUNE_QUERIES, dim, 0.5, 8):
        idx.search(q, 10)
    assert len(calls) == 1 and idx._ivf.nprobe == cells and not idx.tuner.running
