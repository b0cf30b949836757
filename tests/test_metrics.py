"""The engine's Prometheus metrics: labelled children are looked up once and count right."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from reelrank.engine import Engine
from reelrank.metrics import SLOW_JOB_S, Metrics

from .conftest import make_settings


def test_a_labelled_child_is_reused_and_counts_every_increment() -> None:
    m = Metrics()
    first = m.feed_items.labels("trending")
    assert m.feed_items.labels("trending") is first
    assert m.feed_items.labels(source="trending") is first  # keyword form, the same child
    for _ in range(3):
        m.feed_items.labels("trending").inc()
    m.feed_items.labels("fresh").inc(2)
    m.recall_seconds.labels("trending").observe(0.001)
    get = m.registry.get_sample_value
    assert get("reelrank_feed_items_total", {"source": "trending"}) == 3
    assert get("reelrank_feed_items_total", {"source": "fresh"}) == 2
    assert get("reelrank_recall_seconds_count", {"source": "trending"}) == 1


def test_a_removed_child_is_not_handed_out_again() -> None:
    m = Metrics()
    m.feed_items.labels("trending").inc(5)
    m.feed_items.remove("trending")
    m.feed_items.labels("trending").inc()
    assert m.registry.get_sample_value("reelrank_feed_items_total", {"source": "trending"}) == 1
    m.feed_items.clear()
    assert m.registry.get_sample_value("reelrank_feed_items_total", {"source": "trending"}) is None
    m.feed_items.labels("trending").inc(2)
    assert m.registry.get_sample_value("reelrank_feed_items_total", {"source": "trending"}) == 2


def test_background_jobs_are_timed_and_slow_runs_logged(caplog: pytest.LogCaptureFixture) -> None:
    m = Metrics()
    calls: list[int] = []
    fast = m.timed_job("fast", lambda: calls.append(1))
    slow = m.timed_job("slow", lambda: time.sleep(SLOW_JOB_S * 1.5))

    def broken() -> None:
        raise RuntimeError("boom")

    failing = m.timed_job("failing", broken)
    with caplog.at_level(logging.INFO, logger="reelrank.metrics"):
        fast()
        fast()
        slow()
        with pytest.raises(RuntimeError):  # the job's own failure reaches its caller
            failing()
    get = m.registry.get_sample_value
    assert calls == [1, 1]
    assert get("reelrank_background_job_seconds_count", {"job": "fast"}) == 2
    assert get("reelrank_background_job_seconds_count", {"job": "slow"}) == 1
    assert get("reelrank_background_job_seconds_count", {"job": "failing"}) == 1
    assert get("reelrank_background_job_seconds_sum", {"job": "slow"}) >= SLOW_JOB_S
    logged = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("background job slow took 0.") for line in logged)
    assert not any("background job fast" in line for line in logged)


def test_a_running_engine_times_its_background_jobs(tmp_path: Path) -> None:
    eng = Engine(make_settings(tmp_path)).open()
    try:
        get = eng.metrics.registry.get_sample_value
        deadline = time.monotonic() + 10.0
        while not get("reelrank_background_job_seconds_count", {"job": "impressions"}):
            assert time.monotonic() < deadline, "the impression flush job was never timed"
            time.sleep(0.05)
    finally:
        eng.close()
