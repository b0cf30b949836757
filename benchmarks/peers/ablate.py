"""Where reelrank's NDCG@10 goes in a peers protocol: the same replay with settings changed.

Each configuration is replayed through the engine exactly as `run_peers.py` replays
reelrank (`reelrank_fit_rank`: in process, event-clocked, each user's feed asked for when
their test part begins) on the protocol's test split, or with `--valid` on its validation
split, and scored with the same cleaning and metrics. Nothing is tuned: every row is one
replay with the settings named. Prints a table and writes `--output` (JSON).

    .venv/bin/python -m benchmarks.peers.ablate --protocol users \\
        --config '{"train": false}' \\
        --config '{"train": false, "settings": {"exploration_fraction": 0.0}}'

A configuration is a JSON object: `settings` (overrides of reelrank's settings on top of
the peers harness's) and `train` (false: the heuristic ranker alone, no online training).
`--jobs 2` replays two configurations at a time (the figures do not depend on it: the
replays are event-clocked).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `benchmarks.peers` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.peers.protocol import PROTOCOLS, load_ratings, make_split, validation_split
from benchmarks.peers.run_peers import DEFAULT_DATA, K, bootstrap_ci, scored
from benchmarks.peers.systems import reelrank_fit_rank
from benchmarks.suite import git_state


def replay_one(data: str, protocol: str, valid: bool, config: dict[str, Any]) -> dict[str, Any]:
    split = make_split(load_ratings(Path(data) / "ratings.csv"), protocol)
    if valid:
        split = validation_split(split, 0.1 if protocol == "temporal" else 0.2, protocol)
    started = time.perf_counter()
    rankings, notes = reelrank_fit_rank(split, config, K, Path(data) / "movies.csv")
    metrics, extra = scored(rankings, split)
    return {
        "config": config,
        "metrics": metrics,
        "ndcg@10_ci": bootstrap_ci(extra["ndcg@10_per_user"]),
        "users": len(split.users),
        "ranker_served": notes.get("ranker_served"),
        "feeds_at_end_of_replay": notes.get("feeds_at_end_of_replay"),
        "seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--protocol", choices=sorted(PROTOCOLS), default="users")
    p.add_argument("--valid", action="store_true", help="the validation split, not test")
    p.add_argument(
        "--config",
        action="append",
        type=json.loads,
        required=True,
        help="a JSON configuration, e.g. '{\"train\": false}'; repeat for more rows",
    )
    p.add_argument("--jobs", type=int, default=1, help="configurations replayed at a time")
    p.add_argument("--output", type=Path, default=None, help="write the rows here (JSON)")
    args = p.parse_args(argv)
    for config in args.config:
        if not isinstance(config, dict) or set(config) - {"settings", "train"}:
            p.error(f"--config {json.dumps(config)}: an object with `settings` and `train`")
    # Spawned, not forked: a child forked after the parent ran torch's OpenMP threads can
    # hang in its first parallel region (the related model's Cholesky did, in a test run).
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=max(1, args.jobs), mp_context=spawn) as pool:
        rows = list(
            pool.map(
                replay_one,
                [str(args.data)] * len(args.config),
                [args.protocol] * len(args.config),
                [args.valid] * len(args.config),
                args.config,
            )
        )
    split = "validation" if args.valid else "test"
    print(f"protocol {args.protocol}, {split} split, {rows[0]['users']} users")
    print(f"{'ndcg@10':>8} {'95% CI':>13} {'hr@10':>7} {'at end':>7}  configuration")
    for row in rows:
        m, end = row["metrics"], row["feeds_at_end_of_replay"] or {}
        ci = "-".join(f"{x:.3f}" for x in row["ndcg@10_ci"])
        at_end = end.get("ndcg@10", float("nan"))
        config = json.dumps(row["config"])
        print(f"{m['ndcg@10']:8.4f} {ci:>13} {m['hr@10']:7.4f} {at_end:7.4f}  {config}")
    if args.output is not None:
        report = {
            "command": shlex.join(
                [
                    Path(sys.executable).name,
                    "-m",
                    "benchmarks.peers.ablate",
                    *(sys.argv[1:] if argv is None else argv),
                ]
            ),
            "code": git_state(),
            "protocol": args.protocol,
            "split": split,
            "rows": rows,
        }
        args.output.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
