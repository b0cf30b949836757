"""The feed pipeline's own cost at catalog scale, in process: no HTTP, no other load.

Builds (once, kept in `--data-dir`) an embedded SQLite store with bench_scale's generated
world: `--videos` videos, `--users` users and `--events-per-user` past events for each
of `--engaged-users` users, loaded through the engine's own calls, hashed content
embedder, no trainer. Then, for each source tree measured (this checkout's `src`, and
any `--baseline PATH` given: another checkout's `src`, measured in the same run over the
same data), a child process opens a fresh copy of the store, waits until the content
index is full and its approximate index trained (a start's first minutes are measured by
bench_scale, not here), warms up with 50 feeds and serves `--rounds` rounds of `--requests`
feeds (n=`--n`) for random engaged users, the same users in every tree, recorded as
served pages are (impressions, seen marks, pool serves). Like `reelrank serve`, the child
runs torch and the BLAS behind numpy on one thread. The children open side by side and
take turns: one round of one tree, then one of the next (the order turning each round),
so that a shared machine's slow minutes fall on every tree alike instead of on whichever
ran then.

Per tree: wall time per feed (p50, p99, mean; medians over rounds), the request
thread's CPU per feed, the engine's own pipeline histogram mean, and the mean recall
time per channel. Prints a table and writes `benchmarks/results/bench_feed_cpu.json`.
Run, e.g.:

    python benchmarks/bench_feed_cpu.py                          # 1,000,000 videos
    python benchmarks/bench_feed_cpu.py --baseline /tmp/old/src  # and an older commit

The first build at a million videos takes about 10 minutes; later runs reuse it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BUILT = "built.json"


def _settings(data_dir: str) -> Any:
    from reelrank.config import load_settings

    return load_settings(
        env={}, data_dir=data_dir, trainer="off", content_embedder="hashed", log_level="warning"
    )


def build(args: argparse.Namespace) -> dict[str, Any]:
    """The store for these parameters, built once (`built.json` records what it holds)."""
    from benchmarks.bench_scale import _history_batch, _user_json, _video_json, make_world

    from reelrank.engine import Engine

    want = {k: getattr(args, k) for k in ("videos", "users", "engaged_users", "events_per_user")}
    marker = Path(args.data_dir) / BUILT
    if marker.exists():
        got = json.loads(marker.read_text())
        if got["params"] == want:
            return got
        sys.exit(f"{args.data_dir} holds another build ({got['params']}); pick another --data-dir")
    if Path(args.data_dir).exists() and any(Path(args.data_dir).iterdir()):
        sys.exit(f"{args.data_dir} is not empty and holds no build; pick another --data-dir")
    w = make_world(args.videos, args.users, args.engaged_users, args.seed)
    started = time.perf_counter()
    eng = Engine(_settings(args.data_dir)).open()
    for i in range(0, args.videos, 5000):
        eng.upsert_videos([_video_json(w, j) for j in range(i, min(i + 5000, args.videos))])
    for i in range(0, args.users, 5000):
        eng.upsert_users([_user_json(w, j) for j in range(i, min(i + 5000, args.users))])
    for i in range(0, len(w.engaged), 500):
        eng.ingest(_history_batch(w, w.engaged[i : i + 500], args.events_per_user, i))
    eng.close()
    got = {"params": want, "seconds": round(time.perf_counter() - started, 1)}
    marker.write_text(json.dumps(got))
    print(f"built {want} in {got['seconds']} s", flush=True)
    return got


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """In the child: open a copy of the store with this tree's code and serve feeds."""
    import torch
    from benchmarks.bench_scale import make_world
    from threadpoolctl import threadpool_limits

    from reelrank.engine import Engine

    # One intra-op thread for torch and for the BLAS behind numpy, as `reelrank serve`
    # runs (cli.py): a matrix product's helper threads would otherwise do part of a
    # request's work outside the request thread's CPU time, on the machine's other core.
    torch.set_num_threads(1)
    threadpool_limits(1)

    w = make_world(args.videos, args.users, args.engaged_users, args.seed)
    copy = tempfile.mkdtemp(prefix="bench-feed-cpu-")
    try:
        data = Path(copy) / "data"
        shutil.copytree(args.data_dir, data)
        started = time.perf_counter()
        eng = Engine(_settings(str(data))).open()
        opened = time.perf_counter() - started
        want = int(eng.state.table.approved[: eng.state.table.size].sum())
        c = eng.content
        while not (c.filled.is_set() and not c.waiting and len(eng.state.content) >= want):
            if time.perf_counter() - started > args.timeout:
                break
            time.sleep(0.05)
        indexed = time.perf_counter() - started
        index = eng.state.content  # its approximate index trains in the background
        while getattr(index, "building", getattr(index, "_building", False)):
            if time.perf_counter() - started > args.timeout:
                break
            time.sleep(0.1)
        ann = time.perf_counter() - started
        rng = np.random.default_rng(args.seed)
        users = [f"u{u}" for u in rng.choice(w.engaged, 50 + args.rounds * args.requests)]
        for u in users[:50]:
            eng.feed(u, n=args.n)
        rounds = []
        at = 50
        print(json.dumps({"ready": True}), flush=True)  # the parent starts the rounds
        for _ in range(args.rounds):
            if sys.stdin.readline().strip() != "go":
                break
            before = _histograms(eng)
            wall, cpu, items = [], [], []
            for u in users[at : at + args.requests]:
                c0, t0 = time.thread_time(), time.perf_counter()
                page = eng.feed(u, n=args.n)
                wall.append(time.perf_counter() - t0)
                cpu.append(time.thread_time() - c0)
                items.append(len(page.items))
            at += args.requests
            after = _histograms(eng)
            n = len(wall)
            rounds.append(
                {
                    "p50_ms": round(1000 * float(np.percentile(wall, 50)), 3),
                    "p99_ms": round(1000 * float(np.percentile(wall, 99)), 3),
                    "mean_ms": round(1000 * statistics.fmean(wall), 3),
                    "thread_cpu_mean_ms": round(1000 * statistics.fmean(cpu), 3),
                    "pipeline_mean_ms": round(1000 * (after["feed"] - before["feed"]) / n, 3),
                    "recall_ms_by_channel": {
                        k: round(1000 * (v - before["recall"].get(k, 0.0)) / n, 3)
                        for k, v in sorted(after["recall"].items())
                    },
                    "empty_pages": sum(1 for x in items if x == 0),
                    "items_per_page": round(statistics.fmean(items), 2),
                }
            )
            print(json.dumps({"round": rounds[-1]}), flush=True)
        eng.close()
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    keys = ["p50_ms", "p99_ms", "mean_ms", "thread_cpu_mean_ms", "pipeline_mean_ms"]
    return {
        "open_s": round(opened, 2),
        "content_indexed_s": round(indexed, 2),
        "content_ann_ready_s": round(ann, 2),
        "content_approximate": bool(getattr(index, "approximate", False)),
        # (cells a query scans, recall@100 measured there), where the tree tunes them
        "content_ann_tuned": getattr(getattr(index, "tuner", None), "tuned", None),
        "rounds": rounds,
        "median": {k: round(statistics.median(r[k] for r in rounds), 3) for k in keys},
        "recall_ms_by_channel": {
            k: round(statistics.median(r["recall_ms_by_channel"].get(k, 0.0) for r in rounds), 3)
            for k in rounds[-1]["recall_ms_by_channel"]
        },
    }


def _interleaved(args: argparse.Namespace, trees: list[Path]) -> list[dict[str, Any]]:
    """One child per tree, opened side by side; then the rounds, one tree at a time in an
    order that turns each round. Each tree's summary, in the order of `trees`."""
    for src in trees:  # else the child would quietly measure the installed reelrank
        if not (src / "reelrank" / "__init__.py").is_file():
            sys.exit(f"{src} holds no reelrank package")
    children, outs = [], []
    for src in trees:
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
            outs.append(fh.name)
        child = [sys.executable, __file__, "--measure", outs[-1]]
        for k in ("videos", "users", "engaged_users", "events_per_user", "requests", "rounds"):
            child += [f"--{k.replace('_', '-')}", str(getattr(args, k))]
        child += ["--n", str(args.n), "--seed", str(args.seed), "--data-dir", args.data_dir]
        child += ["--timeout", str(args.timeout)]
        env = {**os.environ, "PYTHONPATH": str(src)}
        children.append(
            subprocess.Popen(
                child, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
        )

    def reply(proc: subprocess.Popen[str]) -> dict[str, Any]:
        """The child's next report (other lines it prints are passed on)."""
        assert proc.stdout is not None
        while line := proc.stdout.readline():
            if line.startswith(('{"ready"', '{"round"')):
                got: dict[str, Any] = json.loads(line)
                return got
            print(line, end="", flush=True)
        sys.exit(f"a measuring child exited (status {proc.wait()})")

    try:
        for proc in children:
            reply(proc)  # ready
        for r in range(args.rounds):
            for k in range(len(children)):
                proc = children[(r + k) % len(children)]
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
                reply(proc)
        results = []
        for src, proc, out in zip(trees, children, outs, strict=True):
            assert proc.stdin is not None
            proc.stdin.close()
            if proc.wait() != 0:
                sys.exit(f"the child measuring {src} failed")
            results.append(
                {"src": str(src), "commit": _git(src), **json.loads(Path(out).read_text())}
            )
        return results
    finally:
        for proc in children:
            if proc.poll() is None:
                proc.kill()
        for out in outs:
            Path(out).unlink(missing_ok=True)


def _histograms(eng: Any) -> dict[str, Any]:
    """Sums of the pipeline and per-channel recall time histograms, in seconds."""
    feed, recall = 0.0, {}
    for metric in eng.metrics.registry.collect():
        for s in metric.samples:
            if s.name == "reelrank_feed_latency_seconds_sum":
                feed += s.value
            elif s.name == "reelrank_recall_seconds_sum":
                recall[s.labels["source"]] = s.value
    return {"feed": feed, "recall": recall}


def _git(src: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return out.stdout.strip() + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def store_arguments(
    p: argparse.ArgumentParser, users: int = 100_000, engaged_users: int = 20_000
) -> None:
    """The arguments of the store `build` makes (and of its world's seed), shared by the
    benchmarks that measure on it."""
    p.add_argument("--videos", type=int, default=1_000_000)
    p.add_argument("--users", type=int, default=users)
    p.add_argument("--engaged-users", type=int, default=engaged_users)
    p.add_argument("--events-per-user", type=int, default=10)
    p.add_argument("--seed", type=int, default=11)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    store_arguments(p)
    p.add_argument("--requests", type=int, default=100, help="feeds per round")
    p.add_argument("--rounds", type=int, default=15, help="rounds; medians reported")
    p.add_argument("--n", type=int, default=20, help="feed page size")
    p.add_argument("--timeout", type=float, default=600.0, help="content index wait, s")
    p.add_argument("--data-dir", default=str(Path(tempfile.gettempdir()) / "bench-feed-cpu"))
    p.add_argument(
        "--baseline",
        action="append",
        default=[],
        help="another checkout's src directory, measured in the same run (repeatable)",
    )
    p.add_argument("--measure", help=argparse.SUPPRESS)  # the child's result file
    p.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "bench_feed_cpu.json"))
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.measure:
        Path(args.measure).write_text(json.dumps(measure(args)))
        return {}
    sys.path.insert(0, str(ROOT / "src"))
    load_before = os.getloadavg()
    built = build(args)
    trees = [ROOT / "src", *(Path(b).resolve() for b in args.baseline)]
    results = _interleaved(args, trees)
    for got in results:
        md = got["median"]
        print(
            f"{got['commit']:>16}: p50 {md['p50_ms']} ms, p99 {md['p99_ms']} ms, "
            f"request thread CPU {md['thread_cpu_mean_ms']} ms, pipeline {md['pipeline_mean_ms']}"
            f" ms per feed (open {got['open_s']} s, content ANN {got['content_ann_ready_s']} s)",
            flush=True,
        )
        top = sorted(got["recall_ms_by_channel"].items(), key=lambda kv: -kv[1])[:5]
        print("    recall ms: " + ", ".join(f"{k} {v}" for k, v in top), flush=True)
    out = {
        "benchmark": "bench_feed_cpu",
        "python": platform.python_version(),
        "args": {k: v for k, v in vars(args).items() if k != "measure"},
        "build": built,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "trees": results,
    }
    if len(results) > 1:
        base = results[1]["median"]["thread_cpu_mean_ms"]
        out["cpu_ratio_to_first_baseline"] = round(
            results[0]["median"]["thread_cpu_mean_ms"] / base, 3
        )
        # Round r of every tree ran back to back: their ratio cancels the machine's drift.
        paired = [
            a["thread_cpu_mean_ms"] / b["thread_cpu_mean_ms"]
            for a, b in zip(results[0]["rounds"], results[1]["rounds"], strict=True)
        ]
        out["cpu_ratio_by_round"] = [round(x, 3) for x in paired]
        out["cpu_ratio_median_of_rounds"] = round(statistics.median(paired), 3)
        print(
            f"request thread CPU: {out['cpu_ratio_to_first_baseline']}x the first baseline's"
            f" (round by round: median {out['cpu_ratio_median_of_rounds']}x, "
            f"{min(paired):.3f}-{max(paired):.3f})"
        )
    Path(args.output).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
