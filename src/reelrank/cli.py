"""The command line: thin over the library."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import secrets
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

from . import __version__
from .cli_offline import add_simulate_parser, cmd_evaluate
from .config import Settings, load_settings
from .errors import ReelrankError


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    return load_settings(
        config_file=getattr(args, "config", None),
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        data_dir=getattr(args, "data_dir", None),
        store=getattr(args, "store", None),
        roles=getattr(args, "role", None),
        **extra,
    )


def _run_server(settings: Settings, ready: threading.Event | None = None) -> None:
    import gc

    import uvicorn

    # A server allocates many short-lived objects per request; collecting the young
    # generation every 10k allocations instead of 700 measurably raises ingest throughput.
    gc.set_threshold(10_000, 10, 10)
    import torch
    from threadpoolctl import threadpool_limits

    # Requests run in parallel threads; intra-op threads on top (torch's, and the BLAS
    # behind numpy's matrix products) would fight over the cores and spin.
    torch.set_num_threads(1)
    threadpool_limits(1)

    from .engine import Engine
    from .serve import create_app

    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    app = create_app(Engine(settings), own_engine=True)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    if ready is not None:
        watcher = threading.Thread(target=_signal_when_started, args=(server, ready), daemon=True)
        watcher.start()
    server.run()


def _signal_when_started(server: Any, ready: threading.Event) -> None:
    while not server.started and not server.should_exit:
        time.sleep(0.05)
    ready.set()


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings.role_set() == {"trainer"}:
        return cmd_train(args)
    print(
        f"reelrank {__version__} serving on http://{settings.host}:{settings.port} "
        f"(store {settings.store_url()}); OpenAPI at /docs",
        flush=True,
    )
    _run_server(settings)
    return 0


def _drive_demo(
    base: str, ingest_key: str, videos: int, users: int, viewers: int, every: float
) -> None:
    """The simulated app, in its own process so it does not share the server's GIL."""
    import signal

    from .sim.traffic import Traffic
    from .sim.world import make_world

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server's Ctrl-C ends the demo
    parent = os.getppid()
    world = make_world(n_videos=videos, n_viewers=users)
    traffic = Traffic(base, ingest_key, world, viewers=viewers)
    traffic.load()
    print(f"{viewers} simulated viewers are watching; Ctrl-C stops", flush=True)
    traffic.start()
    started = time.monotonic()
    last = (0, 0, started)
    # A server killed by SIGTERM dies without terminating this process: leave with it.
    while os.getppid() == parent:
        time.sleep(every)
        line, last = traffic.report(time.monotonic() - started, last)
        print(line, flush=True)
    traffic.stop.set()


def cmd_demo(args: argparse.Namespace) -> int:
    import multiprocessing

    data_dir = Path(args.data_dir)
    if data_dir.exists() and not args.keep:
        shutil.rmtree(data_dir)
    ingest_key, admin_key = f"demo-{secrets.token_hex(8)}", f"admin-{secrets.token_hex(8)}"
    settings = _settings(
        args, api_keys=f"{ingest_key}=ingest,feed;{admin_key}=admin", snapshot_interval_s=30.0
    )
    base = f"http://{settings.host}:{settings.port}"
    ready = threading.Event()
    driver = multiprocessing.get_context("spawn").Process(
        target=_drive_demo,
        args=(base, ingest_key, args.videos, args.users, args.viewers, args.every),
        daemon=True,
        name="demo-viewers",
    )

    def start_driver() -> None:
        ready.wait()
        print(f"reelrank demo at {base}  (API docs {base}/docs, metrics {base}/metrics)")
        print(f"admin key for /v1/users/<id>: {admin_key}")
        # The key travels in the fragment, which browsers never send to the server.
        print(f"demo feed: {base}/demo#key={ingest_key}  (ingest key {ingest_key})")
        print(f"dashboard: {base}/dashboard#key={admin_key}  (admin key {admin_key})", flush=True)
        driver.start()

    threading.Thread(target=start_driver, daemon=True, name="demo-start").start()
    print(f"starting the server on {base} with the embedded store in {data_dir}/ ...", flush=True)
    try:
        with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises it after shutting down
            _run_server(settings, ready)
    finally:
        if driver.is_alive():
            driver.terminate()
            driver.join(timeout=5)
    print(f"demo stopped; its store is in {data_dir}/ (run with --keep to continue from it)")
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    from .config import settings_table

    print(settings_table())
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .train.process import run_trainer_process

    settings = _settings(args)
    print(f"training from {settings.store_url()}, publishing to {settings.params_channel_url()}")
    run_trainer_process(settings)  # exits the process once stopped and checkpointed


def cmd_experiments(args: argparse.Namespace) -> int:
    import json

    from .experiments.report import Tracker, book_from_store, format_report
    from .storage import open_store

    settings = load_settings(args.config)
    store = open_store(settings.store_url(), settings.sqlite_synchronous)
    try:
        book = book_from_store(settings, store)
        if args.action == "list":
            for exp in book.experiments.values():
                d = exp.describe()
                arms = ", ".join(a["name"] for a in d["arms"])
                print(f"{d['id']}\t{d['status']}\tlayer {d['layer']}\t{d['traffic']:.0%}\t{arms}")
            return 0
        if not args.experiment:
            print("reelrank: experiments report needs an experiment id", file=sys.stderr)
            return 2
        report = Tracker(store).report(book.get(args.experiment), args.level)
    finally:
        store.close()
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reelrank",
        description="A real-time For You feed engine for short-video apps.",
        epilog="Settings come from REELRANK_* environment variables over --config over "
        "defaults; see the README for every key.",
    )
    parser.add_argument("--version", action="version", version=f"reelrank {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP API on the embedded store")
    serve.add_argument("--host", help="bind address (setting host, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (setting port, default 8000)")
    serve.add_argument("--data-dir", help="data directory (setting data_dir, default ./data)")
    serve.add_argument("--store", help="store URL: sqlite:///path.db or memory://")
    serve.add_argument("--config", help="TOML config file of settings")
    serve.add_argument(
        "--role",
        help="roles this process plays, comma-separated (setting roles, default all): api, "
        "worker, lifecycle, trainer; over sqlite:// and memory:// api, worker and lifecycle "
        "run together, and --role trainer runs the trainer alone (as `reelrank train`)",
    )
    serve.set_defaults(func=cmd_serve)

    train = sub.add_parser(
        "train", help="run the online trainer alone (for `serve` with trainer = off)"
    )
    train.add_argument("--data-dir", help="data directory (setting data_dir, default ./data)")
    train.add_argument("--store", help="store URL: sqlite:///path.db")
    train.add_argument("--config", help="TOML config file of settings")
    train.set_defaults(func=cmd_train)

    settings = sub.add_parser("settings", help="print every setting with its default")
    settings.set_defaults(func=cmd_settings)

    demo = sub.add_parser(
        "demo", help="run the server with a generated catalog and simulated viewers"
    )
    demo.add_argument("--host", help="bind address (default 127.0.0.1)")
    demo.add_argument("--port", type=int, help="port (default 8000)")
    demo.add_argument("--data-dir", default=".reelrank-demo", help="where the demo keeps its store")
    demo.add_argument("--config", help="TOML config file of settings")
    demo.add_argument("--videos", type=int, default=5000, help="videos in the demo catalog")
    demo.add_argument("--users", type=int, default=500, help="simulated users")
    demo.add_argument("--viewers", type=int, default=4, help="concurrent viewer threads")
    demo.add_argument("--every", type=float, default=2.0, help="seconds between progress lines")
    demo.add_argument("--keep", action="store_true", help="keep the previous demo's data")
    demo.set_defaults(func=cmd_demo, store=None)

    ev = sub.add_parser(
        "evaluate",
        help="replay a timestamped interaction log through reelrank and baselines",
        description="Replays the log in time order, test then train: before each positive "
        "interaction every system ranks the catalog for that user and the rank of the "
        "chosen item is scored (HR, NDCG, MRR at 10 and 20); then every system learns it. "
        "For the engine rows the report also follows each tested positive through recall, "
        "the filters, the ranker and the policy layer (the funnel).",
    )
    ev.add_argument("--ratings", required=True, help="the log: MovieLens ratings.csv or CSV")
    ev.add_argument("--movies", help="MovieLens movies.csv: titles and genres for captions")
    ev.add_argument(
        "--format",
        choices=["movielens", "csv"],
        default="movielens",
        help="movielens (userId,movieId,rating,timestamp) or csv "
        "(user,item,timestamp[,rating][,watch_ratio][,event])",
    )
    ev.add_argument("--output", help="write the JSON report here")
    ev.add_argument(
        "--systems",
        default="reelrank,reelrank_heuristic,popular,recent_popular,item_knn",
        help="comma-separated systems to replay (default: reelrank,reelrank_heuristic,popular,"
        "recent_popular,item_knn). reelrank is the engine as `serve` runs it, online "
        "training included; reelrank_heuristic the heuristic ranker only; also "
        "reelrank_learned (the learned ranker serving as soon as it is trained, without the "
        "champion test) and reelrank_daily (parameters published once per simulated day)",
    )
    ev.add_argument("--limit", type=int, help="replay only the first N interactions")
    ev.add_argument("--config", help="TOML config file of reelrank settings")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(func=cmd_evaluate)

    ex = sub.add_parser(
        "experiments",
        help="list A/B experiments or report one's per-arm results",
        description="Reads the store the server uses (settings from --config and REELRANK_*): "
        "`list` shows every experiment; `report ID` folds the impression and event logs into "
        "per-arm watch time per user, session length, finish and like rates, with confidence "
        "intervals against the control and the sample-ratio-mismatch check.",
    )
    ex.add_argument("action", choices=["list", "report"])
    ex.add_argument("experiment", nargs="?", help="the experiment id (for report)")
    ex.add_argument("--level", type=float, default=0.95, help="confidence level (0.95)")
    ex.add_argument("--json", action="store_true", help="print the report as JSON")
    ex.add_argument("--config", help="TOML config file of reelrank settings")
    ex.set_defaults(func=cmd_experiments)
    add_simulate_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ReelrankError as exc:
        print(f"reelrank: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
