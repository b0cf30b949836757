"""Feed invariants under random catalogs, reviews and event sequences (hypothesis)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reelrank.engine import Engine
from reelrank.schema import EventType

from .conftest import event, make_settings, video

N_VIDEOS = 40
USERS = ["u0", "u1", "u2"]
KINDS = [t.value for t in EventType]

op = st.one_of(
    st.tuples(st.just("feed"), st.sampled_from(USERS), st.integers(1, 12)),
    st.tuples(
        st.just("event"),
        st.sampled_from(USERS),
        st.integers(0, N_VIDEOS - 1),
        st.sampled_from(KINDS),
    ),
    st.tuples(st.just("review"), st.integers(0, N_VIDEOS - 1), st.booleans()),
)


@st.composite
def catalogs(draw: Any) -> list[dict[str, Any]]:
    """Few creators and sounds, so repeats are hard to avoid; some videos held."""
    out = []
    for i in range(N_VIDEOS):
        banned = draw(st.integers(0, 5)) == 0
        sound = draw(st.one_of(st.none(), st.sampled_from(["s0", "s1", "s2"])))
        out.append(
            video(
                i,
                creator_id=draw(st.sampled_from(["c0", "c1", "c2", "c3"])),
                sound_id=sound,
                caption="spam offer" if banned else f"clip {i}",
                hashtags=draw(st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=3)),
                region=draw(st.sampled_from(["us", "br"])),
            )
        )
    return out


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(catalog=catalogs(), ops=st.lists(op, min_size=1, max_size=40))
def test_feeds_never_break_the_rules(catalog: list[dict[str, Any]], ops: list[tuple]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        eng = Engine(make_settings(Path(tmp), banned_terms=["spam"])).open()
        try:
            _run(eng, catalog, ops)
        finally:
            eng.close()


def _run(eng: Engine, catalog: list[dict[str, Any]], ops: list[tuple]) -> None:
    eng.upsert_videos(catalog)
    by_id = {v["id"]: dict(v) for v in catalog}
    seen: dict[str, set[str]] = {u: set() for u in USERS}
    blocked: dict[str, set[str]] = {u: set() for u in USERS}
    hidden_creators: dict[str, set[str]] = {u: set() for u in USERS}
    hidden_sounds: dict[str, set[str]] = {u: set() for u in USERS}

    for o in ops:
        if o[0] == "event":
            _, user, i, kind = o
            vid = f"v{i}"
            extra = {"watch_ms": 1000} if kind == "watch" else {}
            assert eng.ingest([event(kind, user, vid, **extra)]).accepted == 1
            seen[user].add(vid)
            if kind in ("not_interested", "report"):
                blocked[user].add(vid)
            if kind == "hide_creator":
                hidden_creators[user].add(by_id[vid]["creator_id"])
            if kind == "hide_sound" and by_id[vid]["sound_id"]:
                hidden_sounds[user].add(by_id[vid]["sound_id"])
        elif o[0] == "review":
            _, i, banned = o
            vid = f"v{i}"
            by_id[vid]["caption"] = "spam again" if banned else "clean caption"
            eng.upsert_videos([by_id[vid]])
        else:
            _, user, n = o
            feed = eng.feed(user, n=n)
            ids = [it.video_id for it in feed.items]
            assert len(ids) <= n
            assert len(ids) == len(set(ids)), "a video twice on one page"
            for k, vid in enumerate(ids):
                v = by_id[vid]
                assert "spam" not in v["caption"], "an unapproved video was served"
                assert vid not in seen[user], "a seen video was served again"
                assert vid not in blocked[user], "a not-interested video was served"
                assert v["creator_id"] not in hidden_creators[user]
                assert v["sound_id"] not in hidden_sounds[user]
                if k:
                    prev = by_id[ids[k - 1]]
                    assert v["creator_id"] != prev["creator_id"], "same creator twice in a row"
                    if v["sound_id"] is not None:
                        assert v["sound_id"] != prev["sound_id"], "same sound twice in a row"
            seen[user].update(ids)
