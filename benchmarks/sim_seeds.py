"""Does online learning pay in watch time? The default engine (online trainer, the learned
ranker serving while it beats the heuristic) against the same engine with the heuristic
ranker only, and against popularity, closed-loop in the simulator, on the generated and
the KuaiRand catalogs, over several seeds.

    .venv/bin/python benchmarks/sim_seeds.py [--seeds 7 8 9] [--viewers 400] [--sessions 6]

Writes benchmarks/results/sim_seeds.json and sim_seeds.md: per catalog and seed, watch
seconds per session (mean and 95% interval) for each system, and the ratios of the
default engine to the heuristic only and to popular. Each seed draws its own viewers,
tastes and catalog (generated) or arrivals (KuaiRand).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from reelrank.sim.run import simulate

ROOT = Path(__file__).resolve().parents[1]
KUAIRAND = ROOT.parent / "shared" / "data" / "kuairand-pure-catalog"
SYSTEMS = ("reelrank", "reelrank_heuristic", "popular")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[7, 8, 9])
    ap.add_argument("--viewers", type=int, default=400)
    ap.add_argument("--sessions", type=int, default=6)
    ap.add_argument("--catalogs", nargs="+", default=["generated", f"kuairand:{KUAIRAND}"])
    ap.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "sim_seeds")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    runs: list[dict[str, Any]] = []
    started = time.perf_counter()
    for catalog in args.catalogs:
        for seed in args.seeds:
            report = simulate(
                catalog=catalog,
                viewers=args.viewers,
                sessions=args.sessions,
                seed=seed,
                systems=SYSTEMS,
                progress=False,
            )
            rows = report["systems"]
            run = {
                "catalog": catalog.split(":")[0],
                "seed": seed,
                "watch_s": {s: rows[s]["watch_s_mean"] for s in SYSTEMS},
                "ci95": {s: rows[s]["watch_s_ci95"] for s in SYSTEMS},
                "pages_by_ranker": rows["reelrank"].get("pages_by_ranker"),
                "champion": rows["reelrank"].get("trainer", {}).get("champion"),
            }
            w = run["watch_s"]
            run["vs_heuristic"] = round(w["reelrank"] / w["reelrank_heuristic"], 3)
            run["vs_popular"] = round(w["reelrank"] / w["popular"], 3)
            lo = w["reelrank"] - run["ci95"]["reelrank"]
            hi = w["reelrank_heuristic"] + run["ci95"]["reelrank_heuristic"]
            run["intervals_apart"] = lo > hi
            runs.append(run)
            keys = ("catalog", "seed", "watch_s", "vs_heuristic", "vs_popular", "intervals_apart")
            print(json.dumps({k: run[k] for k in keys}), flush=True)
    out = {
        "command": f"benchmarks/sim_seeds.py --seeds {' '.join(map(str, args.seeds))} "
        f"--viewers {args.viewers} --sessions {args.sessions}",
        "load_average_at_start": round(load, 2),
        "seconds": round(time.perf_counter() - started, 1),
        "runs": runs,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(out, indent=1) + "\n")
    lines = [
        "# Watch time in the simulator: online learning against the heuristic only",
        "",
        f"Made by `{out['command']}` (load average {out['load_average_at_start']} at the "
        f"start, {out['seconds']} s). Watch seconds per session, mean (+- 95% interval).",
        "",
        "| catalog | seed | reelrank (default) | heuristic only | popular | x heuristic "
        "| x popular | intervals apart | pages learned / heuristic |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        w, c, p = r["watch_s"], r["ci95"], r["pages_by_ranker"] or {}
        lines.append(
            f"| {r['catalog']} | {r['seed']} | {w['reelrank']} (+-{c['reelrank']}) | "
            f"{w['reelrank_heuristic']} (+-{c['reelrank_heuristic']}) | {w['popular']} | "
            f"{r['vs_heuristic']} | {r['vs_popular']} | "
            f"{'yes' if r['intervals_apart'] else 'no'} | "
            f"{p.get('learned', 0)} / {p.get('heuristic', 0)} |"
        )
    args.output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
