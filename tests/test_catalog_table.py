"""The catalog's columns in memory: a catalog loaded at once is the table its videos
upserted one by one would make, and stored records come back as the videos written."""

from __future__ import annotations

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from reelrank.schema import ReviewStatus, User, Video
from reelrank.state.catalog import MAX_TAGS, VideoTable

from .conftest import video

STATUSES = [s.value for s in ReviewStatus]


@st.composite
def catalogs(draw: st.DrawFn) -> list[tuple[int, Video]]:
    n = draw(st.integers(0, 30))
    rows = draw(st.lists(st.integers(0, 70), min_size=n, max_size=n))  # repeats: updates
    placed = []
    for i, row in enumerate(rows):
        tags = draw(st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), max_size=12))
        fields = {
            "creator_id": f"c{draw(st.integers(0, 5))}",
            "hashtags": [*tags, *(f"t{j}" for j in range(draw(st.integers(0, 3))))],
            "sound_id": draw(st.one_of(st.none(), st.sampled_from(["s1", "s2"]))),
            "region": draw(st.one_of(st.none(), st.sampled_from(["us", "br"]))),
            "language": draw(st.one_of(st.none(), st.sampled_from(["en", "pt"]))),
            "duration_ms": draw(st.integers(1_000, 600_000)),
            "status": draw(st.sampled_from(STATUSES)),
        }
        vid = draw(st.integers(0, 40))  # a video id may move rows too
        placed.append((row, Video.model_validate(video(f"{vid}-{i % 3}", **fields))))
    return placed


def _columns(t: VideoTable) -> dict[str, object]:
    n = t.size
    return {
        "size": n,
        "records": t.records[:n],
        "rows": dict(t.rows),
        "creators": list(t.creators.names),
        "sounds": list(t.sounds.names),
        "tags": list(t.tags.names),
        "regions": list(t.regions.names),
        "languages": list(t.languages.names),
        "arrays": [
            a[:n].tolist()
            for a in (
                *(t.creator, t.sound, t.region, t.language),
                *(t.created_at, t.duration_ms, t.approved, t.tag_ids),
            )
        ],
        "duration_sum_ms": t.duration_sum_ms,
        "by_creator": {k: t.by_creator.rows(k).tolist() for k in range(len(t.creators))},
        "by_sound": {k: t.by_sound.rows(k).tolist() for k in range(len(t.sounds))},
        "by_tag": {k: t.by_tag.rows(k).tolist() for k in range(len(t.tags))},
    }


@settings(max_examples=150, deadline=None)
@given(placed=catalogs(), suspended=st.sets(st.sampled_from(["c0", "c3"])))
def test_a_catalog_loaded_at_once_is_the_table_of_its_upserts(
    placed: list[tuple[int, Video]], suspended: set[str]
) -> None:
    one, bulk = VideoTable(capacity=4), VideoTable(capacity=4)
    for t in (one, bulk):
        for creator in sorted(suspended):
            t.suspend(creator, True)
    for row, v in placed:
        one.upsert(row, v)
    bulk.load(placed)
    assert _columns(bulk) == _columns(one)
    assert bulk.capacity >= bulk.size
    assert (bulk.tag_ids[: bulk.size] >= -1).all() and bulk.tag_ids.shape[1] == MAX_TAGS


def test_a_loaded_table_takes_later_upserts_as_any_table() -> None:
    placed = [(r, Video.model_validate(video(r, hashtags=["x", "y"]))) for r in range(5)]
    t = VideoTable(capacity=2)
    t.load(placed)
    t.upsert(2, Video.model_validate(video(2, hashtags=["z"], creator_id="c0")))
    assert t.by_tag.rows(t.tags.get("x")).tolist() == [0, 1, 3, 4]
    assert t.by_creator.rows(t.creators.get("c0")).tolist() == [0, 2]
    assert np.array_equal(t.approved[:5], [True] * 5)


@given(
    caption=st.text(max_size=50),
    tags=st.lists(st.from_regex(r"[a-z0-9_]{1,20}", fullmatch=True), max_size=5),
    status=st.sampled_from(STATUSES),
    reports=st.integers(0, 50),
)
def test_a_stored_video_reads_back_as_the_video_written(
    caption: str, tags: list[str], status: str, reports: int
) -> None:
    fields = {"caption": caption, "hashtags": tags, "status": status}
    v = Video.model_validate(video(1, **fields)).model_copy(update={"report_baseline": reports})
    raw = orjson.loads(orjson.dumps(v.model_dump(mode="json")))
    got = Video.stored(raw)
    assert got == v and got.report_baseline == reports
    assert got.model_fields_set == Video.model_construct(**raw).model_fields_set
    assert got.status is ReviewStatus(status)
    older = {k: x for k, x in raw.items() if k != "report_baseline"}  # before a field existed
    want = Video.model_construct(**{**older, "status": ReviewStatus(status)})
    assert Video.stored(older) == want and want.report_baseline == 0


@given(
    interests=st.lists(st.from_regex(r"[a-z]{1,10}", fullmatch=True), max_size=5),
    region=st.one_of(st.none(), st.just("br")),
)
def test_a_stored_user_reads_back_as_the_user_written(
    interests: list[str], region: str | None
) -> None:
    u = User.model_validate({"id": "u1", "interests": interests, "region": region})
    raw = orjson.loads(orjson.dumps(u.model_dump(mode="json")))
    got = User.stored(raw)
    assert got == u and got.model_fields_set == User.model_construct(**raw).model_fields_set
    older = {k: x for k, x in raw.items() if k != "interests"}  # before a field existed
    assert User.stored(older) == User.model_construct(**older)
    assert User.stored(older).interests == []
