"""Start to a full content index: how long a restart takes until every approved video is
back in the content index (what the content channel and the diversity policy search).

Builds an engine on the embedded SQLite store with `--videos` generated videos (captions
and hashtags from 24 topics), embedded by `--embedder` (MiniLM by default, the one a
`make install` runs), waits until all are indexed and closes it. Then `--rounds` times:
opens a new engine on the same store and measures the time until `open()` returns and
until the content index holds every approved video again, and closes it.

Prints one line per round and the medians, and writes benchmarks/results/bench_restart.json
with the commit measured and the load average. Run: `python benchmarks/bench_restart.py`;
to compare with another commit, run the same script from a checkout of it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))
from benchmarks.suite import git_state  # noqa: E402

from reelrank.config import load_settings  # noqa: E402
from reelrank.engine import Engine  # noqa: E402

TOPICS = [
    "cooking", "football", "cats", "travel", "makeup", "guitar", "gaming", "fitness",
    "dance", "comedy", "cars", "science", "fashion", "dogs", "art", "history",
    "basketball", "gardening", "skincare", "coding", "pranks", "magic", "fishing", "baking",
]  # fmt: skip
WORDS = ["quick", "easy", "best", "funny", "daily", "pro", "tiny", "huge", "late", "new"]


def catalog(n: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    now = time.time() - 3600
    out = []
    for i in range(n):
        topic = TOPICS[int(rng.integers(len(TOPICS)))]
        words = rng.choice(WORDS, size=2, replace=False)
        out.append(
            {
                "id": f"v{i}",
                "creator_id": f"c{int(rng.integers(n // 20 + 1))}",
                "caption": f"{words[0]} {topic} clip {i}, {words[1]} take",
                "hashtags": [topic, str(words[0])],
                "duration_ms": int(rng.integers(5_000, 60_000)),
                "created_at": now - float(rng.uniform(0, 30 * 86400)),
            }
        )
    return out


def wait_indexed(eng: Engine, timeout: float) -> float:
    """Seconds until the content index holds every approved video (NaN on timeout)."""
    started = time.perf_counter()
    want = int(eng.state.table.approved[: eng.state.table.size].sum())
    while time.perf_counter() - started < timeout:
        c = eng.content
        if c.filled.is_set() and not c.waiting and len(eng.state.content) >= want:
            return time.perf_counter() - started
        time.sleep(0.02)
    return float("nan")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=5000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--embedder", default="minilm", choices=["minilm", "hashed"])
    p.add_argument("--timeout", type=float, default=1800.0)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "bench_restart.json"))
    args = p.parse_args(argv)
    load_before = os.getloadavg()
    data = Path(tempfile.mkdtemp(prefix="bench-restart-"))
    settings = load_settings(
        env={},
        data_dir=str(data),
        trainer="off",
        content_embedder=args.embedder,
        log_level="warning",
    )
    eng = Engine(settings).open()
    started = time.perf_counter()
    videos = catalog(args.videos, args.seed)
    for i in range(0, len(videos), 1000):
        eng.upsert_videos(videos[i : i + 1000])
    first = time.perf_counter() - started + wait_indexed(eng, args.timeout)
    print(f"load: {args.videos:,} videos upserted and indexed in {first:.1f} s", flush=True)
    eng.close()
    rounds = []
    for r in range(args.rounds):
        t0 = time.perf_counter()
        eng = Engine(settings).open()
        opened = time.perf_counter() - t0
        indexed = opened + wait_indexed(eng, args.timeout)
        restored = getattr(eng.content, "restored", None)
        embedded = getattr(eng.content, "embedded", None)
        eng.close()
        rounds.append(
            {"open_s": opened, "indexed_s": indexed, "restored": restored, "embedded": embedded}
        )
        print(
            f"restart {r + 1}: open() {opened:.2f} s, content index full {indexed:.2f} s "
            f"(read back {restored}, embedded {embedded})",
            flush=True,
        )
    shutil.rmtree(data, ignore_errors=True)
    out = {
        "benchmark": "bench_restart",
        "git": git_state(),
        "python": platform.python_version(),
        "args": vars(args),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "first_load_s": first,
        "rounds": rounds,
        "median_open_s": statistics.median(x["open_s"] for x in rounds),
        "median_indexed_s": statistics.median(x["indexed_s"] for x in rounds),
    }
    print(
        f"median over {args.rounds} restarts: open() {out['median_open_s']:.2f} s, "
        f"content index full {out['median_indexed_s']:.2f} s"
    )
    Path(args.output).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
