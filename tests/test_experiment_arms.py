"""A/B experiments end to end: arms change the feed, every impression records its arm, the
per-arm report comes from the logs, and experiments are defined by settings or the API."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from reelrank.cli import main
from reelrank.config import load_settings
from reelrank.engine import Engine
from reelrank.errors import ConfigError
from reelrank.experiments.registry import ExperimentSpec
from reelrank.experiments.report import SESSION_GAP_S, Fold, report
from reelrank.schema import Event, Impression
from reelrank.serve import create_app

from .conftest import ADMIN, INGEST, event, make_settings, video

T = 1_700_000_000.0
NO_TRENDING = {"trending": 0}


def _spec(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "quotas",
        "arms": [
            {"name": "control"},
            {"name": "no_trending", "overrides": {"recall_quotas": NO_TRENDING}},
        ],
    }
    base.update(fields)
    return base


def _catalog(n: int = 120, now: float | None = None) -> list[dict[str, Any]]:
    now = time.time() if now is None else now
    topics = ["cats", "dogs", "cooking", "cars"]
    return [
        video(i, creator_id=f"c{i % 30}", hashtags=[topics[i % 4]], created_at=now - i)
        for i in range(n)
    ]


def test_an_arm_changes_the_feed_and_every_impression_records_it(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, experiments=[_spec()])
    engine = Engine(settings).open()
    try:
        engine.upsert_videos(_catalog())
        book = engine.experiments
        users = [f"u{i}" for i in range(40)]
        arm_of = {u: book.get("quotas").allocation.arm_of(u) for u in users}
        assert set(arm_of.values()) == {"control", "no_trending"}
        sources: dict[str, set[str]] = {"control": set(), "no_trending": set()}
        for u in users:
            feed = engine.feed(u, n=10)
            assert feed.experiments == {"quotas": arm_of[u]}
            sources[arm_of[u]] |= {it.source for it in feed.items}
        # Trending fills the control's cold-start pages; the treatment never sees it.
        assert "trending" in sources["control"]
        assert sources["no_trending"] and "trending" not in sources["no_trending"]
        engine.flush_impressions()
        logged = engine.store.events.read_impressions(0, 10_000)
        assert len(logged) == 400
        assert all(imp.arms == {"quotas": arm_of[imp.user_id]} for _, imp in logged)
    finally:
        engine.close()


def test_exploration_and_ranker_overrides_reach_the_page(tmp_path: Path) -> None:
    spec = _spec(
        id="explore",
        arms=[
            {"name": "none", "overrides": {"exploration_fraction": 0.0, "ranker": "heuristic"}},
            {"name": "all", "overrides": {"exploration_fraction": 1.0}},
        ],
    )
    settings = make_settings(tmp_path, experiments=[spec], exploration_positions=[1, 4, 7])
    engine = Engine(settings).open()
    try:
        engine.upsert_videos(_catalog(600, now=T))  # old videos: no traffic pools
        allocation = engine.experiments.get("explore").allocation
        explored = {"none": 0, "all": 0}
        for i in range(30):
            u = f"x{i}"
            feed = engine.feed(u, n=10, record=False)
            marks = sum("exploration slot" in " ".join(it.reasons) for it in feed.items)
            explored[str(allocation.arm_of(u))] += marks
            if allocation.arm_of(u) == "none":
                assert feed.ranker_note == "experiment arm: heuristic ranker"
        assert explored["none"] == 0
        assert explored["all"] > 0
    finally:
        engine.close()


def _imp(user: str, arm: str | None, ts: float, video_id: str = "v1") -> Impression:
    return Impression(
        request_id=f"r{ts}",
        position=0,
        user_id=user,
        video_id=video_id,
        source="trending",
        score=0.0,
        model_version="h",
        ts=ts,
        arms={"e": arm} if arm else None,
    )


def _ev(kind: str, user: str, ts: float, **fields: Any) -> Event:
    return Event(
        event_id=f"{kind}{user}{ts}", type=kind, user_id=user, video_id="v1", ts=ts, **fields
    )


def _experiment(weights: tuple[float, float] = (1.0, 1.0)) -> Any:
    from reelrank.experiments.registry import ExperimentBook

    spec = ExperimentSpec.model_validate(
        {
            "id": "e",
            "arms": [{"name": "a", "weight": weights[0]}, {"name": "b", "weight": weights[1]}],
        }
    )
    return ExperimentBook({}, [spec]).get("e")


def test_the_fold_counts_per_user_from_first_exposure_and_splits_sessions() -> None:
    fold = Fold("e")
    fold.impression(_imp("u1", None, T - 50))  # not in the experiment: not counted
    fold.event(_ev("watch", "u1", T - 40, watch_ms=99_000))  # before exposure
    for ts in (T, T + 10, T + 20, T + SESSION_GAP_S + 100):
        fold.impression(_imp("u1", "a", ts))
    fold.event(_ev("watch", "u1", T + 5, watch_ms=4_000))
    fold.event(_ev("watch", "u1", T + 15, watch_ms=6_000))
    fold.event(_ev("finish", "u1", T + 16))
    fold.event(_ev("like", "u1", T + 17))
    fold.event(_ev("watch", "u2", T + 5, watch_ms=7_000))  # never exposed
    user = fold.users["u1"]
    assert (user.arm, user.impressions, user.sessions) == ("a", 4, 2)
    assert (user.watch_ms, user.finishes, user.likes) == (10_000, 1, 1)
    assert "u2" not in fold.users
    rep = report(_experiment(), fold)
    assert rep["arms"]["a"]["watch_time_per_user_s"] == pytest.approx(10.0)
    assert rep["arms"]["a"]["session_length"] == pytest.approx(2.0)
    assert rep["arms"]["a"]["finish_rate"] == pytest.approx(0.25)
    assert rep["arms"]["b"]["users"] == 0


def test_the_report_finds_a_planted_difference_and_flags_a_skewed_split() -> None:
    fold = Fold("e")
    for i in range(200):
        arm = "a" if i % 2 else "b"
        u = f"u{i}"
        for k in range(10):
            fold.impression(_imp(u, arm, T + k))
        watch = 5_000 + (i % 7) * 100 + (3_000 if arm == "b" else 0)
        fold.event(_ev("watch", u, T + 1, watch_ms=watch))
        for k in range(6 if arm == "b" else 3):
            fold.event(_ev("finish", u, T + 2 + k / 10))
    rep = report(_experiment(), fold)
    comp = rep["comparisons"]["b"]
    wt = comp["watch_time_per_user_s"]
    a_w = [(5_000 + (i % 7) * 100) / 1000 for i in range(200) if i % 2]
    b_w = [(5_000 + (i % 7) * 100 + 3_000) / 1000 for i in range(200) if not i % 2]
    assert wt["delta"] == pytest.approx(statistics.mean(b_w) - statistics.mean(a_w))
    assert wt["significant"] and wt["ci_low"] > 0
    fr = comp["finish_rate"]
    assert fr["control"] == pytest.approx(0.3) and fr["treatment"] == pytest.approx(0.6)
    assert fr["significant"]
    assert not comp["session_length"]["significant"]  # the same in both arms
    assert rep["sample_ratio"]["mismatch"] is False
    # The same users under a 1:3 allocation: a sample-ratio mismatch.
    skewed = report(_experiment((1.0, 3.0)), fold)
    assert skewed["sample_ratio"]["mismatch"] is True


def _play(c: TestClient, user: str, finish: bool) -> None:
    page = c.get(f"/v1/feed/{user}?n=5").json()
    events = []
    for it in page["items"]:
        rid, vid = page["request_id"], it["video_id"]
        events.append(event("watch", user, vid, request_id=rid, watch_ms=9_000))
        if finish:
            events.append(event("finish", user, vid, request_id=rid))
    assert c.post("/v1/events", json={"events": events}, headers=INGEST).json()["accepted"]


def test_experiments_over_http_and_the_cli_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(tmp_path, store=f"sqlite:///{tmp_path / 'x.db'}")
    with TestClient(create_app(Engine(settings), own_engine=True)) as c:
        c.post("/v1/videos", json={"videos": _catalog()}, headers=INGEST)
        assert c.post("/v1/admin/experiments", json=_spec()).status_code == 401
        made = c.post("/v1/admin/experiments", json=_spec(traffic=0.5), headers=ADMIN)
        assert made.status_code == 201, made.text
        assert made.json()["status"] == "running" and made.json()["control"] == "control"
        # Overlap in a layer is a conflict; another layer is fine; bad overrides name the field.
        again = c.post(
            "/v1/admin/experiments", json=_spec(id="q2", offset=0.4, traffic=0.3), headers=ADMIN
        )
        assert again.status_code == 409
        other = _spec(id="q3", layer="ranking", arms=[{"name": "a"}, {"name": "b"}])
        assert c.post("/v1/admin/experiments", json=other, headers=ADMIN).status_code == 201
        bad = _spec(
            id="q4",
            layer="z",
            arms=[{"name": "a"}, {"name": "b", "overrides": {"fusion_weights": {"nope": 1}}}],
        )
        got = c.post("/v1/admin/experiments", json=bad, headers=ADMIN)
        assert got.status_code == 422 and got.json()["field"] == "arms.1.overrides.fusion_weights"
        got = c.post(
            "/v1/admin/experiments", json=_spec(id="q5", layer="y", traffic=1.5), headers=ADMIN
        )
        assert got.status_code == 422 and got.json()["field"] == "traffic"
        # Half the users are in the experiment; treatment users finish what they watch.
        in_exp = {}
        for i in range(60):
            u = f"u{i}"
            page = c.get(f"/v1/feed/{u}?n=5").json()
            arm = page.get("experiments", {}).get("quotas")
            in_exp[u] = arm
            _play(c, u, finish=arm == "no_trending")
        assert 15 <= sum(a is not None for a in in_exp.values()) <= 45
        rep = c.get("/v1/experiments/quotas", headers=ADMIN).json()
        users = {n: sum(a == n for a in in_exp.values()) for n in ("control", "no_trending")}
        assert {n: rep["arms"][n]["users"] for n in users} == users
        # Each user got 2 pages of 5 and watched the second (5 x 9 s); only the treatment
        # finished what it watched: 5 finishes over 10 impressions.
        assert rep["arms"]["control"]["watch_time_per_user_s"] == pytest.approx(45.0)
        assert rep["arms"]["control"]["finish_rate"] == 0
        assert rep["arms"]["no_trending"]["finish_rate"] == pytest.approx(0.5)
        assert rep["comparisons"]["no_trending"]["finish_rate"]["significant"]
        assert c.get("/v1/experiments/nope", headers=ADMIN).status_code == 404
        listed = c.get("/v1/experiments", headers=ADMIN).json()["experiments"]
        assert {e["id"] for e in listed} == {"quotas", "q3"}
        stopped = c.post("/v1/admin/experiments/quotas/stop", headers=ADMIN).json()
        assert stopped["status"] == "stopped"
        assert "quotas" not in c.get("/v1/feed/u1").json().get("experiments", {})
    # The experiment and its stop survive a restart; the CLI reads the same logs.
    with TestClient(create_app(Engine(settings), own_engine=True)) as c:
        listed = {e["id"]: e for e in c.get("/v1/experiments", headers=ADMIN).json()["experiments"]}
        assert listed["quotas"]["status"] == "stopped"
        assert listed["quotas"]["started_at"] == made.json()["started_at"]
    config = tmp_path / "r.toml"
    config.write_text(f'store = "sqlite:///{tmp_path / "x.db"}"\ndata_dir = "{tmp_path}"\n')
    assert main(["experiments", "report", "quotas", "--json", "--config", str(config)]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert cli["arms"] == rep["arms"]
    assert main(["experiments", "report", "quotas", "--config", str(config)]) == 0
    text = capsys.readouterr().out
    assert "no_trending vs control" in text and "finish_rate" in text


def test_settings_define_experiments_and_bad_ones_name_the_key(tmp_path: Path) -> None:
    config = tmp_path / "e.toml"
    config.write_text(
        '[[experiments]]\nid = "fw"\nlayer = "ranking"\n'
        '[[experiments.arms]]\nname = "control"\n'
        '[[experiments.arms]]\nname = "shares"\n'
        "[experiments.arms.overrides.fusion_weights]\nshare = 9.0\n"
    )
    settings = load_settings(config, env={})
    assert settings.experiments[0]["arms"][1]["overrides"]["fusion_weights"] == {"share": 9.0}
    book = settings.experiment_book()
    users = [f"u{i}" for i in range(400)]
    treated = [u for u in users if book.assign(u).arms.get("fw") == "shares"]
    assert 140 < len(treated) < 260
    assert all(book.assign(u).fusion_weights == {"share": 9.0} for u in treated)
    env = {"REELRANK_EXPERIMENTS": json.dumps([{"id": "e", "arms": [{"name": "a"}]}])}
    with pytest.raises(ConfigError, match=r"experiments\[0\].*arms"):
        load_settings(env=env)
    with pytest.raises(ConfigError, match="experiments"):
        load_settings(env={"REELRANK_EXPERIMENTS": '{"id": 1}'})
