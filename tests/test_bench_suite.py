"""benchmarks/suite.py --summary-only: SUMMARY.md and the plots from results already there.

The fixtures are small hand-written results in the shape the benchmark scripts write; the
test checks figures the summary must compute from them (medians over rounds, ratios) and
what it must call missing. Nothing is timed.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("matplotlib", reason="the plots need the `bench` extra (matplotlib)")

ROOT = Path(__file__).resolve().parent.parent
CDF = {"q": [0, 50, 99, 100], "ms": [1.0, 2.0, 5.0, 9.0]}

HTTP_UNLOADED_P50 = [3.5, 6.25, 4.5]  # median 4.5
HTTP_FLOOR_P50 = [1.5, 1.25, 2.0]  # median 1.5: feed p50 is 3.00x the floor
TRAIN_EVENTS_PER_S = [12_000, 9_000, 15_000]  # median 12,000
SCALE_P50 = {"100k": [10.0, 12.0, 11.0], "1m": [20.0, 24.0, 22.0]}  # 11 and 22: 2.00x


def _lat(p50: float, **extra: Any) -> dict[str, Any]:
    return {"requests": 100, "p50_ms": p50, "p99_ms": p50 * 3, "mean_ms": p50 * 1.2, **extra}


def _http() -> dict[str, Any]:
    rounds = {
        "ingest": [
            {"events_per_s": 20_000 + i, "batch_p50_ms": 9.0, "batch_p99_ms": 30.0}
            for i in range(3)
        ],
        "http_floor": [_lat(x) for x in HTTP_FLOOR_P50],
        "feed_unloaded": [_lat(x) for x in HTTP_UNLOADED_P50],
        "feed_concurrent": [_lat(8.0, requests_per_s=150.0) for _ in range(3)],
    }
    return {
        "benchmark": "bench_http",
        "params": {
            "videos": 1000,
            "users": 500,
            "batch": 500,
            "ingest_clients": 2,
            "feed_clients": 4,
            "n": 10,
        },
        "load": {"videos": 1000, "users": 500, "videos_per_s": 900, "users_per_s": 5000},
        "rounds": rounds,
        "latency_cdf": {k: CDF for k in rounds},
    }


def _scale(size: str, videos: int, complete: bool) -> dict[str, Any]:
    unloaded = [_lat(x, p999_ms=x * 5, server_pipeline_mean_ms=x / 2) for x in SCALE_P50[size]]
    phases: dict[str, Any] = {
        "load": {
            k: {"per_s": 1000.0, "items": 10, "seconds": 1.0} for k in ("videos", "users", "events")
        },
        "warmup": {
            "ready": True,
            "seconds": 30.0,
            "learning_curve": [
                {"at_s": 2.0, "examples_trained": 100, "auc": {"like": 0.6, "finish": 0.55}},
                {"at_s": 4.0, "examples_trained": 400, "auc": {"like": 0.66, "finish": 0.6}},
            ],
        },
        "unloaded": {"rounds": unloaded, "cdf": CDF},
    }
    if complete:
        phases["loaded"] = {
            "target_rps": 50.0,
            "achieved_rps": 48.0,
            "p50_ms": 15.0,
            "p99_ms": 60.0,
            "unsent": 0,
            "cdf": CDF,
            "events": {"events_per_s": 290.0},
            "trainer": {"examples_per_s_median": 800.0, "lag_s_median": 1.5},
        }
        phases["restart"] = {"stop_s": 2.0, "first_feed_s": 5.0, "learned_serving_s": 6.0}
    out = {
        "benchmark": "bench_scale",
        "params": {
            "videos": videos,
            "users": videos,
            "engaged_users": 100,
            "events_per_user": 10,
            "rps": 50.0,
            "duration": 10.0,
            "event_rate": 300.0,
        },
        "server_env": {"REELRANK_TRAINER": "process"},
        "phases": phases,
        "memory": {
            "after_load": {"server": {"VmRSS_mib": 500.0, "VmHWM_mib": 700.0}, "trainer": None}
        },
    }
    if not complete:
        out["error"] = "ServerDied: the server exited during the loaded phase"
    return out


def _learning() -> dict[str, Any]:
    curve = [
        {
            "round": k + 1,
            "heuristic": {"like": 0.6, "finish": 0.58},
            "shared_bottom": {
                "examples_trained": 1000 * (k + 1),
                "like": 0.6 + 0.02 * k,
                "finish": 0.57 + 0.01 * k,
            },
            "mmoe": {
                "examples_trained": 1000 * (k + 1),
                "like": 0.59 + 0.02 * k,
                "finish": 0.57 + 0.01 * k,
            },
        }
        for k in range(4)
    ]
    arch = {
        "shared_bottom_auc_like": 0.69,
        "mmoe_auc_like": 0.68,
        "heuristic_auc_like": 0.62,
        "shared_bottom_auc_finish": 0.67,
        "mmoe_auc_finish": 0.67,
        "heuristic_auc_finish": 0.6,
        "shared_bottom_model_examples_per_s": 3000,
        "mmoe_model_examples_per_s": 2000,
        "learning_curve": curve,
    }
    rank = {"learned": _lat(1.2), "heuristic": _lat(0.4), "cascade_rank": _lat(1.5)}
    return {
        "benchmark": "bench_learning",
        "train": {
            "rounds": [{"events_per_s": x, "examples_per_s": x // 4} for x in TRAIN_EVENTS_PER_S]
        },
        "rank": {
            "rounds": {"threads_1": [rank, rank], "threads_default": [rank]},
            "cdf": {"threads_1": {"learned": CDF, "heuristic": CDF}},
        },
        "fresh": {
            "trials": [
                {"sparse_serving_s": 1.0, "dense_serving_s": 12.0},
                {"sparse_serving_s": 3.0, "dense_serving_s": None},
            ]
        },
        "feed": {
            "rounds": {"trainer_busy": [_lat(6.0)], "trainer_off": [_lat(4.0)]},
            "cdf": {"trainer_busy": CDF, "trainer_off": CDF},
        },
        "arch": {"rounds": [arch, arch]},
    }


def _ann() -> dict[str, Any]:
    row = {
        "build_s": 1.0,
        "recall_at_k": 0.97,
        "query_p50_ms": 0.5,
        "query_p99_ms": 0.9,
        "upserts_per_s": 50_000,
        "upserts_per_s_batch1": 15_000,
        "removal_supported": True,
        "index_rss_mb": 40,
        "query_cdf": CDF,
    }
    return {
        "benchmark": "bench_ann",
        "params": {"n": 10_000, "dim": 32, "queries": 50, "k": 100},
        "exact_numpy_query_ms": 5.0,
        "libraries": {
            "ivf-nprobe64": {**row, "nprobe": 64},
            "ivf-nprobe128": {**row, "nprobe": 128, "recall_at_k": 0.99},
        },
    }


@pytest.fixture
def results(tmp_path: Path) -> Path:
    files = {
        "bench_http.json": _http(),
        "bench_scale_100k.json": _scale("100k", 100_000, complete=True),
        "bench_scale_1m.json": _scale("1m", 1_000_000, complete=False),
        "bench_learning.json": _learning(),
        "bench_ann.json": _ann(),
        # no sim_lifecycle.json: the summary must say so
        "suite.json": {
            "mode": "full",
            "machine": {"cores": 2, "python": "3.11.9"},
            "git": {"commit": "abc1234", "uncommitted_files": 0},
            "parts": {
                "scale-1m": {
                    "command": "python benchmarks/bench_scale.py",
                    "seconds": 60,
                    "status": "stopped at its time limit (1 min)",
                    "uptime_before": "up 1 day, load average: 1.00, 0.50, 0.25",
                    "uptime_after": "up 1 day, load average: 3.00, 2.00, 1.00",
                }
            },
        },
    }
    for name, data in files.items():
        (tmp_path / name).write_text(json.dumps(data))
    return tmp_path


def test_summary_only_builds_tables_and_plots_from_existing_json(results: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "benchmarks/suite.py", "--summary-only", "--results", str(results)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    summary = (results / "SUMMARY.md").read_text()

    # medians over rounds and ratios against the baseline of the same run
    assert statistics.median(HTTP_UNLOADED_P50) == 4.5
    assert "| feed p50 ms, one client | 4.50 | /healthz 1.50 | 3.00x |" in summary
    assert "| training: log events/s, one core (goal >= 10,000) | 12,000 |" in summary
    assert "| feed unloaded p50 ms (median of rounds) | 11 | 22 | 2.00x |" in summary
    rank = (
        "| rank 1,000 candidates, learned p50 ms (1 torch thread) | 1.20 | heuristic 0.4 | 3.00x |"
    )
    assert rank in summary
    assert "| ivf-nprobe128 |" in summary and "| 10.00x |" in summary
    # freshness: the median of the trials that measured it, and how many did
    assert "| freshness: dense serving s (goal <= 60 s) | 12 | max 12, 1 of 2 trials |" in summary
    # run facts and what is missing or partial
    assert "git commit `abc1234`" in summary
    assert "3.00, 2.00, 1.00" in summary
    missing = summary.split("## Missing or partial")[1]
    assert "`scale-1m`: stopped at its time limit" in missing
    assert "`scale-1m`: phases not measured: loaded, restart." in missing
    assert "ServerDied" in missing
    assert "no `sim_lifecycle.json`" in missing
    assert "`http`" not in missing and "`learning`" not in missing

    for name in ("latency_cdf", "throughput", "learning_curves", "ann_recall_latency"):
        png = results / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"(plots/{name}.png)" in summary
