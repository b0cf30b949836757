"""The HTTP API through the real app over a real SQLite file."""

from __future__ import annotations

import contextlib
import itertools
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reelrank.engine import Engine
from reelrank.recall import default_sources
from reelrank.serve import create_app

from .conftest import ADMIN, FEED_KEY, INGEST, event, make_settings, video

FEED = {"Authorization": f"Bearer {FEED_KEY}"}
SOURCES = {s.name for s in default_sources(0.01)}
COUNTER_KEYS = (
    "impressions",
    "plays",
    "watch_ms",
    "finishes",
    "likes",
    "shares",
    "comments",
    "follows",
    "skips",
    "reports",
)
V1_PATHS = {
    "/v1/videos": "post",
    "/v1/users": "post",
    "/v1/follows": "post",
    "/v1/events": "post",
    "/v1/feed/{user_id}": "get",
    "/v1/videos/{video_id}": "get",
    "/v1/users/{user_id}": "get",
    "/v1/users/{user_id}/controls": "put",
    "/v1/users/{user_id}/reset": "post",
    "/v1/pools": "get",
    "/v1/admin/review": "get",
    "/v1/admin/review/{video_id}": "post",
    "/v1/admin/audit": "get",
    "/v1/admin/videos/{video_id}/hide": "post",
    "/v1/admin/videos/{video_id}/unhide": "post",
    "/v1/admin/videos/{video_id}/boost": "post",
    "/v1/admin/creators/{creator_id}": "get",
    "/v1/admin/creators/{creator_id}/strikes": "post",
    "/v1/admin/creators/{creator_id}/reinstate": "post",
    "/v1/admin/overview": "get",
    "/v1/admin/users/{user_id}/preview": "get",
    "/v1/experiments": "get",
    "/v1/experiments/{experiment_id}": "get",
    "/v1/admin/experiments": "post",
    "/v1/admin/experiments/{experiment_id}/stop": "post",
}

MakeClient = Callable[..., TestClient]


# -- helpers ------------------------------------------------------------------------------
def post(client: TestClient, kind: str, items: Any, headers: dict[str, str] = INGEST) -> Any:
    return client.post(f"/v1/{kind}", json={kind: items}, headers=headers)


def ok(resp: httpx.Response) -> Any:
    assert resp.status_code == 200, resp.text
    return resp.json()


def results(client: TestClient, kind: str, items: list[Any]) -> list[dict[str, Any]]:
    body = ok(post(client, kind, items))
    assert len(body["results"]) == len(items)
    return body["results"]


def ingest(client: TestClient, events: list[Any]) -> dict[str, Any]:
    return ok(post(client, "events", events))


def accept(client: TestClient, events: list[Any]) -> dict[str, Any]:
    """Ingest events that must all be accepted."""
    body = ingest(client, events)
    assert body["rejected"] == [] and body["duplicates"] == 0, body
    assert body["accepted"] == len(events)
    return body


def counters(client: TestClient, vid: str) -> dict[str, int]:
    return ok(client.get(f"/v1/videos/{vid}"))["counters"]


def profile(client: TestClient, uid: str) -> dict[str, Any]:
    return ok(client.get(f"/v1/users/{uid}", headers=ADMIN))


def feed(client: TestClient, uid: str, **params: Any) -> dict[str, Any]:
    return ok(client.get(f"/v1/feed/{uid}", params=params))


def drain(client: TestClient, uid: str, n: int = 5, pages: int = 30) -> list[list[str]]:
    """Request pages until one comes back empty; return the video ids of each page."""
    out: list[list[str]] = []
    for _ in range(pages):
        items = feed(client, uid, n=n)["items"]
        assert len(items) <= n
        if not items:
            return out
        out.append([it["video_id"] for it in items])
    raise AssertionError(f"the feed of {uid} never ran dry after {pages} pages")


def catalog(client: TestClient, count: int, **fields: Any) -> list[str]:
    """`count` approved videos v0, v1, ... each with its own creator (c0, ...) and sound."""
    vids = [video(i, **fields) for i in range(count)]
    assert all(r["result"] == "created" for r in results(client, "videos", vids))
    return [v["id"] for v in vids]


def assert_names(body: dict[str, Any], field: str) -> None:
    """A 4xx JSON error naming `field` in `detail` (and in `field`)."""
    assert isinstance(body["detail"], str)
    assert field in body["detail"], body
    assert field in (body.get("field") or ""), body


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[MakeClient]:
    """Build more apps (each over its own SQLite file) with other settings."""
    n = itertools.count()
    with contextlib.ExitStack() as stack:

        def make(**overrides: Any) -> TestClient:
            d = tmp_path / f"app{next(n)}"
            s = make_settings(d, store=f"sqlite:///{d / 'api.db'}", **overrides)
            return stack.enter_context(TestClient(create_app(Engine(s), own_engine=True)))

        yield make


@pytest.fixture
def review(make_client: MakeClient) -> TestClient:
    return make_client(banned_terms=["spam"])


# -- catalog upserts -----------------------------------------------------------------------
def test_videos_result_per_item_created_then_updated(client: TestClient) -> None:
    first = results(client, "videos", [video(1), video(2)])
    assert first == [
        {"index": 0, "id": "v1", "result": "created", "status": "approved"},
        {"index": 1, "id": "v2", "result": "created", "status": "approved"},
    ]
    again = results(client, "videos", [video(2, caption="new words"), video(3)])
    assert [(r["index"], r["id"], r["result"]) for r in again] == [
        (0, "v2", "updated"),
        (1, "v3", "created"),
    ]
    got = ok(client.get("/v1/videos/v2"))
    assert got["video"]["caption"] == "new words"
    assert ok(client.get("/healthz"))["videos"] == 3


def test_videos_valid_items_applied_despite_invalid_ones(client: TestClient) -> None:
    res = results(
        client,
        "videos",
        [
            video(1),
            video(2, duration_ms="abc"),
            {k: v for k, v in video(3).items() if k != "creator_id"},
            video(4, hashtags="cats"),
            video(5),
        ],
    )
    assert [r.get("result") for r in res] == ["created", None, None, None, "created"]
    assert [r["index"] for r in res] == [0, 1, 2, 3, 4]
    for i, fld in ((1, "duration_ms"), (2, "creator_id"), (3, "hashtags")):
        assert "id" not in res[i]
        assert f"videos[{i}]" in res[i]["error"]
        assert fld in res[i]["error"]
    assert ok(client.get("/v1/videos/v1"))["status"] == "approved"
    assert ok(client.get("/v1/videos/v5"))["status"] == "approved"
    for vid in ("v2", "v3", "v4"):
        assert client.get(f"/v1/videos/{vid}").status_code == 404


def test_item_errors_name_the_dotted_field_path(client: TestClient) -> None:
    res = results(client, "videos", [video(1), video(2, duration_ms="abc")])
    assert res[1]["error"].startswith("videos[1].duration_ms:")
    body = ingest(
        client,
        [event("play", "u1", "v1", ts="garbage"), event("watch", "u1", "v1", watch_ms=-1)],
    )
    assert body["rejected"][0]["error"].startswith("events[0].ts:")
    # The README's own example of a rejection.
    expected = "events[1].watch_ms: Input should be greater than or equal to 0"
    assert body["rejected"][1]["error"] == expected


def test_item_model_error_is_not_blamed_on_the_body(client: TestClient) -> None:
    results(client, "videos", [video(1)])
    body = ingest(client, [event("watch", "u1", "v1")])
    assert "body" not in body["rejected"][0]["error"]


def test_users_result_per_item_and_partial_batch(client: TestClient) -> None:
    res = results(
        client,
        "users",
        [{"id": "u1", "interests": ["cats"]}, {"id": ["u2"]}, {"id": "u3", "region": 7}],
    )
    assert res[0] == {"index": 0, "id": "u1", "result": "created"}
    assert res[1]["index"] == 1 and "users[1]" in res[1]["error"] and "id" in res[1]["error"]
    assert res[2]["index"] == 2 and "region" in res[2]["error"]
    assert profile(client, "u1")["user"]["interests"] == ["cats"]
    assert client.get("/v1/users/u3", headers=ADMIN).status_code == 404
    again = results(client, "users", [{"id": "u1", "interests": ["#Dogs"]}])
    assert again == [{"index": 0, "id": "u1", "result": "updated"}]
    assert profile(client, "u1")["user"]["interests"] == ["dogs"]


def test_follows_result_per_item_and_partial_batch(client: TestClient) -> None:
    results(client, "users", [{"id": "u1"}])
    res = results(
        client,
        "follows",
        [
            {"user_id": "u1", "creator_id": "c1"},
            {"user_id": "u1"},
            {"user_id": "u1", "creator_id": "c1"},
            {"user_id": "u1", "creator_id": "c2"},
        ],
    )
    assert res[0] == {"index": 0, "user_id": "u1", "creator_id": "c1", "result": "created"}
    assert res[1]["index"] == 1 and "follows[1]" in res[1]["error"]
    assert "creator_id" in res[1]["error"]
    assert res[2]["result"] == "unchanged"
    assert res[3]["result"] == "created"
    assert profile(client, "u1")["follows"] == ["c1", "c2"]


def test_review_holds_banned_terms(review: TestClient) -> None:
    res = results(
        review,
        "videos",
        [
            video(1, caption="buy SPAM now"),
            video(2, hashtags=["fun", "#Spam"]),
            video(3, caption="spammy but fine", hashtags=["spammer", "antispam"]),
        ],
    )
    assert [r["status"] for r in res] == ["pending_review", "pending_review", "approved"]
    assert "spam" in res[0]["status_reason"]
    assert ok(review.get("/v1/videos/v1"))["status"] == "pending_review"
    assert ok(review.get("/v1/videos/v2"))["video"]["status"] == "pending_review"


def test_pending_videos_never_appear_in_any_feed(review: TestClient) -> None:
    approved = [video(f"ok{i}", hashtags=["cats"]) for i in range(6)]
    pending = [video(f"bad{i}", caption="spam spam", hashtags=["cats"]) for i in range(4)]
    pending.append(video("bad-tag", hashtags=["cats", "spam"]))
    res = results(review, "videos", approved + pending)
    assert [r["status"] for r in res] == ["approved"] * 6 + ["pending_review"] * 5
    bad = {v["id"] for v in pending}
    # A follower of the pending videos' creators, a user with the hashtag as interest and
    # one who engaged with the hashtag: every recall channel would bring them back.
    results(review, "users", [{"id": "fan", "interests": ["cats"]}])
    results(review, "follows", [{"user_id": "fan", "creator_id": v["creator_id"]} for v in pending])
    accept(review, [event("like", "warm", "vok0"), event("share", "warm", "vok0")])
    for uid in ("fan", "warm", "stranger"):
        served = [v for page in drain(review, uid) for v in page]
        assert not bad & set(served), uid
        expected = {v["id"] for v in approved} - ({"vok0"} if uid == "warm" else set())
        assert set(served) == expected, uid


# -- events ------------------------------------------------------------------------------
def test_events_accepted_rejected_and_applied(client: TestClient) -> None:
    results(client, "videos", [video(1)])
    body = ingest(
        client,
        [
            event("like", "u1", "v1"),
            event("like", "u2", "nope"),
            event("watch", "u1", "v1"),
            event("like", "u2", "v1"),
        ],
    )
    assert body["accepted"] == 2 and body["duplicates"] == 0
    assert [r["index"] for r in body["rejected"]] == [1, 2]
    assert "video_id" in body["rejected"][0]["error"]
    assert "events[1]" in body["rejected"][0]["error"]
    assert "watch_ms" in body["rejected"][1]["error"]
    assert "events[2]" in body["rejected"][1]["error"]
    assert counters(client, "v1")["likes"] == 2


def test_resent_events_are_duplicates_and_change_nothing(client: TestClient) -> None:
    results(client, "videos", [video(1)])
    batch = [
        event("like", "u1", "v1"),
        event("watch", "u1", "v1", watch_ms=4000),
        event("play", "u2", "v1"),
        event("share", "u2", "v1"),
    ]
    assert ingest(client, batch) == {"accepted": 4, "duplicates": 0, "rejected": []}
    before = ok(client.get("/v1/videos/v1"))
    assert before["counters"]["watch_ms"] == 4000
    assert ingest(client, batch) == {"accepted": 0, "duplicates": 4, "rejected": []}
    after = ok(client.get("/v1/videos/v1"))
    assert after["counters"] == before["counters"]
    assert after["hotness"] == pytest.approx(before["hotness"], rel=1e-3)
    # The same event_id with another body is still the logged event, not a new one.
    changed = dict(batch[1], watch_ms=9000)
    assert ingest(client, [changed]) == {"accepted": 0, "duplicates": 1, "rejected": []}
    assert counters(client, "v1")["watch_ms"] == 4000


def test_duplicate_within_one_batch_counts_once(client: TestClient) -> None:
    results(client, "videos", [video(1)])
    play = event("play", "u1", "v1")
    watch = event("watch", "u1", "v1", watch_ms=1500)
    body = ingest(client, [play, watch, play, watch, play])
    assert body == {"accepted": 2, "duplicates": 3, "rejected": []}
    c = counters(client, "v1")
    assert c["plays"] == 1 and c["watch_ms"] == 1500


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"type": "teleport"}, "type"),
        ({"watch_ms": -1}, "watch_ms"),
        ({"ts": "garbage"}, "ts"),
        ({"ts": "2024-13-45T99:00:00"}, "ts"),
        ({"ts": True}, "ts"),
        ({"ts": -5}, "ts"),
        ({"ts": time.time() + 30 * 86400}, "ts"),
        ({"ts": "2999-01-01T00:00:00Z"}, "ts"),
        ({"user_id": ["u1"]}, "user_id"),
        ({"user_id": ""}, "user_id"),
        ({"watchms": 10}, "watchms"),
        ({"event_id": "e" * 129}, "event_id"),
        ({"user_id": "u" * 129}, "user_id"),
        ({"event_id": "bad\x00id"}, "event_id"),
        ({"user_id": "bad\nuser"}, "user_id"),
        ({"video_id": "v1\x1b"}, "video_id"),
        ({"video_id": "unknown-video"}, "video_id"),
        ({"device": "d" * 33}, "device"),
    ],
)
def test_bad_event_items_are_rejected_naming_the_field(
    client: TestClient, fields: dict[str, Any], name: str
) -> None:
    results(client, "videos", [video(1)])
    good = event("play", "u1", "v1")
    body = ingest(client, [good, event("play", "u1", "v1", **fields)])
    assert body["accepted"] == 1 and body["duplicates"] == 0
    assert len(body["rejected"]) == 1
    assert body["rejected"][0]["index"] == 1
    error = body["rejected"][0]["error"]
    assert "events[1]" in error and name in error, error
    assert counters(client, "v1")["plays"] == 1


@pytest.mark.parametrize("missing", ["event_id", "type", "user_id", "video_id", "ts"])
def test_event_missing_a_required_field_is_rejected(client: TestClient, missing: str) -> None:
    results(client, "videos", [video(1)])
    item = {k: v for k, v in event("play", "u1", "v1").items() if k != missing}
    body = ingest(client, [item])
    assert body["accepted"] == 0
    assert body["rejected"][0]["index"] == 0
    assert missing in body["rejected"][0]["error"]
    assert counters(client, "v1")["plays"] == 0


def test_id_boundaries_and_accepted_forms(client: TestClient) -> None:
    long_id = "v" * 128
    assert results(client, "videos", [video(1, id=long_id)])[0]["result"] == "created"
    body = ingest(
        client,
        [
            event("play", "u" * 128, long_id, event_id="e" * 128),
            event("play", 42, long_id),  # integer ids become their decimal string
            event("play", "u3", long_id, ts="2024-01-01T00:00:00+00:00"),
        ],
    )
    assert body == {"accepted": 3, "duplicates": 0, "rejected": []}
    assert counters(client, long_id)["plays"] == 3
    assert profile(client, "42")["user"] == {"id": "42"}


# -- reads: videos and users -------------------------------------------------------------
def test_video_counters_reflect_events(client: TestClient) -> None:
    results(client, "videos", [video(1), video(2)])
    kinds = ["impression", "play", "finish", "share", "comment", "follow", "skip", "report"]
    accept(client, [event(k, "u1", "v1") for k in kinds])
    accept(
        client,
        [
            event("watch", "u1", "v1", watch_ms=1000),
            event("watch", "u2", "v1", watch_ms=2500),
            event("like", "u1", "v1"),
            event("like", "u2", "v1"),
            event("like", "u2", "v1"),  # a second like by the same user changes nothing
            event("like", "u3", "v2"),
            event("unlike", "u3", "v2"),
            event("unlike", "u4", "v2"),  # never liked: nothing to undo
        ],
    )
    c1 = counters(client, "v1")
    assert {k: c1[k] for k in COUNTER_KEYS} == {
        "impressions": 1,
        "plays": 1,
        "watch_ms": 3500,
        "finishes": 1,
        "likes": 2,
        "shares": 1,
        "comments": 1,
        "follows": 1,
        "skips": 1,
        "reports": 1,
    }
    c2 = counters(client, "v2")
    assert {k: c2[k] for k in COUNTER_KEYS} == dict.fromkeys(COUNTER_KEYS, 0)
    detail = ok(client.get("/v1/videos/v1"))
    assert detail["status"] == "approved"
    assert detail["video"]["id"] == "v1" and detail["video"]["creator_id"] == "c1"
    assert detail["video"]["duration_ms"] == 15_000


def test_video_detail_unknown_and_invalid_ids(client: TestClient) -> None:
    resp = client.get("/v1/videos/nope")
    assert resp.status_code == 404
    assert "nope" in resp.json()["detail"]
    resp = client.get("/v1/videos/" + "v" * 129)
    assert resp.status_code == 422
    assert_names(resp.json(), "video_id")


def test_user_profile_interests_follows_and_hidden(client: TestClient) -> None:
    results(
        client,
        "videos",
        [
            video(1, hashtags=["cats", "Funny"]),
            video(2, creator_id="c-other", hashtags=["dogs"]),
            video(3, sound_id="s-hide"),
            video("1b", creator_id="c1"),
            video("3b", sound_id="s-hide"),
            video(4),
        ],
    )
    results(client, "users", [{"id": "u1"}])
    results(client, "follows", [{"user_id": "u1", "creator_id": "c-posted"}])
    accept(
        client,
        [
            event("like", "u1", "v1"),
            event("follow", "u1", "v2"),
            event("hide_creator", "u1", "v1"),
            event("hide_sound", "u1", "v3"),
        ],
    )
    got = profile(client, "u1")
    tags = {t["id"]: t["weight"] for t in got["top_interests"]["hashtags"]}
    assert tags.get("cats", 0) > 0 and tags.get("funny", 0) > 0
    assert got["follows"] == ["c-other", "c-posted"]
    assert got["hidden_creators"] == ["c1"]
    assert got["hidden_sounds"] == ["s-hide"]
    # Interacted-with videos are seen; v1b (hidden creator) and v3b (hidden sound) are
    # filtered out, so only v4 is left to serve.
    served = {v for page in drain(client, "u1") for v in page}
    assert served == {"v4"}


def test_user_profile_unknown_user_is_404(client: TestClient) -> None:
    resp = client.get("/v1/users/nobody", headers=ADMIN)
    assert resp.status_code == 404
    assert "nobody" in resp.json()["detail"]


def test_user_profile_of_a_user_known_only_by_follows(client: TestClient) -> None:
    results(client, "follows", [{"user_id": "fx", "creator_id": "c9"}])
    assert profile(client, "fx")["follows"] == ["c9"]


# -- feed --------------------------------------------------------------------------------
def test_feed_shape(client: TestClient) -> None:
    catalog(client, 12)
    body = feed(client, "u1", n=5)
    assert set(body) == {
        "request_id", "model_version", "ranker", "ranker_note", "cold_start", "items"
    }  # fmt: skip
    assert isinstance(body["request_id"], str) and body["request_id"]
    assert isinstance(body["model_version"], str) and body["model_version"]
    # No trainer runs here, so the heuristic scores and the response says why.
    assert body["ranker"] == "heuristic" and body["model_version"] == "heuristic-3"
    assert "disabled" in body["ranker_note"] or "warming up" in body["ranker_note"]
    assert body["cold_start"] is True
    assert len(body["items"]) == 5
    for it in body["items"]:
        assert set(it) == {"video_id", "score", "source", "reasons"}
        assert isinstance(it["score"], float)
        assert it["source"] in SOURCES
        assert it["reasons"] and all(isinstance(r, str) and r for r in it["reasons"])
    assert len({it["video_id"] for it in body["items"]}) == 5
    assert feed(client, "u1", n=1)["request_id"] != body["request_id"]


def test_feed_page_size(client: TestClient) -> None:
    catalog(client, 30)
    assert len(feed(client, "a")["items"]) == 10  # the default
    assert len(feed(client, "b", n=3)["items"]) == 3
    assert len(feed(client, "c", n=1)["items"]) == 1
    assert len(feed(client, "d", n=100)["items"]) == 30


def test_feed_default_page_size_follows_settings(make_client: MakeClient) -> None:
    c = make_client(feed_default_n=4)
    catalog(c, 12)
    assert len(feed(c, "u1")["items"]) == 4


def test_feed_unknown_user_cold_start(client: TestClient) -> None:
    body = feed(client, "never-seen")  # empty catalog: still a page
    assert body["cold_start"] is True and body["items"] == []
    catalog(client, 3)
    body = feed(client, "someone-else", n=3)
    assert body["cold_start"] is True
    assert {it["video_id"] for it in body["items"]} == {"v0", "v1", "v2"}
    accept(client, [event("like", "fan", "v0")])
    assert feed(client, "fan")["cold_start"] is False


def test_feed_never_serves_a_video_twice(client: TestClient) -> None:
    vids = catalog(client, 23)
    pages = drain(client, "u1", n=4)
    served = [v for page in pages for v in page]
    assert len(served) == len(set(served))
    assert set(served) == set(vids)
    assert all(len(p) == 4 for p in pages[:-1])
    assert feed(client, "u1", n=10)["items"] == []
    # Other users are not affected by u1's history.
    assert len(feed(client, "u2", n=10)["items"]) == 10


def test_feed_excludes_videos_the_user_interacted_with(client: TestClient) -> None:
    catalog(client, 6)
    accept(client, [event("play", "u1", "v0"), event("not_interested", "u1", "v1")])
    served = {v for page in drain(client, "u1") for v in page}
    assert served == {"v2", "v3", "v4", "v5"}


def test_feed_following_source(client: TestClient) -> None:
    catalog(client, 20)
    results(client, "follows", [{"user_id": "u1", "creator_id": "c7"}])
    items = feed(client, "u1", n=20)["items"]
    mine = [it for it in items if it["video_id"] == "v7"]
    assert len(mine) == 1
    assert mine[0]["source"] == "following"
    assert any("c7" in r for r in mine[0]["reasons"])


@pytest.mark.parametrize("n", ["0", "-1", "101", "1000", "abc", "1.5", ""])
def test_feed_bad_n(client: TestClient, n: str) -> None:
    resp = client.get(f"/v1/feed/u1?n={n}")
    assert resp.status_code == 422
    assert_names(resp.json(), "n")


def test_feed_bad_user_id(client: TestClient) -> None:
    resp = client.get("/v1/feed/" + "u" * 129)
    assert resp.status_code == 422
    assert_names(resp.json(), "user_id")
    assert client.get("/v1/feed/" + "u" * 128).status_code == 200


def test_feed_rejects_control_characters_in_user_id(client: TestClient) -> None:
    catalog(client, 2)
    resp = client.get("/v1/feed/bad%01user")
    assert resp.status_code == 422
    assert_names(resp.json(), "user_id")


# -- ops ---------------------------------------------------------------------------------
def test_healthz(client: TestClient) -> None:
    catalog(client, 3)
    accept(client, [event("play", "u1", "v0")])
    body = ok(client.get("/healthz"))
    assert body["status"] == "ok"
    assert body["store"] == "sqlite"
    assert body["videos"] == 3
    assert body["users"] == 1
    assert body["event_offset"] == 1


def test_metrics(client: TestClient) -> None:
    catalog(client, 2)
    e = event("play", "u1", "v0")
    body = ingest(client, [e, e, event("play", "u1", "nope")])
    assert (body["accepted"], body["duplicates"], len(body["rejected"])) == (1, 1, 1)
    feed(client, "u1")
    feed(client, "u2")
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    assert "# TYPE reelrank_feed_requests_total counter" in text
    assert "# TYPE reelrank_events_total counter" in text
    samples = dict(
        re.findall(r"^(reelrank_(?:feed_requests|events)_total\{[^}]*\}) (\S+)$", text, re.M)
    )
    assert float(samples['reelrank_events_total{outcome="accepted"}']) == 1
    assert float(samples['reelrank_events_total{outcome="duplicate"}']) == 1
    assert float(samples['reelrank_events_total{outcome="rejected"}']) == 1
    assert float(samples['reelrank_feed_requests_total{cold="true"}']) == 2


def test_openapi_lists_every_v1_path(client: TestClient) -> None:
    spec = ok(client.get("/openapi.json"))
    paths = spec["paths"]
    for path, method in V1_PATHS.items():
        assert method in paths.get(path, {}), path
    assert {"/healthz", "/metrics"} <= set(paths)
    events_body = paths["/v1/events"]["post"]["requestBody"]["content"]["application/json"]
    assert events_body["schema"]["required"] == ["events"]
    review = spec["components"]["schemas"]["ReviewDecision"]
    assert set(review["required"]) == {"decision", "reason", "reviewer"}
    assert review["properties"]["decision"]["enum"] == ["approve", "reject"]
    # Every operation but the health check and the metrics may be shed under overload.
    for path, operations in paths.items():
        for op in operations.values():
            shed = op["responses"].get("503")
            if path in ("/healthz", "/metrics"):
                assert shed is None, path
            else:
                assert shed is not None and "Retry-After" in shed["headers"], path


def test_docs(client: TestClient) -> None:
    resp = client.get("/docs")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    assert "swagger" in resp.text.lower() and "/openapi.json" in resp.text


# -- malformed requests --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "field"),
    [
        (b'{"events": [', "body"),
        (b"", "body"),
        (b"not json", "body"),
        (b"\xff\xfe", "body"),
        (b"[]", "body"),
        (b'"events"', "body"),
        (b"{}", "events"),
        (b'{"event": []}', "event"),
        (b'{"events": [], "extra": 1}', "extra"),
        (b'{"events": {"a": 1}}', "events"),
        (b'{"events": null}', "events"),
        (b'{"events": [{"event_id": "e1", "ts": NaN}]}', "body"),
        (b'{"events": [{"event_id": "e1", "ts": Infinity}]}', "body"),
        (b'{"events": [{"event_id": "e1", "ts": -Infinity}]}', "body"),
    ],
)
def test_malformed_event_bodies(client: TestClient, content: bytes, field: str) -> None:
    resp = client.post(
        "/v1/events",
        content=content,
        headers={**INGEST, "content-type": "application/json"},
    )
    assert resp.status_code == 422, resp.text
    assert_names(resp.json(), field)


@pytest.mark.parametrize("kind", ["videos", "users", "follows"])
def test_malformed_catalog_bodies(client: TestClient, kind: str) -> None:
    for content, field in (
        (b"{", "body"),
        (b"[]", "body"),
        (b"{}", kind),
        (b'{"%s": [], "x": 1}' % kind.encode(), "x"),
        (b'{"%s": "nope"}' % kind.encode(), kind),
    ):
        resp = client.post(f"/v1/{kind}", content=content, headers=INGEST)
        assert resp.status_code == 422, (content, resp.text)
        assert_names(resp.json(), field)


def test_client_cannot_set_video_status(review: TestClient) -> None:
    res = results(review, "videos", [video(1, caption="spam", status="approved")])
    assert "status" in res[0]["error"] and "videos[0]" in res[0]["error"]
    assert review.get("/v1/videos/v1").status_code == 404


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"id": "v" * 129}, "id"),
        ({"creator_id": "c\x07"}, "creator_id"),
        ({"id": "v\tx"}, "id"),
        ({"duration_ms": 0}, "duration_ms"),
        ({"duration_ms": 1.5}, "duration_ms"),
        ({"hashtags": {"a": 1}}, "hashtags"),
        ({"caption": ["x"]}, "caption"),
        ({"created_at": "yesterday"}, "created_at"),
        ({"capton": "typo"}, "capton"),
    ],
)
def test_bad_video_items(client: TestClient, fields: dict[str, Any], name: str) -> None:
    res = results(client, "videos", [video(1, **fields), video(2)])
    assert "videos[0]" in res[0]["error"] and name in res[0]["error"], res[0]
    assert res[1]["result"] == "created"


def test_oversized_batches_are_413(client: TestClient) -> None:
    results(client, "videos", [video(1)])
    resp = post(client, "events", [event("like", f"u{i}", "v1") for i in range(1001)])
    assert resp.status_code == 413
    assert_names(resp.json(), "events")
    assert "1000" in resp.json()["detail"]
    assert counters(client, "v1")["likes"] == 0  # nothing from a refused batch applied


def test_batch_limit_boundary_on_every_endpoint(make_client: MakeClient) -> None:
    c = make_client(max_batch=3)
    assert len(results(c, "videos", [video(i) for i in range(3)])) == 3
    too_many = {
        "videos": [video(i) for i in range(10, 14)],
        "users": [{"id": f"u{i}"} for i in range(4)],
        "follows": [{"user_id": "u", "creator_id": f"c{i}"} for i in range(4)],
        "events": [event("play", "u", "v0") for _ in range(4)],
    }
    for kind, items in too_many.items():
        assert len(ok(post(c, kind, items[:3])).get("results", [None] * 3)) == 3
        resp = post(c, kind, items)
        assert resp.status_code == 413, kind
        assert_names(resp.json(), kind)
    assert c.get("/v1/videos/v13").status_code == 404


# -- property: arbitrary JSON items never break the event endpoint ------------------------
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
EVENT_FIELDS = ("event_id", "type", "user_id", "video_id", "ts", "watch_ms", "device")
REQUIRED = {"event_id", "type", "user_id", "video_id", "ts"}
ALLOWED = {*EVENT_FIELDS, "request_id", "region"}


@st.composite
def event_items(draw: st.DrawFn) -> Any:
    """Arbitrary JSON, or an almost valid event with fields replaced, removed or added."""
    if draw(st.booleans()):
        return draw(json_values)
    item: dict[str, Any] = {
        "event_id": f"h-{draw(st.uuids()).hex}",
        "type": draw(st.sampled_from(["play", "like", "watch", "skip", "share"])),
        "user_id": "hyp",
        "video_id": "v1",
        "ts": time.time(),
        "watch_ms": 100,
    }
    for key in draw(st.lists(st.sampled_from(EVENT_FIELDS), max_size=3, unique=True)):
        if draw(st.booleans()):
            item.pop(key, None)
        else:
            item[key] = draw(json_values)
    if draw(st.booleans()):
        item[draw(st.text(min_size=1, max_size=8))] = draw(json_values)
    return item


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(item=event_items())
def test_arbitrary_event_items_never_break_ingest(client: TestClient, item: Any) -> None:
    results(client, "videos", [video(1)])
    resp = post(client, "events", [item])
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"accepted", "duplicates", "rejected"}
    assert body["accepted"] + body["duplicates"] + len(body["rejected"]) == 1
    for r in body["rejected"]:
        assert r["index"] == 0
        assert isinstance(r["error"], str) and r["error"].startswith("events[0]")
    bad = not isinstance(item, dict) or not set(item) >= REQUIRED or bool(set(item) - ALLOWED)
    if bad:
        assert len(body["rejected"]) == 1, item


# -- auth --------------------------------------------------------------------------------
INGEST_CALLS: list[tuple[str, dict[str, Any]]] = [
    ("/v1/videos", {"videos": [video(1)]}),
    ("/v1/users", {"users": [{"id": "u1"}]}),
    ("/v1/follows", {"follows": [{"user_id": "u1", "creator_id": "c1"}]}),
    ("/v1/events", {"events": []}),
]


@pytest.mark.parametrize(("path", "payload"), INGEST_CALLS)
def test_ingest_auth(client: TestClient, path: str, payload: dict[str, Any]) -> None:
    for headers, status in (
        ({}, 401),
        ({"Authorization": "Bearer nope"}, 401),
        ({"Authorization": "Bearer "}, 401),
        ({"Authorization": "test-ingest"}, 401),
        ({"Authorization": "Basic test-ingest"}, 401),
        (FEED, 403),
    ):
        resp = client.post(path, json=payload, headers=headers)
        assert resp.status_code == status, (headers, resp.text)
        assert isinstance(resp.json()["detail"], str)
        if status == 401:
            assert resp.headers["www-authenticate"] == "Bearer"
        else:
            assert "ingest" in resp.json()["detail"]
    assert client.post(path, json=payload, headers=INGEST).status_code == 200
    assert client.post(path, json=payload, headers=ADMIN).status_code == 200
    lower = {"Authorization": "bearer test-ingest"}
    assert client.post(path, json=payload, headers=lower).status_code == 200


def test_auth_is_checked_before_the_body(client: TestClient) -> None:
    resp = client.post("/v1/events", content=b"{not json")
    assert resp.status_code == 401
    resp = client.post("/v1/events", content=b"{not json", headers=FEED)
    assert resp.status_code == 403


def test_nothing_applied_without_the_right_key(client: TestClient) -> None:
    assert post(client, "videos", [video(1)], headers=FEED).status_code == 403
    assert client.get("/v1/videos/v1").status_code == 404
    results(client, "videos", [video(1)])
    assert post(client, "events", [event("like", "u1", "v1")], headers={}).status_code == 401
    assert counters(client, "v1")["likes"] == 0


def test_user_profile_auth(client: TestClient) -> None:
    results(client, "users", [{"id": "u1"}])
    assert client.get("/v1/users/u1").status_code == 401
    assert client.get("/v1/users/u1", headers={"Authorization": "Bearer x"}).status_code == 401
    assert client.get("/v1/users/u1", headers=FEED).status_code == 403
    assert client.get("/v1/users/u1", headers=INGEST).status_code == 403
    assert client.get("/v1/users/u1", headers=ADMIN).status_code == 200


def test_feed_reads_open_by_default(client: TestClient) -> None:
    results(client, "videos", [video(1)])
    assert client.get("/v1/feed/u1").status_code == 200
    assert client.get("/v1/videos/v1").status_code == 200


def test_feed_requires_key_when_configured(make_client: MakeClient) -> None:
    c = make_client(feed_requires_key=True)
    results(c, "videos", [video(1)])
    for path in ("/v1/feed/u1", "/v1/videos/v1"):
        assert c.get(path).status_code == 401, path
        assert c.get(path, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert c.get(path, headers=INGEST).status_code == 403, path
        assert c.get(path, headers=FEED).status_code == 200, path
        assert c.get(path, headers=ADMIN).status_code == 200, path
    assert c.get("/healthz").status_code == 200


def test_admin_key_works_everywhere(make_client: MakeClient) -> None:
    c = make_client(feed_requires_key=True)
    for path, payload in INGEST_CALLS:
        assert c.post(path, json=payload, headers=ADMIN).status_code == 200, path
    assert ok(post(c, "events", [event("like", "u1", "v1")], headers=ADMIN))["accepted"] == 1
    assert c.get("/v1/feed/u1", headers=ADMIN).status_code == 200
    assert ok(c.get("/v1/videos/v1", headers=ADMIN))["counters"]["likes"] == 1
    assert ok(c.get("/v1/users/u1", headers=ADMIN))["follows"] == ["c1"]


def test_server_without_keys_refuses_ingest_and_admin(make_client: MakeClient) -> None:
    c = make_client(api_keys="")
    calls = [("POST", path, payload) for path, payload in INGEST_CALLS]
    calls.append(("GET", "/v1/users/u1", None))
    for method, path, payload in calls:
        for headers in ({}, INGEST, ADMIN):
            resp = c.request(method, path, json=payload, headers=headers)
            assert resp.status_code == 401, (path, resp.text)
            assert "REELRANK_API_KEYS" in resp.json()["detail"]
    assert c.get("/v1/videos/v1").status_code == 404  # nothing was ingested
    assert c.get("/v1/feed/u1").status_code == 200  # reads stay open
