"""Candidate lists: the recall view, the duplicate, seen and not-interested filters, and
the features a page keeps for its log, against plain-Python oracles."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from reelrank.engine import Engine
from reelrank.rank.signals import _weigh, _weigh_ids, rate_lifts, views
from reelrank.rerank.filters import DuplicateFilter
from reelrank.types import Candidates, FeedRequest, marked

from .conftest import event, make_settings, video


@st.composite
def candidate_lists(draw: Any) -> Candidates:
    """Channel parts in channel order, each a list of rows (repeats across and within)."""
    parts = draw(st.lists(st.lists(st.integers(0, 30), max_size=12), min_size=1, max_size=6))
    rows = [r for part in parts for r in part]
    source = [i for i, part in enumerate(parts) for _ in part]
    return Candidates(
        np.array(rows, np.int64), np.array(source, np.int16), np.full(len(rows), "r", object)
    )


@settings(max_examples=200, deadline=None)
@given(cands=candidate_lists())
def test_the_recall_view_names_every_channel_and_the_best_place(cands: Candidates) -> None:
    got = cands.with_recall_view()
    rows, source = cands.rows.tolist(), cands.source.tolist()
    assert got.channels is not None and got.position is not None
    for i, row in enumerate(rows):
        bits, best = 0, 1.0
        for j, other in enumerate(rows):
            if other != row:
                continue
            bits |= 1 << source[j]
            part = [k for k, s in enumerate(source) if s == source[j]]
            best = min(best, part.index(j) / max(len(part) - 1, 1))
        assert int(got.channels[i]) == bits
        assert float(got.position[i]) == best


@settings(max_examples=200, deadline=None)
@given(cands=candidate_lists())
def test_the_duplicate_filter_keeps_each_video_at_its_first_place(cands: Candidates) -> None:
    keep = DuplicateFilter().keep(None, cands)  # type: ignore[arg-type]
    seen: set[int] = set()
    want = []
    for row in cands.rows.tolist():
        want.append(row not in seen)
        seen.add(row)
    assert keep.tolist() == want


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(st.integers(0, 50), max_size=30),
    among=st.lists(st.integers(-3, 80), max_size=30),
)
def test_marked_rows_are_exactly_those_listed(rows: list[int], among: list[int]) -> None:
    got = marked(np.array(rows, np.int64), np.array(among, np.int64))
    assert got.tolist() == [r in set(among) for r in rows]


@given(
    st.lists(
        st.dictionaries(st.integers(0, 3000), st.floats(-5, 5, allow_nan=False), max_size=40),
        min_size=1,
        max_size=4,
    ),
    st.lists(st.integers(-1, 3000), max_size=64),
)
def test_a_vocabulary_lookup_weighs_each_id_as_the_binary_search_does(
    calls: list[dict[int, float]], values: list[int]
) -> None:
    """The id-indexed table gives every id its weight, 0 for ids without one and for -1,
    exactly as the binary search does, and is left zeroed: a call never sees an earlier
    call's weights (calls of growing ranges make the table grow between them)."""
    got = np.array(values, dtype=np.int32).reshape(-1, 1)
    for weights in calls:
        keys = np.array(sorted(weights), dtype=np.int64)
        vals = np.array([weights[k] for k in sorted(weights)], dtype=np.float64)
        assert np.array_equal(_weigh_ids(keys, vals, got), _weigh(keys, vals, got))
        want = [weights.get(v, 0.0) if v >= 0 else 0.0 for v in values]
        assert _weigh_ids(keys, vals, got)[:, 0].tolist() == want


def test_vocabulary_lookups_from_many_threads_each_see_only_their_own_weights() -> None:
    """Request threads share the id table: each lookup, run side by side with others
    writing other weights (and growing the table), gets exactly its own weights."""
    errors: list[str] = []

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(300):
            top = int(rng.integers(10, 20_000))
            keys = np.unique(rng.integers(0, top, 30)).astype(np.int64)
            vals = rng.random(len(keys)) + 1.0
            values = rng.integers(-1, top, (200, 8)).astype(np.int32)
            if not np.array_equal(_weigh_ids(keys, vals, values), _weigh(keys, vals, values)):
                errors.append(f"thread {seed}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch inside a lookup if anything lets them
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []


def test_a_page_keeps_features_for_its_log_only_when_it_is_recorded(tmp_path: Path) -> None:
    eng = Engine(make_settings(tmp_path)).open()
    try:
        eng.upsert_videos([video(i, hashtags=[f"t{i % 3}"]) for i in range(30)])
        eng.ingest([event("like", "u1", "v1"), event("finish", "u1", "v2")])
        unrecorded = eng.feed("u1", n=5, record=False)
        assert unrecorded.items and unrecorded.features == []
        page = eng.feed("u1", n=5)
        assert len(page.features) == len(page.items)
        for item, record in zip(page.items, page.features, strict=True):
            assert record["slots"]["video"] == item.video_id
            assert record["served_by"] == page.ranker
            assert record["hashtags"] == [f"t{int(item.video_id[1:]) % 3}"]
            assert len(record["dense"]) > 0 and record["heuristic"] == item.score
    finally:
        eng.close()


def test_signals_read_from_the_request_bundle_equal_signals_computed_afresh(
    tmp_path: Path,
) -> None:
    import time

    from reelrank.rank.features import extract
    from reelrank.types import FeedRequest

    eng = Engine(make_settings(tmp_path)).open()
    try:
        eng.upsert_videos(
            [video(i, hashtags=[f"t{i % 4}"], creator_id=f"c{i % 5}") for i in range(40)]
        )
        events = [event(k, "u1", f"v{i}") for i in range(0, 12, 2) for k in ("play", "finish")]
        events += [event("like", "u1", "v4"), event("play", "u2", "v5"), event("skip", "u2", "v7")]
        eng.ingest(events)

        now = time.time()

        def query() -> Any:  # the same request, hydrated afresh
            return eng.hydrate(FeedRequest(user_id="u1", n=10, request_id="r", now=now))

        rows = np.arange(40, dtype=np.int64)[::-1].copy()  # every video, in another order
        smoothing = eng.settings.smoothing_strength
        cands = Candidates(rows, np.zeros(40, np.int16), np.full(40, "r", object))
        shared = query()
        heuristic = eng.pipeline.scorer.score(shared, cands)  # makes the request's bundle
        assert "signals" in shared.cache
        np.testing.assert_array_equal(heuristic, eng.pipeline.scorer.score(query(), cands))
        subset = np.array([7, 3, 3, 31, 0], dtype=np.int64)  # a repeat too
        from_bundle = extract(shared, subset, smoothing).dense
        afresh = extract(query(), subset, smoothing).dense
        np.testing.assert_array_equal(from_bundle, afresh)
        assert np.abs(afresh).sum() > 0
        # rows outside the bundle are computed for themselves, and leave it as it was
        bundle = shared.cache["signals"]
        outside = np.array([3, 55], dtype=np.int64)
        eng.upsert_videos([video(i) for i in range(40, 60)])
        np.testing.assert_array_equal(
            extract(shared, outside, smoothing).dense, extract(query(), outside, smoothing).dense
        )
        assert shared.cache["signals"] is bundle
    finally:
        eng.close()


def test_the_scorers_reasons_name_what_the_rates_say(tmp_path: Path) -> None:
    """ "most viewers watch it to the end" and "often shared" go to the page's videos whose
    smoothed finish and share lifts (over 20 views or more) are high, and only to them;
    the figures are the ones the scorer used."""
    eng = Engine(make_settings(tmp_path, exploration_fraction=0.0)).open()
    try:
        eng.upsert_videos([video(i, creator_id=f"c{i}") for i in range(12)])
        events = []
        for u in range(30):
            events.append(event("impression", f"w{u}", "v0"))
            events.append(event("finish", f"w{u}", "v0"))  # everyone finishes v0
            events.append(event("impression", f"w{u}", "v1"))
            events.append(event("share", f"w{u}", "v1"))  # everyone shares v1
            events.append(event("impression", f"w{u}", "v2"))
            events.append(event("skip", f"w{u}", "v2"))  # everyone skips v2
        eng.ingest(events)
        page = eng.feed("fresh-viewer", n=12)
        query = eng.hydrate(FeedRequest("fresh-viewer", 12, "r", time.time()))
        table = eng.state.table
        rows = np.array([table.row_of(it.video_id) for it in page.items])
        seen = views(query, rows)
        lifts = rate_lifts(query, rows, eng.settings.smoothing_strength)
        by_id = {it.video_id: it.reasons for it in page.items}
        for k, it in enumerate(page.items):
            finished = "most viewers watch it to the end" in it.reasons
            shared = "often shared" in it.reasons
            assert finished == (seen[k] >= 20 and lifts["finish"][k] >= 1.3)
            assert shared == (seen[k] >= 20 and lifts["share"][k] >= 1.5)
        assert "most viewers watch it to the end" in by_id["v0"]
        assert "often shared" in by_id["v1"]
        assert not {"most viewers watch it to the end", "often shared"} & set(by_id["v2"])
    finally:
        eng.close()
