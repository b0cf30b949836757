"""`reelrank simulate`: one catalog, one population of simulated viewers, every system
run closed-loop in turn; a table and a JSON report."""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from ..clock import EventClock
from ..config import Settings, load_settings
from ..engine import Engine
from ..errors import ConfigError, InvalidInput
from ..evaluate.clocked import ClockedTrainer
from ..evaluate.replay import ItemKNNSystem, PopularSystem, RecentPopularSystem
from ..schema import MAX_WATCH_MS
from .catalog import SimCatalog, open_catalog
from .closed_loop import FeedSystem, ReelrankFeed, run_closed_loop
from .reference_feeds import OracleFeed, RandomFeed, ReplayFeed
from .viewers import Behaviour, SimViewer, draw_viewers

# Every run starts at the same moment (2023-11-14 22:13 UTC), on the simulation's own
# clock: UTC days (fatigue caps) and decays fall the same way on any machine and day.
START = 1_700_000_000.0

SYSTEMS = (
    "reelrank",
    "reelrank_heuristic",
    "popular",
    "recent_popular",
    "item_knn",
    "random",
    "oracle",
)
DEFAULT_SYSTEMS = ("reelrank", "reelrank_heuristic", "popular", "recent_popular", "item_knn",
                   "random")  # fmt: skip
ENGINE_SYSTEMS = ("reelrank", "reelrank_heuristic")  # the engine, with and without training

# The engine under simulation, unless the config file says otherwise: in memory, hashed
# caption embeddings (no model download), no recall time budget (pages must not depend
# on the machine's load), no human-review hold for long videos (nobody reviews), and
# events and uploads accepted from the simulated clock, which runs ahead of the wall.
ENGINE_DEFAULTS: dict[str, Any] = {
    "content_embedder": "hashed",
    "recall_budget_ms": 0.0,
    "review_max_duration_ms": MAX_WATCH_MS,
    "max_future_skew_s": 3650 * 86400.0,
}
TABLE_COLUMNS = (
    ("watch_s_mean", "watch s/session"),
    ("watch_s_ci95", "+-95%"),
    ("watch_s_median", "median"),
    ("videos_mean", "videos/session"),
    ("duration_s_mean", "video s"),
    ("finish_rate", "finish"),
    ("like_rate", "like"),
    ("skip_rate", "skip"),
    ("taste_match", "match"),
    ("distinct_tags_per_10", "tags/10"),
    ("creator_gini", "creator gini"),
    ("creator_coverage", "creators shown"),
    ("new_shown", "new shown"),
    ("new_reached", "new >=N"),
    ("new_median_impressions_to_first", "imps to 1st"),
    ("seconds", "seconds"),
)


def engine_settings(data_dir: str, config: str | None = None, **overrides: Any) -> Settings:
    """Settings of the engine under simulation: the config file's keys over
    ENGINE_DEFAULTS; a memory store in `data_dir`; `overrides` over all."""
    from_file: set[str] = set()
    if config:
        try:
            from_file = set(tomllib.loads(Path(config).read_text()))
        except FileNotFoundError:
            raise ConfigError(f"config file {config} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config}: {exc}") from None
    chosen = {k: v for k, v in ENGINE_DEFAULTS.items() if k not in from_file}
    return load_settings(
        env={}, config_file=config, data_dir=data_dir, store="memory://", **chosen, **overrides
    )


def make_system(name: str, b: Behaviour, seed: int) -> FeedSystem:
    """A reference FeedSystem by name."""
    if name == "popular":
        return ReplayFeed(PopularSystem())
    if name == "recent_popular":  # the engine's default hotness half-life
        return ReplayFeed(RecentPopularSystem(half_life_s=86400.0))
    if name == "item_knn":
        return ReplayFeed(ItemKNNSystem(), fallback=PopularSystem())
    if name == "random":
        return RandomFeed(seed)
    if name == "oracle":
        return OracleFeed(b)
    raise InvalidInput("systems", f"unknown system {name!r}; known: {list(SYSTEMS)}")


def simulate(
    catalog: str = "generated",
    videos: int = 3000,
    viewers: int = 300,
    sessions: int = 5,
    page: int = 8,
    arrival_share: float = 0.1,
    round_hours: float = 8.0,
    systems: tuple[str, ...] = DEFAULT_SYSTEMS,
    seed: int = 7,
    discovery_impressions: int = 10,
    config: str | None = None,
    output: str | None = None,
    progress: bool = True,
    behaviour: Behaviour | None = None,
    engine_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run every system closed-loop against the same viewers; the report."""
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown:
        raise InvalidInput("systems", f"unknown {unknown}; known: {list(SYSTEMS)}")
    for name, value in (("viewers", viewers), ("sessions", sessions), ("page", page)):
        if value < 1:
            raise InvalidInput(name, f"must be at least 1, got {value}")
    if round_hours <= 0:
        raise InvalidInput("round_hours", f"must be positive, got {round_hours}")
    b = behaviour or Behaviour()
    cat = open_catalog(catalog, videos, arrival_share, seed)
    population = draw_viewers(viewers, cat.tag_counts(), np.random.default_rng([seed, 3]), b)
    report: dict[str, Any] = {
        "catalog": {**cat.describe(), "spec": catalog},
        "viewers": viewers,
        "sessions_per_viewer": sessions,
        "round_hours": round_hours,
        "page": page,
        "seed": seed,
        "discovery_impressions": discovery_impressions,
        "behaviour": dict(vars(b)),
        "systems": {},
    }
    # Pages are built from small matrix products: BLAS threads only contend (a 260 x 128
    # product takes 8 ms on two busy threads, 0.3 ms on one), as in `serve`.
    with threadpool_limits(1), tempfile.TemporaryDirectory(prefix="reelrank-sim-") as tmp:
        settings = engine_settings(tmp, config, **(engine_overrides or {}))
        training = settings.trainer_mode() != "off"
        report["engine_settings"] = {
            "trainer": "stepped on the simulated clock" if training else "off",
            "content_embedder": settings.content_embedder,
            "recall_budget_ms": settings.recall_budget_ms,
            "model_min_examples": settings.model_min_examples,
            "pool_sizes": settings.pool_sizes,
            "score_weights": settings.score_weights,
            "fusion_weights": settings.fusion_weights,
            "config": config,
        }
        start = START
        for name in systems:
            if name not in ENGINE_SYSTEMS:
                system = make_system(name, b, seed)
                report["systems"][name] = _run(
                    system, cat, population, sessions, b, start, page, seed, round_hours,
                    discovery_impressions, progress,
                )  # fmt: skip
                continue
            # Event-clocked: no background job or trainer of the engine's own; the
            # simulation steps them on its clock, so a seed gives the same run anywhere.
            engine = Engine(
                dataclasses.replace(settings, trainer="off"), clock=EventClock(start)
            ).open()
            try:
                trainer = ClockedTrainer(engine) if training and name == "reelrank" else None
                feed = ReelrankFeed(engine, trainer, name)
                row = _run(
                    feed, cat, population, sessions, b, start, page, seed, round_hours,
                    discovery_impressions, progress,
                )  # fmt: skip
                row["pages_by_ranker"] = dict(feed.rankers)
                if trainer is not None:
                    row["trainer"] = trainer.status()
            finally:
                engine.close()
            report["systems"][name] = row
    if output:
        path = Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
    return report


def _run(
    system: FeedSystem,
    cat: SimCatalog,
    population: list[SimViewer],
    sessions: int,
    b: Behaviour,
    start: float,
    page: int,
    seed: int,
    round_hours: float,
    discovery_impressions: int,
    progress: bool,
) -> dict[str, Any]:
    bar: Any = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=len(population) * sessions, unit="session", desc=system.name, file=sys.stderr,
            mininterval=1.0,
        )  # fmt: skip
    started = time.perf_counter()
    try:
        tally = run_closed_loop(
            system, cat, population, sessions, b, start, page, seed, round_hours,
            discovery_impressions, progress=bar.update if bar is not None else None,
        )  # fmt: skip
    finally:
        if bar is not None:
            bar.close()
    row = tally.report()
    row["seconds"] = round(time.perf_counter() - started, 1)
    return row


def table(report: dict[str, Any]) -> str:
    """The systems' main figures as an aligned text table."""
    n = report["discovery_impressions"]
    heads = [h.replace("N", str(n)) for _, h in TABLE_COLUMNS]
    keys = [k if k != "new_reached" else f"new_reached_{n}" for k, _ in TABLE_COLUMNS]
    rows = report["systems"]
    width = max([len(r) for r in rows] + [6]) + 2
    widths = [max(len(h), 7) + 2 for h in heads]
    lines = [
        "system".ljust(width) + "".join(h.rjust(w) for h, w in zip(heads, widths, strict=True))
    ]
    for name, row in rows.items():
        cells = ["-" if row.get(k) is None else str(row[k]) for k in keys]
        lines.append(
            name.ljust(width) + "".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))
        )
    return "\n".join(lines)
