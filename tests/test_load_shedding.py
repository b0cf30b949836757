"""Load shedding: past `max_in_flight` requests in flight, a new one is refused at once
with 503 and a Retry-After header instead of queueing; the health check and the metrics
still answer, and the held request completes once it can."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from .conftest import INGEST, KEYS, event, video
from .server import InThreadServer


def _in_flight(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    line = next(x for x in text.splitlines() if x.startswith("reelrank_requests_in_flight "))
    return float(line.split()[1])


@contextlib.contextmanager
def held_event_batch(server: InThreadServer) -> Iterator[dict[str, httpx.Response]]:
    """An event batch kept in flight: the state's writer lock is held, so the batch is
    appended to the log and then waits to be folded in. Its response, once the lock is
    released, is in the dict under "r"."""
    engine = server.engine
    held: dict[str, httpx.Response] = {}
    with engine.state.lock:
        post = threading.Thread(
            target=lambda: held.update(
                r=httpx.post(
                    f"{server.url}/v1/events",
                    json={"events": [event("finish", "u1", "v1")]},
                    headers=INGEST,
                    timeout=30,
                )
            )
        )
        post.start()
        deadline = time.monotonic() + 20
        while not engine.store.events.read(0, 10):  # appended: now it waits in flight
            assert time.monotonic() < deadline, "the held request never arrived"
            time.sleep(0.02)
        yield held
        assert post.is_alive()  # still held when the block ends
    post.join(30)
    assert held["r"].status_code == 200 and held["r"].json()["accepted"] == 1


def test_a_request_past_the_limit_is_refused_with_retry_after(tmp_path: Path) -> None:
    server = InThreadServer(tmp_path, KEYS, max_in_flight=1, feed_requires_key=False).start()
    try:
        engine = server.engine
        engine.upsert_videos([video(i) for i in range(30)])
        with held_event_batch(server):
            assert _in_flight(server.url) == 1
            refused = httpx.get(f"{server.url}/v1/feed/u2", timeout=5)
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1"
            assert "in flight" in refused.json()["detail"]
            assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
            shed = engine.metrics.registry.get_sample_value("reelrank_requests_shed_total")
            assert shed == 1
        assert _in_flight(server.url) == 0
        page = httpx.get(f"{server.url}/v1/feed/u2", timeout=5)
        assert page.status_code == 200 and len(page.json()["items"]) >= 1
    finally:
        server.stop()


def test_without_a_limit_a_held_request_blocks_nothing(tmp_path: Path) -> None:
    server = InThreadServer(tmp_path, KEYS, max_in_flight=0, feed_requires_key=False).start()
    try:
        engine = server.engine
        engine.upsert_videos([video(i) for i in range(30)])
        with held_event_batch(server):
            for k in range(5):  # reads that take no writer lock
                got = httpx.get(f"{server.url}/v1/videos/v{k}", headers=INGEST, timeout=5)
                assert got.status_code == 200
            assert engine.metrics.registry.get_sample_value("reelrank_requests_shed_total") == 0
    finally:
        server.stop()
