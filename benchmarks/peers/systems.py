"""The systems run in the benchmark's own interpreter: reelrank, popular, implicit's ALS.

Each is a `fit_rank(split, config, k)` that learns from `split.train` only and returns
(top-k lists for `split.users`, notes). The RecBole models run in their own interpreter
(recbole_peers.py), as they need RecBole's environment.
"""

from __future__ import annotations

import csv
import importlib.util
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse
from threadpoolctl import threadpool_limits

from .protocol import Split, clean, score_rankings, top_k

Rankings = dict[str, list[str]]
FitRank = Callable[[Split, dict[str, Any], int], tuple[Rankings, dict[str, Any]]]


@dataclass
class Peer:
    """A system under benchmark: its tuning budget (documented defaults first)."""

    name: str
    configs: list[dict[str, Any]]
    fit_rank: FitRank
    packages: tuple[str, ...] = ()  # what fit_rank imports: checked before a run, versioned

    def missing(self) -> list[str]:
        return [p for p in self.packages if importlib.util.find_spec(p) is None]

    def versions(self) -> dict[str, str]:
        out = {}
        for name in self.packages:
            try:
                out[name] = version(name)
            except PackageNotFoundError:
                out[name] = "not installed"
        return out


# -- popular -------------------------------------------------------------------------------


def popular_fit_rank(split: Split, config: dict[str, Any], k: int) -> tuple[Rankings, dict]:
    """Positives per item in train; ties to the item seen first."""
    index = split.item_index
    counts = np.zeros(len(split.catalog))
    for r in split.train:
        if r.positive or not config.get("positives_only", True):
            counts[index[r.item]] += 1.0
    scores = np.broadcast_to(counts, (len(split.users), len(counts)))
    return top_k(scores, split, k), {}


# -- implicit ALS --------------------------------------------------------------------------


def user_item_matrix(split: Split, weight: str) -> sparse.csr_matrix:
    """Users (in `split.users` order first, then the rest) x catalog, one cell per pair:
    1 for any interaction (`binary`), or the rating / 5 (`rating`)."""
    users = {u: i for i, u in enumerate(split.users)}
    for r in split.train:
        users.setdefault(r.user, len(users))
    index = split.item_index
    cells: dict[tuple[int, int], float] = {}
    for r in split.train:
        cells[(users[r.user], index[r.item])] = 1.0 if weight == "binary" else r.rating / 5.0
    rows, cols = zip(*cells, strict=True) if cells else ((), ())
    return sparse.csr_matrix(
        (np.fromiter(cells.values(), np.float32), (rows, cols)),
        shape=(len(users), len(split.catalog)),
    )


def als_fit_rank(split: Split, config: dict[str, Any], k: int) -> tuple[Rankings, dict]:
    """implicit's AlternatingLeastSquares on the train user x item matrix (CPU)."""
    from implicit.cpu.als import AlternatingLeastSquares

    params = {key: v for key, v in config.items() if key != "weight"}
    model = AlternatingLeastSquares(random_state=0, num_threads=1, **params)
    x = user_item_matrix(split, config.get("weight", "binary"))
    with threadpool_limits(1, "blas"):  # implicit's advice: its own threads, not BLAS's
        model.fit(x, show_progress=False)
    users = np.asarray(model.user_factors)[: len(split.users)]
    scores = users @ np.asarray(model.item_factors).T
    return top_k(scores, split, k), {}


ALS_CONFIGS: list[dict[str, Any]] = [
    # implicit 0.7's documented defaults, every train interaction a 1.
    {"factors": 100, "regularization": 0.01, "alpha": 1.0, "iterations": 15, "weight": "binary"},
    {"factors": 64, "regularization": 0.1, "alpha": 10.0, "iterations": 15, "weight": "binary"},
    {"factors": 64, "regularization": 0.1, "alpha": 10.0, "iterations": 15, "weight": "rating"},
]


# -- reelrank ------------------------------------------------------------------------------


def reelrank_fit_rank(
    split: Split, config: dict[str, Any], k: int, movies: Path
) -> tuple[Rankings, dict]:
    """The real engine in process, as `reelrank evaluate` runs it: the train interactions
    are replayed in time order, test then train (reelrank.evaluate.replay: the title is
    the caption, the genres the hashtags, the rating stands in for the watch ratio; with
    `train`, the default, the online trainer learns from the replay's pages on the event
    clock). Each evaluated user's feed of k, not logged as served, is asked for at the
    user's `Split.ask_ts`: once the replay has passed every train interaction up to that
    time, and before any later one (under a per-user split, when the user's test part
    begins). The notes also score the feeds asked for at the end of the replay, the
    per-user split's other reading."""
    from reelrank.clock import EventClock
    from reelrank.config import load_settings
    from reelrank.engine import Engine
    from reelrank.evaluate.clocked import ClockedTrainer
    from reelrank.evaluate.data import Dataset, Interaction
    from reelrank.evaluate.replay import ReelrankSystem, replay
    from reelrank.evaluate.run import replay_settings
    from reelrank.storage import open_store

    train = [Interaction(r.user, r.item, r.ts, rating=r.rating) for r in split.train]
    dataset = Dataset("movielens", train, signal="rating")
    with movies.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            dataset.titles[row["movieId"]] = row["title"]
            genres = row["genres"].split("|")
            dataset.genres[row["movieId"]] = [g for g in genres if g != "(no genres listed)"]
    with tempfile.TemporaryDirectory(prefix="reelrank-peers-") as tmp:
        settings = replay_settings(
            load_settings(
                env={}, data_dir=tmp, **{**HARNESS_SETTINGS, **config.get("settings", {})}
            )
        )
        # Event-clocked (no background job; request ids numbered): a run replays exactly.
        clock = EventClock()
        engine = Engine(settings, clock=clock).open()
        notes: dict[str, Any] = {}
        try:
            trainer = (
                ClockedTrainer(engine, open_store("memory://"))
                if config.get("train", True)
                else None
            )
            system = ReelrankSystem(engine, dataset, "reelrank", trainer)
            rankings: Rankings = {}
            rankers: dict[str, int] = {}
            feed_s = 0.0

            def ask(user: str, now: float) -> list[str]:
                nonlocal feed_s
                _wait_for_content(engine)
                clock.advance(now)
                t0 = time.perf_counter()
                feed = engine.feed(user, n=k, now=now, record=False, explain=False)
                feed_s += time.perf_counter() - t0
                rankers[feed.ranker] = rankers.get(feed.ranker, 0) + 1
                return [it.video_id for it in feed.items]

            # Users in order of their ask time; a user is asked once the next interaction
            # to replay is later than their ask time.
            due = sorted(split.users, key=lambda u: split.ask_ts[u])
            at = 0
            order = dataset.interactions

            def on_step(n: int) -> None:
                nonlocal at
                after = order[n].ts if n < len(order) else math.inf
                while at < len(due) and split.ask_ts[due[at]] < after:
                    user = due[at]
                    rankings[user] = ask(user, split.ask_ts[user])
                    at += 1

            started = time.perf_counter()
            with threadpool_limits(1):
                replay(dataset, [system], progress=on_step)
            notes["replay_s"] = round(time.perf_counter() - started, 1)
            if trainer is not None:
                notes["champion"] = trainer.status()["champion"]
            notes["feed_s"] = round(feed_s, 2)
            notes["ranker_served"] = dict(rankers)  # before the end-of-replay feeds below
            if any(split.ask_ts[u] != split.cut_ts for u in split.users):
                end = {u: ask(u, split.cut_ts) for u in split.users}
                known = set(split.catalog)
                notes["feeds_at_end_of_replay"] = score_rankings(
                    {u: clean(end[u], u, split, k, known) for u in split.users}, split
                )
            notes["content_embedder"] = engine.content.embedder.name
            table = engine.state.table
            notes["videos_not_approved"] = int((~table.approved[: table.size]).sum())
        finally:
            engine.close()
    return rankings, notes


# The same for every configuration: an in-memory store; the engine's own trainer off (the
# replay steps one on the event clock); no recall time budget (a busy benchmark machine
# must not drop channels from pages); the hashed content embedder, as `reelrank evaluate`
# uses (MiniLM would embed every title on each of the runs below); and the embedding
# re-upload check off: the replay gives every film the same duration, which voids that
# check's duration guard, and it would take remakes and sequels ("Hamlet (1990)",
# "Hamlet (1996)") for re-uploads.
HARNESS_SETTINGS: dict[str, Any] = {
    "store": "memory://",
    "trainer": "off",
    "recall_budget_ms": 0.0,
    "content_embedder": "hashed",
    "duplicate_cosine": 0.0,
}


def _wait_for_content(engine: Any, timeout_s: float = 600.0) -> None:
    """A slow embedder (MiniLM) fills the content index in the background: wait for it,
    so the feed at the cut time sees every caption (a live server would have)."""
    deadline = time.monotonic() + timeout_s
    while engine.content.waiting > 0 and time.monotonic() < deadline:
        time.sleep(0.2)


REELRANK_CONFIGS: list[dict[str, Any]] = [
    # The engine's defaults: online training, the learned ranker serving while it beats
    # the heuristic.
    {"settings": {}},
    # The learned ranker serving as soon as it is trained (no champion test).
    {"settings": {"learned_ranker": "always"}},
    # The heuristic ranker only.
    {"settings": {}, "train": False},
]


# -- EASE ----------------------------------------------------------------------------------


def ease_fit_rank(split: Split, config: dict[str, Any], k: int) -> tuple[Rankings, dict]:
    """EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019): item
    weights B = I - P / diag(P) with P = (X'X + lambda I)^-1 and a zero diagonal, from the
    binary user x item matrix of train; a user's scores are their row of X times B."""
    x = user_item_matrix(split, "binary")
    gram = (x.T @ x).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += float(config["lambda"])
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)[None, :]
    b[np.diag_indices_from(b)] = 0.0
    users = x[: len(split.users)]
    scores = np.asarray(users @ b)
    return top_k(scores, split, k), {}


EASE_CONFIGS: list[dict[str, Any]] = [
    {"lambda": 500.0},  # the paper's value for MovieLens-20M
    {"lambda": 100.0},
    {"lambda": 2000.0},
]
