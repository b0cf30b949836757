"""A stop that arrives during an index rebuild: SIGTERM to exit of a real server.

Starts `reelrank serve` (bench_stalls' environment: its defaults, the trainer as its own
process, the hashed embedder) on a copy of bench_feed_cpu's store and waits until the
content index is ready. Then bench_stalls' traffic (feeds for engaged users at `--rps`,
another process posting the reactions to each page) trains the model until it has learned
from `model_min_examples`, when the two-tower and sequence indexes are first built over
every video (tens of seconds at a million). `--into` seconds after `GET /v1/model` shows
the model trained and the two-tower index not yet ready (a build under way), the traffic
stops and the script sends SIGTERM and times the exit. The server's log says what the
stop found: an index rebuilt after the signal (the stop waited for it) or a rebuild given
up. Each `--src` tree (and `--baseline` trees) runs `--rounds` times, the trees taking
turns. Writes `benchmarks/results/bench_stop_rebuild.json`. Run, e.g.:

    python benchmarks/bench_stop_rebuild.py --data-dir /tmp/store1m --baseline OLD/src
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))
from benchmarks.bench_feed_cpu import _git, build, store_arguments  # noqa: E402
from benchmarks.bench_scale import make_world  # noqa: E402
from benchmarks.bench_stalls import (  # noqa: E402
    HEADERS,
    _free_port,
    _reactor,
    _start,
    _wait_ready,
)
from benchmarks.bench_stop_start import _get  # noqa: E402

AFTER = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*?(\w+ index rebuil.*)$")


def _building(port: int) -> bool:
    """The model is trained and the two-tower index is not built yet: its first build is
    under way (the retrieval job starts it within a second of the model's readiness)."""
    status, body = _get(port, "/v1/model", timeout=10.0)
    serving = json.loads(body)["serving"] if status == 200 else {}
    trained = serving.get("examples", 0) >= serving.get("min_examples", 1)
    return bool(trained and not (serving.get("retrieval") or {}).get("ready"))


def _round(args: argparse.Namespace, src: Path) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-stop-rebuild-"))
    data = work / "data"
    shutil.copytree(args.data_dir, data)
    args.src, args.work, port = src, str(work), _free_port()
    proc = _start(data, port, args)
    pages: Any = mp.Queue()
    stop = mp.Event()
    reactor = None
    try:
        ready_s = _wait_ready(proc, port, args.timeout)
        reactor = mp.Process(target=_reactor, args=(port, pages, stop, args), daemon=True)
        reactor.start()
        w = make_world(args.videos, args.users, args.engaged_users, args.seed)
        rng = np.random.default_rng(args.seed)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        began = time.perf_counter()
        seen_at, checked = None, 0.0
        while seen_at is None or time.perf_counter() - seen_at < args.into:
            if time.perf_counter() - began > args.wait:
                raise RuntimeError(f"no index build seen within {args.wait} s of readiness")
            u = int(rng.choice(w.engaged))
            conn.request("GET", f"/v1/feed/u{u}?n=20", headers=HEADERS)
            page = json.loads(conn.getresponse().read())
            ids = [int(it["video_id"][1:]) for it in page.get("items", [])]
            pages.put((u, ids[:5], page.get("request_id", "")))
            time.sleep(1.0 / args.rps)
            if seen_at is None and time.perf_counter() - checked >= 1.0:
                checked = time.perf_counter()
                seen_at = checked if _building(port) else None
        stop.set()
        reactor.join(timeout=60)
        building = _building(port)  # still under way when the signal goes
        signalled = time.time()
        stopping = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=300)
        stop_s = time.perf_counter() - stopping
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
        if reactor is not None and reactor.is_alive():
            reactor.kill()
    after = []
    for line in (data / "server.log").read_text(errors="replace").splitlines():
        m = AFTER.match(line)
        if m and time.mktime(time.strptime(m.group(1)[:19], "%Y-%m-%d %H:%M:%S")) >= signalled - 1:
            after.append(m.group(2)[:120])
    shutil.rmtree(work, ignore_errors=True)
    return {
        "ready_s": round(ready_s, 1),
        "build_seen_at_s": round(seen_at - began, 1),
        "building_at_sigterm": building,
        "stop_s": round(stop_s, 2),
        "logged_after_sigterm": after,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    store_arguments(p)
    p.add_argument("--data-dir", default=str(Path(tempfile.gettempdir()) / "bench-stalls"))
    p.add_argument("--src", type=Path, default=ROOT / "src")
    p.add_argument("--baseline", type=Path, action="append", default=[])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--rps", type=float, default=20.0, help="feeds per second until the build")
    p.add_argument("--react", type=int, default=5, help="videos of each page reacted to")
    p.add_argument("--into", type=float, default=3.0, help="seconds into the build to stop")
    p.add_argument("--wait", type=float, default=900.0, help="seconds to wait for a build")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for readiness")
    p.add_argument("--set", action="append", default=[], help="KEY=VALUE server settings")
    p.add_argument("--output", default=str(ROOT / "benchmarks/results/bench_stop_rebuild.json"))
    args = p.parse_args(argv)
    load_before = os.getloadavg()
    built = build(args)
    trees = [args.src, *args.baseline]
    rounds: dict[str, list[dict[str, Any]]] = {str(t): [] for t in trees}
    for i in range(args.rounds):
        for tree in trees:
            got = _round(args, tree)
            rounds[str(tree)].append(got)
            print(f"round {i + 1} {tree}: {json.dumps(got)}", flush=True)
    out = {
        "benchmark": "bench_stop_rebuild",
        "store_build_s": built.get("seconds"),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "trees": {
            t: {"commit": _git(Path(t)), "rounds": r, "stop_s": sorted(x["stop_s"] for x in r)}
            for t, r in rounds.items()
        },
    }
    Path(args.output).write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
