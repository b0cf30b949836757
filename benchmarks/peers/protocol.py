"""The peers protocols: one split (a global temporal split, or each user's last 20% by
time), one user set, one catalog, one scorer.

Every system is fitted on `Split.train` and ranks `Split.catalog` (the items seen in
train) for each of `Split.users`; `evaluate` removes the user's train items, keeps the
top k and scores the list against the user's test positives. Nothing here depends on
the system, so every system is judged on exactly the same users, items and exclusions.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from reelrank.evaluate import metrics

KS = (10, 20)
POSITIVE_RATING = 4.0


@dataclass(frozen=True)
class Rating:
    """One MovieLens rating: the interaction every system learns from."""

    user: str
    item: str
    ts: float
    rating: float

    @property
    def positive(self) -> bool:
        return self.rating >= POSITIVE_RATING


@dataclass
class Split:
    """A train part, a test part, and what the protocol derives from them."""

    train: list[Rating]  # time order
    test: list[Rating]  # time order, every one later than (or tied with) train's last
    catalog: list[str]  # items seen in train, in order of first appearance
    users: list[str]  # evaluated users, sorted
    test_positives: dict[str, set[str]]  # per evaluated user, catalog items only
    train_items: dict[str, set[str]]  # per user: excluded from that user's ranking
    cut_ts: float  # time of the last train interaction
    # Per evaluated user, when a system that lives on a clock (reelrank) is asked for the
    # feed: `cut_ts` under a global split; under a per-user split, the time of the user's
    # first test interaction, with only the train interactions before it replayed.
    ask_ts: dict[str, float] = field(default_factory=dict)
    unreachable: dict[str, int] = field(default_factory=dict)

    @property
    def item_index(self) -> dict[str, int]:
        return {item: i for i, item in enumerate(self.catalog)}

    def describe(self) -> dict[str, object]:
        return {
            "train_interactions": len(self.train),
            "test_interactions": len(self.test),
            "catalog_items": len(self.catalog),
            "evaluated_users": len(self.users),
            "test_positives_scored": sum(len(v) for v in self.test_positives.values()),
            "cut_ts": self.cut_ts,
            **self.unreachable,
        }


def load_ratings(path: str | Path) -> list[Rating]:
    """MovieLens ratings.csv (userId,movieId,rating,timestamp), sorted by time (stable)."""
    with Path(path).open(newline="", encoding="utf-8") as handle:
        rows = [
            Rating(r["userId"], r["movieId"], float(r["timestamp"]), float(r["rating"]))
            for r in csv.DictReader(handle)
        ]
    rows.sort(key=lambda r: r.ts)
    return rows


def temporal_split(ratings: Sequence[Rating], test_share: float) -> Split:
    """The first (1 - test_share) of the interactions by time are train, the rest test.

    `ratings` must be in time order. Evaluated users have at least one train
    interaction and at least one test positive on a catalog item; test positives on
    items first seen in test cannot be recommended by anyone and are counted apart.
    """
    if not 0 < test_share < 1:
        raise ValueError(f"test_share must be in (0, 1), got {test_share}")
    _check_order(ratings)
    cut = len(ratings) - math.ceil(len(ratings) * test_share)
    if cut <= 0 or cut >= len(ratings):
        raise ValueError("too few ratings to split")
    return _split(list(ratings[:cut]), list(ratings[cut:]))


def user_split(ratings: Sequence[Rating], test_share: float, min_interactions: int = 5) -> Split:
    """Each user's last `test_share` of their interactions by time (at least one) are test,
    the rest train; a user with fewer than `min_interactions` stays whole in train.

    Every user with enough history is evaluated, so far more users qualify than under a
    global temporal split; the price is that one user's train part may be later than
    another's test part (the usual per-user holdout of sequential recommendation). A
    system on a clock is asked for each user's feed when that user's test part begins
    (`Split.ask_ts`), having seen only the train interactions before then; the fitted
    models see the whole train part.
    """
    if not 0 < test_share < 1:
        raise ValueError(f"test_share must be in (0, 1), got {test_share}")
    _check_order(ratings)
    by_user: dict[str, list[int]] = {}
    for i, r in enumerate(ratings):
        by_user.setdefault(r.user, []).append(i)
    held: set[int] = set()
    for idx in by_user.values():
        if len(idx) >= min_interactions:
            held.update(idx[-math.ceil(len(idx) * test_share) :])
    train = [r for i, r in enumerate(ratings) if i not in held]
    test = [r for i, r in enumerate(ratings) if i in held]
    if not train or not test:
        raise ValueError("too few ratings to split")
    return _split(train, test, per_user_clock=True)


def _check_order(ratings: Sequence[Rating]) -> None:
    if any(a.ts > b.ts for a, b in itertools.pairwise(ratings)):
        raise ValueError("ratings must be sorted by timestamp")


def _split(train: list[Rating], test: list[Rating], per_user_clock: bool = False) -> Split:
    """What the protocol derives from a train and a test part (both in time order);
    `per_user_clock`: each user's feed is asked for when their test part begins."""
    catalog = list(dict.fromkeys(r.item for r in train))
    known = set(catalog)
    train_items: dict[str, set[str]] = {}
    for r in train:
        train_items.setdefault(r.user, set()).add(r.item)
    positives: dict[str, set[str]] = {}
    new_item_positives = 0
    cold_user_positives = 0
    for r in test:
        if not r.positive:
            continue
        if r.user not in train_items:
            cold_user_positives += 1
        elif r.item not in known:
            new_item_positives += 1
        elif r.item not in train_items[r.user]:  # a re-rating of a train item is not new
            positives.setdefault(r.user, set()).add(r.item)
    users = sorted(positives)
    ask_ts = dict.fromkeys(users, train[-1].ts)
    if per_user_clock:
        first: dict[str, float] = {}
        for r in test:
            first.setdefault(r.user, r.ts)
        ask_ts = {u: first[u] for u in users}
    only_new = {r.user for r in test if r.positive and r.user in train_items} - set(users)
    return Split(
        train=train,
        test=test,
        catalog=catalog,
        users=users,
        test_positives={u: positives[u] for u in users},
        train_items=train_items,
        cut_ts=train[-1].ts,
        ask_ts=ask_ts,
        unreachable={
            "test_positives_on_items_new_in_test": new_item_positives,
            "test_positives_of_users_new_in_test": cold_user_positives,
            "test_items_new_in_test": len({r.item for r in test} - known),
            "users_left_out_with_only_new_item_positives": len(only_new),
        },
    )


def validation_split(split: Split, valid_share: float, protocol: str = "temporal") -> Split:
    """The same rules applied to the train part alone: its last `valid_share` by time
    (`temporal`), or each user's last `valid_share` of their train part (`users`)."""
    if protocol == "users":
        return user_split(split.train, valid_share)
    return temporal_split(split.train, valid_share)


PROTOCOLS = ("temporal", "users")


def make_split(ratings: Sequence[Rating], protocol: str, test_share: float = 0.2) -> Split:
    """The test split of a protocol: `temporal` (global) or `users` (per-user holdout)."""
    if protocol == "users":
        return user_split(ratings, test_share)
    if protocol == "temporal":
        return temporal_split(ratings, test_share)
    raise ValueError(f"unknown protocol {protocol!r}; known: {PROTOCOLS}")


# -- metrics -------------------------------------------------------------------------------


def set_ndcg(ranking: Sequence[str], relevant: set[str], k: int) -> float:
    """NDCG@k with binary relevance for a set of relevant items:
    sum over hits at 0-based rank r < k of 1/log2(r + 2), divided by the same sum for an
    ideal list (min(|relevant|, k) hits on top)."""
    if not relevant:
        return 0.0
    dcg = sum(1.0 / math.log2(r + 2) for r, item in enumerate(ranking[:k]) if item in relevant)
    ideal = sum(1.0 / math.log2(r + 2) for r in range(min(len(relevant), k)))
    return dcg / ideal


def first_hit(ranking: Sequence[str], relevant: set[str]) -> int | None:
    """The 0-based rank of the first relevant item, or None."""
    return next((r for r, item in enumerate(ranking) if item in relevant), None)


def score_rankings(
    rankings: Mapping[str, Sequence[str]], split: Split, ks: Sequence[int] = KS
) -> dict[str, float]:
    """HR@k, NDCG@k and MRR@k averaged over `split.users`, and catalog coverage@min(ks).

    `rankings` must hold exactly the evaluated users, each list already cleaned
    (see `clean`)."""
    if set(rankings) != set(split.users):
        raise ValueError("rankings must cover exactly the evaluated users")
    out: dict[str, float] = {}
    per_user = {u: (first_hit(rankings[u], split.test_positives[u])) for u in split.users}
    for k in ks:
        out[f"hr@{k}"] = float(np.mean([metrics.hit(per_user[u], k) for u in split.users]))
        out[f"ndcg@{k}"] = float(
            np.mean([set_ndcg(rankings[u], split.test_positives[u], k) for u in split.users])
        )
        out[f"mrr@{k}"] = float(np.mean([metrics.mrr(per_user[u], k) for u in split.users]))
    k = min(ks)
    shown = [item for u in split.users for item in rankings[u][:k]]
    out[f"coverage@{k}"] = metrics.coverage(shown, len(split.catalog))
    return {name: round(value, 5) for name, value in out.items()}


def clean(ranking: Sequence[str], user: str, split: Split, k: int, known: set[str]) -> list[str]:
    """A system's list as the protocol scores it: catalog items only, the user's train
    items removed, duplicates removed, the first k kept."""
    excluded = split.train_items.get(user, set())
    seen: set[str] = set()
    out = []
    for item in ranking:
        if item in known and item not in excluded and item not in seen:
            seen.add(item)
            out.append(item)
            if len(out) == k:
                break
    return out


def top_k(scores: np.ndarray, split: Split, k: int) -> dict[str, list[str]]:
    """Top k catalog items per evaluated user from a score matrix (users x catalog, rows
    in `split.users` order), with each user's train items masked out. Ties go to the
    item seen first in train."""
    if scores.shape != (len(split.users), len(split.catalog)):
        raise ValueError(
            f"scores must be {(len(split.users), len(split.catalog))}, got {scores.shape}"
        )
    index = split.item_index
    out = {}
    for row, user in enumerate(split.users):
        s = scores[row].astype(np.float64, copy=True)
        s[[index[i] for i in split.train_items.get(user, ())]] = -np.inf
        order = np.lexsort((np.arange(len(s)), -s))[:k]
        out[user] = [split.catalog[i] for i in order if np.isfinite(s[i])]
    return out
