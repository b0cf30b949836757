"""The related-videos model (EASE over the engagement window): what it learns, what it
forgets, what survives a restart, and how the feed uses it."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reelrank.clock import EventClock
from reelrank.engine import Engine
from reelrank.rank.heuristic import HeuristicScorer
from reelrank.rank.signals import related_seeds
from reelrank.recall import RelatedRecall
from reelrank.state.related import MIN_ENGAGEMENTS, RelatedItems, fit
from reelrank.types import Candidates, FeedRequest

from .conftest import event, make_settings, video


def _tastes(model: RelatedItems, users: int, rng: np.random.Generator) -> None:
    """Two tastes: even users engage with videos 0-9, odd users with 10-19, six each."""
    for u in range(users):
        base = 0 if u % 2 == 0 else 10
        for row in rng.choice(10, 6, replace=False):
            model.add(f"u{u}", base + int(row))


def test_it_recommends_within_the_users_taste_and_never_the_seeds() -> None:
    model = RelatedItems(max_videos=100, l2=10.0)
    _tastes(model, 60, np.random.default_rng(0))
    assert model.refit(throttle=False)
    fitted = model.fitted
    assert fitted is not None and len(fitted.rows) == 20
    scores = fitted.scores(np.array([0, 1, 2]))
    assert scores.max() == pytest.approx(1.0)
    by_row = dict(zip(fitted.rows.tolist(), scores.tolist(), strict=True))
    same = [by_row[r] for r in range(3, 10)]
    other = [by_row[r] for r in range(10, 20)]
    assert min(same) > max(other)  # every video of the same taste above every other
    # the diagonal is zero: a seed is scored only by the other seeds
    b = fitted.weights
    assert np.all(np.diag(b) == 0.0)


def test_the_fit_is_the_closed_form_on_distinct_pairs() -> None:
    """Against EASE written out on the dense matrix; a repeated engagement counts once."""
    rng = np.random.default_rng(3)
    users = rng.integers(0, 30, 400).astype(np.int32)
    rows = rng.integers(0, 12, 400).astype(np.int32)
    doubled_u = np.concatenate([users, users[:50]])
    doubled_r = np.concatenate([rows, rows[:50]])
    fitted = fit(doubled_u, doubled_r, max_videos=12, l2=7.0, engagements=450)
    assert fitted is not None
    x = np.zeros((30, 12))
    x[users, rows] = 1.0
    p = np.linalg.inv(x.T @ x + 7.0 * np.eye(12))
    b = np.eye(12) - p / np.diag(p)[None, :]
    cols = fitted.columns(np.arange(12))
    assert np.allclose(fitted.weights, b[np.ix_(fitted.rows, fitted.rows)], atol=1e-5)
    assert sorted(cols.tolist()) == list(range(12))
    # requests gather rows of it: row-major, not LAPACK's column-major (a copy per request)
    assert fitted.weights.flags.c_contiguous


def test_it_covers_only_the_most_engaged_videos() -> None:
    model = RelatedItems(max_videos=5, l2=10.0)
    for u in range(300):  # video v is engaged with by about 300 / (v + 1) users
        for v in range(20):
            if u % (v + 1) == 0:
                model.add(f"u{u}", v)
    assert model.refit(throttle=False)
    fitted = model.fitted
    assert fitted is not None
    assert sorted(fitted.rows.tolist()) == [0, 1, 2, 3, 4]
    assert fitted.columns(np.array([7, 19, -1, 10_000])).tolist() == [-1, -1, -1, -1]


def test_the_window_forgets_the_oldest_engagements() -> None:
    """Pairs A-B fill the window, then pairs A-C replace them: the refit sees A-C only."""
    model = RelatedItems(max_videos=10, l2=1.0, window=400)
    for u in range(100):
        model.add(f"old{u}", 0)
        model.add(f"old{u}", 1)
    assert model.refit(throttle=False)
    first = model.fitted
    assert first is not None and first.scores(np.array([0]))[first.col_of[1]] == 1.0
    for u in range(200):
        model.add(f"new{u}", 0)
        model.add(f"new{u}", 2)
    assert model.refit(throttle=False)
    fitted = model.fitted
    assert fitted is not None
    assert sorted(fitted.rows.tolist()) == [0, 2]  # video 1 left with the old pairs
    assert model.status()["engagements"] == 600


def test_it_refits_only_when_the_window_has_grown_enough() -> None:
    model = RelatedItems(max_videos=10, l2=1.0, growth=0.5)
    for u in range(MIN_ENGAGEMENTS - 1):
        model.add(f"u{u}", u % 3)
    assert not model.due() and not model.refit(throttle=False)
    model.add("last", 1)
    assert model.refit(throttle=False)
    for u in range(MIN_ENGAGEMENTS - 1):  # less than half as many again
        model.add(f"w{u}", u % 3)
    assert not model.refit(throttle=False)
    assert model.refit(force=True, throttle=False)  # forced: anything new is enough


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 40), st.integers(0, 25)), min_size=1, max_size=300),
    st.integers(1, 120),
)
def test_a_snapshot_round_trip_fits_the_same_model(
    pairs: list[tuple[int, int]], window: int
) -> None:
    model = RelatedItems(max_videos=8, l2=5.0, window=window)
    for u, r in pairs:
        model.add(f"u{u}", r)
    again = RelatedItems(max_videos=8, l2=5.0, window=window)
    again.load(model.to_arrays(), list(model.user_ids))
    a = model.refit(force=True, throttle=False)
    b = again.refit(force=True, throttle=False)
    assert a == b
    if a:
        assert model.fitted is not None and again.fitted is not None
        assert np.array_equal(model.fitted.rows, again.fitted.rows)
        assert np.allclose(model.fitted.weights, again.fitted.weights, atol=1e-6)


def _query(eng: Engine, user: str):  # type: ignore[no-untyped-def]
    return eng.hydrate(FeedRequest(user_id=user, n=10, request_id=f"r-{user}", now=time.time()))


def test_the_feed_ranks_and_recalls_what_people_with_the_same_history_engaged_with(
    tmp_path: Path,
) -> None:
    """Fans engaged with v0 and, days later, v1; others with v0 and, days later, v2, but
    far fewer of them also had v3 in their history the way the newcomer does. Too far
    apart for co-engagement; the related-videos model links whole histories: for a
    newcomer with v0 and v3, v1 outranks v2 through its term alone, and its channel
    recalls v1 first."""
    eng = Engine(make_settings(tmp_path)).open()
    try:
        eng.upsert_videos([video(i) for i in range(40)])  # alike but for their ids
        day = 86400.0
        now = time.time()
        events = []
        for u in range(60):
            fan = u % 2 == 0
            user = f"{'fan' if fan else 'other'}{u}"
            events.append(event("finish", user, "v0", ts=now - 9 * day))
            if fan:
                events.append(event("finish", user, "v3", ts=now - 6 * day))
            events.append(event("finish", user, "v1" if fan else "v2", ts=now - 3 * day))
            for k in range(4):  # background engagements, spread over the catalog
                events.append(event("finish", user, f"v{10 + (u + 7 * k) % 30}", ts=now - day))
        eng.ingest(events)
        eng.ingest([event("finish", "newbie", "v0"), event("finish", "newbie", "v3")])
        assert eng.model_status()["serving"]["related"]["videos"] == 0  # not fitted yet
        assert eng.refit_related(throttle=False)
        status = eng.model_status()["serving"]["related"]
        assert status["videos"] == 34 and status["fitted_on"] == status["engagements"] == 392
        query = _query(eng, "newbie")
        table = eng.state.table
        rows = np.array([table.row_of("v1"), table.row_of("v2")], dtype=np.int64)
        cands = Candidates(rows, np.zeros(2, np.int16), np.array(["", ""], dtype=object))
        weights = dict(eng.settings.score_weights)
        smoothing = eng.settings.smoothing_strength
        with_related = HeuristicScorer(weights, smoothing).score(query, cands)
        without = HeuristicScorer({**weights, "related": 0.0}, smoothing).score(query, cands)
        assert with_related[0] > with_related[1]
        assert without[0] == pytest.approx(without[1])
        got = RelatedRecall().recall(_query(eng, "newbie"), 5)
        assert table.video(int(got.rows[0])).id == "v1"
    finally:
        eng.close()


def test_the_related_window_survives_a_restart_from_snapshot(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    eng = Engine(make_settings(tmp_path, store=url)).open()
    eng.upsert_videos([video(i) for i in range(20)])
    eng.ingest(
        [event("finish", f"u{u}", f"v{(u * 3 + k) % 20}") for u in range(80) for k in (0, 1, 5)]
    )
    eng.snapshot()
    eng.ingest([event("finish", "late", "v1"), event("finish", "late", "v2")])
    assert eng.refit_related(throttle=False)
    expected = eng.state.related.fitted
    eng.close()
    again = Engine(make_settings(tmp_path, store=url)).open()
    try:
        assert again.state.related.added == 242
        assert again.refit_related(throttle=False)
        got = again.state.related.fitted
        assert expected is not None and got is not None
        assert np.array_equal(got.rows, expected.rows)
        assert np.allclose(got.weights, expected.weights, atol=1e-6)
    finally:
        again.close()


def test_reset_my_feed_forgets_the_history_the_model_reads(tmp_path: Path) -> None:
    eng = Engine(make_settings(tmp_path)).open()
    try:
        eng.upsert_videos([video(i) for i in range(40)])
        eng.ingest(
            [event("finish", f"u{u}", f"v{(u + k) % 40}") for u in range(80) for k in (0, 3, 7)]
        )
        eng.ingest([event("finish", "me", "v1"), event("like", "me", "v2")])
        assert eng.refit_related(throttle=False)
        assert related_seeds(_query(eng, "me")).tolist() == [
            eng.state.table.row_of("v1"),
            eng.state.table.row_of("v2"),
        ]
        assert len(RelatedRecall().recall(_query(eng, "me"), 10).rows) > 0
        eng.reset_user("me")
        assert len(related_seeds(_query(eng, "me"))) == 0
        assert len(RelatedRecall().recall(_query(eng, "me"), 10).rows) == 0
    finally:
        eng.close()


def test_an_event_clocked_engine_refits_on_the_event_count_at_its_tick(
    tmp_path: Path,
) -> None:
    """The model a replayed page sees must depend on the event count alone, not on when
    a background job happened to run (an event-clocked engine runs none)."""
    eng = Engine(make_settings(tmp_path), clock=EventClock(time.time())).open()
    try:
        eng.upsert_videos([video(i) for i in range(40)])
        eng.tick()  # the replay's first step: nothing due
        assert eng.state.related.fitted is None
        eng.ingest(
            [event("finish", f"u{u}", f"v{(u + k) % 40}") for u in range(80) for k in (0, 5, 9)]
        )
        assert eng.state.related.due()
        eng.tick()
        assert eng.state.related.fitted is not None and not eng.state.related.due()
    finally:
        eng.close()


def test_the_cholesky_inverse_matches_the_general_one_and_refuses_an_indefinite_matrix() -> None:
    from reelrank.state.related import _inverse_spd

    rng = np.random.default_rng(3)
    for n in (1, 2, 5, 257, 600):  # one block, several, and a partial last block
        x = (rng.random((200, n)) < 0.1).astype(np.float64)
        gram = x.T @ x + 2.0 * np.eye(n)
        want = np.linalg.inv(gram)
        got = _inverse_spd(gram.copy())
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(got, got.T)
    with pytest.raises(np.linalg.LinAlgError):
        _inverse_spd(np.array([[0.0, 1.0], [1.0, 0.0]]))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-(2**62), 2**62), max_size=60))
def test_distinct_values_are_what_np_unique_gives(values: list[int]) -> None:
    from reelrank.state.related import _distinct

    x = np.asarray(values, dtype=np.int64)
    assert _distinct(x).tolist() == np.unique(x).tolist()
