"""The demo feed and the dashboard (issue 7): their API in-process, and the pages in a real
Chromium against a real HTTP server (uvicorn in a thread), with no console or page errors
allowed."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from reelrank.metrics import histogram_quantile
from reelrank.serve.pages import STATIC_DIR

from .conftest import ADMIN, INGEST, event, video
from .server import InThreadServer

SCREENSHOTS = Path(__file__).parent / "results" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
TAGS = ["cats", "cooking", "travel", "music", "sports", "science"]


# -- the API the pages use (in-process) ---------------------------------------------------
def test_pages_are_served_openly_and_left_out_of_the_schema(client: TestClient) -> None:
    for path in ("/demo", "/dashboard"):
        resp = client.get(path)
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/html")
        assert '<script type="module"' in resp.text
    js = client.get("/static/demo.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert client.get("/static/nothing.js").status_code == 404
    paths = client.get("/openapi.json").json()["paths"]
    assert not {p for p in paths if p in ("/demo", "/dashboard") or p.startswith("/static")}
    assert {"/v1/admin/overview", "/v1/admin/users/{user_id}/preview"} <= set(paths)


def test_every_asset_a_page_names_exists() -> None:
    for page in ("demo.html", "dashboard.html"):
        html = (STATIC_DIR / page).read_text()
        for ref in [part.split('"')[0] for part in html.split('"/static/')[1:]]:
            assert (STATIC_DIR / ref).is_file(), f"{page} names a missing /static/{ref}"


def test_overview_counts_feeds_events_and_latency(client: TestClient) -> None:
    assert client.get("/v1/admin/overview").status_code == 401
    assert client.get("/v1/admin/overview", headers=INGEST).status_code == 403
    client.post("/v1/videos", json={"videos": [video(i) for i in range(5)]}, headers=INGEST)
    before = client.get("/v1/admin/overview", headers=ADMIN).json()
    pages = [client.get("/v1/feed/u1?n=2").json() for _ in range(3)]
    vid, rid = pages[0]["items"][0]["video_id"], pages[0]["request_id"]
    body = {
        "events": [
            event("impression", "u1", vid, request_id=rid),
            event("like", "u1", vid, request_id=rid),
            event("watch", "u1", vid),  # no watch_ms: rejected
        ]
    }
    assert client.post("/v1/events", json=body, headers=INGEST).json()["accepted"] == 2
    after = client.get("/v1/admin/overview", headers=ADMIN).json()
    assert after["feed"]["requests"] - before["feed"]["requests"] == 3
    assert after["feed"]["cold_start"] - before["feed"]["cold_start"] == 3  # u1 was unknown
    lat = after["feed"]["latency"]
    assert lat["count"] == after["feed"]["requests"]
    counts = [c for _, c in lat["buckets"]]
    assert counts == sorted(counts) and counts[-1] == lat["count"]
    assert lat["buckets"][-1][0] == "+Inf"
    assert 0 < lat["p50_s"] <= lat["p99_s"] and lat["sum_s"] > 0
    ev = after["events"]
    assert (ev["accepted"], ev["rejected"]) == (2, 1)
    assert ev["by_type"] == {"impression": 1, "like": 1}
    assert after["videos"] == 5 and after["ts"] >= before["ts"]
    assert after["model"]["ready"] is False and after["model"]["auc"] == {}


def test_histogram_quantile_interpolates_within_a_bucket() -> None:
    inf = float("inf")
    assert histogram_quantile([(1.0, 0), (2.0, 0), (inf, 0)], 0.5) is None
    assert histogram_quantile([(1.0, 0), (2.0, 10), (inf, 10)], 0.5) == pytest.approx(1.5)
    assert histogram_quantile([(1.0, 4), (2.0, 8), (inf, 8)], 0.25) == pytest.approx(0.5)
    assert histogram_quantile([(1.0, 5), (2.0, 5), (inf, 10)], 0.99) == 2.0  # past the last


def test_feed_preview_serves_nothing(client: TestClient) -> None:
    client.post("/v1/videos", json={"videos": [video(i) for i in range(8)]}, headers=INGEST)
    path = "/v1/admin/users/u7/preview"
    assert client.get(path, headers=INGEST).status_code == 403
    for _ in range(2):
        preview = client.get(f"{path}?n=4", headers=ADMIN).json()
        assert len(preview["items"]) == 4 and all(it["reasons"] for it in preview["items"])
    # Nothing previewed was marked seen: a served page can still hold every video.
    served = client.get("/v1/feed/u7?n=8").json()
    assert len(served["items"]) == 8
    assert client.get(f"{path}?n=4", headers=ADMIN).json()["items"] == []  # now all seen


# -- the pages in a browser -----------------------------------------------------------------
INGEST_KEY, ADMIN_KEY = "web-ingest", "web-admin"


def _catalog() -> list[dict[str, Any]]:
    return [
        video(
            i,
            creator_id=f"c{i % 12}",
            caption=f"{TAGS[i % 6]} clip {i}",
            hashtags=[TAGS[i % 6]],
            sound_id=f"s{i % 9}",
            duration_ms=6000 + 1000 * (i % 5),
        )
        for i in range(120)
    ]


class Site:
    """A running server with a catalog, and calls against its API."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.api = httpx.Client(base_url=url, timeout=30)

    def get(self, path: str, key: str = ADMIN_KEY) -> Any:
        resp = self.api.get(path, headers={"Authorization": f"Bearer {key}"})
        resp.raise_for_status()
        return resp.json()

    def post(self, path: str, body: Any, key: str = ADMIN_KEY) -> Any:
        resp = self.api.post(path, json=body, headers={"Authorization": f"Bearer {key}"})
        resp.raise_for_status()
        return resp.json()

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            got = check()
            if got:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.1)


def _browser_available() -> None:
    pytest.importorskip("playwright", reason="the `test` extra installs playwright")
    if not Path(CHROMIUM).exists():
        why = f"no Chromium at {CHROMIUM}: `make test` installs Debian's chromium when it can"
        if os.environ.get("CI"):
            pytest.fail(why)  # CI must run the browser tests
        pytest.skip(why)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    _browser_available()
    data_dir = tmp_path_factory.mktemp("web")
    server = InThreadServer(
        data_dir,
        f"{INGEST_KEY}=ingest,feed;{ADMIN_KEY}=admin",
        store=f"sqlite:///{data_dir / 'web.db'}",
        banned_terms=["forbidden"],
        trainer="thread",
        train_max_wait_s=0.2,
        model_min_examples=100_000,  # the heuristic serves; the trainer reports AUC
    ).start()
    s = Site(server.url)
    try:
        s.post("/v1/videos", {"videos": _catalog()})
        _background_views(s)
        yield s
    finally:
        s.api.close()
        server.stop()


def _background_views(s: Site, rounds: int = 3, users: int = 8, prefix: str = "bg") -> None:
    """Simulated viewers: a page each, then the events an app sends for it (a third of the
    videos watched to the end and liked, the rest skipped), so the trainer has examples."""
    for round_ in range(rounds):
        for u in range(users):
            user = f"{prefix}{u}"
            page = s.get(f"/v1/feed/{user}?n=6")
            events = []
            for k, it in enumerate(page["items"]):
                vid, rid = it["video_id"], page["request_id"]
                liked = (u + k + round_) % 3 == 0
                events += [
                    event("impression", user, vid, request_id=rid),
                    event("watch", user, vid, request_id=rid, watch_ms=9000 if liked else 800),
                    event("finish" if liked else "skip", user, vid, request_id=rid),
                ]
                if liked:
                    events.append(event("like", user, vid, request_id=rid))
            s.post("/v1/events", {"events": events}, INGEST_KEY)


@contextlib.contextmanager
def _live_traffic(s: Site, max_s: float = 30.0) -> Iterator[None]:
    """Viewers in a thread while the block runs (at most max_s), so rates are not zero."""
    stop = threading.Event()

    def run() -> None:
        deadline = time.monotonic() + max_s
        rounds = 0
        while not stop.is_set() and time.monotonic() < deadline:
            rounds += 1  # new viewers each round: a viewer runs out of unseen videos
            _background_views(s, rounds=1, users=2, prefix=f"live{rounds}-")
            stop.wait(0.1)

    thread = threading.Thread(target=run, name="web-traffic", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[..., Any]]:
    """New pages in fresh contexts (empty localStorage); any console error or uncaught page
    error fails the test."""
    contexts: list[Any] = []
    problems: list[str] = []

    def open_(url: str, viewport: dict[str, int] = DESKTOP) -> Any:
        mobile = viewport["width"] < 600
        ctx = browser.new_context(viewport=viewport, has_touch=mobile, is_mobile=mobile)
        contexts.append(ctx)
        page = ctx.new_page()
        page.on(
            "console",
            lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None,
        )
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.goto(url)
        return page

    yield open_
    for ctx in contexts:
        ctx.close()
    assert problems == []


def _current(page: Any) -> dict[str, str]:
    """The card on screen: the one whose top is at the viewport's top."""
    out: dict[str, str] = page.evaluate(
        """() => {
          const top = document.getElementById('viewport').getBoundingClientRect().top;
          const card = [...document.querySelectorAll('.card')]
            .find((c) => Math.abs(c.getBoundingClientRect().top - top) < 2);
          return card ? {...card.dataset} : null;
        }"""
    )
    return out


def _wait_for_points(page: Any, n: int) -> None:
    """Until the feed-rate chart has n points (n + 1 polls of the dashboard)."""
    page.wait_for_function(
        "n => (document.querySelector('#chart-feeds polyline')?.getAttribute('points') || '')"
        ".trim().split(' ').length >= n",
        arg=n,
    )


def _engaged_slots(s: Site) -> int:
    return sum(c["engagements"] for c in s.get("/v1/channels")["channels"].values())


def _settle(page: Any) -> None:
    page.wait_for_function(
        "() => { const t = document.getElementById('track'); "
        "return t.getAnimations().length === 0; }"
    )


def _counters(s: Site) -> dict[str, dict[str, int]]:
    return {v["id"]: s.get(f"/v1/videos/{v['id']}")["counters"] for v in _catalog()}


@pytest.mark.slow
def test_demo_feed_plays_cards_and_sends_like_finish_and_skip(
    site: Site, open_page: Callable[..., Any]
) -> None:
    before, engaged = _counters(site), _engaged_slots(site)
    page = open_page(f"{site.url}/demo?speed=3&advance=0#key={INGEST_KEY}&user=web-like")
    page.wait_for_selector(".card")
    assert "key=" not in page.url  # the key left the address bar for localStorage
    _settle(page)
    card = _current(page)
    vid = card["videoId"]
    record = site.get(f"/v1/videos/{vid}")["video"]
    shown = page.locator(f'.card[data-video-id="{vid}"]')
    assert record["caption"] in shown.locator(".caption").inner_text()
    assert f"@{record['creator_id']}" in shown.locator(".creator").inner_text()
    assert f"#{record['hashtags'][0]}" in shown.locator(".tags").inner_text()
    assert record["sound_id"] in shown.locator(".sound").inner_text()
    shown.locator("button.why-btn").click()
    assert shown.locator(".why li").count() >= 1 and shown.locator(".why").is_visible()

    shown.locator("button.like").click()
    shown.locator("button.share").click()
    shown.locator("button.follow").click()
    page.wait_for_selector(f'.card.finished[data-video-id="{vid}"]', timeout=10_000)

    def delta(video_id: str) -> dict[str, int]:
        now = site.get(f"/v1/videos/{video_id}")["counters"]
        return {k: now[k] - before[video_id][k] for k in now}

    got = site.wait_for("the like and the finish", lambda: (d := delta(vid))["finishes"] and d)
    assert {k: got[k] for k in ("impressions", "plays", "likes", "shares", "finishes")} == {
        "impressions": 1,
        "plays": 1,
        "likes": 1,
        "shares": 1,
        "finishes": 1,
    }
    assert got["skips"] == 0
    assert got["watch_ms"] == record["duration_ms"]  # the bar ran for the video's duration
    profile = site.get("/v1/users/web-like")
    assert {(e["video_id"], e["type"]) for e in profile["session"]} >= {
        (vid, "like"),
        (vid, "share"),
        (vid, "follow"),
        (vid, "finish"),
    }
    assert profile["follows"] == [record["creator_id"]]
    # Joined to the served slot by request_id: the channel's engaged slots grew by one.
    assert _engaged_slots(site) == engaged + 1

    page.keyboard.press("ArrowDown")  # from a finished card: no skip
    _settle(page)
    second = _current(page)["videoId"]
    assert second != vid
    page.wait_for_timeout(300)
    page.keyboard.press("ArrowDown")  # moving on early: a skip
    skipped = site.wait_for("the skip", lambda: (d := delta(second))["skips"] and d)
    duration = site.get(f"/v1/videos/{second}")["video"]["duration_ms"]
    assert (skipped["impressions"], skipped["skips"], skipped["finishes"]) == (1, 1, 0)
    assert 0 < skipped["watch_ms"] < duration
    assert delta(vid)["skips"] == 0


@pytest.mark.slow
def test_not_interested_and_hide_creator_change_the_next_page(
    site: Site, open_page: Callable[..., Any]
) -> None:
    page = open_page(f"{site.url}/demo?advance=0#key={INGEST_KEY}&user=web-ni")
    page.wait_for_selector(".card")
    _settle(page)
    card = _current(page)
    page.locator(f'.card[data-video-id="{card["videoId"]}"] button.not-interested').click()
    # The page drops the cards not yet shown and fetches a fresh page.
    page.wait_for_function(
        "rid => [...document.querySelectorAll('.card')].some(c => c.dataset.requestId !== rid)",
        arg=card["requestId"],
    )
    fresh = page.eval_on_selector_all(
        ".card",
        "(cs, rid) => cs.filter(c => c.dataset.requestId !== rid).map(c => c.dataset.creator)",
        card["requestId"],
    )
    # not_interested filters the video and pushes the user's affinity for its creator,
    # hashtags and sound well below zero: among 12 creators the next page leaves it out.
    assert fresh and card["creator"] not in fresh
    profile = site.wait_for(
        "not_interested",
        lambda: (p := site.get("/v1/users/web-ni"))["not_interested"] and p,
    )
    assert profile["not_interested"] == [card["videoId"]]

    _settle(page)
    now = _current(page)
    pages = page.eval_on_selector_all(
        ".card", "cs => [...new Set(cs.map(c => c.dataset.requestId))]"
    )
    page.locator(f'.card[data-video-id="{now["videoId"]}"] button.hide-creator').click()
    page.wait_for_function(
        "rids => [...document.querySelectorAll('.card')]"
        ".some(c => !rids.includes(c.dataset.requestId))",
        arg=pages,
    )
    site.wait_for(
        "the hidden creator",
        lambda: now["creator"] in site.get("/v1/users/web-ni")["hidden_creators"],
    )
    after = site.get("/v1/feed/web-ni?n=20")
    creators = {
        site.get(f"/v1/videos/{it['video_id']}")["video"]["creator_id"] for it in after["items"]
    }
    assert now["creator"] not in creators


@pytest.mark.slow
def test_dashboard_draws_live_charts_and_approves_a_held_video(
    site: Site, open_page: Callable[..., Any]
) -> None:
    held = video("held-1", caption="a forbidden clip", creator_id="c-new", hashtags=["cats"])
    assert site.post("/v1/videos", {"videos": [held]})["results"][0]["status"] == "pending_review"
    site.post(
        "/v1/admin/experiments",
        {"id": "web-exp", "layer": "web", "arms": [{"name": "control"}, {"name": "more-shares",
         "overrides": {"fusion_weights": {"share": 6.0}}}]},
    )  # fmt: skip
    site.wait_for("trainer figures", lambda: site.get("/v1/admin/overview")["model"]["auc"])
    page = open_page(f"{site.url}/dashboard?every=400#key={ADMIN_KEY}")
    with _live_traffic(site):
        _wait_for_points(page, 3)
        rate = float(page.locator('[data-tile="feeds-rate"] .v').inner_text())
        events_rate = float(page.locator('[data-tile="events-rate"] .v').inner_text())
    assert rate > 0 and events_rate > 0  # figures from differencing two polls
    for chart in ("feeds", "events", "latency", "auc"):
        assert page.locator(f"#chart-{chart} svg polyline").count() >= 1, chart
    auc_heads = page.locator("#chart-auc polyline").count()
    assert auc_heads >= 3  # one line per head the trainer reported
    bars = page.eval_on_selector_all(
        "#chart-channels rect.bar", "rs => rs.map(r => +r.dataset.value)"
    )
    assert len(bars) == 13 and sum(bars) > 0  # every channel, slots won from served pages
    entered = page.eval_on_selector("#chart-pools rect.bar", "r => +r.dataset.value")
    assert entered >= 120
    assert page.locator('[data-tile="model-version"] .v').inner_text().startswith("mtl-")
    assert page.locator('[data-experiment="web-exp"] tr[data-arm]').count() == 2

    row = page.locator('#review-table tr[data-video-id="vheld-1"]')
    assert "banned term" in row.inner_text() or "forbidden" in row.inner_text()
    row.locator("button.approve").click()
    page.wait_for_selector('#review-table tr[data-video-id="vheld-1"]', state="detached")
    status = site.get("/v1/videos/vheld-1")
    assert status["status"] == "approved" and status["lifecycle"]["reviewed_by"] == "dashboard"

    page.fill("#video-id", "vheld-1")
    page.click("#video-form button")
    page.wait_for_selector('#video-detail [data-status="approved"]')
    assert page.locator('#video-detail tr[data-counter="impressions"]').count() == 1
    page.fill("#user-id", "bg1")
    page.click("#user-form button[type=submit]")
    page.wait_for_selector("#user-preview li[data-video-id]")
    assert "hashtags" in page.locator("#user-detail").inner_text()
    assert page.locator("#user-preview .reasons li").count() >= 1


@pytest.mark.slow
@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_pages_fit_the_screen_and_are_photographed(
    site: Site, open_page: Callable[..., Any], viewport: dict[str, int]
) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    size = f"{viewport['width']}x{viewport['height']}"
    demo = open_page(f"{site.url}/demo?advance=0#key={INGEST_KEY}&user=web-shot", viewport)
    demo.wait_for_selector(".card .caption")
    _settle(demo)
    demo.wait_for_timeout(800)
    assert demo.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
    assert demo.locator("#phone").bounding_box()["width"] <= viewport["width"]
    demo.screenshot(path=str(SCREENSHOTS / f"demo-{size}.png"))

    dash = open_page(f"{site.url}/dashboard?every=500#key={ADMIN_KEY}&user=web-like", viewport)
    with _live_traffic(site):
        _wait_for_points(dash, 4)
    dash.wait_for_selector("#user-preview li")
    assert dash.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
    dash.screenshot(path=str(SCREENSHOTS / f"dashboard-{size}.png"), full_page=True)
