"""Content-lifecycle simulation: do traffic pools promote planted-good new videos and
stop planted-bad ones, and how fast does a brand-new user's feed follow their taste?

    python benchmarks/sim_lifecycle.py [--videos 3000] [--viewers 200] [--new 80]

Runs an in-process engine (memory store, hashed content embedder, heuristic ranker) over
a generated world and writes benchmarks/results/sim_lifecycle.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from reelrank.clock import EventClock
from reelrank.config import load_settings
from reelrank.engine import Engine
from reelrank.sim.lifecycle import back_catalog, cold_start_simulation, pool_simulation
from reelrank.sim.run import START


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=3000, help="back-catalog videos")
    ap.add_argument("--viewers", type=int, default=400, help="simulated viewers")
    ap.add_argument("--new", type=int, default=80, help="new uploads with planted quality")
    ap.add_argument("--pool-sizes", default="20,60", help="impressions per tier")
    ap.add_argument("--thresholds", default="1.0,1.1", help="quality to pass each tier")
    ap.add_argument("--rounds", type=int, default=25, help="most rounds after the uploads")
    ap.add_argument("--exploration", type=float, default=0.2, help="exploration_fraction")
    ap.add_argument("--newcomers", type=int, default=24, help="cold-start users")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--output", default="benchmarks/results/sim_lifecycle.json")
    args = ap.parse_args()
    sizes = [int(x) for x in args.pool_sizes.split(",")]
    thresholds = [float(x) for x in args.thresholds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            env={},
            data_dir=tmp,
            store="memory://",
            trainer="off",
            content_embedder="hashed",
            recall_budget_ms=0.0,
            pool_sizes=sizes,
            pool_thresholds=thresholds,
            pool_settle_s=0.0,
            exploration_fraction=args.exploration,
        )
        engine = Engine(settings, clock=EventClock(START)).open()  # the same run anywhere
        try:
            world = back_catalog(args.videos, args.viewers, args.seed, now=START)
            started = time.perf_counter()
            pools = pool_simulation(
                engine, world, new_videos=args.new, max_rounds=args.rounds, seed=args.seed
            )
            pools["seconds"] = round(time.perf_counter() - started, 1)
            print("traffic pools:", json.dumps(pools, indent=2))
            started = time.perf_counter()
            cold = cold_start_simulation(engine, world, users=args.newcomers, seed=args.seed)
            cold["seconds"] = round(time.perf_counter() - started, 1)
            print("cold start:", json.dumps(cold, indent=2))
        finally:
            engine.close()
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"args": vars(args), "pools": pools, "cold_start": cold}, indent=2) + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
