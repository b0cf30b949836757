"""Re-upload detection: media hash, caption + sound + duration, embedding near-duplicates
(issue 5)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from reelrank.content.duplicates import caption_key, near_duplicates
from reelrank.engine import Engine
from reelrank.index.vectors import VectorIndex

from .conftest import make_settings, video


@pytest.fixture
def eng(tmp_path: Path) -> Iterator[Engine]:
    e = Engine(make_settings(tmp_path, rejected_terms=["gore"])).open()
    yield e
    e.close()


def _clip(i: int | str, **fields: Any) -> dict[str, Any]:
    fields.setdefault("caption", f"my cat learns to open the fridge, day {i}")
    return video(i, **fields)


def test_caption_key_ignores_case_punctuation_and_spacing() -> None:
    assert caption_key("My CAT, opens   the fridge!!") == caption_key("my cat opens the fridge")
    assert caption_key("lol") is None  # too short to mean anything
    assert caption_key("") is None


def test_same_media_hash_is_a_duplicate_and_gets_no_fresh_pool(eng: Engine) -> None:
    got = eng.upsert_videos(
        [_clip(1, media_hash="abc123"), _clip(2, media_hash="abc123", creator_id="thief")]
    )
    assert "duplicate_of" not in got[0]
    assert got[1]["status"] == "approved" and got[1]["duplicate_of"] == "v1"
    assert got[1]["status_reason"] == (
        "duplicate: re-upload of video v1 (same media hash): no fresh traffic pool"
    )
    state = eng.lifecycle.video_state("v2")
    assert state["pool"]["stage"] == "none" and state["duplicate_of"] == "v1"
    assert eng.lifecycle.video_state("v1")["pool"]["stage"] == "testing"
    # A duplicate of a duplicate points at the original.
    got = eng.upsert_videos([_clip(3, media_hash="abc123", caption="other words entirely")])
    assert got[0]["duplicate_of"] == "v1"


def test_same_caption_sound_and_duration_is_a_duplicate(tmp_path: Path) -> None:
    eng = Engine(make_settings(tmp_path, duplicate_cosine=0)).open()  # no embedding check
    try:
        _same_caption(eng)
    finally:
        eng.close()


def _same_caption(eng: Engine) -> None:
    eng.upsert_videos([_clip(1, sound_id="s9", duration_ms=20_000)])
    got = eng.upsert_videos(
        [
            _clip(2, caption="My cat learns to open the FRIDGE... day 1!", sound_id="s9",
                  duration_ms=20_600),
            _clip(3, caption="my cat learns to open the fridge, day 1", sound_id="s8",
                  duration_ms=20_000),  # another sound
            _clip(4, caption="my cat learns to open the fridge, day 1", sound_id="s9",
                  duration_ms=25_000),  # another length
        ]
    )  # fmt: skip
    assert got[0]["duplicate_of"] == "v1"
    assert "same caption, sound and duration" in got[0]["status_reason"]
    assert [("duplicate_of" in g) for g in got[1:]] == [False, False]


def test_updating_a_video_is_not_a_re_upload_of_itself(eng: Engine) -> None:
    eng.upsert_videos([_clip(1, media_hash="h1")])
    got = eng.upsert_videos([_clip(1, media_hash="h1", region="gb")])
    assert got[0]["result"] == "updated" and "duplicate_of" not in got[0]


def test_a_re_upload_of_a_rejected_video_is_rejected(eng: Engine) -> None:
    eng.upsert_videos([_clip(1, caption="gore compilation number one", media_hash="bad")])
    got = eng.upsert_videos([_clip(2, caption="harmless title", media_hash="bad")])
    assert got[0]["status"] == "rejected"
    assert got[0]["status_reason"] == (
        "duplicate: re-upload of rejected video v1 (same media hash)"
    )


def test_embedding_near_duplicates_are_marked_and_audited(tmp_path: Path) -> None:
    e = Engine(make_settings(tmp_path, duplicate_cosine=0.9)).open()
    try:
        base = "watch my golden retriever puppy catch the frisbee at the beach"
        e.upsert_videos([_clip(1, caption=base, hashtags=["dogs"], sound_id="s1")])
        got = e.upsert_videos(
            [
                _clip(2, caption=base + " again", hashtags=["dogs"], sound_id="s1"),
                _clip(3, caption="a recipe for lemon tart with a crisp crust", sound_id="s1"),
                _clip(4, caption=base + " again", hashtags=["dogs"], sound_id="s4"),
                _clip(5, caption="day 1: " + base, hashtags=["dogs"], sound_id="s5"),
                _clip(6, caption="day 2: " + base, hashtags=["dogs"], sound_id="s5"),
            ]
        )
        assert got[0]["duplicate_of"] == "v1"
        assert got[0]["status_reason"].startswith("duplicate: re-upload of video v1 (content")
        assert "duplicate_of" not in got[1]  # another caption
        assert "duplicate_of" not in got[2]  # another sound: not a re-upload of the media
        assert "duplicate_of" not in got[4]  # the next episode of a series
        (entry,) = [
            x
            for x in e.lifecycle.audit("video", "v2", None, 10)["entries"]
            if x["action"] == "review.duplicate"
        ]
        assert entry["detail"]["duplicate_of"] == "v1" and entry["detail"]["cosine"] >= 0.9
        assert e.lifecycle.video_state("v2")["pool"]["stage"] == "none"
    finally:
        e.close()


def test_near_duplicates_within_one_batch_and_against_the_index() -> None:
    """The search itself: the older of two near-identical vectors is the original, in
    the index or earlier in the same batch; durations must agree."""
    from reelrank.schema import Video
    from reelrank.state.catalog import VideoTable

    rng = np.random.default_rng(0)
    table = VideoTable()
    dim = 16
    base = rng.normal(size=(4, dim)).astype(np.float32)
    durations = [10_000, 10_000, 10_000, 20_000, 20_000, 30_000]
    for r in range(6):
        table.upsert(
            r,
            Video.model_validate(
                video(r, caption="a caption long enough", sound_id="s", duration_ms=durations[r])
            ),
        )
    index = VectorIndex(dim)
    index.upsert(np.array([0, 1]), base[:2])
    near = base[[0, 2, 2, 0]] + 0.01 * rng.normal(size=(4, dim)).astype(np.float32)
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    found = near_duplicates(index, table, np.array([2, 3, 4, 5]), near, 0.95, 1000)
    pairs = [(r, o) for r, o, _ in found]
    # Row 2 repeats row 0 (in the index); row 4 repeats row 3 (earlier in the batch);
    # row 5 is close to rows 0 and 2 but lasts 30 s, so it is no re-upload of either.
    assert pairs == [(2, 0), (4, 3)]
