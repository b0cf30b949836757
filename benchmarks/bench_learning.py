"""Real-time learning: trainer throughput, learned ranking cost, freshness, interference.

Five measurements, each in its own function, all in one run (`--only` picks some):

1. train: training throughput on one core, end to end. A SQLite store is filled through
   an in-process Engine (trainer="off", synchronous=NORMAL for the fill only) with
   simulated traffic: every viewer of a generated world fetches a page of 8 and reacts
   (sim.world.react); the engine logs the served impressions with their features
   (`flush_impressions()`). The events in the log are counted, then a fresh
   OnlineTrainer (one torch and one BLAS thread, as the trainer process runs; a memory
   parameter channel) is timed consuming both logs from offset 0: `step()` until both
   offsets reach the end, then the final flush (every open join window closed, the last
   partial batch trained). Reported: events read from the log per second (target >=
   10,000/s), log records (events + impressions) per second and trained examples per
   second, with the joiner's counters.
   The fill's event-time span is reported: the default fill spans more than
   `join_window_s`, like any real backlog, and the joiner's counters show what the
   replay of such a backlog does (`dropped_unviewed_share`, `unjoined_event_share`).
2. rank: one request with 1,000 candidates on a loaded model (the trainer of 1. publishes
   its model to the store's parameter channel; an Engine bootstraps it): the learned path
   `extract(...)` + `ModelServer.predict` + `fuse_scores`, timed per request, against the
   heuristic scorer on the same candidates in the same loop (alternating). Done with torch
   on 1 thread (what `reelrank serve` uses when it calls torch.set_num_threads(1)) and on
   the process default; the target (learned p99 <= 2 ms) is reported for both. The whole
   RankCascade.rank (pre-rank keeps `prerank_keep`, then the learned path) is timed as
   well, for reference.
3. fresh: freshness with a real `reelrank serve` process (REELRANK_TRAINER=process,
   REELRANK_MODEL_MIN_EXAMPLES small, sync intervals as given: defaults 2 s sparse, 20 s
   dense; model_poll_s, train_max_wait_s, embedding_min_count and checkpoint interval
   at their defaults). The model is warmed up with simulated traffic over HTTP until
   serving is ready; then, per trial, quietly (no other traffic, the trainer caught up,
   then a random U(0, dense interval) pause so the trials sample the phase of the
   trainer's publish timers instead of hitting the same point of them every time):
   a brand-new user fetches two pages of 8 (page 2 is served after page 1); 0.5 s later
   (the server has logged the impressions by then, as it would have while a real viewer
   watched) one POST carries the viewer's reactions to all 8 items of page 1 and a
   `play` of the first item of page 2, which closes page 1's join windows (session
   close): 8 examples, so the user id passes `embedding_min_count`. From t0 = just before
   that POST, every `--poll-ms`, the benchmark reads the parameter channel (params.db,
   read-only) and GET /v1/model. Figures per trial, all in seconds after t0:
   - sparse_published_s: publish time of the first `sparse` (or `full`) entry whose
     user-slot ids contain the new user;
   - sparse_serving_s: first poll where serving.sparse_version reached that entry's, i.e.
     the serving model holds the user's row (target <= 5 s); for a `full` entry, which
     does not bump sparse_version, the row-count figure below is used instead;
   - user_rows_serving_s: first poll where serving.embedding_rows.user grew (the same
     event, observed independently; exact because the trial is quiet);
   - dense_published_s: publish time of the first `dense`/`full` entry whose `examples`
     >= E, where E is examples_trained in the trainer status published with the sparse
     entry above (so E counts the user's examples);
   - dense_serving_s: first poll where serving.examples >= E, i.e. the serving network
     was trained on the POSTed events (target <= 60 s). (serving.examples, not
     dense_version: a `full` checkpoint snapshot carries new weights under the same
     dense_version.)
   Medians over trials (and the maxima).
4. feed: feed latency over HTTP while the trainer runs at full speed vs with it stopped.
   The store filled in 1. (with the model of 1. in its parameter channel) is copied per
   round and condition: server A runs REELRANK_TRAINER=process (no checkpoint: its
   trainer replays the whole log from offset 0 at full speed; measured only once a
   status of that trainer shows examples_per_s > 0 mid-log, and checked again with a
   status published after the measurement: its event offset still short of the log's
   end), server B runs REELRANK_TRAINER=off. Both with REELRANK_MODEL_MIN_EXAMPLES=0 so
   both serve the learned path (checked on every response); one server at a time, so B
   never shares the CPU with A's trainer. A control condition C (unless --no-cpu-hog):
   trainer off while a plain busy loop occupies one core, to tell CPU share from
   anything trainer-specific. One client, sequential GET /v1/feed?n=10 for world viewers
   (the same paths for every condition of a round): p50/p99, ratios busy/off and hog/off.
5. arch: the held-out protocol of tests/test_ranker_learning.py (memory store, the world
   of 2,000 videos and 250 viewers, 12 rounds of traffic served by the heuristic, the
   trainer stepped after each, then 3 held-out rounds never trained on), with one
   OnlineTrainer per architecture (shared_bottom, mmoe) stepping on the same logs:
   held-out AUC for like and finish (and the heuristic's served score as the baseline),
   end-to-end training examples/s (time inside `step()` and the final flush, who steps
   first alternating; log reads and joining are included, the same work for both, and
   the in-process Engine's background threads share the GIL, so it is noisy), and
   model-only examples/s (a fresh trainer of each arch training the joined training
   examples in `train_batch` mini-batches: the architecture's own cost), all on one
   torch thread. The `arch_default_justified`
   flag is this benchmark's own criterion: shared_bottom's median AUC within 0.005 of
   mmoe's on both heads (or better) while training (model-only) at least as fast.

Every phase is repeated `--rounds` times (freshness: `--fresh-trials` trials) and medians
are reported; the machine is shared, so single rounds are noisy. Prints the figures and
writes them to benchmarks/results/bench_learning.json, with latency quantiles over all
rounds (`cdf` of rank and feed) and, per arch round, the learning curve: after each
training round, each trainer's test-then-train AUC over the examples that step took and
the served heuristic's AUC on that round's traffic. Run:
`python benchmarks/bench_learning.py` (about 8 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import http.client
import json
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parent.parent
# Read before reelrank.index.vectors is imported: its faiss.omp_set_num_threads(1) also sets
# torch's thread count (one OpenMP runtime), so reading it later always gives 1.
DEFAULT_THREADS = torch.get_num_threads()
sys.path.insert(0, str(ROOT))
from benchmarks.latency import cdf  # noqa: E402
from tests.server import ServerProcess  # noqa: E402

from reelrank.config import Settings, load_settings  # noqa: E402
from reelrank.engine import Engine  # noqa: E402
from reelrank.evaluate.metrics import auc  # noqa: E402
from reelrank.rank.features import extract  # noqa: E402
from reelrank.rank.model import HEADS  # noqa: E402
from reelrank.rank.value import fuse_scores  # noqa: E402
from reelrank.sim.world import TOPICS, Viewer, World, make_world, react  # noqa: E402
from reelrank.storage import open_store  # noqa: E402
from reelrank.storage.codec import decode  # noqa: E402
from reelrank.storage.params import open_params  # noqa: E402
from reelrank.train.joiner import Example, SampleJoiner  # noqa: E402
from reelrank.train.trainer import OnlineTrainer, ranker_config  # noqa: E402
from reelrank.types import Candidates, FeedRequest  # noqa: E402

KEY = "bench-key"
HEADERS = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
PHASES = ("train", "rank", "fresh", "feed", "arch")


# -- helpers ---------------------------------------------------------------------------
def _percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs), q)) if xs else float("nan")


def _median(xs: list[Any]) -> Any:
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    if all(isinstance(x, bool) for x in xs):
        return all(xs)
    if all(isinstance(x, int | float) for x in xs):
        return round(statistics.median(xs), 4)
    return xs[0]


def _medians(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k in rounds[0] if not isinstance(rounds[0][k], dict | list | str)]
    return {k: _median([r.get(k) for r in rounds]) for k in keys}


def _lat_ms(lat: list[float]) -> dict[str, Any]:
    return {
        "requests": len(lat),
        "p50_ms": round(_percentile(lat, 50) * 1000, 3),
        "p99_ms": round(_percentile(lat, 99) * 1000, 3),
        "mean_ms": round(statistics.fmean(lat) * 1000, 3),
        "max_ms": round(max(lat) * 1000, 3),
    }


def _src_digest() -> str:
    """A digest of the package source: the run records whether it changed under it."""
    h = hashlib.sha256()
    for f in sorted((ROOT / "src" / "reelrank").rglob("*.py")):
        h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def _code_state() -> dict[str, Any]:
    def git(*argv: str) -> str:
        try:
            return subprocess.run(
                ["git", *argv], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.rstrip()
        except (OSError, subprocess.SubprocessError):
            return ""

    defaults = Settings()
    return {
        "git_head": git("rev-parse", "--short", "HEAD"),
        "uncommitted_src": git("status", "--porcelain", "--", "src").splitlines(),
        "src_digest": _src_digest(),
        "settings_defaults": {
            k: getattr(defaults, k, None)
            for k in (
                "trainer",
                "trainer_nice",
                "sync_interval_s",
                "dense_sync_interval_s",
                "model_poll_s",
                "checkpoint_interval_s",
                "join_window_s",
                "train_batch",
                "ranker_arch",
                "embedding_min_count",
                "prerank_keep",
            )
        },
    }


def _say(msg: str) -> None:
    print(msg, flush=True)


def _request(
    conn: http.client.HTTPConnection, method: str, path: str, body: Any = None
) -> dict[str, Any]:
    data = orjson.dumps(body) if body is not None else None
    try:
        conn.request(method, path, body=data, headers=HEADERS)
        resp = conn.getresponse()
    except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
        # The server closed an idle keep-alive connection: reconnect, send again (event
        # ids make a repeated POST harmless).
        conn.close()
        conn.request(method, path, body=data, headers=HEADERS)
        resp = conn.getresponse()
    raw = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"{method} {path}: {resp.status} {raw[:300]!r}")
    out: dict[str, Any] = orjson.loads(raw)
    return out


def _wait(what: str, cond: Callable[[], bool], timeout: float, every: float = 0.25) -> float:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)
    return time.monotonic() - t0


def _children(pid: int) -> list[int]:
    """Direct children of pid, from /proc (the trainer process of a server)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry))
    return out


def _stop_server(server: ServerProcess) -> None:
    """Graceful stop; a trainer child left behind (server killed) is killed by its pid."""
    kids = []
    if server.proc is not None:
        for pid in _children(server.proc.pid):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"spawn_main" in cmd:  # the trainer (not multiprocessing's resource tracker)
                kids.append(pid)
    server.stop()
    for pid in kids:
        deadline = time.monotonic() + 10.0
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        try:
            os.kill(pid, signal.SIGKILL)
            _say(f"  (killed leftover trainer process {pid})")
        except ProcessLookupError:
            pass


def _fill_settings(data_dir: Path, **extra: Any) -> Settings:
    return load_settings(
        env={}, data_dir=str(data_dir), trainer="off", sqlite_synchronous="NORMAL", **extra
    )


def _traffic_round(
    eng: Engine, world: World, by_id: dict[str, Any], rng: np.random.Generator, n: int = 8
) -> dict[tuple[str, str], float]:
    """Every viewer fetches a page and reacts; returns the served score per item."""
    served = {}
    for viewer in world.viewers:
        feed = eng.feed(viewer.id, n=n)
        events: list[dict[str, Any]] = []
        now = time.time()
        for it in feed.items:
            served[(feed.request_id, it.video_id)] = it.score
            events += react(
                viewer,
                by_id[it.video_id],
                world.topic_of[it.video_id],
                world.quality[it.video_id],
                rng,
                feed.request_id,
                now,
            )
        if events:
            eng.ingest(events)
    eng.flush_impressions()
    return served


def _load_world(eng: Engine, world: World) -> None:
    for i in range(0, len(world.videos), 1000):
        eng.upsert_videos(world.videos[i : i + 1000])
    users = [{"id": v.id, "region": v.region, "interests": v.interests} for v in world.viewers]
    for i in range(0, len(users), 1000):
        eng.upsert_users(users[i : i + 1000])


def _drain(trainer: OnlineTrainer, last_event: int, last_imp: int) -> int:
    """Step until both logs are consumed, then close every window and train the rest."""
    steps = 0
    while trainer.event_offset < last_event or trainer.impression_offset < last_imp:
        trainer.step()
        steps += 1
    with trainer.lock:
        trainer._take(trainer.joiner.advance(time.time() + 3600.0))
        trainer._flush()
    return steps


# -- 1. training throughput ------------------------------------------------------------
def fill_store(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    """Simulated traffic through an Engine (trainer off) into a SQLite store."""
    world = make_world(n_videos=args.videos, n_viewers=args.viewers, seed=11)
    settings = _fill_settings(data_dir)
    eng = Engine(settings).open()
    t0 = time.perf_counter()
    ts0 = time.time()
    try:
        _load_world(eng, world)
        by_id = {v["id"]: v for v in world.videos}
        rng = np.random.default_rng(3)
        for _ in range(args.fill_rounds):
            _traffic_round(eng, world, by_id, rng)
        eng.flush_impressions()
        events = eng.store.events.last_offset()
        imps = eng.store.events.last_impression_offset()
    finally:
        eng.close()
    span = time.time() - ts0
    return {
        "world": world,
        "settings": settings,
        "events": events,
        "impressions": imps,
        "fill_s": round(time.perf_counter() - t0, 2),
        "event_time_span_s": round(span, 1),
    }


def bench_train_throughput(args: argparse.Namespace, fill: dict[str, Any]) -> dict[str, Any]:
    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)
    settings: Settings = fill["settings"]
    n_events, n_imps = fill["events"], fill["impressions"]
    rounds = []
    trainer = None
    for r in range(args.rounds):
        store = open_store(settings.store_url(), settings.sqlite_synchronous)
        try:
            trainer = OnlineTrainer(settings, store, open_params("memory://"))
            t0 = time.perf_counter()
            with threadpool_limits(1):  # one core's worth, as the trainer process runs
                steps = _drain(trainer, n_events, n_imps)
            dt = time.perf_counter() - t0
        finally:
            store.close()
        js = trainer.joiner.stats
        rounds.append(
            {
                "seconds": round(dt, 3),
                "steps": steps,
                "events": n_events,
                "impressions": n_imps,
                "examples": trainer.examples_trained,
                "events_per_s": round(n_events / dt),
                "records_per_s": round((n_events + n_imps) / dt),
                "examples_per_s": round(trainer.examples_trained / dt),
                "join": dict(js.__dict__),
            }
        )
        x = rounds[-1]
        _say(
            f"  train round {r + 1}: {n_events} events + {n_imps} impressions in {dt:.1f} s: "
            f"{x['events_per_s']} events/s, {x['examples_per_s']} examples/s "
            f"(dropped unviewed {js.dropped_unviewed}, unjoined events {js.unjoined_events})"
        )
    assert trainer is not None
    # The last trainer's model becomes the store's published model (for `rank` and `feed`).
    params = open_params(settings.params_channel_url())
    trainer.params = params
    trainer.publish_full()
    params.close()
    torch.set_num_threads(threads_before)
    med = _medians(rounds)
    med["join_window_s"] = settings.join_window_s
    med["fill_event_time_span_s"] = fill["event_time_span_s"]
    med["span_exceeds_join_window"] = fill["event_time_span_s"] > settings.join_window_s
    med["dropped_unviewed_share"] = round(rounds[-1]["join"]["dropped_unviewed"] / n_imps, 4)
    med["unjoined_event_share"] = round(rounds[-1]["join"]["unjoined_events"] / n_events, 4)
    return {
        "fill": {k: v for k, v in fill.items() if k not in ("world", "settings")},
        "torch_threads": 1,
        "rounds": rounds,
        "median": med,
    }


# -- 2. ranking 1,000 candidates ---------------------------------------------------------
def bench_rank(args: argparse.Namespace, fill: dict[str, Any]) -> dict[str, Any]:
    settings = dataclasses.replace(fill["settings"], model_min_examples=0)
    world: World = fill["world"]
    threads_before = torch.get_num_threads()
    eng = Engine(settings).open()
    try:
        server = eng.model
        if server.live is None:
            raise RuntimeError("no model in the parameter channel (run `train` first)")
        cascade = eng.pipeline.ranker
        heuristic = cascade.heuristic
        size = eng.state.table.size
        if size < args.candidates:
            raise RuntimeError(f"catalog has {size} videos, fewer than --candidates")
        rng = np.random.default_rng(21)

        def one(threads: int, pooled: dict[str, list[float]]) -> dict[str, Any]:
            torch.set_num_threads(threads)
            learned, heur, full = [], [], []
            parts: dict[str, list[float]] = {"extract": [], "predict": [], "fuse": []}
            for i in range(args.rank_warmup + args.rank_requests):
                viewer = world.viewers[int(rng.integers(len(world.viewers)))]
                request = FeedRequest(
                    user_id=viewer.id, n=10, request_id=uuid.uuid4().hex, now=time.time()
                )
                query = eng.hydrate(request)
                rows = np.sort(rng.choice(size, args.candidates, replace=False)).astype(np.int64)
                cands = Candidates(
                    rows, np.zeros(len(rows), np.int16), np.full(len(rows), "bench", object)
                )
                t0 = time.perf_counter()
                feats = extract(query, rows, heuristic.smoothing)
                ta = time.perf_counter()
                probs = server.predict(feats)
                tb = time.perf_counter()
                scores = fuse_scores(probs, settings.fusion_weights)
                t1 = time.perf_counter()
                h = heuristic.score(query, cands)
                t2 = time.perf_counter()
                ranked = cascade.rank(query, cands)
                t3 = time.perf_counter()
                if ranked.ranker != "learned" or len(scores) != len(h):
                    raise RuntimeError(f"learned path not taken: {ranked.note}")
                if i >= args.rank_warmup:
                    pooled["learned"].append(t1 - t0)
                    pooled["heuristic"].append(t2 - t1)
                    pooled["cascade_rank"].append(t3 - t2)
                    learned.append(t1 - t0)
                    parts["extract"].append(ta - t0)
                    parts["predict"].append(tb - ta)
                    parts["fuse"].append(t1 - tb)
                    heur.append(t2 - t1)
                    full.append(t3 - t2)
            return {
                "torch_threads": threads,
                "learned": _lat_ms(learned),
                **{f"learned_{k}": _lat_ms(v) for k, v in parts.items()},
                "heuristic": _lat_ms(heur),
                "cascade_rank": _lat_ms(full),
            }

        rounds: dict[str, list[dict[str, Any]]] = {"threads_1": [], "threads_default": []}
        pooled: dict[str, dict[str, list[float]]] = {
            name: {"learned": [], "heuristic": [], "cascade_rank": []} for name in rounds
        }  # every round's per-request times, as quantiles for CDF plots
        for r in range(args.rounds):
            for name, threads in (("threads_1", 1), ("threads_default", DEFAULT_THREADS)):
                res = one(threads, pooled[name])
                rounds[name].append(res)
                _say(
                    f"  rank round {r + 1} ({threads} torch thread(s)): learned p50 "
                    f"{res['learned']['p50_ms']} p99 {res['learned']['p99_ms']} ms; heuristic "
                    f"p50 {res['heuristic']['p50_ms']} p99 {res['heuristic']['p99_ms']} ms; "
                    f"cascade p99 {res['cascade_rank']['p99_ms']} ms"
                )
        model = {
            "version": server.version(),
            "examples": server.examples,
            "arch": server.live.config.arch if server.live else None,
        }
    finally:
        torch.set_num_threads(threads_before)
        eng.close()
    median = {
        name: {part: _medians([x[part] for x in xs]) for part in xs[0] if part != "torch_threads"}
        for name, xs in rounds.items()
    }
    return {
        "candidates": args.candidates,
        "prerank_keep": settings.prerank_keep,
        "model": model,
        "rounds": rounds,
        "median": median,
        "cdf": {
            name: {path: cdf(xs) for path, xs in paths.items()} for name, paths in pooled.items()
        },
    }


# -- 3. freshness --------------------------------------------------------------------------
class _Channel:
    """Reads the parameter channel (params.db) of a running server, read-only."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        self.after = 0

    def last_seq(self) -> int:
        row = self.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM params").fetchone()
        return int(row[0])

    def read(self) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT seq, kind, version, ts, blob FROM params WHERE seq > ? ORDER BY seq",
            (self.after,),
        ).fetchall()
        out = []
        for seq, kind, version, ts, blob in rows:
            self.after = max(self.after, seq)
            entry: dict[str, Any] = {"seq": seq, "kind": kind, "version": version, "ts": ts}
            if kind == "status":
                entry["examples"] = orjson.loads(blob)["examples_trained"]
            else:
                payload = decode(bytes(blob))
                if kind in ("sparse", "full"):
                    entry["user_ids"] = set(payload["slots"]["user"]["ids"])
                    entry["sparse_version"] = int(payload["sparse_version"])
                if kind in ("dense", "full"):
                    entry["dense_version"] = int(payload["dense_version"])
                    entry["examples"] = int(payload["examples"])
            out.append(entry)
        return out

    def close(self) -> None:
        self.conn.close()


def _http_round(
    conn: http.client.HTTPConnection,
    world: World,
    by_id: dict[str, Any],
    rng: np.random.Generator,
    viewers: list[Viewer] | None = None,
) -> int:
    events_sent = 0
    for viewer in viewers or world.viewers:
        page = _request(conn, "GET", f"/v1/feed/{viewer.id}?n=8")
        now = time.time()
        events: list[dict[str, Any]] = []
        for it in page["items"]:
            vid = it["video_id"]
            events += react(
                viewer, by_id[vid], world.topic_of[vid], world.quality[vid], rng,
                page["request_id"], now,
            )  # fmt: skip
        if events:
            _request(conn, "POST", "/v1/events", {"events": events})
            events_sent += len(events)
    return events_sent


def _load_world_http(conn: http.client.HTTPConnection, world: World) -> None:
    for i in range(0, len(world.videos), 1000):
        _request(conn, "POST", "/v1/videos", {"videos": world.videos[i : i + 1000]})
    users = [{"id": v.id, "region": v.region, "interests": v.interests} for v in world.viewers]
    for i in range(0, len(users), 1000):
        _request(conn, "POST", "/v1/users", {"users": users[i : i + 1000]})


def _caught_up(conn: http.client.HTTPConnection) -> bool:
    health = _request(conn, "GET", "/healthz")
    trainer = _request(conn, "GET", "/v1/model")["trainer"] or {}
    return bool(trainer) and trainer.get("event_offset", -1) >= health["event_offset"]


def _fresh_trial(
    conn: http.client.HTTPConnection,
    channel: _Channel,
    world: World,
    rng: np.random.Generator,
    k: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    _wait("the trainer to catch up", lambda: _caught_up(conn), 120, 0.5)
    time.sleep(args.sync_interval_s + 0.5)  # let the last sparse sync of the backlog land
    # A random phase against the trainer's publish timers, so the trials sample them fairly.
    delay = float(rng.uniform(0.0, args.dense_sync_interval_s))
    time.sleep(delay)
    base = _request(conn, "GET", "/v1/model")["serving"]
    channel.after = channel.last_seq()
    user_id = f"fresh-{k}-{uuid.uuid4().hex[:8]}"
    loved = [str(t) for t in rng.choice(TOPICS, size=2, replace=False)]
    viewer = Viewer(user_id, "us", {t: 0.9 for t in loved})
    by_id = {v["id"]: v for v in world.videos}
    page1 = _request(conn, "GET", f"/v1/feed/{user_id}?n=8")
    page2 = _request(conn, "GET", f"/v1/feed/{user_id}?n=8")
    time.sleep(0.5)
    now = time.time()
    events: list[dict[str, Any]] = []
    for it in page1["items"]:
        vid = it["video_id"]
        events += react(
            viewer, by_id[vid], world.topic_of[vid], world.quality[vid], rng,
            page1["request_id"], now,
        )  # fmt: skip
    follow_up = page2["items"][0]["video_id"]
    events.append(
        {
            "event_id": f"{user_id}-follow-up",
            "type": "play",
            "user_id": user_id,
            "video_id": follow_up,
            "request_id": page2["request_id"],
            "ts": now,
        }
    )
    t0 = time.time()
    accepted = _request(conn, "POST", "/v1/events", {"events": events})["accepted"]
    entries: list[dict[str, Any]] = []
    polls: list[tuple[float, int, int, int]] = []  # (t, sparse_version, examples, user rows)
    deadline = t0 + args.fresh_timeout_s
    sparse = dense = None
    examples_with_user = None
    while time.time() < deadline:
        entries += channel.read()
        serving = _request(conn, "GET", "/v1/model")["serving"]
        polls.append(
            (
                time.time() - t0,
                serving["sparse_version"],
                serving["examples"],
                serving["embedding_rows"].get("user", 0),
            )
        )
        if sparse is None:
            sparse = next(
                (
                    e
                    for e in entries
                    if e["kind"] in ("sparse", "full") and user_id in e["user_ids"]
                ),
                None,
            )
        if sparse is not None and examples_with_user is None:
            if sparse["kind"] == "full":
                examples_with_user = sparse["examples"]
            else:
                after = sparse["seq"]
                status = [e for e in entries if e["kind"] == "status" and e["seq"] > after]
                examples_with_user = status[0]["examples"] if status else None
        if examples_with_user is not None and dense is None:
            dense = next(
                (
                    e
                    for e in entries
                    if e["kind"] in ("dense", "full") and e["examples"] >= examples_with_user
                ),
                None,
            )
        sparse_done = sparse is not None and (
            serving["sparse_version"] >= sparse["sparse_version"]
            if sparse["kind"] == "sparse"
            else serving["embedding_rows"].get("user", 0) > base["embedding_rows"].get("user", 0)
        )
        dense_done = examples_with_user is not None and serving["examples"] >= examples_with_user
        if sparse_done and dense_done:
            break
        time.sleep(args.poll_ms / 1000.0)

    def first(pred: Callable[[tuple[float, int, int, int]], bool]) -> float | None:
        return next((round(p[0], 3) for p in polls if pred(p)), None)

    rows_s = first(lambda p: p[3] > base["embedding_rows"].get("user", 0))
    sparse_s = None
    if sparse is not None and sparse["kind"] == "sparse":
        sparse_s = first(lambda p: p[1] >= sparse["sparse_version"])
    elif sparse is not None:  # a full snapshot does not bump sparse_version: count rows
        sparse_s = rows_s
    out: dict[str, Any] = {
        "user": user_id,
        "events_posted": accepted,
        "sparse_entry": None if sparse is None else f"{sparse['kind']} seq {sparse['seq']}",
        "sparse_published_s": None if sparse is None else round(sparse["ts"] - t0, 3),
        "sparse_serving_s": sparse_s,
        "user_rows_serving_s": rows_s,
        "dense_entry": None if dense is None else f"{dense['kind']} seq {dense['seq']}",
        "dense_published_s": None if dense is None else round(dense["ts"] - t0, 3),
        "dense_serving_s": None
        if examples_with_user is None
        else first(lambda p: p[2] >= examples_with_user),
        "examples_with_user": examples_with_user,
        "random_delay_s": round(delay, 2),
        "polls": len(polls),
    }
    return out


def bench_freshness(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    world = make_world(n_videos=args.fresh_videos, n_viewers=args.fresh_viewers, seed=13)
    by_id = {v["id"]: v for v in world.videos}
    data_dir = workdir / "fresh"
    data_dir.mkdir()
    env = {
        "REELRANK_TRAINER": "process",
        "REELRANK_MODEL_MIN_EXAMPLES": str(args.fresh_min_examples),
        "REELRANK_SYNC_INTERVAL_S": str(args.sync_interval_s),
        "REELRANK_DENSE_SYNC_INTERVAL_S": str(args.dense_sync_interval_s),
        "REELRANK_LOG_LEVEL": "warning",
    }
    server = ServerProcess(data_dir, f"{KEY}=ingest,feed,admin", **env).start()
    channel = None
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        _load_world_http(conn, world)
        rng = np.random.default_rng(17)
        t0 = time.perf_counter()
        sent = 0
        for _ in range(args.fresh_warmup_rounds):
            sent += _http_round(conn, world, by_id, rng)

        def ready() -> bool:
            serving = _request(conn, "GET", "/v1/model")["serving"]
            return bool(serving["ready"])

        _wait("the serving model to be ready", ready, 120, 0.5)
        warm = _request(conn, "GET", "/v1/model")
        _say(
            f"  fresh: warmed up with {sent} events over HTTP in "
            f"{time.perf_counter() - t0:.1f} s; serving {warm['serving']['model_version']} "
            f"({warm['serving']['examples']} examples)"
        )
        channel = _Channel(data_dir / "params.db")
        trials = []
        for k in range(args.fresh_trials):
            trial = _fresh_trial(conn, channel, world, rng, k, args)
            trials.append(trial)
            _say(
                f"  fresh trial {k + 1}: sparse row published {trial['sparse_published_s']} s, "
                f"serving {trial['sparse_serving_s']} s (user-row count "
                f"{trial['user_rows_serving_s']} s); dense published "
                f"{trial['dense_published_s']} s, serving {trial['dense_serving_s']} s"
            )
    finally:
        if channel is not None:
            channel.close()
        _stop_server(server)
    return {
        "settings": {
            "sync_interval_s": args.sync_interval_s,
            "dense_sync_interval_s": args.dense_sync_interval_s,
            "model_min_examples": args.fresh_min_examples,
            "model_poll_s": "default (0.5)",
            "train_max_wait_s": "default (0.5)",
            "embedding_min_count": "default (2)",
        },
        "warmup_events": sent,
        "trials": trials,
        "median": _medians(trials),
        "max": {
            k: max((t[k] for t in trials if t[k] is not None), default=None)
            for k in ("sparse_serving_s", "dense_serving_s")
        },
    }


# -- 4. feed latency, trainer busy vs stopped -------------------------------------------
def _feed_latency(
    conn: http.client.HTTPConnection, paths: list[str], warmup: int
) -> tuple[list[float], int]:
    for path in paths[:warmup]:
        _request(conn, "GET", path)
    lat, learned = [], 0
    for path in paths:
        t0 = time.perf_counter()
        page = _request(conn, "GET", path)
        lat.append(time.perf_counter() - t0)
        learned += page["ranker"] == "learned"
    return lat, learned


def _feed_server(
    data_dir: Path, mode: str, paths: list[str], args: argparse.Namespace, total_events: int
) -> dict[str, Any]:
    """One server on a copy of the store: wait for its trainer (or model), time the feed.

    mode: "process" (trainer busy), "off", or "hog" (trainer off, a busy loop on one core).
    """
    hog = None
    if mode == "hog":
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        mode = "off"
    try:
        res = _feed_server_run(data_dir, mode, paths, args, total_events)
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    return res


def _feed_server_run(
    data_dir: Path, mode: str, paths: list[str], args: argparse.Namespace, total_events: int
) -> dict[str, Any]:
    launched = time.time()
    server = ServerProcess(
        data_dir,
        f"{KEY}=ingest,feed,admin",
        REELRANK_TRAINER=mode,
        REELRANK_MODEL_MIN_EXAMPLES="0",
        REELRANK_LOG_LEVEL="warning",
    ).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)

        def model() -> dict[str, Any]:
            return _request(conn, "GET", "/v1/model")

        if mode == "process":

            def training() -> bool:  # a status of this server's trainer, mid-backlog
                st = model()["trainer"] or {}
                return (
                    float(st.get("published_at") or 0) > launched
                    and (st.get("examples_per_s") or 0) > 0
                    and 0 < (st.get("event_offset") or 0) < total_events
                )

            waited = _wait("the trainer to report examples/s", training, 120)
        else:
            waited = _wait("the model to load", lambda: model()["serving"]["loaded"], 60)
        before = model()
        t_start = time.time()
        lat, learned = _feed_latency(conn, paths, args.feed_warmup)
        t_end = time.time()
        res: dict[str, Any] = {
            **_lat_ms(lat),
            "loadavg_1m_after": round(os.getloadavg()[0], 2),
            "learned_share": round(learned / len(lat), 4),
            "waited_s": round(waited, 1),
            "measure_s": round(t_end - t_start, 1),
            "latencies_s": lat,  # taken out and pooled by the caller
        }
        if mode != "process":
            return res
        # A trainer status published after the measurement ended (one per sparse sync).
        after: dict[str, Any] = {}

        def fresh_status() -> bool:
            nonlocal after
            after = model()["trainer"] or {}
            return float(after.get("published_at") or 0) > t_end

        _wait("a trainer status after the measurement", fresh_status, 30)
        tb = before["trainer"] or {}
        res.update(
            {
                "trainer_examples_per_s_before": tb.get("examples_per_s"),
                "trainer_examples_per_s_after": after.get("examples_per_s"),
                "trainer_event_offset_before": tb.get("event_offset"),
                "trainer_event_offset_after": after.get("event_offset"),
                "log_events": total_events,
                "trainer_busy_throughout": (after.get("examples_per_s") or 0) > 0
                and (after.get("event_offset") or 0) < total_events,
            }
        )
        return res
    finally:
        _stop_server(server)


def bench_feed_vs_trainer(
    args: argparse.Namespace, fill: dict[str, Any], workdir: Path
) -> dict[str, Any]:
    pristine = Path(fill["settings"].data_dir)
    world: World = fill["world"]
    total_events = fill["events"]
    rng = np.random.default_rng(5)
    users = [world.viewers[int(i)].id for i in rng.integers(len(world.viewers), size=10_000)]
    modes = [("trainer_busy", "process"), ("trainer_off", "off")]
    if not args.no_cpu_hog:
        modes.append(("trainer_off_cpu_hog", "hog"))
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in modes}
    pooled: dict[str, list[float]] = {name: [] for name, _ in modes}
    for r in range(args.rounds):
        paths = [f"/v1/feed/{u}?n=10" for u in users[r * 997 :][: args.feed_requests]]
        for name, mode in modes:
            data_dir = workdir / f"feed-{r}-{mode}"
            shutil.copytree(pristine, data_dir, ignore=shutil.ignore_patterns("server.log"))
            try:
                res = _feed_server(data_dir, mode, paths, args, total_events)
            finally:
                shutil.rmtree(data_dir, ignore_errors=True)
            pooled[name] += res.pop("latencies_s")
            rounds[name].append(res)
            _say(
                f"  feed round {r + 1}, {name}: p50 {res['p50_ms']} ms, p99 "
                f"{res['p99_ms']} ms, learned {res['learned_share']:.0%}"
                + (
                    f"; trainer {res['trainer_examples_per_s_before']} -> "
                    f"{res['trainer_examples_per_s_after']} examples/s, event offset "
                    f"{res['trainer_event_offset_after']} of {total_events}"
                    if mode == "process"
                    else ""
                )
            )
    median = {name: _medians(xs) for name, xs in rounds.items()}
    b, o = median["trainer_busy"], median["trainer_off"]
    per_round_p99 = [
        x["p99_ms"] / y["p99_ms"]
        for x, y in zip(rounds["trainer_busy"], rounds["trainer_off"], strict=True)
    ]
    return {
        "requests_per_round": args.feed_requests,
        "log_events": total_events,
        "rounds": rounds,
        "median": median,
        "cdf": {name: cdf(xs) for name, xs in pooled.items()},
        "ratio_busy_over_off": {
            "p50": round(b["p50_ms"] / o["p50_ms"], 3),
            "p99": round(b["p99_ms"] / o["p99_ms"], 3),
            "p99_median_of_rounds": round(statistics.median(per_round_p99), 3),
        },
        **(
            {
                "ratio_cpu_hog_over_off": {
                    "p50": round(median["trainer_off_cpu_hog"]["p50_ms"] / o["p50_ms"], 3),
                    "p99": round(median["trainer_off_cpu_hog"]["p99_ms"] / o["p99_ms"], 3),
                }
            }
            if "trainer_off_cpu_hog" in median
            else {}
        ),
    }


# -- 5. architectures ----------------------------------------------------------------------
def _join_all(eng: Engine, imp_after: int, ev_after: int, imp_to: int, ev_to: int) -> list[Example]:
    joiner = SampleJoiner(window_s=eng.settings.join_window_s)
    out: list[Example] = []
    for off, imp in eng.store.events.read_impressions(imp_after, 10**9):
        if off <= imp_to:
            out += joiner.add_impression(imp)
    for off, ev in eng.store.events.read(ev_after, 10**9):
        if off <= ev_to:
            out += joiner.add_event(ev)
    return [e for e in out + joiner.advance(time.time() + 3600.0) if not e.correction]


def _step_auc(trainer: OnlineTrainer, n0: int) -> dict[str, float | None]:
    """Test-then-train AUC per head over the examples the trainer took after its n0-th."""
    m = trainer.metrics
    idx = np.arange(max(n0, m.n - m.window), m.n) % m.window
    out: dict[str, float | None] = {}
    for head in ("like", "finish"):
        j = HEADS.index(head)
        a = auc(m.labels[idx, j], m.preds[idx, j].astype(np.float64)) if len(idx) else None
        out[head] = None if a is None else round(a, 4)
    return out


def _round_auc(
    eng: Engine, served: dict[tuple[str, str], float], offsets: tuple[int, int]
) -> dict[str, float | None]:
    """AUC per head of the served (heuristic) scores on one round's traffic, all joined."""
    imp_after, ev_after = offsets
    examples = _join_all(eng, imp_after, ev_after, 10**12, 10**12)
    examples = [e for e in examples if (e.request_id, e.video_id) in served]
    if not examples:
        return {"like": None, "finish": None}
    labels = np.stack([e.labels for e in examples])
    scores = np.array([served[(e.request_id, e.video_id)] for e in examples])
    out: dict[str, float | None] = {}
    for head in ("like", "finish"):
        a = auc(labels[:, HEADS.index(head)], scores)
        out[head] = None if a is None else round(a, 4)
    return out


def _arch_round(args: argparse.Namespace, r: int, workdir: Path) -> dict[str, Any]:
    torch.manual_seed(0)
    settings = load_settings(
        env={},
        data_dir=str(workdir / f"arch-{r}"),
        store="memory://",
        trainer="off",
        trending_refresh_s=0.05,
        model_min_examples=10**9,
    )
    archs = ("shared_bottom", "mmoe") if r % 2 == 0 else ("mmoe", "shared_bottom")
    eng = Engine(settings).open()
    world = make_world(n_videos=2000, n_viewers=250, seed=5)
    by_id = {v["id"]: v for v in world.videos}
    eng.upsert_videos(world.videos)
    eng.upsert_users([{"id": v.id, "region": v.region} for v in world.viewers])
    trainers = {
        a: OnlineTrainer(
            settings,
            eng.store,
            eng.params,
            config=dataclasses.replace(ranker_config(settings), arch=a),
        )
        for a in archs
    }
    spent = dict.fromkeys(archs, 0.0)
    rng = np.random.default_rng(1 + r)
    # the learning curve: per training round, each trainer's test-then-train AUC over the
    # examples its step took, and the served heuristic's AUC on that round's traffic
    curve: list[dict[str, Any]] = []
    try:
        for k in range(args.arch_train_rounds):
            offsets = (eng.store.events.last_impression_offset(), eng.store.events.last_offset())
            served_k = _traffic_round(eng, world, by_id, rng)
            seen = {a: tr.metrics.n for a, tr in trainers.items()}
            order = list(trainers.items())
            for a, tr in order[::-1] if k % 2 else order:  # who steps first alternates
                t0 = time.perf_counter()
                tr.step()
                spent[a] += time.perf_counter() - t0
            point: dict[str, Any] = {
                "round": k + 1,
                "heuristic": _round_auc(eng, served_k, offsets),
            }
            for a, tr in trainers.items():
                point[a] = {"examples_trained": tr.examples_trained, **_step_auc(tr, seen[a])}
            curve.append(point)
        imp_after = eng.store.events.last_impression_offset()
        ev_after = eng.store.events.last_offset()
        for a, tr in trainers.items():
            t0 = time.perf_counter()
            _drain(tr, ev_after, imp_after)
            spent[a] += time.perf_counter() - t0
        served: dict[tuple[str, str], float] = {}
        for _ in range(args.arch_heldout_rounds):
            served.update(_traffic_round(eng, world, by_id, rng))
        held_out = _join_all(eng, imp_after, ev_after, 10**12, 10**12)
        train_examples = _join_all(eng, 0, 0, imp_after, ev_after)
    finally:
        eng.close()
    labels = np.stack([e.labels for e in held_out])
    heuristic = np.array([served[(e.request_id, e.video_id)] for e in held_out])
    out: dict[str, Any] = {
        "held_out_examples": len(held_out),
        "train_examples": len(train_examples),
        "learning_curve": curve,
    }
    for head in ("like", "finish"):
        out[f"heuristic_auc_{head}"] = round(auc(labels[:, HEADS.index(head)], heuristic) or 0, 4)
    batch = settings.train_batch
    for a, tr in trainers.items():
        preds = tr.predict(held_out)
        for head in ("like", "finish"):
            j = HEADS.index(head)
            out[f"{a}_auc_{head}"] = round(auc(labels[:, j], preds[:, j]) or 0, 4)
        out[f"{a}_examples_trained"] = tr.examples_trained
        out[f"{a}_step_examples_per_s"] = round(tr.examples_trained / spent[a])
        fresh = OnlineTrainer(
            settings,
            eng.store,
            eng.params,
            config=dataclasses.replace(ranker_config(settings), arch=a),
        )
        t0 = time.perf_counter()
        for i in range(0, len(train_examples), batch):
            fresh._train(train_examples[i : i + batch])
        out[f"{a}_model_examples_per_s"] = round(len(train_examples) / (time.perf_counter() - t0))
    return out


def bench_arch(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)
    rounds = []
    try:
        for r in range(args.rounds):
            res = _arch_round(args, r, workdir)
            rounds.append(res)
            _say(
                f"  arch round {r + 1}: AUC like sb {res['shared_bottom_auc_like']} / mmoe "
                f"{res['mmoe_auc_like']} / heuristic {res['heuristic_auc_like']}; finish sb "
                f"{res['shared_bottom_auc_finish']} / mmoe {res['mmoe_auc_finish']} / heuristic "
                f"{res['heuristic_auc_finish']}; examples/s step sb "
                f"{res['shared_bottom_step_examples_per_s']} mmoe "
                f"{res['mmoe_step_examples_per_s']}, model-only sb "
                f"{res['shared_bottom_model_examples_per_s']} mmoe "
                f"{res['mmoe_model_examples_per_s']}"
            )
    finally:
        torch.set_num_threads(threads_before)
    med = _medians(rounds)
    tol = 0.005
    med["arch_default_justified"] = bool(
        all(med[f"shared_bottom_auc_{h}"] >= med[f"mmoe_auc_{h}"] - tol for h in ("like", "finish"))
        and med["shared_bottom_model_examples_per_s"] >= med["mmoe_model_examples_per_s"]
    )
    return {
        "protocol": "tests/test_ranker_learning.py: world(2000 videos, 250 viewers, seed 5), "
        f"{args.arch_train_rounds} training rounds, {args.arch_heldout_rounds} held-out rounds",
        "torch_threads": 1,
        "rounds": rounds,
        "median": med,
    }


# -- main ------------------------------------------------------------------------------
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only", default=",".join(PHASES), help=f"comma list of {', '.join(PHASES)}")
    p.add_argument("--rounds", type=int, default=3, help="repeat each phase; medians reported")
    p.add_argument("--videos", type=int, default=10_000, help="world for train/rank/feed")
    p.add_argument("--viewers", type=int, default=500, help="world for train/rank/feed")
    p.add_argument("--fill-rounds", type=int, default=40, help="pages per viewer in the fill")
    p.add_argument("--candidates", type=int, default=1000)
    p.add_argument("--rank-requests", type=int, default=500, help="per round and thread count")
    p.add_argument("--rank-warmup", type=int, default=30)
    p.add_argument("--fresh-videos", type=int, default=2000)
    p.add_argument("--fresh-viewers", type=int, default=200)
    p.add_argument("--fresh-warmup-rounds", type=int, default=4, help="pages per viewer")
    p.add_argument("--fresh-min-examples", type=int, default=500)
    p.add_argument("--fresh-trials", type=int, default=5, help="freshness trials (medians)")
    p.add_argument("--fresh-timeout-s", type=float, default=120.0)
    p.add_argument("--sync-interval-s", type=float, default=2.0)
    p.add_argument("--dense-sync-interval-s", type=float, default=20.0)
    p.add_argument("--poll-ms", type=float, default=25.0)
    p.add_argument("--feed-requests", type=int, default=1000, help="per round and server")
    p.add_argument("--feed-warmup", type=int, default=50)
    p.add_argument(
        "--no-cpu-hog",
        action="store_true",
        help="skip feed's control condition: trainer off + a 1-core busy loop",
    )
    p.add_argument("--arch-train-rounds", type=int, default=12)
    p.add_argument("--arch-heldout-rounds", type=int, default=3)
    p.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "bench_learning.json"))
    args = p.parse_args()
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = set(only) - set(PHASES)
    if unknown:
        p.error(f"unknown phases {sorted(unknown)}")

    out: dict[str, Any] = {
        "benchmark": "bench_learning",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "torch_default_threads": DEFAULT_THREADS,
        },
        "params": vars(args),
        "code": _code_state(),
    }
    started = time.perf_counter()
    status = 0
    with tempfile.TemporaryDirectory(prefix="bench-learning-") as tmp:
        workdir = Path(tmp)
        try:
            fill = None
            if {"train", "rank", "feed"} & set(only):
                _say(
                    f"filling a SQLite store: {args.videos} videos, {args.viewers} viewers x "
                    f"{args.fill_rounds} pages"
                )
                fill = fill_store(args, workdir / "store")
                _say(
                    f"  {fill['events']} events, {fill['impressions']} impressions in "
                    f"{fill['fill_s']} s (event-time span {fill['event_time_span_s']} s)"
                )
                # train publishes the model that rank and feed use
                _say("1. training throughput (one core)")
                out["train"] = bench_train_throughput(args, fill)
            if "rank" in only:
                assert fill is not None
                _say(f"2. ranking {args.candidates} candidates")
                out["rank"] = bench_rank(args, fill)
            if "fresh" in only:
                _say("3. freshness (real server, trainer process)")
                out["fresh"] = bench_freshness(args, workdir)
            if "feed" in only:
                assert fill is not None
                _say("4. feed latency, trainer busy vs stopped (real servers)")
                out["feed"] = bench_feed_vs_trainer(args, fill, workdir)
            if "arch" in only:
                _say("5. architectures on the held-out protocol")
                out["arch"] = bench_arch(args, workdir)
        except (Exception, KeyboardInterrupt) as exc:  # keep what was measured, then fail
            status = 1
            out["error"] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
    out["wall_s"] = round(time.perf_counter() - started, 1)
    out["code"]["src_changed_during_run"] = _src_digest() != out["code"]["src_digest"]
    if out["code"]["src_changed_during_run"]:
        _say("WARNING: the package source changed during the run; figures may mix versions")

    targets: dict[str, bool | None] = {}
    if "train" in out:
        targets["train_events_per_s>=10000"] = out["train"]["median"]["events_per_s"] >= 10_000
    if "rank" in out:
        rank = out["rank"]["median"]
        targets["rank_1000_learned_p99_ms<=2@1_thread"] = (
            rank["threads_1"]["learned"]["p99_ms"] <= 2
        )
        targets[f"rank_1000_learned_p99_ms<=2@{DEFAULT_THREADS}_threads"] = (
            rank["threads_default"]["learned"]["p99_ms"] <= 2.0
        )
    if "fresh" in out:
        m = out["fresh"]["median"]
        targets["fresh_sparse_serving_s<=5"] = (
            None if m["sparse_serving_s"] is None else m["sparse_serving_s"] <= 5.0
        )
        targets["fresh_dense_serving_s<=60"] = (
            None if m["dense_serving_s"] is None else m["dense_serving_s"] <= 60.0
        )
    if "arch" in out:
        targets["arch_default_justified"] = out["arch"]["median"]["arch_default_justified"]
    out["targets"] = targets
    summary = {k: v["median"] for k, v in out.items() if isinstance(v, dict) and "median" in v}
    if "feed" in out:
        summary["feed_ratio_busy_over_off"] = out["feed"]["ratio_busy_over_off"]
        if "ratio_cpu_hog_over_off" in out["feed"]:
            summary["feed_ratio_cpu_hog_over_off"] = out["feed"]["ratio_cpu_hog_over_off"]
    print("medians over rounds:", json.dumps(summary, indent=1))
    print("targets:", json.dumps(targets))
    print(f"wall time {out['wall_s']} s")
    path = Path(args.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=str))
    print(f"wrote {path}")
    if status:
        print(f"FAILED: {out['error']}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
