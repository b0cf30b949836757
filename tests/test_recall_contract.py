"""The recall-source contract, checked for every default source, then each source's job."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from reelrank.engine import Engine
from reelrank.recall import RecallSource, default_sources
from reelrank.types import FeedRequest, Query, Recalled

from .conftest import event, make_settings, train_retrieval, video

SOURCE_NAMES = [s.name for s in default_sources(0.01)]
BASE_T = 1_700_000_000.0


def source(name: str, eng: Engine) -> RecallSource:
    """A new instance over `eng`'s pools and indexes, so cached lists never carry over
    between calls."""
    sources = default_sources(0.01, eng.state.pools, eng.retrieval, eng.sequence, eng.state.content)
    (found,) = [s for s in sources if s.name == name]
    return found


def query(
    eng: Engine, user: str = "u1", request_id: str = "req-1", now: float | None = None, **kw: Any
) -> Query:
    now = time.time() if now is None else now
    return eng.hydrate(FeedRequest(user_id=user, n=10, request_id=request_id, now=now, **kw))


def recall(eng: Engine, name: str, quota: int, user: str = "u1", **kw: Any) -> Recalled:
    return source(name, eng).recall(query(eng, user, **kw), quota)


def ids(eng: Engine, rows: np.ndarray) -> list[str]:
    return [eng.state.table.video(int(r)).id for r in rows]


def ingest(eng: Engine, events: list[dict[str, Any]]) -> None:
    result = eng.ingest(events)
    assert result.rejected == [] and result.accepted == len(events)


@pytest.fixture
def new_engine(tmp_path: Path) -> Iterator[Callable[..., Engine]]:
    opened: list[Engine] = []

    def make(**overrides: Any) -> Engine:
        eng = Engine(make_settings(tmp_path / f"e{len(opened)}", **overrides)).open()
        opened.append(eng)
        return eng

    yield make
    for eng in opened:
        eng.close()


def catalog() -> list[dict[str, Any]]:
    """30 videos: 5 creators, three hashtag mixes, two regions and languages, shuffled
    creation times, every fifth one held for review (caption with a banned term)."""
    order = [7, 2, 29, 11, 0, 18, 25, 4, 13, 21, 9, 27, 1, 16, 6]
    order += [x for x in range(30) if x not in order]
    tags = [["cats"], ["dogs"], ["food", "cats"]]
    return [
        video(
            i,
            creator_id=f"c{i % 5}",
            hashtags=tags[i % 3],
            region="us" if i % 2 else "br",
            language="en" if i % 2 else "pt",
            caption="buy spam now" if i % 5 == 4 else f"clip {i}",
            created_at=BASE_T + 60 * order.index(i),
        )
        for i in range(30)
    ]


@pytest.fixture
def loaded(new_engine: Callable[..., Engine], request: pytest.FixtureRequest) -> Engine:
    """A catalog plus a user u1 who follows, likes, shares and has a profile; for the
    two-tower and sequence channels, also models trained on served traffic; for the
    related channel, a fitted related-videos model."""
    callspec = getattr(request.node, "callspec", None)
    name = callspec.params.get("name") if callspec is not None else None
    # Any age gets a traffic pool, so the pool channel has videos to offer.
    eng = new_engine(banned_terms=["spam"], model_min_examples=1, pool_max_age_h=0)
    results = eng.upsert_videos(catalog())
    assert all("error" not in r for r in results)
    eng.upsert_users([{"id": "u1", "region": "br", "language": "pt", "interests": ["food"]}])
    eng.add_follows([{"user_id": "u1", "creator_id": "c1"}])
    ingest(
        eng,
        [event("like", "u1", f"v{i}") for i in (0, 3, 6)]
        + [event("share", f"x{j}", "v12") for j in range(4)]
        + [event("like", f"x{j}", "v8") for j in range(3)],
    )
    if name in ("two_tower", "sequence"):
        train_retrieval(eng, ["u1", "x0", "x1", "x2"])
    if name == "related":
        # others who engaged with u1's v0 also shared v12 and liked v8; fit at once
        ingest(eng, [event("finish", f"x{j}", "v0") for j in range(4)])
        assert eng.state.related.refit(force=True, throttle=False)
    return eng


# -- the contract, for every source ---------------------------------------------------------


def check_contract(q: Query, got: Recalled, quota: int) -> None:
    assert isinstance(got.rows, np.ndarray)
    assert got.rows.dtype == np.int64
    assert got.rows.ndim == 1
    assert len(got.rows) <= quota
    if len(got.rows):
        assert got.rows.min() >= 0
        assert got.rows.max() < q.size
    assert len(got.reasons) == len(got.rows)
    assert all(isinstance(r, str) and r.strip() for r in got.reasons)


@pytest.mark.parametrize("name", SOURCE_NAMES)
@pytest.mark.parametrize("quota", [1, 3, 7, 50, 1000])
def test_contract_on_a_loaded_catalog(loaded: Engine, name: str, quota: int) -> None:
    q = query(loaded)
    got = source(name, loaded).recall(q, quota)
    check_contract(q, got, quota)
    assert len(got.rows) >= 1  # u1 has something for every channel


@pytest.mark.parametrize("name", SOURCE_NAMES)
def test_contract_for_a_cold_unknown_user(loaded: Engine, name: str) -> None:
    q = query(loaded, user="stranger")
    got = source(name, loaded).recall(q, 5)
    check_contract(q, got, 5)


def late_video(i: int) -> dict[str, Any]:
    """A video that would suit u1 in every channel, added after the catalog."""
    return video(
        f"late{i}",
        creator_id="c1",
        hashtags=["cats", "food"],
        region="br",
        language="pt",
        created_at=time.time() + i,
    )


@pytest.mark.parametrize("name", SOURCE_NAMES)
def test_rows_stay_below_the_query_size(loaded: Engine, name: str) -> None:
    """Videos added after hydration are beyond `size`: no source may return them."""
    q = query(loaded)
    size = q.size
    loaded.upsert_videos([late_video(i) for i in range(20)])
    ingest(loaded, [event("share", f"y{j}", "vlate0") for j in range(5)])
    assert loaded.state.table.size == size + 20
    got = source(name, loaded).recall(q, 1000)
    check_contract(q, got, 1000)
    assert (got.rows < size).all()


@pytest.mark.parametrize(
    "name",
    SOURCE_NAMES,
)
def test_a_shared_source_respects_each_querys_size(loaded: Engine, name: str) -> None:
    """Two requests in flight: one hydrated before videos were added, one after. The
    later one recalls first; the earlier one must still only get rows below its size."""
    shared = source(name, loaded)
    now = time.time()  # both at the same instant: a list cached for one is fresh for both
    early = query(loaded, request_id="early", now=now)
    loaded.upsert_videos([late_video(i) for i in range(20)])
    ingest(loaded, [event("share", f"y{j}", "vlate0") for j in range(5)])
    late = query(loaded, request_id="late", now=now)
    assert late.size == early.size + 20
    check_contract(late, shared.recall(late, 1000), 1000)
    got = shared.recall(early, 1000)
    check_contract(early, got, 1000)


@pytest.mark.parametrize("name", SOURCE_NAMES)
def test_empty_catalog_gives_no_rows(new_engine: Callable[..., Engine], name: str) -> None:
    eng = new_engine()
    eng.upsert_users([{"id": "u1", "region": "br", "language": "pt", "interests": ["cats"]}])
    eng.add_follows([{"user_id": "u1", "creator_id": "c1"}])
    q = query(eng)
    assert q.size == 0
    got = source(name, eng).recall(q, 10)
    check_contract(q, got, 10)
    assert len(got.rows) == 0
    assert len(got.reasons) == 0


# -- following -----------------------------------------------------------------------------


def test_following_returns_only_followed_creators_newest_first(
    new_engine: Callable[..., Engine],
) -> None:
    eng = new_engine()
    times = {"a1": 5, "a2": 1, "a3": 9, "a4": 3, "b1": 8, "b2": 2}
    eng.upsert_videos(
        [video(v, creator_id=f"creator-{v[0]}", created_at=BASE_T + t) for v, t in times.items()]
    )
    eng.add_follows([{"user_id": "u1", "creator_id": "creator-a"}])
    got = recall(eng, "following", 100)
    assert ids(eng, got.rows) == ["va3", "va1", "va4", "va2"]
    assert all("creator-a" in r for r in got.reasons)
    # Over quota: the newest ones are kept.
    assert ids(eng, recall(eng, "following", 2).rows) == ["va3", "va1"]
    # Someone who follows nobody gets nothing.
    assert len(recall(eng, "following", 100, user="u2").rows) == 0


def test_following_over_quota_keeps_the_newest_across_creators(
    new_engine: Callable[..., Engine],
) -> None:
    eng = new_engine()
    times = {"a1": 1, "a2": 4, "a3": 6, "b1": 2, "b2": 3, "b3": 5, "z1": 10}
    eng.upsert_videos(
        [video(v, creator_id=f"creator-{v[0]}", created_at=BASE_T + t) for v, t in times.items()]
    )
    eng.add_follows(
        [{"user_id": "u1", "creator_id": "creator-a"}, {"user_id": "u1", "creator_id": "creator-b"}]
    )
    got = recall(eng, "following", 3)
    assert ids(eng, got.rows) == ["va3", "vb3", "va2"]
    everything = recall(eng, "following", 100)
    assert sorted(ids(eng, everything.rows)) == ["va1", "va2", "va3", "vb1", "vb2", "vb3"]


def test_following_is_newest_first_across_creators(new_engine: Callable[..., Engine]) -> None:
    eng = new_engine()
    # Interleaved times: whichever creator comes first, grouping breaks the order.
    times = {"a1": 1, "a2": 4, "b1": 2, "b2": 3}
    eng.upsert_videos(
        [video(v, creator_id=f"creator-{v[0]}", created_at=BASE_T + t) for v, t in times.items()]
    )
    eng.add_follows(
        [{"user_id": "u1", "creator_id": "creator-a"}, {"user_id": "u1", "creator_id": "creator-b"}]
    )
    assert ids(eng, recall(eng, "following", 100).rows) == ["va2", "vb2", "vb1", "va1"]


def test_following_sees_a_video_moved_to_another_creator(
    new_engine: Callable[..., Engine],
) -> None:
    eng = new_engine()
    eng.upsert_videos([video(i, creator_id="ca", created_at=BASE_T + i) for i in range(3)])
    eng.add_follows([{"user_id": "u1", "creator_id": "ca"}])
    eng.upsert_videos([video(1, creator_id="cb", created_at=BASE_T + 1)])
    assert ids(eng, recall(eng, "following", 10).rows) == ["v2", "v0"]


def test_following_in_the_loaded_catalog(loaded: Engine) -> None:
    got = recall(loaded, "following", 100)
    assert sorted(ids(loaded, got.rows)) == sorted(f"v{i}" for i in range(30) if i % 5 == 1)
    created = loaded.state.table.created_at[got.rows]
    assert (np.diff(created) <= 0).all()


# -- interest ------------------------------------------------------------------------------


def test_interest_follows_the_hashtag_the_user_liked(new_engine: Callable[..., Engine]) -> None:
    eng = new_engine()
    vids = [video("liked", creator_id="solo", hashtags=["cats"], sound_id=None)]
    vids += [video(f"cat{i}", hashtags=["cats", f"t{i}"]) for i in range(5)]
    vids += [video(f"dog{i}", hashtags=["dogs"]) for i in range(5)]
    eng.upsert_videos(vids)
    ingest(eng, [event("share", f"x{j}", "vcat3") for j in range(3)])
    ingest(eng, [event("like", "u1", "vliked")])

    got = recall(eng, "interest", 100)
    found = ids(eng, got.rows)
    assert set(found) == {"vliked"} | {f"vcat{i}" for i in range(5)}
    assert all("cats" in eng.state.table.tag_names(int(r)) for r in got.rows)
    assert found[0] == "vcat3"  # the hottest video under the tag comes first
    assert any("#cats" in r for r in got.reasons)
    # A user with no events and no interests gets nothing from this channel.
    assert len(recall(eng, "interest", 100, user="nobody").rows) == 0


def test_interest_uses_onboarding_interests_without_events(
    new_engine: Callable[..., Engine],
) -> None:
    eng = new_engine()
    eng.upsert_videos(
        [video(f"cat{i}", hashtags=["cats"]) for i in range(4)]
        + [video(f"dog{i}", hashtags=["dogs", "pets"]) for i in range(4)]
    )
    eng.upsert_users([{"id": "newbie", "interests": ["#Dogs", "unknown-tag"]}])
    got = recall(eng, "interest", 100, user="newbie")
    assert sorted(ids(eng, got.rows)) == [f"vdog{i}" for i in range(4)]
    assert all("#dogs" in r for r in got.reasons)
    assert query(eng, user="newbie").is_cold


def test_interest_quota_is_respected_with_many_keys(loaded: Engine) -> None:
    for quota in (1, 2, 5):
        got = recall(loaded, "interest", quota)
        assert 1 <= len(got.rows) <= quota


# -- trending ------------------------------------------------------------------------------


def test_trending_puts_the_most_engaged_video_first(new_engine: Callable[..., Engine]) -> None:
    eng = new_engine()
    eng.upsert_videos([video(i) for i in range(10)])
    ingest(
        eng,
        [event("share", f"x{j}", "v6") for j in range(5)]
        + [event("like", f"x{j}", "v2") for j in range(4)]
        + [event("like", "x0", "v8")],
    )
    got = recall(eng, "trending", 10)
    assert ids(eng, got.rows)[:3] == ["v6", "v2", "v8"]
    assert set(got.reasons) == {"trending now"}


def test_trending_never_lists_held_videos(new_engine: Callable[..., Engine]) -> None:
    eng = new_engine(banned_terms=["spam"])
    eng.upsert_videos([video(i) for i in range(5)] + [video("bad", caption="spam deal")])
    assert eng.state.table.video(5).status.value == "pending_review"
    ingest(eng, [event("share", f"x{j}", "vbad") for j in range(10)])
    got = recall(eng, "trending", 100)
    assert "vbad" not in ids(eng, got.rows)
    assert len(got.rows) == 5


@pytest.mark.parametrize("via", ["profile", "request"])
def test_trending_lists_honour_the_users_region_and_language(loaded: Engine, via: str) -> None:
    """A third of the quota is popular in the user's region, a third in their language
    (when known), the rest everywhere: the cold-start feed's popular part."""
    user, kw = ("u1", {}) if via == "profile" else ("stranger", {"region": "br"})
    quota = 6
    got = recall(loaded, "trending", quota, user=user, **kw)
    table = loaded.state.table
    reasons = list(got.reasons)
    regional = [i for i, r in enumerate(reasons) if r == "popular in your region (br)"]
    assert regional == [0, 1]
    br = table.regions.get("br")
    assert all(table.region[got.rows[i]] == br for i in regional)
    lingual = [i for i, r in enumerate(reasons) if r == "popular in your language (pt)"]
    if via == "profile":  # u1's profile says pt; the stranger's request names no language
        assert lingual == [2, 3]
        pt = table.languages.get("pt")
        assert all(table.language[got.rows[i]] == pt for i in lingual)
    else:
        assert lingual == []
    rest = len(regional) + len(lingual)
    assert set(reasons[rest:]) == {"trending now"}
    assert len(got.rows) == quota
    # The regional part is the hottest br videos: v12 (4 shares) leads it.
    assert ids(loaded, got.rows[:1]) == ["v12"]
    hot = loaded.state.counters.hotness[got.rows[:2]]
    assert (np.diff(hot) <= 0).all()


def test_trending_for_a_region_without_videos_is_global(loaded: Engine) -> None:
    got = recall(loaded, "trending", 4, user="stranger", region="jp")
    assert set(got.reasons) == {"trending now"}
    assert len(got.rows) == 4
    assert ids(loaded, got.rows[:2]) == ["v12", "v8"]


# -- fresh ---------------------------------------------------------------------------------


def test_fresh_returns_newest_first(new_engine: Callable[..., Engine]) -> None:
    eng = new_engine()
    times = [40, 10, 90, 70, 20, 60]
    eng.upsert_videos([video(i, created_at=BASE_T + t) for i, t in enumerate(times)])
    got = recall(eng, "fresh", 4)
    assert ids(eng, got.rows) == ["v2", "v3", "v5", "v0"]
    assert set(got.reasons) == {"new video"}


def test_fresh_in_the_loaded_catalog_is_approved_and_prefers_the_language(
    loaded: Engine,
) -> None:
    table = loaded.state.table
    # No language: strictly newest approved first.
    got = recall(loaded, "fresh", 100, user="stranger")
    assert len(got.rows) == 24  # 30 minus the 6 held ones
    assert table.approved[got.rows].all()
    assert (np.diff(table.created_at[got.rows]) <= 0).all()
    # u1 speaks pt: pt videos first, each group newest first.
    got = recall(loaded, "fresh", 100)
    pt = table.languages.get("pt")
    is_pt = table.language[got.rows] == pt
    n_pt = int(is_pt.sum())
    assert n_pt > 0 and is_pt[:n_pt].all() and not is_pt[n_pt:].any()
    assert (np.diff(table.created_at[got.rows[:n_pt]]) <= 0).all()
    assert (np.diff(table.created_at[got.rows[n_pt:]]) <= 0).all()


# -- explore -------------------------------------------------------------------------------


def test_explore_returns_only_approved_videos(new_engine: Callable[..., Engine]) -> None:
    eng = new_engine(banned_terms=["spam"])
    eng.upsert_videos([video(i, caption="spam offer" if i % 2 else f"clip {i}") for i in range(40)])
    table = eng.state.table
    assert int(table.approved[:40].sum()) == 20
    for k in range(10):
        got = recall(eng, "explore", 10, request_id=f"req-{k}")
        assert table.approved[got.rows].all()
        assert len(got.rows) <= 10
        assert len(set(got.rows.tolist())) == len(got.rows)
    got = recall(eng, "explore", 10, request_id="req-fixed")
    assert len(got.rows) >= 1
    assert all(not eng.state.table.video(int(r)).caption.startswith("spam") for r in got.rows)


def test_explore_with_everything_held_is_empty(new_engine: Callable[..., Engine]) -> None:
    eng = new_engine(banned_terms=["spam"])
    eng.upsert_videos([video(i, hashtags=["spam"]) for i in range(10)])
    assert len(recall(eng, "explore", 10).rows) == 0


def test_explore_is_deterministic_per_request(loaded: Engine) -> None:
    a = recall(loaded, "explore", 8, request_id="same")
    b = recall(loaded, "explore", 8, request_id="same")
    assert a.rows.tolist() == b.rows.tolist()


# -- the pipeline fails open ---------------------------------------------------------------


class Broken:
    def __init__(self, name: str) -> None:
        self.name = name

    def recall(self, query: Query, quota: int) -> Recalled:
        raise RuntimeError(f"{self.name} is down")


class OutOfRange:
    def __init__(self, name: str) -> None:
        self.name = name

    def recall(self, query: Query, quota: int) -> Recalled:
        return Recalled.of(np.array([0, query.size + 5]), "bogus")


class Greedy:
    def __init__(self, name: str) -> None:
        self.name = name

    def recall(self, query: Query, quota: int) -> Recalled:
        rows = np.arange(query.size, dtype=np.int64)
        return Recalled(np.concatenate([rows] * 10), np.full(10 * query.size, "all", object))


def _swap(eng: Engine, name: str, replacement: Any) -> None:
    i = [s.name for s in eng.pipeline.sources].index(name)
    eng.pipeline.sources[i] = replacement


def _metric(eng: Engine, metric: str, name: str) -> float | None:
    return eng.metrics.registry.get_sample_value(metric, {"source": name})


@pytest.mark.parametrize("name", SOURCE_NAMES)
@pytest.mark.parametrize("kind", [Broken, OutOfRange])
def test_a_failing_source_thins_the_feed_but_never_fails_it(
    loaded: Engine, name: str, kind: type
) -> None:
    failures = "reelrank_recall_failures_total"
    assert not _metric(loaded, failures, name)
    _swap(loaded, name, kind(name))
    for _ in range(2):
        feed = loaded.feed("u1", n=5)
        assert len(feed.items) >= 1
        assert all(item.source != name for item in feed.items)
    assert _metric(loaded, failures, name) == 2.0
    others = [s for s in SOURCE_NAMES if s != name]
    assert all(not _metric(loaded, failures, s) for s in others)


def test_the_pipeline_caps_a_source_at_its_quota(loaded: Engine) -> None:
    quota = loaded.settings.recall_quotas["explore"]
    assert 0 < quota < 10 * loaded.state.table.size
    _swap(loaded, "explore", Greedy("explore"))
    loaded.feed(f"u-{uuid.uuid4().hex}", n=5)
    assert _metric(loaded, "reelrank_recall_candidates_total", "explore") == quota
    assert not _metric(loaded, "reelrank_recall_failures_total", "explore")


def test_an_expensive_cached_list_is_refreshed_off_the_request_path(loaded: Engine) -> None:
    from reelrank.recall.base import Cached

    release = threading.Event()
    calls: list[int] = []

    def compute(q: Query) -> int:
        calls.append(q.size)
        if len(calls) > 1:
            release.wait(10)  # a slow recomputation
        return len(calls)

    cached = Cached(0.0, compute)  # always stale
    cached.INLINE_S = 0.0  # every computation counts as expensive
    q = query(loaded)
    assert cached.get(q) == 1  # nothing yet: computed by the request
    assert cached.get(q) == 1  # stale: the previous value at once, recomputed aside
    assert cached.get(q) == 1  # one recomputation at a time
    deadline = time.monotonic() + 10
    while len(calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(calls) == 2
    release.set()
    while cached.get(q) == 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cached.get(q) >= 2
