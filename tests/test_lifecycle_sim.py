"""Simulated viewers with planted tastes against videos with planted quality (issue 5):
traffic pools must promote planted-good new videos far more often than planted-bad ones,
and a brand-new user's feed must follow the one topic they engage with."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reelrank.clock import EventClock
from reelrank.engine import Engine
from reelrank.sim.lifecycle import back_catalog, cold_start_simulation, pool_simulation
from reelrank.sim.run import START
from reelrank.sim.world import World

from .conftest import make_settings


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Engine, World]]:
    settings = make_settings(
        tmp_path_factory.mktemp("sim"),
        pool_sizes=[20, 40],
        pool_thresholds=[1.0, 1.1],
        pool_settle_s=5.0,  # every reaction of a page is in before its pool is judged
        exploration_fraction=0.2,
    )
    # On the event clock: the run is the same on any machine, however loaded.
    eng = Engine(settings, clock=EventClock(START)).open()
    yield eng, back_catalog(n_videos=1200, n_viewers=300, seed=7, now=START)
    eng.close()


@pytest.fixture(scope="module")
def pools(sim: tuple[Engine, World]) -> dict[str, Any]:
    eng, world = sim
    got = pool_simulation(eng, world, new_videos=40, max_rounds=12, seed=7)
    print("pool simulation:", {k: v for k, v in got.items() if not k.startswith("last_")})
    return got


def test_pools_promote_planted_good_videos_far_more_often_than_bad(pools: dict[str, Any]) -> None:
    # 20 videos per planted class, judged on 20 impressions each: the shares move by 0.05
    # a video. On the event clock the run is the same on any machine: good 0.70 and bad
    # 0.05 reach the top tier, recall 0.70, precision 0.93, quality AUC 0.87, and 0.95 of
    # the bad stop at their first pool against 0.30 of the good. The bars sit well below
    # (set from 18 wall-clock runs, whose timing moved the figures: good minus bad
    # reaching the top tier mean 0.55, sd 0.14, lowest 0.25; quality AUC lowest 0.62):
    # they catch a judge that mostly ignores quality, not a change of seed.
    assert pools["quality_auc"] is not None and pools["quality_auc"] >= 0.55
    assert pools["good_reached_top"] >= pools["bad_reached_top"] + 0.15
    assert pools["bad_reached_top"] <= 0.35
    assert pools["precision"] is not None and pools["precision"] >= 0.6
    assert pools["recall"] >= 0.3
    assert pools["bad_stopped_at_first"] >= pools["good_stopped_at_first"] + 0.15
    assert pools["funnel"]["entered"] == 40 + 20  # the measured uploads and the earlier


def test_a_new_user_is_personalised_within_ten_engagements(
    sim: tuple[Engine, World], pools: dict[str, Any]
) -> None:
    eng, world = sim  # after the pool simulation: a warm catalog with new uploads
    got = cold_start_simulation(eng, world, users=12, engagements=10)
    print("cold start simulation:", got)
    assert got["share_after"] >= got["first_page_share"] + 0.2
    assert got["share_after"] >= 3 * got["topic_catalog_share"]
    assert sum(s > got["first_page_share"] for s in got["per_user_after"]) >= 9  # most users


def test_the_simulation_needs_a_fresh_engine(tmp_path: Path) -> None:
    """The pool simulation reports on the uploads it makes, not on what was there."""
    eng = Engine(
        make_settings(
            tmp_path,
            pool_sizes=[2],
            pool_thresholds=[0.0],
            pool_settle_s=0.0,
            pool_match_patience_s=0.0,
        )
    ).open()
    try:
        world = back_catalog(n_videos=60, n_viewers=10, seed=1)
        got = pool_simulation(eng, world, new_videos=4, warm_rounds=1, warm_uploads=0, max_rounds=8)
        assert got["new_videos"] == 4 and got["funnel"]["entered"] == 4
        assert got["unsettled"] == 0  # threshold 0: every pool is judged and passes
        assert got["good_graduated"] == got["bad_graduated"] == 1.0
    finally:
        eng.close()
