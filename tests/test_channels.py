"""Session and item-to-item channels, and per-channel engagement figures."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reelrank.engine import Engine
from reelrank.rank.heuristic import HeuristicScorer
from reelrank.recall import ItemToItemRecall, SessionRecall
from reelrank.state.coengagement import CoEngagement
from reelrank.types import Candidates, FeedRequest

from .conftest import event, make_settings, video


def _engine(tmp_path: Path) -> Engine:
    eng = Engine(make_settings(tmp_path)).open()
    eng.upsert_videos(
        [video(i, hashtags=[f"t{i % 10}"], creator_id=f"c{i % 25}") for i in range(200)]
    )
    return eng


def _query(eng: Engine, user: str):  # type: ignore[no-untyped-def]
    return eng.hydrate(FeedRequest(user_id=user, n=10, request_id=f"r-{user}", now=time.time()))


def test_coengagement_links_videos_liked_together_and_stays_bounded() -> None:
    graph = CoEngagement(window_s=100.0, half_life_s=50.0, max_neighbours=3)
    t = 1000.0
    graph.add([], 1, t)
    graph.add([(1, t)], 2, t + 1)  # close in time: strong
    graph.add([(1, t)], 3, t + 90)  # far apart: weak
    graph.add([(1, t)], 4, t + 500)  # outside the window: no link
    nbrs = dict(graph.neighbours(1, 10))
    assert set(nbrs) == {2, 3}
    assert nbrs[2] > nbrs[3]
    assert dict(graph.neighbours(2, 10)) == {1: nbrs[2]}  # symmetric
    for j in range(10, 20):
        graph.add([(1, t)], j, t + 1)
    assert len(graph.pairs[1]) <= 3


def test_item_to_item_recalls_what_others_liked_with_the_seed(tmp_path: Path) -> None:
    eng = _engine(tmp_path)
    try:
        for u in range(4):  # four users like v7 and then v150
            eng.ingest([event("like", f"fan{u}", "v7"), event("like", f"fan{u}", "v150")])
        eng.ingest([event("like", "newbie", "v7")])
        got = ItemToItemRecall().recall(_query(eng, "newbie"), 50)
        ids = [eng.state.table.video(int(r)).id for r in got.rows]
        assert ids[0] == "v150"
        assert all(r for r in got.reasons)
        # A user whose session holds nothing co-engaged gets nothing from this channel.
        eng.ingest([event("like", "loner", "v33")])
        assert len(ItemToItemRecall().recall(_query(eng, "loner"), 50).rows) == 0
    finally:
        eng.close()


def test_the_heuristic_ranks_what_others_liked_with_the_users_videos_first(
    tmp_path: Path,
) -> None:
    """Two videos alike in every counter and in the newcomer's affinities: the one that
    fans liked together with the newcomer's video scores higher, through the
    co-engagement term alone (with its weight at zero they tie)."""
    eng = Engine(make_settings(tmp_path)).open()
    try:
        eng.upsert_videos([video(i) for i in range(40)])  # alike but for their ids
        for u in range(4):  # fans like v0 then v1; others like v0 and, a day later, v2
            eng.ingest([event("like", f"fan{u}", "v0"), event("like", f"fan{u}", "v1")])
            eng.ingest(
                [
                    event("like", f"other{u}", "v0", ts=time.time() - 86400),
                    event("like", f"other{u}", "v2"),
                ]
            )
        eng.ingest([event("like", "newbie", "v0")])
        query = _query(eng, "newbie")
        table = eng.state.table
        rows = np.array([table.row_of("v1"), table.row_of("v2")], dtype=np.int64)
        cands = Candidates(rows, np.zeros(2, np.int16), np.array(["", ""], dtype=object))
        weights = dict(eng.settings.score_weights)
        with_co = HeuristicScorer(weights, eng.settings.smoothing_strength).score(query, cands)
        without = HeuristicScorer(
            {**weights, "coengaged": 0.0}, eng.settings.smoothing_strength
        ).score(query, cands)
        assert with_co[0] > with_co[1]  # v1, co-engaged with v0 within the hour, first
        assert without[0] == pytest.approx(without[1])
    finally:
        eng.close()


def test_session_recalls_the_hashtags_just_engaged_with(tmp_path: Path) -> None:
    eng = _engine(tmp_path)
    try:
        assert len(SessionRecall().recall(_query(eng, "u1"), 30).rows) == 0
        eng.ingest([event("like", "u1", "v3"), event("finish", "u1", "v13")])  # both #t3
        got = SessionRecall().recall(_query(eng, "u1"), 30)
        assert len(got.rows) == 20  # every #t3 video
        assert all("t3" in eng.state.table.tag_names(int(r)) for r in got.rows)
        assert all("#t3" in r for r in got.reasons)
    finally:
        eng.close()


def test_coengagement_survives_a_restart_from_snapshot(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    eng = Engine(make_settings(tmp_path, store=url)).open()
    eng.upsert_videos([video(i) for i in range(20)])
    eng.ingest([event("like", "a", "v1"), event("like", "a", "v2")])
    eng.snapshot()
    eng.ingest([event("like", "b", "v1"), event("like", "b", "v3")])
    expected = eng.state.coengagement.to_arrays()
    expected_pairs = {a: dict(n) for a, n in eng.state.coengagement.pairs.items()}
    eng.close()
    again = Engine(make_settings(tmp_path, store=url)).open()
    try:
        assert again.state.coengagement.pairs == expected_pairs
        got = again.state.coengagement.to_arrays()
        assert got.keys() == expected.keys()
        for name, values in expected.items():
            np.testing.assert_array_equal(got[name], values)
    finally:
        again.close()


@given(
    st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6), st.floats(0.0, 7200.0)), max_size=40)
)
def test_the_coengagement_arrays_restore_the_graph_exactly(
    steps: list[tuple[int, int, float]],
) -> None:
    """Any graph, the empty one too: neighbours in their order, weights and counts."""
    graph = CoEngagement(max_neighbours=3)
    for before, row, gap in steps:
        graph.add([(before, 0.0)], row, gap)
    restored = CoEngagement(max_neighbours=3)
    restored.load_arrays(graph.to_arrays())
    assert {a: list(n.items()) for a, n in restored.pairs.items()} == {
        a: list(n.items()) for a, n in graph.pairs.items()
    }
    assert restored.engagements == graph.engagements


def test_channel_figures_count_slots_and_engagements(tmp_path: Path) -> None:
    eng = _engine(tmp_path)
    try:
        feed = eng.feed("u9", n=5)
        liked = feed.items[0]
        eng.ingest(
            [
                event("impression", "u9", liked.video_id, request_id=feed.request_id),
                event("like", "u9", liked.video_id, request_id=feed.request_id),
            ]
        )
        figures = eng.channel_figures()
        slots = sum(c["slots"] for c in figures.values())
        assert slots == 5
        won = figures[liked.source]
        assert won["engagements"] == 1 and won["candidates"] > 0
        assert won["engagement_rate"] == 1 / won["slots"]
    finally:
        eng.close()
