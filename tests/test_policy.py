"""The policy selector: diversity, daily fatigue caps and exploration slots."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reelrank.engine import Engine
from reelrank.rerank.policy import CONTENT_SIM_FLOOR, PolicySelector, Similarity
from reelrank.types import Candidates, FeedRequest

from .conftest import make_settings, video

CHANNELS = ["following", "interest", "trending", "fresh", "explore"]


def _engine(tmp_path: Path, catalog: list[dict[str, Any]], **overrides: Any) -> Engine:
    eng = Engine(make_settings(tmp_path, **overrides)).open()
    eng.upsert_videos(catalog)
    return eng


def _query(eng: Engine, user: str = "u1", now: float | None = None):  # type: ignore[no-untyped-def]
    req = FeedRequest(user_id=user, n=10, request_id=f"r{time.time_ns()}", now=now or time.time())
    return eng.hydrate(req)


@st.composite
def pages(draw: Any) -> tuple[list[dict[str, Any]], list[float], list[int], int]:
    m = draw(st.integers(1, 40))
    catalog = [
        video(
            i,
            creator_id=draw(st.sampled_from(["c0", "c1", "c2"])),
            sound_id=draw(st.one_of(st.none(), st.sampled_from(["s0", "s1"]))),
            hashtags=draw(st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), max_size=3)),
        )
        for i in range(m)
    ]
    scores = draw(st.lists(st.floats(-5, 5), min_size=m, max_size=m))
    sources = draw(st.lists(st.integers(0, len(CHANNELS) - 1), min_size=m, max_size=m))
    n = draw(st.integers(1, 15))
    return catalog, scores, sources, n


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(page=pages(), lam=st.sampled_from([0.0, 0.3, 1.0]), fraction=st.sampled_from([0, 0.1, 0.5]))
def test_pages_keep_the_hard_rules_caps_and_slots(
    tmp_path_factory: Any, page: Any, lam: float, fraction: float
) -> None:
    catalog, scores, sources, n = page
    eng = _engine(tmp_path_factory.mktemp("p"), catalog)
    try:
        q = _query(eng)
        rows = np.array([eng.state.table.row_of(v["id"]) for v in catalog], dtype=np.int64)
        cands = Candidates(rows, np.array(sources, np.int16), np.full(len(rows), "r", object))
        kw = dict(
            diversity_lambda=lam, fatigue_creator_per_day=4, fatigue_tag_per_day=5,
            exploration_fraction=fraction, exploration_positions=[1, 3],
        )  # fmt: skip
        sel = PolicySelector(CHANNELS, strict_caps=True, **kw).select(  # type: ignore[arg-type]
            q, cands, np.array(scores), n
        )
        relaxed = PolicySelector(CHANNELS, **kw).select(q, cands, np.array(scores), n)  # type: ignore[arg-type]
        # Without strict caps the page is the same until the caps leave nothing, then goes
        # on without them; the hard rules (no creator or sound twice in a row) still hold.
        full = relaxed.picked.tolist()
        assert full[: len(sel.picked)] == sel.picked.tolist()
        assert len(set(full)) == len(full) <= n
        if len(full) > len(sel.picked):
            assert len(sel.picked) < n
        for a, b in itertools.pairwise([catalog[i] for i in full]):
            assert a["creator_id"] != b["creator_id"]
            assert a["sound_id"] is None or a["sound_id"] != b["sound_id"]
        picked = sel.picked.tolist()
        assert len(picked) <= n and len(set(picked)) == len(picked)
        assert len(sel.exploration) == len(picked)
        chosen = [catalog[i] for i in picked]
        for a, b in itertools.pairwise(chosen):
            assert a["creator_id"] != b["creator_id"]
            assert a["sound_id"] is None or a["sound_id"] != b["sound_id"]
        for c in {v["creator_id"] for v in chosen}:
            assert sum(v["creator_id"] == c for v in chosen) <= 4
        for t in "abcde":
            assert sum(t in v["hashtags"] for v in chosen) <= 5
        for pos, explored in enumerate(sel.exploration):
            if explored:  # a slot past the end of a short page takes its last place
                assert pos in {min(p, n - 1) for p in (1, 3)}
                assert CHANNELS[sources[picked[pos]]] in ("fresh", "explore")
    finally:
        eng.close()


def test_diversity_spreads_hashtags_across_the_page(tmp_path: Path) -> None:
    catalog = [
        video(i, creator_id=f"c{i}", sound_id=None, hashtags=[f"t{i % 4}"]) for i in range(40)
    ]
    eng = _engine(tmp_path, catalog)
    try:
        q = _query(eng)
        rows = np.array([eng.state.table.row_of(v["id"]) for v in catalog], dtype=np.int64)
        cands = Candidates(rows, np.zeros(40, np.int16), np.full(40, "r", object))
        # Scores favour #t0 heavily; without diversity the page is all #t0.
        scores = np.array([2.0 if i % 4 == 0 else 1.0 for i in range(40)]) + np.arange(40) * 1e-3
        plain = PolicySelector(CHANNELS, diversity_lambda=0.0, exploration_fraction=0)
        mixed = PolicySelector(CHANNELS, diversity_lambda=1.5, exploration_fraction=0)

        def tags_on_page(sel: PolicySelector) -> set[str]:
            picked = sel.select(q, cands, scores, 8).picked
            return {catalog[i]["hashtags"][0] for i in picked.tolist()}

        assert tags_on_page(plain) == {"t0"}
        assert len(tags_on_page(mixed)) >= 3
    finally:
        eng.close()


def test_diversity_also_sees_content_embeddings(tmp_path: Path) -> None:
    """Eleven videos with no creator, sound or hashtag in common: six with the same
    caption score highest. Only the content embeddings tell the MMR they are alike."""
    same = "sourdough bread baking at home"
    others = ["football goals", "cat sleeping", "mountain hike", "guitar lesson", "city night"]
    catalog = [
        video(i, creator_id=f"c{i}", sound_id=None, hashtags=[], caption=same) for i in range(6)
    ] + [
        video(6 + i, creator_id=f"c{6 + i}", sound_id=None, hashtags=[], caption=cap)
        for i, cap in enumerate(others)
    ]
    eng = _engine(tmp_path, catalog)
    try:
        q = _query(eng)
        rows = np.array([eng.state.table.row_of(v["id"]) for v in catalog], dtype=np.int64)
        m = len(rows)
        cands = Candidates(rows, np.zeros(m, np.int16), np.full(m, "r", object))
        scores = np.array([2.0 - 0.01 * i for i in range(6)] + [1.945 - 0.01 * i for i in range(5)])

        def alike_on_page(lam: float) -> list[bool]:
            sel = PolicySelector(
                CHANNELS, diversity_lambda=lam, exploration_fraction=0, content=eng.state.content
            )
            return [i < 6 for i in sel.select(q, cands, scores, 6).picked.tolist()]

        assert alike_on_page(0.0) == [True] * 6
        mixed = alike_on_page(1.0)
        assert 1 <= sum(mixed) <= 3
        assert not any(a and b for a, b in itertools.pairwise(mixed))  # never two in a row
    finally:
        eng.close()


def test_strict_fatigue_caps_hold_across_a_day_of_feeds(tmp_path: Path) -> None:
    catalog = [video(i, creator_id=f"c{i % 3}", hashtags=[f"t{i % 5}"]) for i in range(90)]
    eng = _engine(
        tmp_path,
        catalog,
        fatigue_creator_per_day=7,
        fatigue_strict=True,
        exploration_fraction=0.0,
    )
    try:
        served = [it.video_id for _ in range(6) for it in eng.feed("u1", n=10).items]
        creators = [eng.video_detail(v)["video"]["creator_id"] for v in served]
        assert 0 < len(served) <= 21  # three creators, seven each, then nothing is left
        for c in set(creators):
            assert creators.count(c) <= 7
        # A new day resets the counts (served counts belong to the day they were served).
        user = eng.state.users["u1"]
        assert sum(user.served_creators.values()) == len(served)
        assert eng.pipeline.selector._today(_query(eng, now=time.time() + 86400), "creator", 0) == 0
    finally:
        eng.close()


def test_by_default_fatigue_caps_never_empty_a_page(tmp_path: Path) -> None:
    """The same day of feeds without strict caps: once the caps leave no candidate, pages
    go on without them instead of coming back short (a repeat beats an empty feed)."""
    catalog = [video(i, creator_id=f"c{i % 3}", hashtags=[f"t{i % 5}"]) for i in range(90)]
    eng = _engine(tmp_path, catalog, fatigue_creator_per_day=7, exploration_fraction=0.0)
    try:
        pages = [[it.video_id for it in eng.feed("u1", n=10).items] for _ in range(6)]
        assert [len(page) for page in pages] == [10] * 6
        assert len({v for page in pages for v in page}) == 60
        creators = [eng.video_detail(v)["video"]["creator_id"] for v in pages[0]]
        for c in set(creators):  # within the caps while they leave a choice
            assert creators.count(c) <= 7
    finally:
        eng.close()


def test_exploration_slots_are_labelled_in_the_reasons(tmp_path: Path) -> None:
    catalog = [video(i, creator_id=f"c{i}", hashtags=[f"t{i % 7}"]) for i in range(300)]
    eng = _engine(
        tmp_path / "plain",
        catalog,
        exploration_fraction=0.2,
        exploration_positions=[2, 5],
        recall_quotas={"pool": 0},
    )
    try:
        items = eng.feed("u1", n=10).items
        labelled = [i for i, it in enumerate(items) if any("exploration" in r for r in it.reasons)]
        assert labelled == [2, 5]
        assert all(items[i].source in ("fresh", "explore") for i in labelled)
    finally:
        eng.close()


def test_exploration_slots_go_to_videos_owed_pool_impressions_first(tmp_path: Path) -> None:
    catalog = [video(i, creator_id=f"c{i}", hashtags=[f"t{i % 7}"]) for i in range(300)]
    eng = _engine(tmp_path, catalog, exploration_fraction=0.2, exploration_positions=[2, 5])
    try:
        items = eng.feed("u1", n=10).items
        assert [items[i].source for i in (2, 5)] == ["pool", "pool"]
        assert all(
            "new video being tested with a first audience" in items[i].reasons for i in (2, 5)
        )
        # The pool's own reason says why; no generic exploration label is added.
        assert not any("exploration" in r for it in items for r in it.reasons)
    finally:
        eng.close()


def test_the_engine_wires_its_indexes_into_the_stages_that_read_them(tmp_path: Path) -> None:
    """Indexes reach a stage through its constructor: the engine's own, not a copy or none."""
    eng = _engine(tmp_path, [video(i) for i in range(3)])
    try:
        by_name = {s.name: s for s in eng.pipeline.sources}
        assert eng.pipeline.selector.content is eng.state.content
        assert by_name["content"].index is eng.state.content  # type: ignore[attr-defined]
        assert by_name["pool"].pools is eng.state.pools  # type: ignore[attr-defined]
        assert by_name["two_tower"].retrieval is eng.retrieval  # type: ignore[attr-defined]
        assert by_name["sequence"].retrieval is eng.sequence  # type: ignore[attr-defined]
        assert eng.pipeline.ranker.sequence is eng.sequence
    finally:
        eng.close()


@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.sets(st.integers(0, 6), max_size=4)),
        min_size=1,
        max_size=12,
    ),
    st.integers(0, 2**32 - 1),
)
def test_a_similarity_row_is_the_pairwise_definition(
    videos: list[tuple[int, set[int]]], seed: int
) -> None:
    """A pick's similarity to each candidate: 1 for the same creator, else the larger of
    the hashtags' Jaccard overlap and the rescaled content cosine (the pool's matrix,
    counting overlaps on the hashtags two candidates share)."""
    n = len(videos)
    creator = np.array([c for c, _ in videos])
    tags = np.full((n, 4), -1, np.int64)
    for i, (_, ts) in enumerate(videos):
        tags[i, : len(ts)] = sorted(ts)
    rng = np.random.default_rng(seed)
    vecs = rng.normal(size=(n, 8)).astype(np.float32)
    vecs[n // 2] = vecs[0]  # a near-duplicate pair
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    sim = Similarity(creator, tags, vecs)
    for i in range(n):
        row = sim.row(i)
        for j in range(n):
            a, b = videos[i][1], videos[j][1]
            jaccard = len(a & b) / len(a | b) if a | b else 0.0
            cos = float(vecs[i] @ vecs[j])
            content = min(max((cos - CONTENT_SIM_FLOOR) / (1 - CONTENT_SIM_FLOOR), 0.0), 1.0)
            want = 1.0 if creator[i] == creator[j] else max(jaccard, content)
            assert abs(float(row[j]) - want) < 1e-5, (i, j)
