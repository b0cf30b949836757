"""Traffic pools: the state machine, the rates it judges, delivery through exploration
slots, the funnel endpoints and persistence (issue 5)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

import reelrank.state.pools as pools_module
from reelrank.engine import Engine
from reelrank.recall.pool import LeastServed, least
from reelrank.schema import EventType
from reelrank.serve import create_app
from reelrank.state.counters import VideoCounters, smoothed_rate
from reelrank.state.pools import PoolBook, Stage

from .conftest import INGEST, event, make_settings, video

T = 1_700_000_000.0


@given(
    views=st.integers(0, 10_000),
    share=st.floats(0.0, 1.0),
    prior=st.floats(0.001, 1.0),
    strength=st.one_of(st.just(0.0), st.floats(1e-6, 1000.0)),  # none that underflow
)
def test_a_smoothed_rate_lies_between_the_prior_and_what_was_seen(
    views: int, share: float, prior: float, strength: float
) -> None:
    """The one smoothing formula the pools and the rankers share: no views read as the
    prior, no pseudo-views as the raw rate, and anything between the two in between."""
    count = round(share * views)
    if views == 0 and strength == 0:
        return
    got = smoothed_rate(count, views, prior, strength)
    if views == 0:
        assert got == pytest.approx(prior)
    elif strength == 0:
        assert got == pytest.approx(count / views)
    else:
        lo, hi = sorted((prior, count / views))
        assert lo - 1e-12 <= got <= hi + 1e-12
    more = smoothed_rate(count, views, prior, strength + 10.0)
    assert abs(more - prior) <= abs(got - prior) + 1e-12  # more pseudo-views: nearer the prior


def book(**kw: float) -> PoolBook:
    return PoolBook(
        sizes=[4, 8],
        thresholds=[1.0, 1.2],
        weights={"finish": 1.0, "like": 1.0, "skip": 1.0},
        settle_s=kw.get("settle_s", 10.0),
        smoothing=kw.get("smoothing", 4.0),
        max_age_s=3600.0,
        cool_heat=kw.get("cool_heat", 1.0),
        revive_heat=kw.get("revive_heat", 5.0),
    )


def counters_with_catalog_rates() -> VideoCounters:
    """A catalog of 1,000 plays on row 9: finish rate 0.3, like rate 0.05, skip rate 0.3."""
    c = VideoCounters(half_life_s=3600.0)
    c.ensure(16)
    c.add(9, "plays", 1000, T)
    c.add(9, "finishes", 300, T)
    c.add(9, "likes", 50, T)
    c.add(9, "skips", 300, T)
    return c


_served = itertools.count()


def serve(pb: PoolBook, c: VideoCounters, row: int, n: int, finish: int, like: int, skip: int):  # type: ignore[no-untyped-def]
    """n pool impressions of `row`, each viewed; the first `finish` finished, the first
    `like` liked, the last `skip` skipped (events joined by request id)."""
    for k in range(n):
        key = (f"req{next(_served)}", f"v{row}")
        pb.on_served(row, T, key)
        pb.on_event(key, EventType.PLAY)
        c.add(row, "plays", 1, T)
        if k < finish:
            pb.on_event(key, EventType.FINISH)
            pb.on_event(key, EventType.FINISH)  # a repeat counts once
        if k < like:
            pb.on_event(key, EventType.LIKE)
        if k >= n - skip:
            pb.on_event(key, EventType.SKIP)


def test_rates_are_smoothed_toward_the_catalog_and_read_as_lifts() -> None:
    pb, c = book(smoothing=4.0), counters_with_catalog_rates()
    pb.enter(0, T)
    serve(pb, c, 0, 4, finish=4, like=2, skip=0)
    got = pb.rates(0, c)
    # The catalog counters (row 0's plays included): priors 300/1004, 50/1004, 300/1004.
    # Each rate's prior weighs max(4 impressions, 3 expected events).
    p_finish, p_like, p_skip = 300 / 1004, 50 / 1004, 300 / 1004

    def smoothed(seen: int, prior: float) -> float:
        strength = max(4.0, 3.0 / prior)
        return (seen + strength * prior) / (4 + strength)

    finish, like, skip = smoothed(4, p_finish), smoothed(2, p_like), smoothed(0, p_skip)
    assert got["views"] == 4 and got["baseline"] == "catalog"
    assert got["rates"]["finish"] == pytest.approx(finish, abs=1e-5)
    assert got["lifts"]["finish"] == pytest.approx(finish / p_finish, abs=1e-3)
    assert got["rates"]["like"] == pytest.approx(like, abs=1e-5)
    expected = (finish / p_finish + like / p_like) / 2 - (skip / p_skip - 1.0)
    assert got["quality"] == pytest.approx(expected, abs=1e-3)
    # With no impressions, every lift is 1 and quality sits at the catalog's level.
    pb.enter(1, T)
    assert pb.rates(1, c)["quality"] == pytest.approx(1.0)


def test_the_baseline_becomes_the_rates_of_pools_judged_at_the_tier() -> None:
    """First audiences are chosen for interest, so once a tier has judged enough pool
    views its own rates are the yardstick, not the catalog's."""
    pb, c = book(settle_s=0.0), counters_with_catalog_rates()
    for row in range(10):
        pb.enter(row, T)
    for row in range(10):  # every pool audience finishes 3 of 4 (catalog: 0.3)
        serve(pb, c, row, 4, finish=3, like=0, skip=0)
    assert pb.baseline(0, c)[0] == "catalog"
    pb.evaluate(T, c, 16)
    assert pb.tier_totals[0, 0] == 40  # views judged at tier 0
    pb2 = book(settle_s=0.0)
    pb2.tier_totals[0] = [200, 150, 10, 2, 2, 1, 20]  # 200 views judged: 0.75 finish
    basis, priors = pb2.baseline(0, c)
    assert basis == "pool tier" and priors["finish"] == pytest.approx(0.75)
    pb2.enter(0, T)
    serve(pb2, c, 0, 4, finish=3, like=0, skip=0)
    # Finishing 3 of 4 is ordinary among pool audiences: a finish lift near 1.
    assert pb2.rates(0, c)["lifts"]["finish"] == pytest.approx(1.0, abs=0.01)


def test_a_good_video_climbs_every_tier_and_graduates() -> None:
    pb, c = book(), counters_with_catalog_rates()
    pb.enter(0, T)
    serve(pb, c, 0, 3, finish=3, like=2, skip=0)
    assert Stage(pb.stage[0]) is Stage.TESTING and pb.served[0] == 3
    serve(pb, c, 0, 1, finish=1, like=0, skip=0)
    assert Stage(pb.stage[0]) is Stage.JUDGING
    assert pb.evaluate(T + 5, c, 16) == []  # still settling: engagement may be in flight
    (move,) = pb.evaluate(T + 10, c, 16)
    assert (move.row, move.stage, move.tier) == (0, Stage.TESTING, 1)
    assert pb.served[0] == 0 and pb.rates(0, c)["views"] == 0  # a fresh window
    serve(pb, c, 0, 8, finish=8, like=4, skip=0)
    (move,) = pb.evaluate(T + 10, c, 16)
    assert move.stage is Stage.GRADUATED
    assert pb.funnel["promotions"] == 1 and pb.funnel["graduations"] == 1
    assert pb.promotions_by_tier == [1, 1]


def test_a_poor_video_stops_and_revives_when_engagement_returns() -> None:
    pb, c = book(revive_heat=5.0), counters_with_catalog_rates()
    pb.enter(0, T)
    serve(pb, c, 0, 4, finish=0, like=0, skip=4)
    for _ in range(4):
        c.heat(0, EventType.SKIP, T)
    (move,) = pb.evaluate(T + 10, c, 16)
    assert move.stage is Stage.STOPPED and move.tier == 0 and move.quality < 1.0
    assert pb.stops_by_tier == [1, 0]
    assert len(pb.testing(16)) == 0
    # Organic engagement after the stop (shares elsewhere, followers) revives it.
    for _ in range(2):
        c.heat(0, EventType.SHARE, T + 20)  # 3 heat each
    (move,) = pb.evaluate(T + 20, c, 16)
    assert (move.stage, move.tier) == (Stage.TESTING, 0)
    assert pb.revivals[0] == 1 and pb.funnel["revivals"] == 1


def test_a_graduated_video_cools_as_its_heat_decays() -> None:
    pb, c = book(cool_heat=1.0), counters_with_catalog_rates()
    pb.enter(0, T)
    serve(pb, c, 0, 4, finish=4, like=3, skip=0)
    pb.evaluate(T + 10, c, 16)
    serve(pb, c, 0, 8, finish=8, like=6, skip=0)
    for _ in range(4):
        c.heat(0, EventType.LIKE, T)  # 8 heat at T
    assert pb.evaluate(T + 10, c, 16)[0].stage is Stage.GRADUATED
    assert pb.evaluate(T + 3600, c, 16) == []  # one half-life: 4 heat left
    (move,) = pb.evaluate(T + 4 * 3600, c, 16)  # 0.5 heat left
    assert move.stage is Stage.COOLED


def test_pool_state_round_trips_through_the_snapshot_arrays() -> None:
    pb, c = book(), counters_with_catalog_rates()
    pb.enter(0, T)
    pb.enter(3, T)
    serve(pb, c, 0, 4, finish=4, like=2, skip=0)
    pb.evaluate(T + 10, c, 16)
    pb.boost(5, 7)
    restored = book()
    restored.load_arrays(pb.to_arrays(16))
    assert restored.summary(16) == pb.summary(16)
    assert restored.describe(0, c) == pb.describe(0, c)
    assert np.array_equal(restored.counts[:16], pb.counts[:16])
    assert restored.impressions == pb.impressions
    assert restored.boost_left[5] == 7


# -- through the engine ------------------------------------------------------------------------


def test_new_videos_are_delivered_to_matching_users_first(tmp_path: Path) -> None:
    e = Engine(
        make_settings(
            tmp_path,
            pool_sizes=[3, 30],
            pool_thresholds=[1.0, 1.1],
            pool_settle_s=0.0,
            pool_max_age_h=1.0,
        )
    ).open()
    try:
        old = T  # a back catalog: too old for a first pool
        e.upsert_videos([video(i, hashtags=[f"t{i % 4}"], created_at=old + i) for i in range(40)])
        assert e.lifecycle.pools_summary()["funnel"]["entered"] == 0
        e.upsert_videos(
            [video("cat", hashtags=["cats"]), video("car", hashtags=["cars"], creator_id="cc")]
        )
        assert e.lifecycle.pools_summary()["tiers"][0]["testing"] == 2
        e.ingest([event("like", "catfan", f"v{i}") for i in range(3)])  # nothing about cats
        e.upsert_videos([video(f"c{i}", hashtags=["cats"], created_at=old) for i in range(3)])
        e.ingest([event("like", "catfan", f"vc{i}") for i in range(3)])
        page = e.feed("catfan", n=10)
        pooled = [it for it in page.items if it.source == "pool"]
        assert pooled and pooled[0].video_id == "vcat"
        assert "new video being tested with a first audience" in pooled[0].reasons
        # Three impressions spend the first pool; it is judged, then climbs or stops.
        for u in ("a", "b"):
            e.feed(u, n=10)
        assert e.lifecycle.video_state("vcat")["pool"]["stage"] in ("judging", "testing")
    finally:
        e.close()


def test_pools_endpoint_and_video_detail_over_http(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        store=f"sqlite:///{tmp_path / 'p.db'}",
        pool_sizes=[2, 50],
        pool_thresholds=[0.5, 1.0],
        pool_settle_s=0.0,
    )
    app = create_app(Engine(settings), own_engine=True)
    with TestClient(app) as c:
        videos = [video(i, hashtags=[f"t{i}"], creator_id=f"c{i}") for i in range(6)]
        assert c.post("/v1/videos", json={"videos": videos}, headers=INGEST).status_code == 200
        funnel = c.get("/v1/pools").json()
        assert funnel["tiers"][0] == {
            "tier": 0,
            "size": 2,
            "threshold": 0.5,
            "testing": 6,
            "judging": 0,
            "promoted": 0,
            "stopped": 0,
        }
        assert funnel["videos"]["testing"] == 6 and funnel["funnel"]["entered"] == 6
        for user in ("a", "b", "c"):
            page = c.get(f"/v1/feed/{user}?n=6").json()
            evs = []
            for it in page["items"]:
                evs += [
                    event("play", user, it["video_id"], request_id=page["request_id"]),
                    event("finish", user, it["video_id"], request_id=page["request_id"]),
                ]
            assert c.post("/v1/events", json={"events": evs}, headers=INGEST).json()["accepted"]
        app.state.engine.lifecycle_tick()
        funnel = c.get("/v1/pools").json()
        assert funnel["tiers"][0]["promoted"] == 6 and funnel["tiers"][1]["testing"] == 6
        detail = c.get("/v1/videos/v0").json()["lifecycle"]
        assert detail["pool"]["stage"] == "testing" and detail["pool"]["tier"] == 1
        assert detail["pool"]["tier_size"] == 50 and detail["pool"]["views"] == 0
        assert detail["status"] == "approved" and detail["servable"] is True
    # Pools survive a restart (the final snapshot).
    with TestClient(create_app(Engine(settings), own_engine=True)) as c:
        assert c.get("/v1/pools").json()["tiers"][1]["testing"] == 6


@given(
    st.lists(
        st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0, 2.0])
        | st.floats(0.0, 3.0, allow_nan=False, allow_subnormal=False),
        min_size=1,
        max_size=80,
    ),
    st.integers(1, 80),
)
def test_least_is_the_stable_sorts_first_k(values: list[float], k: int) -> None:
    """The pool channel's least-served pick equals a stable sort's first k, ties (many
    videos with nothing served yet) in position order: when the smallest value alone
    fills k, and when the k-th lies above it."""
    arr = np.array(values)
    k = min(k, len(arr))
    assert least(arr, k).tolist() == np.argsort(arr, kind="stable")[:k].tolist()


def test_least_over_many_ties_answers_as_a_stable_sort() -> None:
    """The shapes of real needs at scale: nearly all 0 with a few served; most served once
    with fewer unserved than k; a smooth spread."""
    rng = np.random.default_rng(3)
    n = 50_000
    shapes = [
        (rng.random(n) < 0.005) / 300.0,
        rng.choice(3, n, p=[0.01, 0.985, 0.005]) / 300.0,
        rng.random(n),
    ]
    for values in shapes:
        for k in (1, 999, 4000, n):
            assert np.array_equal(least(values, k), np.argsort(values, kind="stable")[:k])


STEPS = ["serve"] * 4 + ["enter", "hide", "show", "promote", "leave", "grow", "restore"]


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1), st.lists(st.sampled_from(STEPS), max_size=80))
def test_the_least_served_shortlist_answers_as_ranking_every_testing_row(
    seed: int, steps: list[str]
) -> None:
    """The channel reads a shortlist of the least-served testing rows with the rows that
    entered TESTING since folded in; whatever is served, entered, promoted, judged out,
    hidden, added to the catalog or restored meanwhile, its pick equals ranking every
    approved testing row below the request's catalog size by need (then row)."""
    rng = np.random.default_rng(seed)
    n, size = 80, 50  # rows past `size` join the catalog on "grow"
    pb = book()
    pb.sizes = [50, 100, 200]  # pools that take many serves to fill (filling one is a change)
    pb.ensure(n)
    for row in range(size):
        if rng.random() < 0.8:
            pb.enter(row, 0.0)
            pb.served[row] = rng.integers(0, 3)
    approved = rng.random(n) < 0.9
    shortlist = LeastServed(match=5, shortlist=12)
    rows = np.arange(size)
    for step in ["look", *steps]:
        # serves go to the rows just picked, as the feed's would, and now and then others
        row = int(rng.choice(rows)) if len(rows) and rng.random() < 0.8 else int(rng.integers(size))
        if step == "serve":
            pb.on_served(row, 1.0, (f"r{rng.integers(1 << 30)}", f"v{row}"))
        elif step == "enter" and pb.tier[row] < 0:
            pb.enter(row, 1.0)
        elif step == "promote" and pb.stage[row] == Stage.TESTING and pb.tier[row] < 2:
            pb._test(row, int(pb.tier[row]) + 1, 1.0)  # as a judgement that promotes
        elif step == "leave" and pb.stage[row] == Stage.TESTING:
            pb.stage[row] = Stage.STOPPED  # as a judgement that stops it
            pb.version += 1
        elif step == "hide":
            approved[row] = False
        elif step == "show":
            approved[row] = True
        elif step == "grow" and size < n:
            pb.enter(size, 1.0)  # entered as it was placed, before requests see it
            if rng.random() < 0.5:
                size += 1
        elif step == "restore":
            pb.load_arrays(pb.to_arrays(n))
        testing = pb.testing(size)
        testing = testing[approved[testing]]
        need = pb.served[testing] / np.array(pb.sizes, np.float64)[pb.tier[testing]]
        if len(testing) > 5:
            pick = least(need, 5)
            testing, need = testing[pick], need[pick]
        rows, got = shortlist.get(pb, size, approved)
        assert rows.tolist() == testing.tolist(), step
        assert got.tolist() == need.tolist()


def test_a_row_that_entered_before_a_request_saw_it_is_found_once_it_does() -> None:
    """A video can enter its first pool before a request hydrated with the older catalog
    size ranks the pools: that request leaves it out, the next ones (which see it) find
    it though its entry was read before."""
    pb = book()
    pb.ensure(20)
    for row in range(10):
        pb.enter(row, 0.0)
        pb.served[row] = 1 + row % 3
    pb.enter(10, 1.0)  # placed and entered; a request of the old size is under way
    approved = np.ones(20, dtype=bool)
    shortlist = LeastServed(match=3, shortlist=6)
    rows, _ = shortlist.get(pb, 10, approved)
    assert 10 not in rows.tolist()
    rows, need = shortlist.get(pb, 11, approved)
    assert rows.tolist()[0] == 10 and need[0] == 0.0


def test_a_reader_too_far_behind_the_entries_ranks_every_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Entries to TESTING are remembered up to ENTERED_MEMORY; a shortlist built before
    the ones forgotten ranks every row again, and still answers right."""
    monkeypatch.setattr(pools_module, "ENTERED_MEMORY", 8)
    pb = book()
    pb.ensure(100)
    for row in range(30):
        pb.enter(row, 0.0)
        pb.served[row] = 1
    approved = np.ones(100, dtype=bool)
    shortlist = LeastServed(match=3, shortlist=6)
    shortlist.get(pb, 100, approved)
    built = shortlist._kept
    assert pb.entered_since(built.position) == ([], 30)
    for row in range(30, 60):  # unserved: they come first
        pb.enter(row, 1.0)
    assert pb.entered_since(built.position)[0] is None  # forgotten
    rows, need = shortlist.get(pb, 100, approved)
    assert rows.tolist() == [30, 31, 32] and need.tolist() == [0.0, 0.0, 0.0]
    assert shortlist._kept is not built


def test_between_pool_changes_requests_read_the_kept_shortlist() -> None:
    """The shortlist is what makes the channel cheap: while serves only add to the rows
    it holds, requests read it rather than ranking every testing row, until its rows
    are served past the bound it was built with."""
    n = 2000
    pb = book()
    pb.sizes = [1000, 2000]  # a serve moves a row's need by a thousandth
    pb.ensure(n)
    for row in range(n):
        pb.enter(row, 0.0)
        pb.served[row] = row % 7
    approved = np.ones(n, dtype=bool)
    shortlist = LeastServed(match=20, shortlist=80)
    rows, _ = shortlist.get(pb, n, approved)
    built = shortlist._kept
    rebuilds = 0
    for i in range(60):
        pb.on_served(int(rows[i % len(rows)]), 1.0, (f"r{i}", f"v{rows[i % len(rows)]}"))
        before = shortlist._kept
        rows, _ = shortlist.get(pb, n, approved)
        rebuilds += shortlist._kept is not before
    assert built is not None and rebuilds <= 2, rebuilds
    version = pb.version
    pb.enter(n - 1, 2.0)  # re-entered: the pools changed
    assert pb.version != version
    before = shortlist._kept
    shortlist.get(pb, n, approved)
    assert shortlist._kept is not before
