"""reelrank side by side with reference recommenders on MovieLens latest-small.

One global temporal split (protocol.py), the same evaluated users, catalog and exclusions
for every system; each system tuned on a validation split carved from the train part
(same budget for all, picked by validation NDCG@10), retrained on the whole train part
and scored once on test. Writes benchmarks/results/peers.json and peers.md.

    .venv/bin/python -m benchmarks.peers.run_peers

See benchmarks/peers/README.md for the protocol and the RecBole environment.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a file: make `benchmarks.peers` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.peers.protocol import (
    KS,
    PROTOCOLS,
    Split,
    clean,
    load_ratings,
    make_split,
    score_rankings,
    set_ndcg,
    validation_split,
)
from benchmarks.peers.systems import (
    ALS_CONFIGS,
    EASE_CONFIGS,
    HARNESS_SETTINGS,
    REELRANK_CONFIGS,
    Peer,
    als_fit_rank,
    ease_fit_rank,
    popular_fit_rank,
    reelrank_fit_rank,
)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "movielens-latest-small"
RECBOLE_PYTHON = ROOT / "benchmarks" / "peers" / ".venv" / "bin" / "python"
RECBOLE_MODELS = ("BPR", "LightGCN", "SASRec")
K = max(KS)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def peers(data: Path) -> dict[str, Peer]:
    movies = data / "movies.csv"
    return {
        "reelrank": Peer(
            "reelrank",
            REELRANK_CONFIGS,
            lambda split, config, k: reelrank_fit_rank(split, config, k, movies),
            ("reelrank", "torch", "numpy"),
        ),
        "popular": Peer("popular", [{"positives_only": True}], popular_fit_rank),
        "als": Peer("als", ALS_CONFIGS, als_fit_rank, ("implicit", "numpy", "scipy")),
        "ease": Peer("ease", EASE_CONFIGS, ease_fit_rank, ("numpy", "scipy")),
    }


def scored(rankings: dict[str, list[str]], split: Split) -> tuple[dict[str, float], dict]:
    """The protocol's cleaning, then the metrics; also what cleaning removed."""
    known = set(split.catalog)
    cleaned = {u: clean(rankings.get(u, []), u, split, K, known) for u in split.users}
    removed = sum(len(rankings.get(u, [])[:K]) - len(cleaned[u]) for u in split.users)
    short = sum(len(cleaned[u]) < K for u in split.users)
    return score_rankings(cleaned, split), {
        "items_removed_by_protocol": removed,
        "users_with_short_lists": short,
        "ndcg@10_per_user": [
            round(set_ndcg(cleaned[u], split.test_positives[u], 10), 5) for u in split.users
        ],
    }


def bootstrap_ci(values: list[float], rounds: int = 2000, seed: int = 0) -> list[float]:
    """95% percentile interval of the mean over users, resampling users."""
    x = np.asarray(values)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), (rounds, len(x)))].mean(axis=1)
    return [round(float(np.percentile(means, 2.5)), 4), round(float(np.percentile(means, 97.5)), 4)]


def run_peer(peer: Peer, split: Split, valid: Split, budget: int) -> dict[str, Any]:
    """Tune on the validation split, retrain the pick on the train part, score on test."""
    record: dict[str, Any] = {"configs": [], "versions": peer.versions()}
    started, cpu = time.perf_counter(), time.process_time()
    for config in peer.configs[:budget]:
        t0 = time.perf_counter()
        rankings, notes = peer.fit_rank(valid, config, K)
        metrics, _ = scored(rankings, valid)
        seconds = round(time.perf_counter() - t0, 1)
        log(f"{peer.name} {config}: valid ndcg@10 {metrics['ndcg@10']} ({seconds} s)")
        record["configs"].append({"config": config, "valid": metrics, "notes": notes, "s": seconds})
    record["tuning_s"] = round(time.perf_counter() - started, 1)
    record["tuning_cpu_s"] = round(time.process_time() - cpu, 1)
    best = max(record["configs"], key=lambda c: c["valid"]["ndcg@10"])  # first wins ties
    record["chosen"] = best["config"]
    t0, c0 = time.perf_counter(), time.process_time()
    rankings, notes = peer.fit_rank(split, best["config"], K)
    record["final_s"] = round(time.perf_counter() - t0, 1)
    record["final_cpu_s"] = round(time.process_time() - c0, 1)
    record["test"], extra = scored(rankings, split)
    record["notes"] = {**notes, **extra}
    log(f"{peer.name} test: {record['test']} ({record['final_s']} s)")
    return record


def start_recbole(args: argparse.Namespace, out: Path) -> subprocess.Popen[bytes] | None:
    python = Path(args.recbole_python)
    if not python.exists():
        log(f"RecBole's interpreter {python} is missing: run benchmarks/peers/setup_recbole.sh")
        return None
    command = [
        str(python),
        str(Path(__file__).with_name("recbole_peers.py")),
        "--protocol",
        args.protocol,
        "--data",
        str(args.data),
        "--output",
        str(out),
        "--budget",
        str(args.budget),
        "--max-epochs",
        str(args.recbole_max_epochs),
        "--eval-every",
        str(args.recbole_eval_every),
        "--patience",
        str(args.recbole_patience),
        "--config-budget-s",
        str(args.recbole_config_budget_s),
        "--models",
        *args.recbole_models,
    ]
    log("starting " + shlex.join(command))
    stderr = out.with_suffix(".log").open("wb")
    # RecBole writes log_tensorboard/ into its working directory: not the repository.
    workdir = tempfile.mkdtemp(prefix="recbole-peers-")
    return subprocess.Popen(command, cwd=workdir, stdout=stderr, stderr=stderr)


def collect_recbole(proc: subprocess.Popen[bytes] | None, out: Path, split: Split) -> dict:
    if proc is None:
        return {}
    code = proc.wait()
    if code != 0 or not out.exists():
        log(f"RecBole exited with {code}; see {out.with_suffix('.log')}")
        return {}
    return read_recbole(out, split)


def read_recbole(out: Path, split: Split) -> dict[str, Any]:
    """RecBole's models that finished, scored with the protocol's code."""
    got = json.loads(out.read_text())
    if got["users"] != split.users:
        raise RuntimeError("RecBole evaluated other users than the protocol's")
    results = {}
    for name, record in got["models"].items():
        record["test"], record["notes"] = scored(record.pop("test_rankings"), split)
        record["versions"] = got["versions"] | {"python": got["python"]}
        record["configs"] = [
            {
                "config": c["params"] | {"epochs": c["best_epoch"]},
                "valid": c["valid"],
                "notes": {"epochs_run": c["epochs_run"], "curve": c["curve"]},
                "s": c["seconds"],
            }
            for c in record["configs"]
        ]
        record["chosen"] = record["chosen"]["params"] | {"epochs": record["chosen"]["epochs"]}
        results[f"recbole_{name.lower()}"] = record
    return results


def table(report: dict[str, Any]) -> str:
    cols = [f"{m}@{k}" for k in KS for m in ("ndcg", "hr", "mrr")] + ["coverage@10"]
    lines = [
        "| system | " + " | ".join(cols) + " | NDCG@10 95% CI | tuning s (cpu) | final s (cpu) |",
        "|---" * (len(cols) + 4) + "|",
    ]
    for name, r in report["systems"].items():
        t = r["test"]
        ci = r["ndcg@10_ci95"]
        lines.append(
            f"| {name} | "
            + " | ".join(f"{t[c]:.4f}" for c in cols)
            + f" | {ci[0]:.3f}-{ci[1]:.3f} | {r['tuning_s']} ({r.get('tuning_cpu_s')})"
            + f" | {r['final_s']} ({r.get('final_cpu_s')}) |"
        )
    return "\n".join(lines)


PROTOCOL_TEXT = {
    "temporal": "global temporal split, the last 20% of ratings by time are test",
    "users": "each user's last 20% of ratings by time are test (users with at least 5 "
    "ratings; a per-user holdout, so one user's train part may be later than another's "
    "test part; reelrank replays the train part in time order and is asked for each "
    "user's feed when that user's test part begins)",
}
VALID_TEXT = {
    "temporal": "the last 10% of the train part",
    "users": "each user's last 20% of their train part",
}


def markdown(report: dict[str, Any]) -> str:
    d = report["split"]
    protocol = report.get("protocol", "temporal")
    out = [
        "# reelrank and reference recommenders on MovieLens latest-small",
        "",
        f"Made by `{report['command']}` on {report['machine']} ({report['date']}); "
        f"total wall time {report['wall_s']} s."
        + (
            f" RecBole rows added from a separate run by `{report['recbole_added_by']}`."
            if "recbole_added_by" in report
            else ""
        ),
        "",
        f"Protocol `{protocol}` (benchmarks/peers/README.md): {PROTOCOL_TEXT[protocol]}; "
        "positives are ratings >= 4.0; full ranking of the "
        f"{d['catalog_items']} items seen in train, each user's train items excluded; "
        f"the same {d['evaluated_users']} users for every system (at least one train "
        f"interaction and one test positive on a train item). Tuned on {VALID_TEXT[protocol]} "
        "by validation NDCG@10, up to "
        f"{report['budget']} configurations per system, then retrained on all of train.",
        "",
        f"Items first seen in test cannot be recommended by any system: "
        f"{d['test_items_new_in_test']} test items, "
        f"{d['test_positives_on_items_new_in_test']} test positives of evaluated users "
        "are on such items and count for no one (not in the relevant sets). "
        f"{d['test_positives_of_users_new_in_test']} test positives belong to users with "
        "no train interaction (not evaluated).",
        "",
        table(report),
        "",
        (
            f"Only {d['evaluated_users']} users qualify (most test users of a global "
            "temporal split on this data set arrive after the cut), so differences inside "
            "the bootstrap intervals (users resampled) are not evidence."
            if protocol == "temporal"
            else f"{d['evaluated_users']} users are evaluated; the interval is a 95% "
            "bootstrap over users."
        ),
        "",
        "## Chosen configurations",
        "",
    ]
    for name, r in report["systems"].items():
        notes = {k: v for k, v in r["notes"].items() if k != "ndcg@10_per_user"}
        valid = ", ".join(f"{c['valid']['ndcg@10']:.4f}" for c in r["configs"])
        out.append(
            f"- **{name}**: `{json.dumps(r['chosen'])}`; validation NDCG@10 per "
            f"configuration tried: {valid}; notes: `{json.dumps(notes)}`"
        )
    out += ["", "## Versions", ""]
    for name, r in report["systems"].items():
        out.append(f"- {name}: {', '.join(f'{k} {v}' for k, v in r['versions'].items()) or '-'}")
    out += [
        "",
        f"reelrank harness settings (every configuration): `{json.dumps(HARNESS_SETTINGS)}`",
        "",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="temporal",
        help="temporal: one global temporal split (peers.json); users: each user's last 20%% "
        "by time as test (peers-users.json)",
    )
    parser.add_argument("--output-dir", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--systems", nargs="+", default=["reelrank", "popular", "als", "ease"])
    parser.add_argument("--budget", type=int, default=3, help="configurations per system")
    parser.add_argument("--recbole-python", default=str(RECBOLE_PYTHON))
    parser.add_argument("--recbole-models", nargs="*", default=list(RECBOLE_MODELS))
    # RecBole's own defaults are 300 epochs, evaluation every epoch, patience 10: far past
    # what two shared cores allow for four configurations of three models.
    parser.add_argument("--recbole-max-epochs", type=int, default=40)
    parser.add_argument("--recbole-eval-every", type=int, default=5)
    parser.add_argument("--recbole-patience", type=int, default=2)
    parser.add_argument("--recbole-config-budget-s", type=float, default=240.0)
    parser.add_argument(
        "--add-recbole",
        type=Path,
        help="score the models finished in this recbole_peers.py output and add them to "
        "the existing peers.json instead of running anything",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if not (args.data / "ratings.csv").is_file():
        log(f"no ratings.csv in {args.data}: pass --data")
        return 2
    available = peers(args.data)
    unknown = [name for name in args.systems if name not in available]
    if unknown:
        log(f"unknown systems {unknown}; known: {sorted(available)}")
        return 2
    # Fail now, not after the half hour of reelrank's replays that run first.
    missing = sorted({p for name in args.systems for p in available[name].missing()})
    if missing:
        log(f"missing packages {missing}: install the bench extra (pip install -e '.[bench]')")
        return 2
    args.output_dir.mkdir(parents=True, exist_ok=True)
    split = make_split(load_ratings(args.data / "ratings.csv"), args.protocol, 0.2)
    valid = validation_split(split, 0.1 if args.protocol == "temporal" else 0.2, args.protocol)
    stem = "peers" if args.protocol == "temporal" else "peers-users"
    log(f"test split: {split.describe()}")
    log(f"validation split: {valid.describe()}")

    if args.add_recbole is not None:
        report = json.loads((args.output_dir / f"{stem}.json").read_text())
        if report["users"] != split.users:
            raise RuntimeError("peers.json was made with other users than this split's")
        report["systems"].update(read_recbole(args.add_recbole, split))
        report["recbole_added_by"] = shlex.join(
            [".venv/bin/python", "-m", "benchmarks.peers.run_peers", *(argv or sys.argv[1:])]
        )
        return finish(report, args.output_dir, stem)

    recbole_out = args.output_dir / f"{stem}-recbole.json"
    recbole_started = time.perf_counter()
    proc = start_recbole(args, recbole_out) if args.recbole_models else None
    systems: dict[str, Any] = {}
    for name in args.systems:
        systems[name] = run_peer(available[name], split, valid, args.budget)
    recbole = collect_recbole(proc, recbole_out, split)
    log(f"RecBole finished after {time.perf_counter() - recbole_started:.0f} s")
    systems.update(recbole)
    report = {
        "command": shlex.join(
            [".venv/bin/python", "-m", "benchmarks.peers.run_peers", *(argv or sys.argv[1:])]
        ),
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "budget": args.budget,
        "protocol": args.protocol,
        "split": split.describe(),
        "validation_split": valid.describe(),
        "users": split.users,
        "systems": systems,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    return finish(report, args.output_dir, stem)


def finish(report: dict[str, Any], output_dir: Path, stem: str = "peers") -> int:
    """Intervals, systems best first, then <stem>.json, <stem>.md and the table."""
    for record in report["systems"].values():
        record["ndcg@10_ci95"] = bootstrap_ci(record["notes"]["ndcg@10_per_user"])
    report["systems"] = dict(
        sorted(report["systems"].items(), key=lambda kv: -kv[1]["test"]["ndcg@10"])
    )
    (output_dir / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
    (output_dir / f"{stem}.md").write_text(markdown(report))
    print(table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
