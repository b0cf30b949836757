"""Review: machine checks, the human queue, reports, operator controls and the audit log,
and the rule that nothing unapproved is ever served (issue 5)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reelrank.config import Settings
from reelrank.engine import Engine
from reelrank.errors import ConfigError, Conflict, InvalidInput, NotFound
from reelrank.schema import ReviewStatus, VideoIn
from reelrank.serve import create_app

from .conftest import ADMIN, INGEST, event, make_settings, video


def spam_classifier(v: VideoIn) -> float:
    """A review model for the classifier hook: the share of shouting in the caption."""
    letters = [c for c in v.caption if c.isalpha()]
    return sum(c.isupper() for c in letters) / len(letters) if letters else 0.0


def crash(e: Engine) -> None:
    """Abandon an engine without close(), as after a crash: no final snapshot."""
    e._stop.set()
    e.store.close()


def _engine(tmp_path: Path, **overrides: Any) -> Engine:
    overrides.setdefault("banned_terms", ["scam"])
    overrides.setdefault("rejected_terms", ["gore"])
    return Engine(make_settings(tmp_path, **overrides)).open()


@pytest.fixture
def eng(tmp_path: Path) -> Iterator[Engine]:
    e = _engine(tmp_path)
    yield e
    e.close()


def status(e: Engine, vid: str) -> str:
    return e.state.table.video(e.state.table.row_of(vid)).status.value


# -- machine review ----------------------------------------------------------------------------


def test_each_check_decides_its_outcome_and_the_most_severe_wins(tmp_path: Path) -> None:
    e = _engine(
        tmp_path,
        review_max_hashtags=3,
        review_max_duration_ms=60_000,
        review_classifier="tests.test_review:spam_classifier",
        review_classifier_hold=0.5,
        review_classifier_reject=0.9,
    )
    try:
        got = e.upsert_videos(
            [
                video(1),
                video(2, caption="a quick scam here"),
                video(3, caption="gore and scam"),
                video(4, hashtags=["a", "b", "c", "d"]),
                video(5, duration_ms=61_000),
                video(6, caption="BUY THIS now"),  # 7 of 10 letters upper: hold
                video(7, caption="BUY THIS NOW"),  # all upper: reject
            ]
        )
        assert [r["status"] for r in got] == [
            "approved",
            "pending_review",
            "rejected",
            "pending_review",
            "pending_review",
            "pending_review",
            "rejected",
        ]
        assert "status_reason" not in got[0]
        assert got[1]["status_reason"] == "banned_terms: contains the term 'scam'"
        assert got[2]["status_reason"] == "rejected_terms: contains the term 'gore'"
        assert got[3]["status_reason"] == "policy: 4 hashtags, more than 3"
        assert got[4]["status_reason"].startswith("policy: 61 s long")
        assert got[5]["status_reason"] == "classifier: violation probability 0.70"
        # Every finding is in the audit log, not only the deciding one.
        (entry,) = e.lifecycle.audit("video", "v3", None, 10)["entries"]
        assert entry["actor"] == "machine" and entry["action"] == "review.reject"
        checks = {f["check"]: f["outcome"] for f in entry["detail"]["findings"]}
        assert checks == {"rejected_terms": "reject", "banned_terms": "hold"}
    finally:
        e.close()


def test_a_classifier_that_cannot_be_loaded_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="review_classifier"):
        _engine(tmp_path, review_classifier="tests.test_review:no_such_function")


def test_a_persons_rejection_survives_every_re_upload(eng: Engine) -> None:
    eng.upsert_videos([video(1, caption="a scam")])
    eng.lifecycle.decide("v1", "reject", "fraud", "alice")
    got = eng.upsert_videos([video(1, caption="totally fine now")])[0]
    assert got["status"] == "rejected" and got["status_reason"] == "fraud"
    assert eng.state.table.video(0).caption == "totally fine now"  # the content updates


def test_a_persons_approval_stands_until_the_checked_content_changes(eng: Engine) -> None:
    eng.upsert_videos([video(1, caption="not a scam, a review of one")])
    assert status(eng, "v1") == "pending_review"
    eng.lifecycle.decide("v1", "approve", "a consumer warning, fine", "alice")
    assert status(eng, "v1") == "approved"
    eng.upsert_videos([video(1, caption="not a scam, a review of one", region="gb")])
    assert status(eng, "v1") == "approved"  # same caption: the approval stands
    eng.upsert_videos([video(1, caption="another scam entirely")])
    assert status(eng, "v1") == "pending_review"  # new words: reviewed again


# -- the human queue, over HTTP ------------------------------------------------------------------


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(
        tmp_path, store=f"sqlite:///{tmp_path / 'r.db'}", banned_terms=["scam"]
    )
    with TestClient(create_app(Engine(settings), own_engine=True)) as c:
        yield c


def test_review_queue_approve_and_reject_over_http_with_audit(api: TestClient) -> None:
    body = {"videos": [video(1, caption="scam one"), video(2, caption="scam two"), video(3)]}
    assert api.post("/v1/videos", json=body, headers=INGEST).status_code == 200
    queue = api.get("/v1/admin/review", headers=ADMIN).json()
    assert queue["pending"] == 2
    assert [i["video"]["id"] for i in queue["items"]] == ["v1", "v2"]
    assert queue["items"][0]["reason"] == "banned_terms: contains the term 'scam'"
    assert queue["items"][0]["held_by"] == "machine"

    ok = api.post(
        "/v1/admin/review/v1",
        json={"decision": "approve", "reason": "satire", "reviewer": "alice"},
        headers=ADMIN,
    )
    assert ok.status_code == 200
    assert ok.json()["status"] == "approved" and ok.json()["reviewed_by"] == "alice"
    no = api.post(
        "/v1/admin/review/v2",
        json={"decision": "reject", "reason": "fraud", "reviewer": "bob"},
        headers=ADMIN,
    )
    assert no.json()["status"] == "rejected"
    assert api.get("/v1/admin/review", headers=ADMIN).json()["pending"] == 0

    served = {it["video_id"] for it in api.get("/v1/feed/u1?n=10").json()["items"]}
    assert served == {"v1", "v3"}

    audit = api.get("/v1/admin/audit?target_kind=video&target_id=v1", headers=ADMIN).json()
    assert [(e["actor"], e["action"], e["reason"]) for e in audit["entries"]] == [
        ("alice", "review.approve", "satire"),
        ("machine", "review.hold", "banned_terms: contains the term 'scam'"),
    ]
    assert audit["entries"][0]["detail"] == {"status": "approved", "previous": "pending_review"}


def test_review_endpoints_check_keys_before_bodies_and_name_bad_fields(api: TestClient) -> None:
    api.post("/v1/videos", json={"videos": [video(1, caption="scam")]}, headers=INGEST)
    good = {"decision": "approve", "reason": "ok", "reviewer": "alice"}
    assert api.get("/v1/admin/review").status_code == 401
    assert api.get("/v1/admin/review", headers=INGEST).status_code == 403
    assert api.post("/v1/admin/review/v1", json={"decision": "maybe"}).status_code == 401
    bad = api.post("/v1/admin/review/v1", json={**good, "decision": "maybe"}, headers=ADMIN)
    assert bad.status_code == 422 and bad.json()["field"] == "decision"
    missing = api.post("/v1/admin/review/v1", json={"decision": "approve"}, headers=ADMIN)
    assert missing.status_code == 422 and missing.json()["field"] in ("reason", "reviewer")
    extra = api.post("/v1/admin/review/v1", json={**good, "by": "x"}, headers=ADMIN)
    assert extra.status_code == 422 and extra.json()["field"] == "by"
    unknown = api.post("/v1/admin/review/nope", json=good, headers=ADMIN)
    assert unknown.status_code == 404
    reserved = api.post("/v1/admin/review/v1", json={**good, "reviewer": "machine"}, headers=ADMIN)
    assert reserved.status_code == 422 and reserved.json()["field"] == "reviewer"
    assert api.get("/v1/admin/audit?target_kind=user", headers=ADMIN).status_code == 422


# -- reports ---------------------------------------------------------------------------------------


def test_reports_from_distinct_users_send_a_video_back_to_review(eng: Engine) -> None:
    eng.upsert_videos([video(1), video(2)])
    eng.ingest([event("report", "a", "v1"), event("report", "a", "v1")])  # one user, twice
    eng.ingest([event("report", "b", "v1")])
    assert status(eng, "v1") == "approved"  # two distinct reporters, threshold 3
    eng.ingest([event("report", "c", "v1")])
    assert status(eng, "v1") == "pending_review"
    detail = eng.lifecycle.video_state("v1")
    assert detail["status_reason"] == "reported by 3 users" and detail["reviewed_by"] == "reports"
    assert "v1" not in {it.video_id for it in eng.feed("x", n=10).items}
    # A person clears it; the same three reports do not hold it again, three more do.
    eng.lifecycle.decide("v1", "approve", "reports unfounded", "alice")
    eng.ingest([event("report", u, "v1") for u in ("a", "b", "d", "e")])
    assert status(eng, "v1") == "approved"  # two new reporters since the review
    eng.ingest([event("report", "f", "v1")])
    assert status(eng, "v1") == "pending_review"
    actions = [e["action"] for e in eng.lifecycle.audit("video", "v1", None, 10)["entries"]]
    assert actions == ["review.hold", "review.approve", "review.hold", "review.approve"]


def test_reports_replayed_after_a_restart_do_not_undo_a_review(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'rep.db'}"
    e = Engine(make_settings(tmp_path, store=url)).open()
    e.upsert_videos([video(1)])
    e.ingest([event("report", u, "v1") for u in ("a", "b", "c")])
    e.lifecycle.decide("v1", "approve", "fine", "alice")
    crash(e)  # the reports replay from the log
    e2 = Engine(make_settings(tmp_path, store=url)).open()
    try:
        e2.lifecycle_tick()
        assert status(e2, "v1") == "approved"
        assert e2.lifecycle.video_state("v1")["reports"] == 3
    finally:
        e2.close()


# -- operator controls -----------------------------------------------------------------------------


def test_hide_and_unhide_are_audited_and_take_effect_at_once(eng: Engine) -> None:
    eng.upsert_videos([video(i) for i in range(5)])
    eng.lifecycle.hide("v2", True, "copyright claim", "ops-ann")
    assert status(eng, "v2") == "hidden"
    assert eng.state.content.vector(2) is None  # out of the content index too
    assert "v2" not in {it.video_id for it in eng.feed("x", n=10).items}
    with pytest.raises(Conflict):
        eng.lifecycle.hide("v3", False, "not hidden", "ops-ann")
    eng.lifecycle.hide("v2", False, "claim withdrawn", "ops-ann")
    assert status(eng, "v2") == "approved"
    assert eng.state.content.vector(2) is not None
    assert "v2" in {it.video_id for it in eng.feed("y", n=10).items}
    got = eng.lifecycle.audit("video", "v2", None, 10)["entries"]
    assert [(e["action"], e["actor"]) for e in got[:2]] == [
        ("video.unhide", "ops-ann"),
        ("video.hide", "ops-ann"),
    ]


def test_strikes_suspend_a_creator_and_reinstating_restores_distribution(eng: Engine) -> None:
    eng.upsert_videos([video(i, creator_id="bad" if i < 3 else f"c{i}") for i in range(8)])
    for n in (1, 2):
        got = eng.lifecycle.strike("bad", True, f"strike {n}", "ops")
        assert got["strikes"] == n and not got["suspended"]
    assert {"v0", "v1", "v2"} <= {it.video_id for it in eng.feed("a", n=8).items}
    got = eng.lifecycle.strike("bad", True, "third strike", "ops")
    assert got["suspended"]
    assert not {"v0", "v1", "v2"} & {it.video_id for it in eng.feed("b", n=8).items}
    assert all(eng.state.content.vector(r) is None for r in range(3))
    # A new upload by a suspended creator is approved but not distributed.
    eng.upsert_videos([video(9, creator_id="bad")])
    assert status(eng, "v9") == "approved"
    assert eng.lifecycle.video_state("v9")["servable"] is False
    got = eng.lifecycle.strike("bad", False, "appeal upheld", "ops")
    assert got == {
        "id": "bad",
        "strikes": 0,
        "suspended": False,
        "strikes_to_suspend": 3,
        "videos": 4,
    }
    assert {"v0", "v1", "v2", "v9"} <= {it.video_id for it in eng.feed("c", n=9).items}
    actions = [e["action"] for e in eng.lifecycle.audit("creator", "bad", None, 10)["entries"]]
    assert actions == ["creator.reinstate", "creator.suspend", "creator.strike", "creator.strike"]
    with pytest.raises(NotFound):
        eng.lifecycle.strike("nobody", True, "x", "ops")


def test_boost_spends_its_impressions_within_the_budget(tmp_path: Path) -> None:
    e = _engine(tmp_path, boost_budget=5, pool_max_age_h=0.001)
    try:
        e.upsert_videos([video(i, created_at=1_700_000_000 + i) for i in range(40)])
        with pytest.raises(Conflict, match="5 of 5 impressions left, 6 asked"):
            e.lifecycle.boost("v7", 6, "launch", "ops")
        with pytest.raises(InvalidInput):
            e.lifecycle.boost("v7", 0, "launch", "ops")
        e.lifecycle.boost("v7", 3, "launch", "ops")
        with pytest.raises(Conflict, match="2 of 5"):
            e.lifecycle.boost("v8", 3, "launch", "ops")
        page = e.feed("u1", n=10)
        (boosted,) = [it for it in page.items if it.video_id == "v7"]
        assert boosted.source == "pool" and "promoted: boosted by the editors" in boosted.reasons
        e.feed("u2", n=10)
        e.feed("u3", n=10)
        assert e.lifecycle.video_state("v7")["pool"].get("boost_left", 0) == 0
        assert e.lifecycle.pools_summary()["boost_outstanding"] == 0
        e.lifecycle.boost("v8", 5, "budget back", "ops")  # spent boosts free the budget
        e.lifecycle.hide("v9", True, "x", "ops")
        with pytest.raises(Conflict, match="not servable"):
            e.lifecycle.boost("v9", 1, "x", "ops")
    finally:
        e.close()


def test_operator_state_survives_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ops.db'}"
    e = Engine(make_settings(tmp_path, store=url, strikes_to_suspend=1)).open()
    e.upsert_videos([video(i, creator_id="bad" if i == 0 else f"c{i}") for i in range(6)])
    e.lifecycle.strike("bad", True, "one strike here", "ops")
    e.lifecycle.boost("v3", 4, "launch", "ops")
    e.lifecycle.hide("v4", True, "claim", "ops")
    crash(e)  # before any snapshot
    e2 = Engine(make_settings(tmp_path, store=url, strikes_to_suspend=1)).open()
    try:
        assert e2.lifecycle.creator_state("bad")["suspended"]
        assert e2.lifecycle.video_state("v0")["servable"] is False
        assert e2.lifecycle.video_state("v3")["pool"]["boost_left"] == 4
        assert status(e2, "v4") == "hidden"
        assert len(e2.lifecycle.audit(None, None, None, 10)["entries"]) == 6 + 3
    finally:
        e2.close()


# -- the invariant: nothing unapproved is ever served -------------------------------------------

OPS = st.one_of(
    st.tuples(st.just("upload"), st.integers(0, 11), st.booleans()),
    st.tuples(st.just("decide"), st.integers(0, 11), st.sampled_from(["approve", "reject"])),
    st.tuples(st.just("hide"), st.integers(0, 11), st.booleans()),
    st.tuples(st.just("strike"), st.integers(0, 3), st.booleans()),
    st.tuples(st.just("report"), st.integers(0, 11), st.integers(0, 4)),
    st.tuples(st.just("boost"), st.integers(0, 11), st.integers(1, 3)),
    st.tuples(st.just("feed"), st.integers(0, 5), st.integers(1, 12)),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=st.lists(OPS, min_size=1, max_size=40))
def test_no_unapproved_video_is_ever_served(tmp_path_factory: Any, ops: list[Any]) -> None:
    base: Settings = make_settings(
        tmp_path_factory.mktemp("inv"),
        banned_terms=["scam"],
        strikes_to_suspend=2,
        report_review_threshold=2,
        pool_sizes=[2, 4],
        pool_thresholds=[0.0, 0.0],
        pool_settle_s=0.0,
        exploration_fraction=0.5,
    )
    e = Engine(base).open()
    served = 0
    try:
        for op in ops:
            kind, i, arg = op
            vid = f"v{i}"
            known = e.state.table.row_of(vid) >= 0
            if kind == "upload":
                caption = "a scam" if arg else f"clip {i}"
                e.upsert_videos([video(i, creator_id=f"c{i % 4}", caption=caption)])
            elif kind == "decide" and known:
                e.lifecycle.decide(vid, arg, "checked", "alice")
            elif kind == "hide" and known:
                with contextlib.suppress(Conflict):
                    e.lifecycle.hide(vid, arg, "checked", "ops")
            elif kind == "strike" and e.state.table.creators.get(f"c{i}") >= 0:
                e.lifecycle.strike(f"c{i}", arg, "checked", "ops")
            elif kind == "report" and known:
                e.ingest([event("report", f"r{arg}", vid)])
            elif kind == "boost" and known:
                with contextlib.suppress(Conflict):
                    e.lifecycle.boost(vid, arg, "checked", "ops")
            elif kind == "feed":
                e.lifecycle_tick()
                for item in e.feed(f"u{i}", n=arg).items:
                    row = e.state.table.row_of(item.video_id)
                    record = e.state.table.video(row)
                    assert record.status is ReviewStatus.APPROVED, (item, record)
                    creator = e.lifecycle.creators.get(record.creator_id, {})
                    assert not creator.get("suspended"), (item, creator)
                    served += 1
    finally:
        e.close()
