"""The popular channel's lists: kept up to date from the rows written since the last
refresh, always equal to ranking every approved video again."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from reelrank.recall.popular import PopularLists
from reelrank.schema import EventType
from reelrank.state.catalog import VideoTable
from reelrank.state.counters import VideoCounters
from reelrank.state.popularity import HORIZONS, Popularity
from reelrank.types import FeedRequest, Query

T = 1_700_000_000.0
KINDS = [
    EventType.PLAY,
    EventType.FINISH,
    EventType.LIKE,
    EventType.SKIP,
    EventType.NOT_INTERESTED,
    EventType.REPORT,
]


def _query(table: VideoTable, pop: Popularity, size: int, now: float) -> Query:
    return Query(
        request=FeedRequest(user_id="u", n=10, request_id="r", now=now),
        table=table,
        counters=VideoCounters(half_life_s=3600.0),
        size=size,
        user=None,
        profile=None,
        follows=frozenset(),
        region=None,
        language=None,
        popularity=pop,
    )


def _by_definition(
    pop: Popularity, approved: np.ndarray, length: int
) -> tuple[list[int], list[int]]:
    """Every horizon's `length` best approved rows with a positive value (largest first,
    ties by row), interleaved rank by rank, each row once at its first place."""
    lists = []
    for j in range(len(HORIZONS)):
        rows = [r for r in range(len(approved)) if approved[r] and pop.values[r, j] > 0]
        rows.sort(key=lambda r: (-pop.values[r, j], r))
        lists.append(rows[:length])
    order: list[int] = []
    horizon: list[int] = []
    for depth in range(max(len(r) for r in lists)):
        for j, rows in enumerate(lists):
            if depth < len(rows) and rows[depth] not in order:
                order.append(rows[depth])
                horizon.append(j)
    return order, horizon


@settings(max_examples=300, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    steps=st.lists(
        st.sampled_from(["event"] * 12 + ["flip"] * 2 + ["grow"] * 2 + ["look"] * 4 + ["jump"]),
        min_size=100,
        max_size=200,
    ),
)
def test_the_kept_lists_answer_as_ranking_every_video_again(seed: int, steps: list[str]) -> None:
    """Whatever is written (engagements, skips and reports that push videos down),
    held, approved, added, or rebased meanwhile, every refresh equals the full ranking by
    definition; and a refresh with nothing new does not rank everything (a version that
    always ranks everything again, or never does, fails)."""
    rng = np.random.default_rng(seed)
    table = VideoTable(capacity=128)
    pop = Popularity(capacity=128)
    size = 40
    table.approved[:size] = rng.random(size) < 0.9
    lists = PopularLists(length=4, shortlist=6)
    now = T
    order = np.zeros(0, np.int64)
    for step in [*steps, "look"]:
        if step == "event":  # listed videos get most of the traffic, skips included
            listed = len(order) and rng.random() < 0.6
            row = int(rng.choice(order)) if listed else int(rng.integers(size))
            for _ in range(int(rng.integers(1, 4))):
                pop.add(row, KINDS[int(rng.integers(len(KINDS)))], now)
            now += float(rng.exponential(600.0))
        elif step == "flip":
            row = int(rng.integers(size))
            table.approved[row] = not table.approved[row]
        elif step == "grow" and size < 120:
            table.approved[size : size + 5] = True
            size += 5
            pop.ensure(size)
        elif step == "jump":  # far enough for the stored values to be rebased
            now += 300 * 3600.0
            pop.add(int(rng.integers(size)), EventType.LIKE, now)
        elif step == "look":
            order, horizon = lists(_query(table, pop, size, now))
            want = _by_definition(pop, table.approved[:size], 4)
            assert (order.tolist(), horizon.tolist()) == want
    looks = steps.count("look") + 1
    assert lists.full + lists.incremental == looks
    # A look right after another (nothing written between) never ranks everything again,
    # and the first look always does. (How many of the other looks merge instead of
    # ranking everything depends on the draw: skips can empty a shortlist.)
    seq = [*steps, "look"]
    again = sum(a == b == "look" for a, b in itertools.pairwise(seq))
    assert lists.full >= 1 and lists.incremental >= again


def test_a_refresh_with_nothing_written_ranks_nothing_again() -> None:
    table = VideoTable(capacity=16)
    table.approved[:10] = True
    pop = Popularity(capacity=16)
    for row in range(10):
        pop.add(row, EventType.LIKE, T + row)
    lists = PopularLists(length=3, shortlist=5)
    first = lists(_query(table, pop, 10, T + 20))
    again = lists(_query(table, pop, 10, T + 4000))  # time alone keeps every order
    assert [a.tolist() for a in first] == [b.tolist() for b in again]
    assert (lists.full, lists.incremental) == (1, 1)
    assert first[0][0] == 9  # the latest like is the hottest this hour
