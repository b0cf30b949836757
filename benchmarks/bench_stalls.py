"""Stalls: feed requests held up by periodic work over a long steady run of a real server.

Starts `reelrank serve` (its defaults, the trainer as its own process, the hashed content
embedder, log level info) on a copy of bench_feed_cpu's store (built once in `--data-dir`:
`--videos` videos, `--users` users, `--engaged-users` of them with `--events-per-user`
past events), waits until the content index is full and its approximate index built,
then for `--minutes` minutes:

- one client asks for a feed (n=`--n`) for a random engaged user every 1/`--rps` s, on a
  fixed schedule, one request at a time on one connection; each request is timed from its
  own send to its response, so the figure is what the server did with that request, not
  a queue in front of it (the schedule slips when a request takes longer than the gap);
- another process sends the reactions to the first `--react` videos of each served page
  (bench_scale's: impression, play, watch, then finish, like, share or skip by the user's
  planted tastes) with the page's request id, in batches every 0.1 s, so the state fold,
  the joins and the trainer work as in production;

while the server runs its periodic work at its defaults: state snapshots every
`snapshot_interval_s`, model syncs and the trainer's publications, index refreshes, the
catalog and log followers, the related-videos refit, the lifecycle.

A stall is a feed slower than `--stall-ms` (20 ms). Reported: requests, p50, p99, p999,
max; requests over 20, 50 and 100 ms; p50, p99 and max per minute; and for each stall,
the background work the server's log shows running during it (the lines `background job
NAME took S s`, and the index builds), matched by time. Prints a table and writes
`benchmarks/results/bench_stalls.json`. Run, e.g.:

    python benchmarks/bench_stalls.py --data-dir /tmp/store1m     # a million videos, 10 min
    python benchmarks/bench_stalls.py --videos 20000 --users 20000 --engaged-users 5000 \\
        --data-dir /tmp/store20k --minutes 1                          # a quick check

`--src PATH` runs the server from another checkout's `src` (an older commit, measured
with this script; its log may lack the job lines, so its stalls go unattributed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import multiprocessing as mp
import os
import platform
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))
from benchmarks.bench_feed_cpu import _git, build, store_arguments  # noqa: E402
from benchmarks.bench_scale import _react, make_world  # noqa: E402
from benchmarks.bench_stop_start import _get, server_env  # noqa: E402

KEY = "bench"  # bench_stop_start's server_env admits it
PARAMS = (
    "videos",
    "users",
    "engaged_users",
    "events_per_user",
    "minutes",
    "rps",
    "n",
    "react",
    "stall_ms",
)
EVENT_BATCH = 500  # events per POST /v1/events
HEADERS = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
# What the server logs about work beside the requests: "background job NAME took S s"
# (services/app.py's timed jobs), and the index builds with their seconds.
WORK_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ [\w.]+: "
    r"(background job (?P<job>\S+) took (?P<took>[\d.]+) s"
    r"|(?P<what>\w+ index rebuilt): .* in (?P<secs>[\d.]+) s"
    r"|(?P<ann>approximate index (?:built|trained|refined)|\w+ index rebuild given up).*)$"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _reactor(port: int, pages: Any, stop: Any, args: argparse.Namespace) -> None:
    """In a child process: the reactions to served pages, posted every 0.1 s."""
    w = make_world(args.videos, args.users, args.engaged_users, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    sent = 0
    while not (stop.is_set() and pages.empty()):
        batch: list[dict[str, Any]] = []
        deadline = time.monotonic() + 0.1
        while time.monotonic() < deadline:
            try:
                u, videos, request_id = pages.get(timeout=0.02)
            except queue.Empty:
                continue
            for v in videos:
                batch += _react(w, u, v, request_id, rng, "stall-")
        for i in range(0, len(batch), EVENT_BATCH):
            part = batch[i : i + EVENT_BATCH]
            conn.request("POST", "/v1/events", body=json.dumps({"events": part}), headers=HEADERS)
            r = conn.getresponse()
            body = r.read()
            if r.status != 200:
                raise RuntimeError(f"POST /v1/events: {r.status} {body[:300]!r}")
            sent += len(part)
    Path(args.work, "reactions.json").write_text(json.dumps({"events": sent}))


def _start(data: Path, port: int, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    env = server_env(args.src)
    for setting in args.set:  # KEY=VALUE
        key, _, value = setting.partition("=")
        env[f"REELRANK_{key.strip().upper()}"] = value.strip()
    cmd = [sys.executable, "-m", "reelrank.cli", "serve", "--port", str(port)]
    with open(data / "server.log", "ab") as log:
        return subprocess.Popen(
            [*cmd, "--data-dir", str(data)], env=env, stdout=log, stderr=subprocess.STDOUT
        )


def _wait_ready(proc: subprocess.Popen[bytes], port: int, timeout: float) -> float:
    """Seconds until the content index is full and approximate (or `timeout`)."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError("the server exited; see its server.log")
        try:
            status, body = _get(port, "/v1/model", timeout=5.0)
        except OSError:
            time.sleep(0.5)
            continue
        content = json.loads(body)["serving"].get("content") or {} if status == 200 else {}
        full = content.get("filled", True) and not content.get("waiting")
        if content and full and content.get("approximate", True):
            return time.perf_counter() - started
        time.sleep(1.0)
    return time.perf_counter() - started


def _work(log_path: Path, since: float) -> list[dict[str, Any]]:
    """The server's logged work after `since` (epoch s): name, start and end (epoch s)."""
    out = []
    for line in log_path.read_text(errors="replace").splitlines():
        m = WORK_LINE.match(line)
        if not m:
            continue
        end = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if end < since:
            continue
        if m.group("job"):
            name, took = m.group("job"), float(m.group("took"))
        elif m.group("what"):
            name, took = m.group("what"), float(m.group("secs"))
        else:
            name, took = m.group("ann"), 0.0
        out.append({"work": name, "start": end - took, "end": end, "s": round(took, 3)})
    return out


def _pct(x: np.ndarray, q: float) -> float:
    return round(float(np.percentile(x, q)), 2) if len(x) else float("nan")


def run(args: argparse.Namespace) -> dict[str, Any]:
    w = make_world(args.videos, args.users, args.engaged_users, args.seed)
    work = Path(tempfile.mkdtemp(prefix="bench-stalls-"))
    args.work = str(work)
    data = work / "data"
    shutil.copytree(args.data_dir, data)
    port = _free_port()
    proc = _start(data, port, args)
    pages: Any = mp.Queue()
    stop = mp.Event()
    reactor = None
    try:
        ready_s = _wait_ready(proc, port, args.timeout)
        print(f"server ready in {ready_s:.1f} s; measuring {args.minutes} min", flush=True)
        reactor = mp.Process(target=_reactor, args=(port, pages, stop, args), daemon=True)
        reactor.start()
        rng = np.random.default_rng(args.seed)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        gap = 1.0 / args.rps
        began = time.time()
        t0 = time.perf_counter()
        end = t0 + 60.0 * args.minutes
        sent, lat, errors, empty = [], [], 0, 0
        k = 0
        while True:
            due = t0 + k * gap
            now = time.perf_counter()
            if due >= end:
                break
            if due > now:
                time.sleep(due - now)
            u = int(rng.choice(w.engaged))
            at = time.time()
            start = time.perf_counter()
            conn.request("GET", f"/v1/feed/u{u}?n={args.n}", headers=HEADERS)
            r = conn.getresponse()
            body = r.read()
            took = 1000.0 * (time.perf_counter() - start)
            k += 1
            sent.append(at)
            lat.append(took)
            if r.status != 200:
                errors += 1
                continue
            page = json.loads(body)
            ids = [int(it["video_id"][1:]) for it in page["items"]]
            empty += not ids
            if args.react:
                pages.put((u, ids[: args.react], page["request_id"]))
        stop.set()
        reactor.join(timeout=120)
        status, body = _get(port, "/v1/model")
        model = json.loads(body) if status == 200 else {}
    finally:
        stop.set()
        stop_s = None
        if proc.poll() is None:
            stopping = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=120)
                stop_s = round(time.perf_counter() - stopping, 2)
            except subprocess.TimeoutExpired:
                proc.kill()
        if reactor is not None and reactor.is_alive():
            reactor.kill()
    logged = _work(data / "server.log", began)
    done = work / "reactions.json"
    if reactor is not None and not done.exists():
        raise RuntimeError(f"the reactions process failed (exit code {reactor.exitcode})")
    reactions = json.loads(done.read_text()) if reactor else {}
    shutil.rmtree(work, ignore_errors=True)
    x, at = np.asarray(lat), np.asarray(sent) - began
    stalls = []
    for i in np.flatnonzero(x > args.stall_ms):
        lo, hi = sent[i] - 0.01, sent[i] + x[i] / 1000.0 + 0.01  # log times: milliseconds
        beside = sorted({e["work"] for e in logged if e["start"] <= hi and e["end"] >= lo})
        stalls.append({"at_s": round(float(at[i]), 2), "ms": round(float(x[i]), 1), "work": beside})
    by_work: dict[str, int] = {}
    for s in stalls:
        for name in s["work"] or ["(none logged)"]:
            by_work[name] = by_work.get(name, 0) + 1
    minutes = []
    for m in range(int(np.ceil(args.minutes))):
        part = x[(at >= 60 * m) & (at < 60 * (m + 1))]
        minutes.append({"minute": m + 1, "p50_ms": _pct(part, 50), "p99_ms": _pct(part, 99),
                        "max_ms": round(float(part.max()), 1) if len(part) else None})  # fmt: skip
    trainer = (model.get("trainer") or {}) if isinstance(model, dict) else {}
    given_up = [e["work"] for e in logged if e["start"] >= began and "given up" in e["work"]]
    return {
        "ready_s": round(ready_s, 1),
        "stop_s": stop_s,  # SIGTERM to exit, after the run
        "rebuilds_given_up_at_stop": len(given_up),
        "requests": len(x),
        "achieved_rps": round(len(x) / (60.0 * args.minutes), 2),
        "errors": errors,
        "empty_pages": empty,
        "p50_ms": _pct(x, 50),
        "p99_ms": _pct(x, 99),
        "p999_ms": _pct(x, 99.9),
        "max_ms": round(float(x.max()), 1) if len(x) else None,
        "over_20_ms": int((x > 20).sum()),
        "over_50_ms": int((x > 50).sum()),
        "over_100_ms": int((x > 100).sum()),
        "stalls": stalls,
        "stalls_by_work": dict(sorted(by_work.items(), key=lambda kv: -kv[1])),
        "per_minute": minutes,
        "reaction_events": reactions.get("events"),
        "work_logged": {
            name: {
                "runs": len(took),
                "max_s": max(took),
                "median_s": round(float(np.median(took)), 3),
                "total_s": round(sum(took), 3),
                "each_s": took,
            }
            for name in sorted({e["work"] for e in logged})
            for took in [[e["s"] for e in logged if e["work"] == name]]
        },
        "trainer": {
            k: trainer[k]
            for k in ("examples_trained", "examples", "examples_per_s", "lag_s")
            if trainer.get(k) is not None
        },
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    store_arguments(p)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--rps", type=float, default=20.0, help="feed requests per second")
    p.add_argument("--n", type=int, default=20, help="videos per page")
    p.add_argument("--react", type=int, default=5, help="videos of each page reacted to")
    p.add_argument("--stall-ms", type=float, default=20.0)
    p.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for readiness")
    p.add_argument("--data-dir", default=str(Path(tempfile.gettempdir()) / "bench-stalls"))
    p.add_argument("--src", type=Path, default=ROOT / "src", help="the source tree the server runs")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting for the server, e.g. rebuild_nice=0 (repeatable)")  # fmt: skip
    p.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "bench_stalls.json"))
    args = p.parse_args(argv)
    load_before = os.getloadavg()
    built = build(args)
    got = run(args)
    out = {
        "benchmark": "bench_stalls",
        "commit": _git(args.src),
        "params": {k: getattr(args, k) for k in PARAMS},
        "settings": args.set,
        "store_build_s": built.get("seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        **got,
    }
    Path(args.output).write_text(json.dumps(out, indent=1) + "\n")
    print(
        f"{got['requests']} feeds at {got['achieved_rps']}/s over {args.minutes} min: "
        f"p50 {got['p50_ms']} ms, p99 {got['p99_ms']} ms, p999 {got['p999_ms']} ms, "
        f"max {got['max_ms']} ms; over 20 ms: {got['over_20_ms']}, over 50 ms: "
        f"{got['over_50_ms']}, over 100 ms: {got['over_100_ms']}; errors {got['errors']}, "
        f"empty pages {got['empty_pages']}"
    )
    print(f"stalls by the work logged beside them: {got['stalls_by_work']}")
    print(f"work logged: {got['work_logged']}")
    for m in got["per_minute"]:
        print(f"  minute {m['minute']}: p50 {m['p50_ms']} p99 {m['p99_ms']} max {m['max_ms']} ms")
    print(f"wrote {args.output}")
    return out


if __name__ == "__main__":
    main()
