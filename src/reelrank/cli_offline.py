"""The offline commands: `reelrank evaluate` (replay a log) and `reelrank simulate`
(closed-loop simulated viewers), thin over `evaluate/` and `sim/`."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def _systems(arg: str, known: tuple[str, ...]) -> tuple[str, ...] | None:
    """The comma-separated `--systems`, or None (with a message) when one is unknown."""
    systems = tuple(s.strip() for s in arg.split(",") if s.strip())
    unknown = sorted(set(systems) - set(known))
    if unknown:
        print(f"reelrank: --systems: unknown {unknown}; known: {list(known)}", file=sys.stderr)
        return None
    return systems


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate.run import SYSTEMS, evaluate, table

    systems = _systems(args.systems, SYSTEMS)
    if systems is None:
        return 2
    report = evaluate(
        args.ratings,
        movies=args.movies,
        fmt=args.format,
        output=args.output,
        systems=systems,
        limit=args.limit,
        config=args.config,
        progress=not args.quiet,
    )
    d, p = report["dataset"], report["protocol"]
    print(
        f"{d['name']}: {d['replayed']} interactions, {d['users']} users, {d['items']} items; "
        f"{p['tests']} tests (positive: {p['positive']})"
    )
    if d["rating_as_watch_ratio"]:
        print("note: the rating / 5 stands in for the watch ratio reelrank learns from")
    print(table(report))
    if args.output:
        print(f"report written to {args.output}")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    import torch

    from .sim.run import SYSTEMS, simulate, table

    systems = _systems(args.systems, SYSTEMS)
    if systems is None:
        return 2
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the trainer's small batches: more threads only contend
    try:
        report = simulate(
            catalog=args.catalog,
            videos=args.videos,
            viewers=args.viewers,
            sessions=args.sessions,
            page=args.page,
            arrival_share=args.arrivals,
            round_hours=args.round_hours,
            systems=systems,
            seed=args.seed,
            discovery_impressions=args.discovery,
            config=args.config,
            output=args.output,
            progress=not args.quiet,
        )
    finally:
        torch.set_num_threads(threads)
    c = report["catalog"]
    print(
        f"{c['source']} catalog: {c['videos']} videos ({c['arrivals']} arriving during the run), "
        f"{c['tags']} tags, {c['creators']} creators; {args.viewers} viewers x "
        f"{args.sessions} sessions; engine trainer {report['engine_settings']['trainer']}"
    )
    print(table(report))
    if args.output:
        print(f"report written to {args.output}")
    return 0


def add_simulate_parser(sub: Any) -> None:
    sim = sub.add_parser(
        "simulate",
        help="closed-loop simulated viewers against reelrank and baselines",
        description="Simulated viewers with planted tastes, satiation, length- and "
        "match-dependent watch time, and sessions that end sooner on a poor feed watch "
        "each system's feed in turn (same viewers, same arrivals, same seed); reports watch "
        "time and videos per session, finish and like rates, diversity, creator exposure "
        "and new-video discovery.",
    )
    sim.add_argument(
        "--catalog",
        default="generated",
        help="`generated` or `kuairand:PATH` (KuaiRand-Pure video_features_basic_pure.csv "
        "or its folder)",
    )
    sim.add_argument("--videos", type=int, default=3000, help="videos of a generated catalog")
    sim.add_argument("--viewers", type=int, default=300, help="simulated viewers")
    sim.add_argument("--sessions", type=int, default=5, help="sessions per viewer")
    sim.add_argument("--page", type=int, default=8, help="videos per feed request")
    sim.add_argument(
        "--arrivals", type=float, default=0.1, help="share of the catalog uploaded during the run"
    )
    sim.add_argument(
        "--round-hours", type=float, default=8.0, help="simulated hours between a viewer's sessions"
    )
    sim.add_argument("--seed", type=int, default=7)
    sim.add_argument(
        "--systems",
        default="reelrank,reelrank_heuristic,popular,recent_popular,item_knn,random",
        help="comma-separated systems: reelrank (the engine with its online trainer), "
        "reelrank_heuristic (the heuristic ranker only), popular, recent_popular, item_knn, "
        "random, and oracle (which knows the planted tastes)",
    )
    sim.add_argument(
        "--discovery", type=int, default=10, help="impressions a new video needs to count found"
    )
    sim.add_argument("--config", help="TOML config file of reelrank settings")
    sim.add_argument("--output", help="write the JSON report here")
    sim.add_argument("--quiet", action="store_true", help="no progress bar")
    sim.set_defaults(func=cmd_simulate)
