"""`reelrank evaluate`: load a log, replay it through reelrank and the baselines, print
a table and write the JSON report."""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..clock import EventClock
from ..config import Settings, load_settings
from ..engine import Engine
from ..storage import open_store
from .clocked import ClockedTrainer
from .data import Dataset, load_csv, load_movielens
from .funnel import funnel_table
from .replay import (
    ItemKNNSystem,
    PopularSystem,
    RecentPopularSystem,
    ReelrankSystem,
    System,
    replay,
)

SYSTEMS = (
    "reelrank",
    "reelrank_heuristic",
    "reelrank_learned",
    "reelrank_daily",
    "popular",
    "recent_popular",
    "item_knn",
)
DEFAULT_SYSTEMS = ("reelrank", "reelrank_heuristic", "popular", "recent_popular", "item_knn")
ENGINE_SYSTEMS = {
    "reelrank": "the engine as `reelrank serve` runs it: online training, parameters "
    "published on the event clock, the learned ranker serving while it beats the heuristic",
    "reelrank_heuristic": "the engine with the heuristic ranker only (no training)",
    "reelrank_learned": "online training as `reelrank`, the learned ranker serving as soon "
    "as it is trained (no champion/challenger)",
    "reelrank_daily": "the same model and data, parameters published once per simulated day",
}


def replay_settings(settings: Settings) -> Settings:
    """An engine's settings for a replay: its pages are shown to nobody, so no video can
    find a first audience there (a pool would never fill or be judged, and would offer
    every film ever added); the pool channel is off and the exploration slots go to the
    explore and fresh channels."""
    return dataclasses.replace(settings, recall_quotas={**settings.recall_quotas, "pool": 0})


def load(ratings: str, movies: str | None, fmt: str) -> Dataset:
    if fmt == "movielens":
        return load_movielens(ratings, movies)
    return load_csv(ratings)


def table(report: dict[str, Any]) -> str:
    """The systems' figures as an aligned text table."""
    rows = report["systems"]
    columns: list[str] = []
    for row in rows.values():  # scalar figures, in first-seen order; seconds last
        columns += [c for c, v in row.items() if c not in columns and not isinstance(v, dict)]
    columns = [c for c in columns if c != "seconds"] + ["seconds"]
    width = max(len(n) for n in rows) + 2
    widths = [max(13, len(c) + 2) for c in columns]

    def line(first: str, cells: list[str]) -> str:
        return first.ljust(width) + "".join(v.rjust(w) for v, w in zip(cells, widths, strict=True))

    lines = [line("system", columns)]
    for name, row in rows.items():
        lines.append(line(name, ["-" if row.get(c) is None else str(row[c]) for c in columns]))
    for name, row in rows.items():
        if isinstance(row.get("funnel"), dict):
            lines += ["", funnel_table(name, row["funnel"])]
    return "\n".join(lines)


def evaluate(
    ratings: str,
    movies: str | None = None,
    fmt: str = "movielens",
    output: str | None = None,
    systems: tuple[str, ...] = DEFAULT_SYSTEMS,
    limit: int | None = None,
    config: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    import torch
    from threadpoolctl import threadpool_limits

    dataset = load(ratings, movies, fmt)
    # One request or batch at a time: intra-op threads only contend (on two busy cores a
    # small index_add_ took 8x longer with two torch threads than with one, and the
    # policy's similarity product far longer with two BLAS threads).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            return _evaluate(dataset, output, systems, limit, config, progress)
    finally:
        torch.set_num_threads(threads)


def _evaluate(
    dataset: Dataset,
    output: str | None,
    systems: tuple[str, ...],
    limit: int | None,
    config: str | None,
    progress: bool,
) -> dict[str, Any]:
    total = min(limit, len(dataset.interactions)) if limit else len(dataset.interactions)
    with tempfile.TemporaryDirectory(prefix="reelrank-eval-") as tmp:
        # Throwaway in-memory engines with every channel, hashed caption embeddings and no
        # recall time budget (results must not depend on load), on the event clock: no
        # background job or trainer of their own, the replay steps their jobs and trainers.
        settings = load_settings(
            env={},
            config_file=config,
            data_dir=tmp,
            store="memory://",
            trainer="off",
            content_embedder="hashed",
            recall_budget_ms=0.0,
        )
        settings = replay_settings(settings)
        engines: list[Engine] = []

        def engine(**changes: Any) -> Engine:  # one per engine-backed system, unshared
            engines.append(
                Engine(dataclasses.replace(settings, **changes), clock=EventClock()).open()
            )
            return engines[-1]

        def trainer(e: Engine, daily: bool = False) -> ClockedTrainer:
            return ClockedTrainer(e, open_store("memory://"), daily=daily)

        try:
            chosen: list[System] = []
            for name in systems:
                if name == "reelrank":
                    e = engine()
                    chosen.append(ReelrankSystem(e, dataset, name, trainer(e)))
                elif name == "reelrank_heuristic":
                    chosen.append(ReelrankSystem(engine(), dataset, name))
                elif name == "reelrank_learned":
                    e = engine(learned_ranker="always")
                    chosen.append(ReelrankSystem(e, dataset, name, trainer(e)))
                elif name == "reelrank_daily":
                    e = engine()
                    chosen.append(ReelrankSystem(e, dataset, name, trainer(e, daily=True)))
                elif name == "popular":
                    chosen.append(PopularSystem())
                elif name == "recent_popular":
                    chosen.append(RecentPopularSystem())
                elif name == "item_knn":
                    chosen.append(ItemKNNSystem())
            bar: Any = None
            if progress:
                from tqdm import tqdm

                bar = tqdm(total=total, unit="interaction", file=sys.stderr, mininterval=1.0)

            def tick(n: int) -> None:
                if bar is not None and n % 500 == 0:
                    bar.update(500)

            report = replay(dataset, chosen, limit=limit, progress=tick)
            if bar is not None:
                bar.close()
            for system in chosen:
                if isinstance(system, ReelrankSystem):
                    report["systems"][system.name].update(system.figures())
        finally:
            for e in engines:
                e.close()
    report["engine_settings"] = {
        **{k: v for k, v in ENGINE_SYSTEMS.items() if k in systems},
        "content_embedder": "hashed",
        "recall_budget_ms": 0.0,
        "pool_quota": 0,
    }
    if output:
        path = Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
    return report
