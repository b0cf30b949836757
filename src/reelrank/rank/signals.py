"""Per-candidate signals shared by the heuristic scorer and the learned ranker's features."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from ..state.counters import DEFAULT_PRIOR, C, smoothed_rate
from ..types import Query

RATES = ("finish", "like", "share", "skip")
_COUNTER = {"finish": "finishes", "like": "likes", "share": "shares", "skip": "skips"}


def views(query: Query, rows: np.ndarray) -> np.ndarray:
    """(n,) impressions, or plays where an app sends no impressions."""
    totals = query.counters.totals
    return np.maximum(totals[rows, C["impressions"]], totals[rows, C["plays"]]).astype(float)


def rate_lifts(
    query: Query, rows: np.ndarray, smoothing: float, seen: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Smoothed rate / catalog rate per action, (n,) each, clipped to [0, 5]; `seen` is
    the rows' views when the caller has them."""
    counters = query.counters
    cat = counters.catalog_totals
    cat_views = float(max(cat[C["impressions"]], cat[C["plays"]]))
    if seen is None:
        seen = views(query, rows)
    out = {}
    for x in RATES:
        i = C[_COUNTER[x]]
        prior = cat[i] / cat_views if cat_views >= 100 and cat[i] > 0 else DEFAULT_PRIOR[x]
        rate = smoothed_rate(counters.totals[rows, i], seen, prior, smoothing)
        out[x] = np.clip(rate / prior, 0.0, 5.0)
    return out


@dataclass
class Affinity:
    """The user's decayed affinities for each candidate's parts, (n,) each."""

    tags: np.ndarray  # summed over the video's hashtags
    interests: np.ndarray  # onboarding interests among the video's hashtags (count)
    sound: np.ndarray
    creator: np.ndarray
    followed: np.ndarray  # 1.0 when the user follows the creator


def _sorted_keys(names: object, weights: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """`weights` (name -> weight) as catalog ints, sorted, with their weights; names the
    catalog does not know are left out."""
    get = names.get  # type: ignore[attr-defined]
    ids = np.fromiter(map(get, weights), np.int64, len(weights))
    ws = np.fromiter(weights.values(), np.float64, len(weights))
    known = ids >= 0
    ids, ws = ids[known], ws[known]
    order = np.argsort(ids)
    return ids[order], ws[order]


def _keyed(
    query: Query, name: str, names: object, weights: dict[str, float]
) -> tuple[np.ndarray, np.ndarray]:
    """`_sorted_keys` of the user's `name` affinities, once per request: the scorer, the
    features and a replay's page all look the same ones up."""
    key = f"keyed_{name}"
    found: tuple[np.ndarray, np.ndarray] | None = query.cache.get(key)
    if found is None:
        found = query.cache[key] = _sorted_keys(names, weights)
    return found


def _weigh(keys: np.ndarray, vals: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Each of `values` (any shape, -1 for none) looked up in sorted `keys`: its weight,
    0 when absent. For keys from a large range (video rows); `_weigh_ids` is faster for
    ids of a vocabulary (hashtags, sounds, creators)."""
    if not len(keys):
        return np.zeros(values.shape)
    at = np.minimum(np.searchsorted(keys, values), len(keys) - 1)  # searchsorted is >= 0
    return np.where((keys[at] == values) & (values >= 0), vals[at], 0.0)


class _IdTable:
    """One table of weights indexed by id for the process, all zero between uses (8
    bytes an id of the largest vocabulary read; request threads take turns on it)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.values = np.zeros(1024)


_ids = _IdTable()


def _weigh_ids(keys: np.ndarray, vals: np.ndarray, values: np.ndarray) -> np.ndarray:
    """`_weigh` for ids of a vocabulary (small non-negative ints, -1 for none; `keys`
    ascending, as `_weigh` takes them), through a table indexed by id: the weights are
    written into the zeroed table, read at `values`, and zeroed again. Ten times faster
    than a binary search for each of a page's thousands of hashtags."""
    if not len(keys) or not values.size:
        return np.zeros(values.shape)
    need = max(int(keys[-1]), int(values.max())) + 2  # the last entry stays 0: id -1 reads it
    with _ids.lock:
        if len(_ids.values) < need:
            _ids.values = np.zeros(max(need, 2 * len(_ids.values)))
        table = _ids.values
        table[keys] = vals
        try:
            return table[values]
        finally:
            table[keys] = 0.0


def tag_sum(query: Query, tag_ids: np.ndarray, weights: dict[str, float], name: str) -> np.ndarray:
    """(n,) the sum of `weights` (hashtag -> weight) over each row's hashtags, given the
    rows' hashtag ids (`table.tag_ids[rows]`); `name` caches the weights' lookup for the
    request."""
    keys, vals = _keyed(query, name, query.table.tags, weights)
    return _weigh_ids(keys, vals, tag_ids).sum(axis=1)


def affinity(query: Query, rows: np.ndarray) -> Affinity:
    table = query.table
    n = len(rows)

    def lookup(name: str, names: object, col: np.ndarray, weights: dict[str, float]) -> np.ndarray:
        """(n,) each row's weight for its value in `col` (0 when it has none)."""
        if not weights:
            return np.zeros(n)
        return _weigh_ids(*_keyed(query, name, names, weights), col[rows])

    interests = query.profile.interests if query.profile is not None else []
    # the rows' hashtag ids, read once for both sums (none are needed without weights)
    tag_ids = table.tag_ids[rows if query.tag_affinity or interests else rows[:0]]
    followed = np.zeros(n)
    if query.follows:
        ints = [table.creators.get(c) for c in query.follows]
        followed = np.isin(table.creator[rows], ints).astype(np.float64)
    return Affinity(
        tags=tag_sum(query, tag_ids, query.tag_affinity, "tags")
        if query.tag_affinity
        else np.zeros(n),
        interests=(
            tag_sum(query, tag_ids, dict.fromkeys(interests, 1.0), "interests")
            if interests
            else np.zeros(n)
        ),
        sound=lookup("sound", table.sounds, table.sound, query.sound_affinity),
        creator=lookup("creator", table.creators, table.creator, query.creator_affinity),
        followed=followed,
    )


def slog(x: np.ndarray) -> np.ndarray:
    """Signed log1p: keeps the sign, tames the scale."""
    return np.sign(x) * np.log1p(np.abs(x))


COENGAGED_SEEDS = 10  # the user's latest engaged videos that co-engagement scores from
SEED_DECAY = 0.85  # weight of the i-th latest seed: 0.85 ** i


def coengagement_scores(query: Query, rows: np.ndarray) -> np.ndarray:
    """(n,) item-to-item evidence for each row: its normalised co-engagement with the
    user's latest engaged videos, the newest weighing most."""
    graph, user = query.coengagement, query.user
    out = np.zeros(len(rows))
    if graph is None or user is None or not user.session or len(rows) == 0:
        return out
    found = query.cache.get("coengaged")
    if found is None:  # once per request: every scoring of its candidates reuses it
        table = query.table
        seeds: list[int] = []
        for video_id, _, _ in reversed(list(user.session)):
            row = table.row_of(video_id)
            if row >= 0 and row not in seeds:
                seeds.append(row)
                if len(seeds) == COENGAGED_SEEDS:
                    break
        parts = [graph.weights(seed) for seed in seeds] or [(np.zeros(0, np.int64), np.zeros(0))]
        keys = np.concatenate([k for k, _ in parts])
        vals = np.concatenate([SEED_DECAY**age * v for age, (_, v) in enumerate(parts)])
        uniq, inverse = np.unique(keys, return_inverse=True)  # sorted, as `_weigh` needs
        found = query.cache["coengaged"] = (uniq, np.bincount(inverse, vals, len(uniq)))
    keys, vals = found
    return _weigh(keys, vals, rows)


def related_seeds(query: Query) -> np.ndarray:
    """The user's latest engaged video rows (the related-videos model's input)."""
    user = query.user
    if user is None or not user.engaged:
        return np.zeros(0, np.int64)
    return np.frombuffer(user.engaged.tobytes(), dtype=np.int32).astype(np.int64)


def related_user_scores(query: Query) -> np.ndarray | None:
    """The related-videos model's score of every video it covers for this user (by the
    fit's column), computed once per request and shared by the channel and the rankers;
    None before the first fit."""
    fitted = query.related
    if fitted is None:
        return None
    scores = query.cache.get("related")
    if scores is None:
        scores = query.cache["related"] = fitted.scores(related_seeds(query))
    return scores


def related_scores(query: Query, rows: np.ndarray) -> np.ndarray:
    """(n,) each row's related-videos score for this user (the best video 1; 0 for
    videos the model does not cover or before its first fit)."""
    out = np.zeros(len(rows))
    scores = related_user_scores(query)
    if scores is None or len(rows) == 0:
        return out
    assert query.related is not None  # scores exist only with a fit
    cols = query.related.columns(rows)
    ok = cols >= 0
    out[ok] = scores[cols[ok]]
    return np.clip(out, -1.0, 1.0)


class CandidateSignals:
    """The signals of one request's candidates, each computed at most once and for all of
    them together; any subset of those rows reads them by position. The heuristic scorer
    (which scores every candidate) makes the request's bundle; the learned ranker's
    features of the pre-ranked few, a replay's logged page and the learned scores of all
    candidates read from it instead of computing the same lookups again. Each signal is
    computed for the request passed in, which must be the request the bundle belongs to."""

    def __init__(self, rows: np.ndarray, smoothing: float) -> None:
        # (no reference to the query: the query's cache holds the bundle, and a cycle
        # would keep every request's arrays until the cyclic collector ran)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.smoothing = smoothing
        self._order = np.argsort(self.rows, kind="stable")
        self._sorted = self.rows[self._order]
        self._views: np.ndarray | None = None  # each computed on first use
        self._lifts: dict[str, np.ndarray] | None = None
        self._affinity: Affinity | None = None
        self._coengaged: np.ndarray | None = None
        self._related: np.ndarray | None = None

    def positions(self, rows: np.ndarray) -> np.ndarray | None:
        """Where each of `rows` is in the bundle, None when any is not in it."""
        if len(self._sorted) == 0:
            return None if len(rows) else np.zeros(0, np.int64)
        at = np.minimum(np.searchsorted(self._sorted, rows), len(self._sorted) - 1)
        if not (self._sorted[at] == rows).all():
            return None
        return self._order[at]

    def views(self, query: Query) -> np.ndarray:
        if self._views is None:
            self._views = views(query, self.rows)
        return self._views

    def lifts(self, query: Query) -> dict[str, np.ndarray]:
        if self._lifts is None:
            self._lifts = rate_lifts(query, self.rows, self.smoothing, self.views(query))
        return self._lifts

    def affinity(self, query: Query) -> Affinity:
        if self._affinity is None:
            self._affinity = affinity(query, self.rows)
        return self._affinity

    def coengaged(self, query: Query) -> np.ndarray:
        if self._coengaged is None:
            self._coengaged = coengagement_scores(query, self.rows)
        return self._coengaged

    def related(self, query: Query) -> np.ndarray:
        if self._related is None:
            self._related = related_scores(query, self.rows)
        return self._related


def candidate_signals(
    query: Query, rows: np.ndarray, smoothing: float
) -> tuple[CandidateSignals, np.ndarray | None]:
    """The request's signal bundle for `rows` and their positions in it (None: all of it,
    in order). The first call of a request makes the bundle; a later call whose rows are
    all in it reads from it; other rows get a bundle of their own."""
    found: CandidateSignals | None = query.cache.get("signals")
    if found is not None and found.smoothing == smoothing:
        if len(rows) == len(found.rows) and np.array_equal(rows, found.rows):
            return found, None
        at = found.positions(rows)
        if at is not None:
            return found, at
    made = CandidateSignals(rows, smoothing)
    if found is None:
        query.cache["signals"] = made
    return made, None
