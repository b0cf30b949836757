"""`reelrank evaluate`: load a log, replay it through reelrank and the baselines, print
a table and write the JSON report."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..config import load_settings
from ..engine import Engine
from .data import Dataset, load_csv, load_movielens
from .replay import (
    ItemKNNSystem,
    PopularSystem,
    RecentPopularSystem,
    ReelrankSystem,
    System,
    replay,
)

SYSTEMS = ("reelrank", "popular", "recent_popular", "item_knn")


def load(ratings: str, movies: str | None, fmt: str) -> Dataset:
    if fmt == "movielens":
        return load_movielens(ratings, movies)
    return load_csv(ratings)


def table(report: dict[str, Any]) -> str:
    """The systems' figures as an aligned text table."""
    rows = report["systems"]
    columns = [c for c in next(iter(rows.values())) if c != "seconds"] + ["seconds"]
    width = max(len(n) for n in rows) + 2
    lines = ["system".ljust(width) + "".join(c.rjust(13) for c in columns)]
    for name, row in rows.items():
        lines.append(name.ljust(width) + "".join(f"{row[c]:>13}" for c in columns))
    return "\n".join(lines)


def evaluate(
    ratings: str,
    movies: str | None = None,
    fmt: str = "movielens",
    output: str | None = None,
    systems: tuple[str, ...] = SYSTEMS,
    limit: int | None = None,
    config: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    dataset = load(ratings, movies, fmt)
    total = min(limit, len(dataset.interactions)) if limit else len(dataset.interactions)
    with tempfile.TemporaryDirectory(prefix="reelrank-eval-") as tmp:
        # A throwaway in-memory engine: the heuristic ranker and every channel, hashed
        # caption embeddings, no recall time budget (results must not depend on load).
        settings = load_settings(
            env={},
            config_file=config,
            data_dir=tmp,
            store="memory://",
            trainer="off",
            content_embedder="hashed",
            recall_budget_ms=0.0,
        )
        engine = Engine(settings).open()
        try:
            chosen: list[System] = []
            for name in systems:
                if name == "reelrank":
                    chosen.append(ReelrankSystem(engine, dataset))
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
        finally:
            engine.close()
    report["engine_settings"] = {"ranker": "heuristic (trainer off)", "content_embedder": "hashed"}
    if output:
        path = Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
    return report
