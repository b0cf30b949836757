"""Content understanding: the embedders, and the content-similarity channel that lets a
brand-new video reach the people whose history matches it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reelrank.content.embed import HashedEmbedder, make_embedder, minilm_available
from reelrank.engine import Engine
from reelrank.errors import ConfigError
from reelrank.index.vectors import VectorIndex
from reelrank.recall import ContentRecall
from reelrank.types import FeedRequest

from .conftest import event, make_settings, video

BAKING = [
    "sourdough bread baking at home",
    "baking a crusty sourdough loaf",
    "kneading dough for bread",
    "my sourdough starter is bubbling",
    "baking bread with rye flour",
]
FOOTBALL = [
    "football match highlights and goals",
    "best football goals of the season",
    "football training drills",
    "penalty shootout football final",
    "football skills in the park",
]


def vid(name: str, **fields: Any) -> dict[str, Any]:
    """A video whose id is `name`."""
    return video(name, id=name, **fields)


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=60), min_size=1, max_size=8))
def test_hashed_embeddings_are_unit_or_zero_and_deterministic(texts: list[str]) -> None:
    emb = HashedEmbedder(64)
    first, again = emb.embed(texts), HashedEmbedder(64).embed(texts)
    assert first.shape == (len(texts), 64) and first.dtype == np.float32
    np.testing.assert_array_equal(first, again)
    norms = np.linalg.norm(first, axis=1)
    for text, norm in zip(texts, norms, strict=True):
        has_word = any(ch.isalnum() or ch == "_" for ch in text)
        assert norm == pytest.approx(1.0, abs=1e-5) if has_word else norm == 0.0


def test_hashed_embedding_places_shared_words_and_stems_closer_than_unrelated_text() -> None:
    v = HashedEmbedder(128).embed(
        ["homemade sourdough bread #food", "sourdough loaves", "football goals #sports"]
    )
    assert cos(v[0], v[1]) > cos(v[0], v[2]) + 0.2
    # a hashtag weighs more than a caption word: same tag, different caption
    t = HashedEmbedder(128).embed(["a day out #cats", "my morning #cats", "a day out #dogs"])
    assert cos(t[0], t[1]) > 0.3


def test_unknown_embedder_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="content_embedder"):
        make_embedder("word2vec", 64)


@pytest.mark.skipif(not minilm_available(), reason="needs the optional extra reelrank[content]")
def test_minilm_embeds_meaning_not_just_shared_words() -> None:
    emb = make_embedder("minilm", 0)
    assert emb.name == "minilm" and emb.dim == 384
    v = emb.embed(
        [
            "kneading dough for a rustic loaf",
            "homemade sourdough bread",
            "a goal in the cup final",
            "",
        ]
    )
    # no word in common, yet the two baking captions are closer than baking and football
    assert cos(v[0], v[1]) > cos(v[0], v[2]) + 0.2
    assert np.linalg.norm(v[0]) == pytest.approx(1.0, abs=1e-4)
    assert not np.any(v[3])
    # the hashed fallback cannot see it: the same pair shares no feature worth the margin
    h = HashedEmbedder(128).embed(["kneading dough for a rustic loaf", "homemade sourdough bread"])
    assert cos(h[0], h[1]) < cos(v[0], v[1])


def _catalog() -> list[dict[str, Any]]:
    """Old videos about baking and football, plus sixty football-flavoured fillers that
    crowd the content neighbourhood of anyone who is not into baking; all hours old."""
    old = time.time() - 6 * 3600
    out = []
    for i, cap in enumerate(BAKING):
        out.append(vid(f"b{i}", caption=cap, hashtags=["food"], created_at=old))
    for i, cap in enumerate(FOOTBALL):
        out.append(vid(f"f{i}", caption=cap, hashtags=["sports"], created_at=old))
    for i in range(60):
        out.append(
            vid(f"x{i}", caption=f"football fan clip number {i}", hashtags=["misc"], created_at=old)
        )
    return out


def _feed_ids(eng: Engine, user: str, n: int = 30) -> dict[str, str]:
    return {item.video_id: item.source for item in eng.feed(user, n=n).items}


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_new_video_reaches_users_whose_history_matches_its_content(
    tmp_path: Path, store: str
) -> None:
    url = "memory://" if store == "memory" else f"sqlite:///{tmp_path / 'c.db'}"
    # Personal channels only (a catalog this small would put every video in the trending,
    # fresh, pool and explore lists): content alone can find a video nobody has engaged with,
    # under a hashtag nobody has engaged with.
    quotas = {"fresh": 0, "explore": 0, "trending": 0, "pool": 0, "content": 8}
    eng = Engine(make_settings(tmp_path, store=url, recall_quotas=quotas)).open()
    try:
        eng.upsert_videos(_catalog())
        events = []
        for i in range(4):
            events.append(event("like", "baker", f"b{i}"))
            events.append(event("finish", "baker", f"b{i}"))
            events.append(event("like", "fan", f"f{i}"))
            events.append(event("finish", "fan", f"f{i}"))
        assert eng.ingest(events).accepted == len(events)
        new = vid(
            "new",
            caption="how to bake a sourdough loaf of bread",
            hashtags=["kitchen"],  # a tag neither user has engaged with
            creator_id="newcomer",
            sound_id="fresh-sound",
        )
        assert eng.upsert_videos([new])[0]["result"] == "created"

        baker, fan = _feed_ids(eng, "baker"), _feed_ids(eng, "fan")
        assert baker.get("new") == "content"
        assert "new" not in fan

        # The channel on its own: rank of the new video for each user.
        def recalled(user: str) -> list[str]:
            q = eng.hydrate(FeedRequest(user_id=user, n=10, request_id="r", now=time.time()))
            rows = ContentRecall(eng.state.content).recall(q, 5).rows
            return [eng.state.table.video(int(r)).id for r in rows]

        assert "new" in recalled("baker")
        assert "new" not in recalled("fan")
        assert not {"b0", "b1", "b2", "b3"} & set(recalled("baker"))  # seeds are not recalled
    finally:
        eng.close()


def test_a_video_held_for_review_never_enters_the_content_index(tmp_path: Path) -> None:
    eng = Engine(make_settings(tmp_path, banned_terms=["spam"])).open()
    try:
        eng.upsert_videos(_catalog())
        eng.ingest([event("like", "baker", "b0"), event("like", "baker", "b1")])
        held = vid("held", caption="sourdough bread baking, buy spam", hashtags=["food"])
        assert eng.upsert_videos([held])[0]["status"] != "approved"
        row = eng.state.table.row_of("held")
        assert eng.state.content.vector(row) is None
        # approved first, then edited into review: it is removed from the index
        ok = vid("later", caption="sourdough bread baking", hashtags=["food"])
        eng.upsert_videos([ok])
        later = eng.state.table.row_of("later")
        assert eng.state.content.vector(later) is not None
        eng.upsert_videos([{**ok, "caption": "sourdough bread baking, buy spam"}])
        assert eng.state.content.vector(later) is None
        q = eng.hydrate(FeedRequest(user_id="baker", n=10, request_id="r", now=time.time()))
        got = {
            eng.state.table.video(int(r)).id
            for r in ContentRecall(eng.state.content).recall(q, 50).rows
        }
        assert not {"held", "later"} & got
    finally:
        eng.close()


@pytest.mark.parametrize("fill", ["before serving", "in the background"])
def test_content_index_is_rebuilt_on_restart(
    tmp_path: Path, fill: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if fill == "in the background":
        monkeypatch.setattr("reelrank.content.indexer.SYNC_FILL_MAX", 10)
        monkeypatch.setattr("reelrank.content.indexer.CHUNK", 16)
    url = f"sqlite:///{tmp_path / 'r.db'}"
    eng = Engine(make_settings(tmp_path, store=url)).open()
    eng.upsert_videos(_catalog())
    before = eng.state.content.vectors_of(np.arange(eng.state.table.size)).copy()
    eng.close()
    again = Engine(make_settings(tmp_path, store=url)).open()
    try:
        assert again.content.filled.wait(30)
        assert again.model_status()["serving"]["content"]["filled"]
        assert len(again.state.content) == len(_catalog())
        np.testing.assert_allclose(
            again.state.content.vectors_of(np.arange(again.state.table.size)), before, atol=1e-6
        )
    finally:
        again.close()


@pytest.mark.skipif(not minilm_available(), reason="needs the optional extra reelrank[content]")
def test_minilm_embeds_off_the_upsert_path_and_finds_meaning(tmp_path: Path) -> None:
    eng = Engine(make_settings(tmp_path, content_embedder="minilm", banned_terms=["spam"])).open()
    try:
        eng.upsert_videos(_catalog())
        held = vid("held", caption="sourdough loaf, buy spam", hashtags=["food"])
        eng.upsert_videos([held])
        deadline = time.monotonic() + 60
        while eng.content.waiting and time.monotonic() < deadline:
            time.sleep(0.05)
        assert eng.model_status()["serving"]["content"]["embedder"] == "minilm"
        assert len(eng.state.content) == len(_catalog())  # the held one is not indexed
        eng.ingest([event("like", "baker", f"b{i}") for i in range(4)])
        new = vid("new", caption="a crusty rye loaf fresh from the oven", hashtags=["kitchen"])
        eng.upsert_videos([new])
        while eng.content.waiting and time.monotonic() < deadline:
            time.sleep(0.05)
        q = eng.hydrate(FeedRequest(user_id="baker", n=10, request_id="r", now=time.time()))
        got = [
            eng.state.table.video(int(r)).id
            for r in ContentRecall(eng.state.content).recall(q, 3).rows
        ]
        assert "new" in got
    finally:
        eng.close()


def _embedded(eng: Engine, n: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if eng.content.filled.is_set() and not eng.content.waiting and len(eng.state.content) == n:
            return
        time.sleep(0.05)
    raise AssertionError(f"{len(eng.state.content)} of {n} videos in the content index")


@pytest.mark.skipif(not minilm_available(), reason="needs the optional extra reelrank[content]")
@pytest.mark.parametrize("background", [False, True], ids=["at-start", "in-background"])
def test_a_restart_reads_minilm_vectors_back_and_embeds_only_changed_videos(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, background: bool
) -> None:
    """Stored vectors come back at start for a catalog up to SYNC_FILL_MAX approved
    videos, and on the fill's background thread for a larger one."""
    from reelrank.content import indexer
    from reelrank.schema import Video
    from reelrank.storage import open_store

    if background:
        monkeypatch.setattr(indexer, "SYNC_FILL_MAX", 5)

    url = f"sqlite:///{tmp_path / 'c.db'}"
    settings = make_settings(tmp_path, store=url, content_embedder="minilm")
    eng = Engine(settings).open()
    try:
        eng.upsert_videos(_catalog())
        n = len(_catalog())
        _embedded(eng, n)
        assert (eng.content.restored, eng.content.embedded) == (0, n)
        rows = np.arange(n)
        before = eng.state.content.vectors_of(rows).copy()
        edited_row = eng.state.table.row_of("b0")
    finally:
        eng.close()
    # While the server is down, another writer changes one caption.
    store = open_store(url)
    found = store.catalog.get_video("b0")
    assert found is not None
    store.catalog.upsert_videos(
        [Video.model_validate({**found[1].model_dump(), "caption": "a red sports car on a track"})]
    )
    store.close()
    eng = Engine(settings).open()
    try:
        _embedded(eng, n)
        status = eng.model_status()["serving"]["content"]
        assert (status["restored"], status["embedded"]) == (n - 1, 1)
        after = eng.state.content.vectors_of(rows)
        same = [r for r in range(n) if r != edited_row]
        assert np.abs(after[same] - before[same]).max() < 2e-3  # float16 round trip
        assert float(after[edited_row] @ before[edited_row]) < 0.9  # embedded afresh
    finally:
        eng.close()


def test_a_restart_builds_the_approximate_content_index_from_the_cells_it_kept(
    tmp_path: Path,
) -> None:
    """The approximate index's trained cells are kept in the store: the restarted
    engine builds its index over them instead of training again, and searches alike."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    s = make_settings(tmp_path, store=url, ann_min_vectors=200)
    catalog = [vid(f"c{i}", caption=f"clip {i} about {TOPIC[i % 6]}") for i in range(400)]
    eng = Engine(s).open()
    eng.upsert_videos(catalog)
    index = eng.state.content
    _built(index)
    assert index.trainings == 1
    q = index.vector(0)
    assert q is not None
    want = index.search(q, 20)[0].tolist()
    eng.close()
    again = Engine(s).open()
    try:
        _embedded(again, len(catalog))
        _built(again.state.content)
        assert again.state.content.trainings == 0  # built over the kept cells
        assert again.state.content.search(q, 20)[0].tolist() == want
    finally:
        again.close()


TOPIC = ["bread", "goal", "kitten", "beach", "lipstick", "chord"]


def _built(index: VectorIndex) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if index.approximate and not index.building:
            return
        time.sleep(0.05)
    raise AssertionError("the approximate index was not built")
