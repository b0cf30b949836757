"""Replay evaluation (issue 6): metrics against hand-computed values, the no-peeking
rule, the loaders, and `reelrank evaluate` end to end."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

from reelrank.cli import main
from reelrank.clock import EventClock
from reelrank.config import load_settings
from reelrank.engine import Engine
from reelrank.errors import InvalidInput
from reelrank.evaluate import metrics
from reelrank.evaluate.data import Dataset, Interaction, load_csv, load_movielens
from reelrank.evaluate.replay import PopularSystem, ReelrankSystem, replay

# -- metrics ------------------------------------------------------------------------------


def test_rank_metrics_by_hand() -> None:
    assert metrics.hit(0, 10) == 1.0 and metrics.hit(9, 10) == 1.0 and metrics.hit(10, 10) == 0.0
    assert metrics.hit(None, 10) == 0.0
    assert metrics.ndcg(0, 10) == 1.0
    assert metrics.ndcg(1, 10) == pytest.approx(1 / math.log2(3))  # 0.6309
    assert metrics.mrr(0, 10) == 1.0 and metrics.mrr(3, 10) == 0.25
    assert metrics.mrr(12, 10) == 0.0 and metrics.ndcg(12, 10) == 0.0
    assert metrics.rank_of("c", ["a", "b", "c"]) == 2 and metrics.rank_of("z", ["a"]) is None


def test_auc_by_hand_with_ties() -> None:
    # Positives 0.9 and 0.5, negatives 0.5 and 0.1: pairs (0.9>0.5), (0.9>0.1), (0.5=0.5
    # counts a half), (0.5>0.1): 3.5 of 4.
    assert metrics.auc([1, 1, 0, 0], [0.9, 0.5, 0.5, 0.1]) == pytest.approx(0.875)
    assert metrics.auc([1, 1], [0.2, 0.3]) is None


@given(
    st.lists(st.tuples(st.booleans(), st.integers(0, 5)), min_size=2, max_size=40).filter(
        lambda xs: any(y for y, _ in xs) and not all(y for y, _ in xs)
    )
)
def test_auc_equals_the_share_of_correctly_ordered_pairs(xs: list[tuple[bool, int]]) -> None:
    labels = [y for y, _ in xs]
    scores = [float(s) for _, s in xs]
    pos = [s for y, s in xs if y]
    neg = [s for y, s in xs if not y]
    pairs = [(p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg)]
    assert metrics.auc(labels, scores) == pytest.approx(sum(pairs) / len(pairs))


def test_catalog_metrics_by_hand() -> None:
    assert metrics.gini([1, 1, 1, 1]) == pytest.approx(0.0)
    assert metrics.gini([0, 0, 0, 4]) == pytest.approx(0.75)
    assert metrics.gini([1, 2, 3]) == pytest.approx(2 / 9)
    assert metrics.coverage(["a", "b", "a"], 4) == 0.5
    assert metrics.novelty([0.5, 0.25]) == pytest.approx(1.5)


def test_ndcg_at_rank_three() -> None:
    assert metrics.ndcg(3, 10) == pytest.approx(1 / math.log2(5))


# -- the no-peeking rule ------------------------------------------------------------------


class Oracle:
    """Recommends what it learned most recently, newest first: it would score on any
    interaction it was shown before being tested on it."""

    name = "oracle"

    def __init__(self) -> None:
        self.items: list[str] = []
        self.learned: list[str] = []

    def add_item(self, item: str, ts: float) -> None:
        self.items.append(item)

    def recommend(self, user: str, ts: float, k: int) -> list[str]:
        return list(dict.fromkeys(reversed(self.learned)))[:k]

    def learn(self, x: Interaction, positive: bool) -> None:
        assert x.item in self.items, "learned an interaction on an item not yet added"
        self.learned.append(x.item)


def _dataset(pairs: list[tuple[str, str]], rating: float = 5.0) -> Dataset:
    return Dataset(
        "synthetic",
        [Interaction(u, i, 1_000_000.0 + 60 * n, rating) for n, (u, i) in enumerate(pairs)],
        signal="rating",
    )


def test_no_system_sees_an_interaction_before_it_is_tested_on_it() -> None:
    # Every interaction is on an item never seen before: only a leak could score.
    fresh = _dataset([(f"u{n % 3}", f"i{n}") for n in range(30)])
    got = replay(fresh, [Oracle()], ks=(10, 20))
    assert got["protocol"]["tests"] == 30
    assert got["systems"]["oracle"]["hr@20"] == 0.0
    # The same oracle scores exactly where the past allows: u1 takes the item u0 just took.
    echo = _dataset([("u0", "a"), ("u1", "a"), ("u0", "b"), ("u2", "c"), ("u1", "b")])
    got = replay(echo, [Oracle()], ks=(1,))
    # Tests: a (new), a (last learned a: hit), b (new), c (new), b (last learned c: rank 1).
    assert got["systems"]["oracle"]["hr@1"] == pytest.approx(1 / 5)
    assert got["systems"]["oracle"]["mrr@1"] == pytest.approx(1 / 5)


def test_reelrank_cannot_recommend_an_item_before_its_first_interaction(tmp_path: Path) -> None:
    settings = load_settings(
        env={}, data_dir=str(tmp_path), store="memory://", trainer="off",
        content_embedder="hashed", recall_budget_ms=0.0,
    )  # fmt: skip
    engine = Engine(settings, clock=EventClock()).open()
    try:
        data = _dataset([(f"u{n % 4}", f"i{n}") for n in range(40)])
        got = replay(data, [ReelrankSystem(engine, data), PopularSystem()])
        assert got["systems"]["reelrank"]["hr@20"] == 0.0
        assert got["systems"]["popular"]["hr@20"] == 0.0
        assert engine.state.table.size == 40  # every item joined, after its test
        assert engine.state.users["u0"].seen  # and the interactions were learned
    finally:
        engine.close()


def test_replayed_feeds_are_not_logged_as_served(tmp_path: Path) -> None:
    """A replay test must not change what the user is shown later (seen, impressions)."""
    settings = load_settings(env={}, data_dir=str(tmp_path), store="memory://", trainer="off")
    engine = Engine(settings, clock=EventClock()).open()
    try:
        data = _dataset([("u0", f"i{n}") for n in range(12)] + [("u1", "i0")])
        replay(data, [ReelrankSystem(engine, data)])
        engine.flush_impressions()
        assert engine.store.events.last_impression_offset() == 0
        assert len(engine.state.users["u1"].seen) == 1  # only what u1 interacted with
    finally:
        engine.close()


# -- loaders and the command ---------------------------------------------------------------


def _movielens(tmp_path: Path, users: int = 30, items: int = 40, n: int = 600) -> Path:
    rng = np.random.default_rng(0)
    popularity = 1 / np.arange(1, items + 1)
    popularity /= popularity.sum()
    lines = ["userId,movieId,rating,timestamp"]
    for k in range(n):
        lines.append(
            f"{rng.integers(users)},{rng.choice(items, p=popularity)},"
            f"{rng.choice([2.0, 3.5, 4.0, 5.0])},{1_000_000 + k * 100}"
        )
    path = tmp_path / "ratings.csv"
    path.write_text("\n".join(lines) + "\n")
    movies = ["movieId,title,genres"] + [f"{i},Movie {i} (1999),Drama|Comedy" for i in range(items)]
    (tmp_path / "movies.csv").write_text("\n".join(movies) + "\n")
    return path


def test_loaders_sort_by_time_and_name_bad_input(tmp_path: Path) -> None:
    path = _movielens(tmp_path, n=50)
    data = load_movielens(path, tmp_path / "movies.csv")
    assert len(data.interactions) == 50 and data.signal == "rating"
    assert [x.ts for x in data.interactions] == sorted(x.ts for x in data.interactions)
    assert data.genres["3"] == ["Drama", "Comedy"]
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item\nu,i\n")
    with pytest.raises(InvalidInput, match=r"missing column\(s\) \['timestamp'\]"):
        load_csv(bad)
    bad.write_text("user,item,timestamp,watch_ratio\nu,i,5,abc\n")
    with pytest.raises(InvalidInput, match=r"bad.csv:2.*watch_ratio 'abc'"):
        load_csv(bad)
    good = tmp_path / "log.csv"
    good.write_text("user,item,timestamp,event\nu,b,20,like\nu,a,10,skip\n")
    data = load_csv(good)
    assert [x.item for x in data.interactions] == ["a", "b"] and data.signal == "event"


def test_evaluate_command_writes_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _movielens(tmp_path)
    out = tmp_path / "report.json"
    code = main(
        [
            "evaluate",
            "--ratings",
            str(path),
            "--movies",
            str(tmp_path / "movies.csv"),
            "--output",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    report: dict[str, Any] = json.loads(out.read_text())
    assert set(report) >= {"dataset", "protocol", "systems"}
    assert set(report["systems"]) == {
        "reelrank",
        "reelrank_heuristic",
        "popular",
        "recent_popular",
        "item_knn",
    }
    for name in ("reelrank", "reelrank_heuristic"):  # the engine rows carry their funnel
        funnel = report["systems"][name]["funnel"]
        assert funnel["tests"] == report["protocol"]["tests"]
        assert set(funnel["share"]) == {"in_catalog", "recalled", "filtered", "ranked", "served"}
    assert "trainer" in report["systems"]["reelrank"]
    for row in report["systems"].values():
        assert {"hr@10", "ndcg@10", "mrr@10", "hr@20", "ndcg@20", "mrr@20"} <= set(row)
        assert 0.0 <= row["ndcg@10"] <= row["hr@10"] <= row["hr@20"] <= 1.0
    assert report["dataset"]["rating_as_watch_ratio"] is True
    # A skewed catalog: popularity finds the next item far more often than chance would.
    assert report["systems"]["popular"]["hr@10"] > 0.3
    printed = capsys.readouterr().out
    assert "rating / 5 stands in for the watch ratio" in printed and "item_knn" in printed
    assert "reelrank: funnel of" in printed and "the policy layer cost" in printed
    assert main(["evaluate", "--ratings", str(path), "--systems", "nope", "--quiet"]) == 2
    assert main(["evaluate", "--ratings", str(tmp_path / "missing.csv"), "--quiet"]) == 2


SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "movielens-latest-small"


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/movielens-latest-small absent")
def test_replay_on_the_shared_movielens_sample() -> None:
    data = load_movielens(SHARED / "ratings.csv", SHARED / "movies.csv")
    assert len(data.interactions) == 100_836
    got = replay(data, [PopularSystem()], limit=3000)
    assert got["protocol"]["tests"] > 1000
    assert got["systems"]["popular"]["hr@20"] > 0.05


def _taste_dataset(users: int = 16, days: int = 4, per_day: int = 10) -> Dataset:
    """Users who each love one of four genres: five stars for it, two for the others."""
    rng = np.random.default_rng(7)
    genres = ["drama", "comedy", "horror", "sci-fi"]
    items = [f"m{i}" for i in range(160)]
    genre_of = {m: genres[i % 4] for i, m in enumerate(items)}
    xs = []
    for day in range(days):
        for u in range(users):
            for k in range(per_day):
                loves = rng.random() < 0.8
                pool = [m for m in items if (genre_of[m] == genres[u % 4]) == loves]
                ts = 1_000_000.0 + day * 86400 + u * 600 + k * 20
                xs.append(Interaction(f"u{u}", str(rng.choice(pool)), ts, 5.0 if loves else 2.0))
    xs.sort(key=lambda x: x.ts)
    return Dataset(
        "tastes",
        xs,
        titles={m: f"film {m}" for m in items},
        genres={m: [genre_of[m]] for m in items},
        signal="rating",
    )


def _series_dataset(users: int = 30, per_user: int = 50, seed: int = 3) -> Dataset:
    """Films in series of five, watched in order: what comes next is the next part of the
    series a user is in, which neither a film's genre (drawn at random) nor its
    popularity tells; co-engagement and the order of what a user watched do. One pick in
    five is a random film, rated two stars."""
    rng = np.random.default_rng(seed)
    genres = ["drama", "comedy", "horror", "sci-fi"]
    n_series = 80
    items = [f"s{k}p{j}" for k in range(n_series) for j in range(5)]
    genre_of = {m: genres[int(rng.integers(0, 4))] for m in items}
    appeal = 1.0 / np.arange(1, n_series + 1) ** 0.5
    appeal /= appeal.sum()
    xs = []
    for u in range(users):
        ts = 1_000_000.0 + float(rng.integers(0, 3 * 86400))
        watched: set[str] = set()
        while len(watched) < per_user:
            k = int(rng.choice(n_series, p=appeal))
            for j in range(5):
                if rng.random() < 0.2:
                    other = str(rng.choice(items))
                    if other not in watched:
                        watched.add(other)
                        xs.append(Interaction(f"u{u}", other, ts, 2.0))
                        ts += 60.0
                film = f"s{k}p{j}"
                if film in watched:
                    continue
                watched.add(film)
                xs.append(Interaction(f"u{u}", film, ts, 5.0))
                ts += 60.0
            ts += float(rng.integers(600, 7200))
    xs.sort(key=lambda x: x.ts)
    return Dataset(
        "series",
        xs,
        titles={m: f"film {m[1:]}" for m in items},
        genres={m: [genre_of[m]] for m in items},
        signal="rating",
    )


def test_online_learning_on_the_replay_keeps_up_with_the_heuristic_and_beats_daily_syncs(
    tmp_path: Path,
) -> None:
    """The default engine (online training, the learned ranker serving while it beats the
    heuristic) against the same engine with the heuristic only, test then train: every
    test is on an interaction neither had learned from."""
    from reelrank.evaluate.run import _evaluate

    dataset = _series_dataset()
    cfg = tmp_path / "small.toml"
    cfg.write_text("model_min_examples = 500\nchampion_min_pairs = 300\ntrain_batch = 64\n")
    with threadpool_limits(1):  # as `reelrank evaluate` runs it
        report = _evaluate(
            dataset,
            None,
            ("reelrank", "reelrank_heuristic", "reelrank_daily", "popular", "item_knn"),
            None,
            str(cfg),
            False,
        )
    rows = report["systems"]
    print({n: r["ndcg@10"] for n, r in rows.items()})
    learned, heuristic = rows["reelrank"], rows["reelrank_heuristic"]
    trainer = learned["trainer"]
    assert trainer["examples_trained"] > 2000 and trainer["syncs"] > 10
    assert trainer["sequence"]["sequences_trained"] > 500
    assert trainer["champion"]["champion"] == "learned"
    assert trainer["champion"]["learned"] > trainer["champion"]["heuristic"]
    assert learned["pages_by_ranker"].get("learned", 0) > 0  # it serves once it wins
    assert "trainer" not in heuristic and set(heuristic["pages_by_ranker"]) == {"heuristic"}
    # On a series log what comes next is what other viewers watched right after, and the
    # heuristic weighs that co-engagement too (NDCG@10 0.490 here, 0.013 with the term's
    # weight at 0), so the champion hands the learned ranker only the last pages (145-166
    # of about 1,300 measured; the engine 0.492-0.499): with learning it must do no worse
    # than the heuristic, and both find the next part far more often than the baselines.
    assert learned["ndcg@10"] >= 0.98 * heuristic["ndcg@10"]
    assert learned["ndcg@10"] > 3 * rows["item_knn"]["ndcg@10"]
    assert learned["ndcg@10"] > 5 * rows["popular"]["ndcg@10"]
    # Published once a simulated day, the same model learns later and serves less.
    assert rows["reelrank_daily"]["trainer"]["syncs"] <= 4
    assert learned["ndcg@10"] > rows["reelrank_daily"]["ndcg@10"]
    funnel = learned["funnel"]
    assert funnel["tests"] == report["protocol"]["tests"]
    share = funnel["share"]
    assert 1 >= share["in_catalog"] >= share["recalled"] >= share["filtered"] >= share["served"]
    assert share["served"] == pytest.approx(learned["hr@10"], abs=1e-3)


def test_the_funnel_follows_a_positive_stage_by_stage() -> None:
    from reelrank.evaluate.funnel import Funnel
    from reelrank.pipeline.feed import FeedTrace
    from reelrank.types import Candidates

    names = ["session", "popular", "explore"]
    # rows 1..6 recalled; row 3 by two channels; row 6 filtered out; 5 ranked but not served
    cands = Candidates(
        np.array([1, 2, 3, 3, 4, 5, 6]),
        np.array([0, 0, 0, 1, 1, 1, 2], np.int16),
        np.full(7, "r", object),
    ).with_recall_view()

    def trace(served: list[int]) -> FeedTrace:
        return FeedTrace(
            cands,
            names,
            np.array([1, 2, 3, 4, 5]),
            np.array([3, 5, 1, 2, 4]),
            np.zeros(5),
            np.array(served),
            None,  # type: ignore[arg-type]
        )

    f = Funnel(k=3)
    f.add(trace([3, 1, 2]), 3)  # served, by session and popular
    f.add(trace([3, 1, 2]), 5)  # ranked in the top 3, lost to the policy
    f.add(trace([3, 1, 2]), 6)  # recalled, then filtered
    f.add(trace([3, 1, 2]), 9)  # in the catalog, never recalled
    f.add(trace([3, 1, 2]), -1)  # not in the catalog yet
    f.add(None, 3)  # a system without a trace: counted as a test, reached nothing
    got = f.report()
    assert got["tests"] == 6
    assert got["share"] == {
        "in_catalog": round(4 / 6, 4),
        "recalled": round(3 / 6, 4),
        "filtered": round(2 / 6, 4),
        "ranked": round(2 / 6, 4),
        "served": round(1 / 6, 4),
    }
    assert got["policy_cost"] == 0.5  # one of the two ranked hits was not served
    assert got["hits_by"] == {"session": 1, "popular": 1} and got["hits_only_by"] == {}
    assert got["recalled_by"]["explore"] == round(1 / 6, 4)
    assert trace([]).channels_of(3) == ["session", "popular"] and trace([]).channels_of(8) == []
