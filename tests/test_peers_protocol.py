"""The peers benchmark's protocol (benchmarks/peers/protocol.py) on tiny synthetic logs:
the split never leaks test into train, every system is judged on the same users and
exclusions, and the set-based metrics match hand-computed values."""

from __future__ import annotations

import importlib.util
import math
import random

import numpy as np
import pytest
from benchmarks.peers.protocol import (
    Rating,
    clean,
    score_rankings,
    set_ndcg,
    temporal_split,
    top_k,
    user_split,
    validation_split,
)
from benchmarks.peers.systems import als_fit_rank, ease_fit_rank, popular_fit_rank


def synthetic(n: int = 400, users: int = 12, items: int = 30, seed: int = 0) -> list[Rating]:
    rng = random.Random(seed)
    out = [
        Rating(
            f"u{rng.randrange(users)}",
            f"i{rng.randrange(items)}",
            float(t // 3),
            rng.choice([1.0, 2.5, 3.5, 4.0, 4.5, 5.0]),
        )
        for t in range(n)
    ]
    return sorted(out, key=lambda r: r.ts)


def test_no_test_interaction_in_train_and_the_cut_is_temporal() -> None:
    ratings = synthetic()
    split = temporal_split(ratings, 0.2)
    assert len(split.test) == math.ceil(0.2 * len(ratings))
    assert len(split.train) + len(split.test) == len(ratings)
    assert max(r.ts for r in split.train) <= min(r.ts for r in split.test)
    train_ids = {id(r) for r in split.train}
    assert not any(id(r) in train_ids for r in split.test)
    assert split.cut_ts == split.train[-1].ts
    assert set(split.ask_ts) == set(split.users)
    assert set(split.ask_ts.values()) == {split.cut_ts}  # one global clock


def test_evaluated_users_and_relevant_sets_follow_the_rules() -> None:
    split = temporal_split(synthetic(), 0.25)
    catalog = set(split.catalog)
    assert catalog == {r.item for r in split.train}
    for user in split.users:
        assert split.train_items[user]  # at least one train interaction
        positives = split.test_positives[user]
        assert positives and positives <= catalog  # only recommendable items count
        assert not positives & split.train_items[user]
        assert all(
            any(r.user == user and r.item == i and r.rating >= 4.0 for r in split.test)
            for i in positives
        )
    left_out = {r.user for r in split.test if r.rating >= 4.0} - set(split.users)
    assert all(
        u not in split.train_items
        or not {r.item for r in split.test if r.user == u and r.rating >= 4} & catalog
        for u in left_out
    )


def test_items_new_in_test_are_counted_and_never_relevant() -> None:
    ratings = [
        Rating("a", "x", 1, 5.0),
        Rating("b", "y", 2, 5.0),
        Rating("a", "y", 3, 4.0),
        Rating("a", "new", 4, 5.0),  # test, an item no system can know
        Rating("b", "x", 5, 4.5),  # test
    ]
    split = temporal_split(ratings, 0.4)
    assert split.catalog == ["x", "y"]
    assert split.users == ["b"]  # a's only test positive is on a new item
    assert split.test_positives == {"b": {"x"}}
    assert split.unreachable["test_positives_on_items_new_in_test"] == 1
    assert split.unreachable["users_left_out_with_only_new_item_positives"] == 1


def test_validation_split_uses_only_the_train_part() -> None:
    split = temporal_split(synthetic(), 0.2)
    valid = validation_split(split, 0.1)
    assert valid.train + valid.test == split.train
    assert valid.cut_ts <= split.cut_ts


def test_set_ndcg_matches_a_hand_computed_value() -> None:
    # Relevant {a, c, z}; a at rank 0, c at rank 2; z not retrieved.
    # DCG = 1/log2(2) + 1/log2(4) = 1.5; IDCG@10 = 1 + 1/log2(3) + 1/log2(4) = 2.1309297535
    got = set_ndcg(["a", "b", "c", "d"], {"a", "c", "z"}, 10)
    assert got == pytest.approx(1.5 / (1.5 + 1 / math.log2(3)), abs=1e-12)
    assert got == pytest.approx(0.7039180890, abs=1e-9)
    # At k=2 only a counts; the ideal list has two hits.
    assert set_ndcg(["a", "b", "c"], {"a", "c", "z"}, 2) == pytest.approx(
        1.0 / (1.0 + 1 / math.log2(3))
    )
    assert set_ndcg(["b"], {"a"}, 10) == 0.0
    assert set_ndcg(["a", "b"], {"a", "b"}, 10) == pytest.approx(1.0)


def test_score_rankings_hand_computed() -> None:
    ratings = [
        Rating("u", "a", 1, 5.0),
        Rating("v", "b", 2, 5.0),
        Rating("u", "c", 3, 1.0),
        Rating("v", "d", 4, 1.0),
        Rating("u", "b", 5, 4.0),  # test
        Rating("v", "a", 6, 5.0),  # test
    ]
    split = temporal_split(ratings, 2 / 6)
    rankings = {"u": ["d", "b"], "v": ["a", "c"]}  # u's hit at rank 1, v's at rank 0
    got = score_rankings(rankings, split, ks=(1, 2))
    assert got["hr@1"] == 0.5 and got["hr@2"] == 1.0
    assert got["mrr@2"] == pytest.approx((0.5 + 1.0) / 2)
    assert got["ndcg@2"] == pytest.approx((1 / math.log2(3) + 1.0) / 2, abs=1e-5)
    assert got["coverage@1"] == pytest.approx(2 / 4)  # d and a among 4 catalog items
    with pytest.raises(ValueError, match="exactly the evaluated users"):
        score_rankings({"u": ["b"]}, split)


def test_clean_applies_the_same_exclusions_to_any_list() -> None:
    split = temporal_split(synthetic(), 0.2)
    user = split.users[0]
    seen = next(iter(split.train_items[user]))
    fresh = [i for i in split.catalog if i not in split.train_items[user]]
    got = clean(
        [seen, "unknown", fresh[0], fresh[0], *fresh[1:]], user, split, 3, set(split.catalog)
    )
    assert got == fresh[:3]


def test_top_k_masks_train_items_and_breaks_ties_by_catalog_order() -> None:
    split = temporal_split(synthetic(), 0.2)
    scores = np.zeros((len(split.users), len(split.catalog)))
    got = top_k(scores, split, 5)
    for user in split.users:
        expected = [i for i in split.catalog if i not in split.train_items[user]][:5]
        assert got[user] == expected


def test_every_system_is_judged_on_the_same_users() -> None:
    split = temporal_split(synthetic(), 0.2)
    popular, _ = popular_fit_rank(split, {}, 10)
    systems = {"popular": popular}
    if importlib.util.find_spec("implicit") is not None:
        als, _ = als_fit_rank(split, {"factors": 4, "iterations": 2, "weight": "binary"}, 10)
        systems["als"] = als
    for rankings in systems.values():
        assert sorted(rankings) == split.users
        for user, items in rankings.items():
            assert not set(items) & split.train_items[user]
        score_rankings(rankings, split)  # raises unless the users are exactly the split's


def test_popular_ranks_by_train_positives() -> None:
    ratings = [
        Rating("a", "x", 1, 5.0),
        Rating("b", "x", 2, 4.0),
        Rating("c", "y", 3, 5.0),
        Rating("c", "z", 4, 2.0),
        Rating("d", "z", 5, 3.0),
        Rating("a", "y", 6, 4.0),  # test
    ]
    split = temporal_split(ratings, 1 / 6)
    got, _ = popular_fit_rank(split, {}, 3)
    assert got == {"a": ["y", "z"]}  # x excluded (a's train item); y has 1 positive, z none


@pytest.mark.skipif(importlib.util.find_spec("implicit") is None, reason="implicit not installed")
def test_als_beats_popular_on_planted_taste() -> None:
    # Two groups of users, each liking its own half of the catalog: ALS must rank the
    # user's own half first, which a popularity ranking cannot.
    rng = random.Random(1)
    ratings = [
        Rating(f"u{u}", f"i{(u % 2) * 10 + i}", rng.random(), 5.0)
        for u in range(40)
        for i in rng.sample(range(10), 6)
    ]
    ratings.sort(key=lambda r: r.ts)
    split = temporal_split(ratings, 0.2)
    als, _ = als_fit_rank(split, {"factors": 8, "iterations": 10, "weight": "binary"}, 10)
    pop, _ = popular_fit_rank(split, {}, 10)
    assert score_rankings(als, split)["ndcg@10"] > score_rankings(pop, split)["ndcg@10"]


def test_the_per_user_split_holds_out_each_users_latest_fifth() -> None:
    ratings = synthetic(n=600, users=15)
    split = user_split(ratings, 0.2, min_interactions=5)
    by_user: dict[str, list[Rating]] = {}
    for r in ratings:
        by_user.setdefault(r.user, []).append(r)
    test_ids = {id(r) for r in split.test}
    for rs in by_user.values():
        held = [r for r in rs if id(r) in test_ids]
        if len(rs) < 5:
            assert not held
            continue
        assert len(held) == math.ceil(0.2 * len(rs))
        assert held == rs[-len(held) :]  # the user's latest, in time order
    assert len(split.train) + len(split.test) == len(ratings)
    assert len(split.users) > 10  # nearly every user is evaluated, unlike a global cut
    # A system on a clock is asked when the user's test part begins: after all of the
    # user's train part, at their first test interaction.
    for user in split.users:
        rs = by_user[user]
        held = [r for r in rs if id(r) in test_ids]
        assert split.ask_ts[user] == held[0].ts
        assert all(r.ts <= split.ask_ts[user] for r in rs if id(r) not in test_ids)
    assert len(set(split.ask_ts.values())) > 1
    valid = validation_split(split, 0.2, "users")
    assert {id(r) for r in valid.train + valid.test} == {id(r) for r in split.train}


def test_ease_beats_popular_on_planted_taste() -> None:
    # As for ALS: two groups of users, each liking its own half of the catalog.
    rng = random.Random(1)
    ratings = [
        Rating(f"u{u}", f"i{(u % 2) * 10 + i}", rng.random(), 5.0)
        for u in range(40)
        for i in rng.sample(range(10), 6)
    ]
    ratings.sort(key=lambda r: r.ts)
    split = user_split(ratings, 0.2, min_interactions=3)
    ease, _ = ease_fit_rank(split, {"lambda": 10.0}, 10)
    pop, _ = popular_fit_rank(split, {}, 10)
    assert score_rankings(ease, split)["ndcg@10"] > score_rankings(pop, split)["ndcg@10"]


def test_the_ablation_replays_each_configuration_with_its_own_settings(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """benchmarks/peers/ablate.py: one replay of the engine per configuration, in the order
    given, each with its settings (a fusion that scores the user's tastes down ranks
    worse than the default one on planted tastes), written as JSON."""
    import json

    from benchmarks.peers.ablate import main

    rng = random.Random(2)
    films = [(f"{i}", "Drama" if i < 20 else "Comedy") for i in range(40)]
    rows, ts = [], 0
    for _ in range(12):
        for u in range(40):
            i = (u % 2) * 20 + rng.randrange(20)  # each group watches its own half
            ts += 60
            rows.append(f"{u},{i},5.0,{1_600_000_000 + ts}")
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "\n".join(rows))
    (tmp_path / "movies.csv").write_text(
        "movieId,title,genres\n" + "\n".join(f"{i},Film {i} (2000),{g}" for i, g in films)
    )
    down = {"related": -3.0, "affinity": -3.0, "coengaged": -3.0}
    configs = [{"train": False}, {"train": False, "settings": {"score_weights": down}}]
    out = tmp_path / "ablation.json"
    args = ["--data", str(tmp_path), "--protocol", "users", "--output", str(out)]
    assert main([*args, *(a for c in configs for a in ("--config", json.dumps(c)))]) == 0
    report = json.loads(out.read_text())
    assert [row["config"] for row in report["rows"]] == configs
    default, reversed_tastes = (row["metrics"]["ndcg@10"] for row in report["rows"])
    assert default > reversed_tastes
