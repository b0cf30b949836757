"""Feed latency and ingest throughput over real HTTP against a real `reelrank serve`.

Starts the server on the embedded SQLite store (synchronous=FULL: every acknowledged
batch is fsynced), loads a generated catalog through the API, then measures:

- ingest: events/s in batches of 500 from concurrent client processes;
- feed, unloaded: one client, one request at a time (p50/p99 latency);
- feed, concurrent: several client processes at once (requests/s, p50/p99).

Prints the figures and writes them to a JSON file (with each phase's latency quantiles
over all rounds, `latency_cdf`, for plots). Run: `make bench` (the whole suite) or
`python benchmarks/bench_http.py --videos 100000 --users 100000`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.latency import cdf  # noqa: E402
from tests.server import ServerProcess  # noqa: E402

from reelrank.sim.world import make_world  # noqa: E402

KEY = "bench-key"
HEADERS = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}


def _post(conn: http.client.HTTPConnection, path: str, body: bytes) -> dict[str, Any]:
    conn.request("POST", path, body=body, headers=HEADERS)
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"{path}: {resp.status} {data[:300]!r}")
    return orjson.loads(data)


def _percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs), q)) if xs else float("nan")


def _ingest_worker(args: tuple[int, list[bytes]]) -> tuple[int, float, list[float]]:
    port, bodies = args
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    accepted, lat = 0, []
    t0 = time.perf_counter()
    for body in bodies:
        s = time.perf_counter()
        accepted += _post(conn, "/v1/events", body)["accepted"]
        lat.append(time.perf_counter() - s)
    return accepted, time.perf_counter() - t0, lat


def _get_worker(args: tuple[int, list[str]]) -> list[float]:
    port, paths = args
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    lat = []
    for path in paths:
        s = time.perf_counter()
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        lat.append(time.perf_counter() - s)
        if resp.status != 200:
            raise RuntimeError(f"{path}: {resp.status}")
    return lat


def _latency(lat: list[float]) -> dict[str, Any]:
    return {
        "requests": len(lat),
        "p50_ms": round(_percentile(lat, 50) * 1000, 2),
        "p99_ms": round(_percentile(lat, 99) * 1000, 2),
        "mean_ms": round(statistics.fmean(lat) * 1000, 2),
    }


def _median(xs: list[Any]) -> Any:
    if all(isinstance(x, int | float) for x in xs):
        return round(statistics.median(xs), 2)
    return xs[0]


def _measure_ingest(
    port: int, bodies: list[bytes], args: argparse.Namespace, samples: list[float]
) -> dict[str, Any]:
    """Batches from concurrent client processes; every acknowledged batch is fsynced.
    Batch latencies are appended to `samples`."""
    per = [bodies[k :: args.ingest_clients] for k in range(args.ingest_clients)]
    t0 = time.perf_counter()
    with mp.Pool(args.ingest_clients) as pool:
        results = pool.map(_ingest_worker, [(port, b) for b in per])
    wall = time.perf_counter() - t0
    accepted = sum(r[0] for r in results)
    if accepted != len(bodies) * args.batch:
        raise RuntimeError(f"accepted {accepted} of {len(bodies) * args.batch}")
    batch_lat = [x for r in results for x in r[2]]
    samples += batch_lat
    return {
        "events": accepted,
        "batch": args.batch,
        "clients": args.ingest_clients,
        "events_per_s": round(accepted / wall),
        "batch_p50_ms": round(_percentile(batch_lat, 50) * 1000, 2),
        "batch_p99_ms": round(_percentile(batch_lat, 99) * 1000, 2),
    }


def _measure_concurrent(
    port: int, paths: list[str], args: argparse.Namespace, samples: list[float]
) -> dict[str, Any]:
    """Requests from concurrent client processes; their latencies are appended to `samples`."""
    chunks = [paths[k :: args.feed_clients] for k in range(args.feed_clients)]
    t0 = time.perf_counter()
    with mp.Pool(args.feed_clients) as pool:
        lats = pool.map(_get_worker, [(port, c) for c in chunks])
    wall = time.perf_counter() - t0
    flat = [x for part in lats for x in part]
    samples += flat
    return {
        "clients": args.feed_clients,
        **_latency(flat),
        "requests_per_s": round(len(flat) / wall, 1),
    }


def _events(world: Any, n_batches: int, batch: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    kinds = np.array(["impression", "play", "watch", "finish", "like", "skip", "share"])
    probs = np.array([0.3, 0.25, 0.2, 0.1, 0.08, 0.05, 0.02])
    vids = [v["id"] for v in world.videos]
    users = [u.id for u in world.viewers]
    now = time.time()
    bodies = []
    for b in range(n_batches):
        ks = rng.choice(kinds, size=batch, p=probs)
        vs = rng.integers(len(vids), size=batch)
        us = rng.integers(len(users), size=batch)
        events = []
        for j in range(batch):
            e: dict[str, Any] = {
                "event_id": f"s{seed}-{b}-{j}",
                "type": str(ks[j]),
                "user_id": users[us[j]],
                "video_id": vids[vs[j]],
                "ts": now,
            }
            if e["type"] == "watch":
                e["watch_ms"] = int(rng.integers(500, 30_000))
            events.append(e)
        bodies.append(orjson.dumps({"events": events}))
    return bodies


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--videos", type=int, default=100_000)
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--ingest-batches", type=int, default=400, help="batches of --batch events")
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--ingest-clients", type=int, default=2)
    p.add_argument("--feed-requests", type=int, default=2000)
    p.add_argument("--feed-clients", type=int, default=4)
    p.add_argument("--n", type=int, default=10, help="feed page size")
    p.add_argument("--rounds", type=int, default=3, help="repeat each phase; medians reported")
    p.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "bench_http.json"))
    args = p.parse_args()

    out: dict[str, Any] = {
        "benchmark": "bench_http",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "params": vars(args),
        "store": "sqlite, synchronous=FULL (each acknowledged batch fsynced)",
    }
    world = make_world(n_videos=args.videos, n_viewers=args.users, seed=11)
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(
            Path(tmp), f"{KEY}=ingest,feed,admin", REELRANK_LOG_LEVEL="warning"
        ).start()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=300)
            t0 = time.perf_counter()
            for i in range(0, len(world.videos), 1000):
                _post(conn, "/v1/videos", orjson.dumps({"videos": world.videos[i : i + 1000]}))
            load_videos_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            users = [
                {"id": u.id, "region": u.region, "interests": u.interests} for u in world.viewers
            ]
            for i in range(0, len(users), 1000):
                _post(conn, "/v1/users", orjson.dumps({"users": users[i : i + 1000]}))
            load_users_s = time.perf_counter() - t0
            out["load"] = {
                "videos": len(world.videos),
                "users": len(users),
                "videos_per_s": round(len(world.videos) / load_videos_s),
                "users_per_s": round(len(users) / load_users_s),
            }
            print(
                f"loaded {len(world.videos)} videos ({out['load']['videos_per_s']}/s), "
                f"{len(users)} users ({out['load']['users_per_s']}/s)",
                flush=True,
            )

            rng = np.random.default_rng(5)
            pick = [
                world.viewers[i].id
                for i in rng.integers(len(world.viewers), size=args.feed_requests)
            ]
            rounds: dict[str, list[dict[str, Any]]] = {
                "ingest": [],
                "http_floor": [],
                "feed_unloaded": [],
                "feed_concurrent": [],
            }
            samples: dict[str, list[float]] = {phase: [] for phase in rounds}
            for r in range(args.rounds):
                bodies = _events(world, args.ingest_batches, args.batch, seed=100 + r)
                rounds["ingest"].append(
                    _measure_ingest(server.port, bodies, args, samples["ingest"])
                )
                floor = _get_worker((server.port, ["/healthz"] * args.feed_requests))
                samples["http_floor"] += floor
                rounds["http_floor"].append(_latency(floor))
                paths = [f"/v1/feed/{u}?n={args.n}" for u in pick]
                _get_worker((server.port, paths[:200]))  # warm-up
                unloaded = _get_worker((server.port, paths))
                samples["feed_unloaded"] += unloaded
                rounds["feed_unloaded"].append(_latency(unloaded))
                rounds["feed_concurrent"].append(
                    _measure_concurrent(server.port, paths, args, samples["feed_concurrent"])
                )
                print(
                    f"round {r + 1}: ingest {rounds['ingest'][-1]['events_per_s']} events/s; "
                    f"feed unloaded p50 {rounds['feed_unloaded'][-1]['p50_ms']} ms "
                    f"p99 {rounds['feed_unloaded'][-1]['p99_ms']} ms "
                    f"(HTTP floor /healthz p50 {rounds['http_floor'][-1]['p50_ms']} ms); "
                    f"concurrent {rounds['feed_concurrent'][-1]['requests_per_s']} req/s "
                    f"p99 {rounds['feed_concurrent'][-1]['p99_ms']} ms",
                    flush=True,
                )
            out["rounds"] = rounds
            out["median"] = {
                phase: {k: _median([x[k] for x in xs]) for k in xs[0]}
                for phase, xs in rounds.items()
            }
            # every round's requests (ingest: batches) pooled, as quantiles for CDF plots
            out["latency_cdf"] = {phase: cdf(xs) for phase, xs in samples.items()}
        finally:
            server.stop()
    out["targets"] = {
        "feed_unloaded_p99_ms<=20": out["median"]["feed_unloaded"]["p99_ms"] <= 20,
        "ingest_events_per_s>=20000": out["median"]["ingest"]["events_per_s"] >= 20_000,
    }
    print("medians over rounds:", json.dumps(out["median"], indent=1))
    print("targets:", json.dumps(out["targets"]))
    path = Path(args.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
