"""Stop and start at catalog scale: SIGTERM to exit, and start to the first feed, of a real
`reelrank serve` (the trainer as its own process) on a store of `--videos` videos and
`--users` users, `--engaged-users` of them with `--events-per-user` past events.

The store is bench_feed_cpu's (built once in `--data-dir` with the engine's own calls,
hashed content embedder). Each source tree measured (this checkout's `src`, and any
`--baseline PATH`: another checkout's `src`) gets its own copy of it, then `--rounds`
times, the trees taking turns: start the server, time until /healthz answers and until
the first feed of an engaged user succeeds, leave it running `--hold` seconds (the
trainer reads the log meanwhile), send SIGTERM and time until the process (and with it
the trainer) exits. The first round on a copy is reported on its own: it starts from the
store as built (whatever that tree's first start has to convert or fill), the later ones
from what the tree itself left at its last stop; medians of those are the figures.

`--store DIR` measures on an existing data directory instead (such as the one
`bench_scale.py --data-dir` keeps, whose logs hold served impressions and reactions, so
the trainer has real joins to checkpoint); `--fresh-trainer` drops the trainer's
checkpoint and published parameters from each copy first, so the first round's trainer
starts from the logs; `--trainer-only` runs `reelrank train` alone (start -> first feed
is then not measured): its stop is the trainer's final checkpoint and exit.

Prints a table and writes `benchmarks/results/bench_stop_start.json` with the commit of
each tree and the load average. Run, e.g.:

    python benchmarks/bench_stop_start.py --data-dir /tmp/store1m
    python benchmarks/bench_stop_start.py --data-dir /tmp/store1m --baseline /tmp/old/src
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))
from benchmarks.bench_feed_cpu import _git, build, store_arguments  # noqa: E402
from benchmarks.bench_scale import make_world  # noqa: E402


def _get(port: int, path: str, timeout: float = 30.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Authorization": "Bearer bench"})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def server_env(src: Path) -> dict[str, str]:
    """The environment a measured server runs in: `src`'s code, the key `bench` (admin),
    the trainer as its own process, the hashed embedder, log level info; no other
    REELRANK_ setting from the caller's environment. A `src` without the package is an
    error: the server would quietly run whatever reelrank is installed instead."""
    if not (Path(src) / "reelrank" / "__init__.py").is_file():
        raise SystemExit(f"{src} holds no reelrank package")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REELRANK_")}
    env.update(
        PYTHONPATH=str(src),
        REELRANK_API_KEYS="bench=admin",
        REELRANK_TRAINER="process",
        REELRANK_CONTENT_EMBEDDER="hashed",
        REELRANK_LOG_LEVEL="info",
    )
    return env


def one_round(src: Path, data: Path, port: int, user: str, args: argparse.Namespace) -> dict:
    """Start, first feed, hold, SIGTERM: seconds of each step."""
    env = server_env(src)
    if args.trainer_only:
        cmd = [sys.executable, "-m", "reelrank.cli", "train"]
    else:
        cmd = [sys.executable, "-m", "reelrank.cli", "serve", "--port", str(port)]
    with open(data / "server.log", "ab") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [*cmd, "--data-dir", str(data)], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    out: dict[str, Any] = {}
    try:
        while not args.trainer_only and "healthz_s" not in out:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited; see {data / 'server.log'}")
            if time.perf_counter() - started > args.timeout:
                raise RuntimeError("server did not answer /healthz in time")
            try:
                if _get(port, "/healthz", timeout=1.0)[0] == 200:
                    out["healthz_s"] = round(time.perf_counter() - started, 2)
            except OSError:
                time.sleep(0.05)
        while not args.trainer_only and "first_feed_s" not in out:
            status, body = _get(port, f"/v1/feed/{user}?n=20")
            if status == 200 and json.loads(body)["items"]:
                out["first_feed_s"] = round(time.perf_counter() - started, 2)
            elif time.perf_counter() - started > args.timeout:
                raise RuntimeError(f"no feed in time: {status} {body[:200]!r}")
            else:
                time.sleep(0.05)
        time.sleep(args.hold)
        stop = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=args.timeout)
        out["stop_s"] = round(time.perf_counter() - stop, 2)
        out["exit_code"] = proc.returncode
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    store_arguments(p, users=1_000_000, engaged_users=200_000)
    p.add_argument("--rounds", type=int, default=4, help="starts per tree; the first apart")
    p.add_argument("--hold", type=float, default=30.0, help="seconds served before SIGTERM")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--port", type=int, default=8191)
    p.add_argument("--data-dir", default=str(Path(tempfile.gettempdir()) / "bench-stop-start"))
    p.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="SRC",
        help="another checkout's src directory, measured in the same run (repeatable)",
    )
    p.add_argument(
        "--output", default=str(ROOT / "benchmarks" / "results" / "bench_stop_start.json")
    )
    p.add_argument("--store", help="an existing data directory to measure on (no build)")
    p.add_argument("--fresh-trainer", action="store_true", help="drop trainer checkpoints")
    p.add_argument("--trainer-only", action="store_true", help="run `reelrank train` alone")
    args = p.parse_args(argv)
    load_before = os.getloadavg()
    built = {"seconds": None} if args.store else build(args)
    source = args.store or args.data_dir
    trees = [ROOT / "src", *(Path(b).resolve() for b in args.baseline)]
    work = Path(tempfile.mkdtemp(prefix="bench-stop-start-"))
    results: dict[str, Any] = {}
    try:
        copies = {}
        for i, src in enumerate(trees):
            copies[src] = work / f"tree{i}"
            shutil.copytree(source, copies[src])
            if args.fresh_trainer:
                shutil.rmtree(copies[src] / "model", ignore_errors=True)
                for f in copies[src].glob("params.db*"):
                    f.unlink()
            results[str(src)] = {"commit": _git(src), "rounds": []}
        w = make_world(args.videos, args.users, args.engaged_users, args.seed)
        user = f"u{int(w.engaged[0])}"  # a user with history: the feed needs their state
        for r in range(args.rounds):
            for src in trees:
                got = one_round(src, copies[src], args.port, user, args)
                results[str(src)]["rounds"].append(got)
                print(f"round {r + 1} {results[str(src)]['commit']}: {got}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    keys = ["stop_s"] if args.trainer_only else ["healthz_s", "first_feed_s", "stop_s"]
    for res in results.values():
        later = res["rounds"][1:] or res["rounds"]
        res["first_round"] = res["rounds"][0]
        res["median"] = {k: statistics.median(x[k] for x in later) for k in keys}
    out = {
        "benchmark": "bench_stop_start",
        "store": args.store or "bench_feed_cpu build",
        "fresh_trainer": args.fresh_trainer,
        "trainer_only": args.trainer_only,
        "params": {
            k: getattr(args, k)
            for k in ("videos", "users", "engaged_users", "events_per_user", "rounds", "hold")
        },
        "store_build_s": built.get("seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "trees": results,
    }
    print()
    print(
        "| tree | start -> /healthz s | start -> first feed s | SIGTERM -> exit s | first round |"
    )
    print("|---|---|---|---|---|")
    for res in results.values():
        m, f = res["median"], res["first_round"]
        print(
            f"| {res['commit']} | {m.get('healthz_s', '-')} | {m.get('first_feed_s', '-')} | "
            f"{m['stop_s']} | {f.get('first_feed_s', '-')} / {f['stop_s']} |"
        )
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
