"""Replay speed: how many logged interactions per second `reelrank evaluate` replays
through the engine as `reelrank serve` runs it (online training on the event clock, the
champion/challenger, every channel), beside the heuristic-only engine measured in the
same run (no trainer: what online learning adds to the cost).

The replay is the product's own path: for each positive interaction a feed is computed
for that user at that time (recall, filters, ranker, policy), then every interaction is
ingested and, for the learned engine, logged as a page the trainer joins, learns from and
publishes on the event clock. The systems replay the log side by side, interaction by
interaction, so both see the same machine load; each system's seconds are its own calls.

Prints one line per system and writes benchmarks/results/bench_replay.json with the commit
measured, the load average before and after, interactions/s per system and the ratio of
the two. Run: `python benchmarks/bench_replay.py` (the whole shared MovieLens log: about
15 minutes on 2 cores); `--limit N` replays the first N interactions only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))
from benchmarks.suite import git_state  # noqa: E402

from reelrank.evaluate.run import evaluate  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "movielens-latest-small"
SYSTEMS = ("reelrank", "reelrank_heuristic")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ratings", default=str(DATA / "ratings.csv"), help="MovieLens ratings.csv")
    p.add_argument("--movies", default=str(DATA / "movies.csv"), help="MovieLens movies.csv")
    p.add_argument("--limit", type=int, default=None, help="replay only the first N")
    p.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "bench_replay.json"))
    args = p.parse_args(argv)
    load_before = os.getloadavg()
    code = git_state()  # what was measured: the commit, and whether the work tree differed
    started = time.perf_counter()
    report = evaluate(args.ratings, args.movies, systems=SYSTEMS, limit=args.limit, progress=False)
    wall = time.perf_counter() - started
    interactions = int(report["dataset"]["replayed"])
    systems: dict[str, Any] = {}
    for name in SYSTEMS:
        row = report["systems"][name]
        seconds = float(row["seconds"])
        systems[name] = {
            "seconds": seconds,
            "interactions_per_s": round(interactions / seconds, 1) if seconds > 0 else None,
            "ms_per_interaction": round(1000.0 * seconds / interactions, 3),
            "ndcg@10": row["ndcg@10"],
        }
        print(
            f"{name:<20} {interactions} interactions in {seconds:.1f} s: "
            f"{systems[name]['interactions_per_s']} interactions/s "
            f"(NDCG@10 {row['ndcg@10']})"
        )
    learned, heuristic = (systems[n]["seconds"] for n in SYSTEMS)
    ratio = round(learned / heuristic, 2) if heuristic > 0 else None
    print(f"online learning costs {ratio}x the heuristic engine's replay time")
    out = {
        "benchmark": "bench_replay",
        "command": "python benchmarks/bench_replay.py"
        + (f" --limit {args.limit}" if args.limit else ""),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "code": code,
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "dataset": report["dataset"],
        "tests": report["protocol"]["tests"],
        "wall_s": round(wall, 1),
        "systems": systems,
        "learned_over_heuristic_time": ratio,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.output}")
    return out


if __name__ == "__main__":
    main()
