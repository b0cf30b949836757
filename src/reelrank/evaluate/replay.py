"""Replay a timestamped log through recommenders in time order, test then train.

For each interaction, in time order:
  1. if it is positive, every system ranks the catalog for that user at that time and
     the rank of the item actually chosen is scored (HR, NDCG, MRR at each K);
  2. then every system learns the interaction;
  3. an item seen for the first time joins the catalog only now, after its test: no
     system can know an item before its first interaction (nor, therefore, recommend
     it for that interaction).
A system never sees interaction t before it is tested on t (tests/test_evaluate.py
holds an oracle that would score on any leak).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from scipy import sparse

from ..engine import Engine
from ..schema import Event, Impression
from ..storage import open_store
from . import metrics
from .data import Dataset, Interaction, is_positive

DURATION_MS = 300_000  # every item's length: watch ratios carry the signal


class System(Protocol):
    """A recommender under replay."""

    name: str

    def add_item(self, item: str, ts: float) -> None:
        """A new item joins the catalog (after its first interaction's test)."""

    def recommend(self, user: str, ts: float, k: int) -> list[str]:
        """The user's top k items of the catalog at time ts, best first."""

    def learn(self, x: Interaction, positive: bool) -> None:
        """Take in one interaction."""


class _Catalog:
    """Item ids <-> dense indices, and each user's items (never recommended again)."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.ids: list[str] = []
        self.seen: dict[str, set[int]] = {}

    def add(self, item: str) -> int:
        found = self.index.get(item)
        if found is None:
            found = self.index[item] = len(self.ids)
            self.ids.append(item)
        return found

    def top(self, scores: np.ndarray, user: str, k: int) -> list[str]:
        scores = scores.astype(np.float64, copy=True)
        seen = self.seen.get(user)
        if seen:
            scores[list(seen)] = -np.inf
        k = min(k, len(scores))
        if k <= 0:
            return []
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [self.ids[i] for i in top if np.isfinite(scores[i])]

    def saw(self, user: str, item: str) -> None:
        i = self.index.get(item)
        if i is not None:
            self.seen.setdefault(user, set()).add(i)


class PopularSystem:
    """Most positives so far."""

    name = "popular"

    def __init__(self) -> None:
        self.catalog = _Catalog()
        self.counts = np.zeros(0)

    def add_item(self, item: str, ts: float) -> None:
        self.catalog.add(item)
        self.counts = np.resize(self.counts, len(self.catalog.ids))
        self.counts[-1] = 0.0

    def recommend(self, user: str, ts: float, k: int) -> list[str]:
        # Tie-break toward older items (lower index) so results are deterministic.
        tiebreak = -np.arange(len(self.counts)) * 1e-9
        return self.catalog.top(self.counts + tiebreak, user, k)

    def learn(self, x: Interaction, positive: bool) -> None:
        i = self.catalog.index.get(x.item)
        if i is not None and positive:
            self.counts[i] += 1.0
        self.catalog.saw(x.user, x.item)


class RecentPopularSystem(PopularSystem):
    """Positives decayed with a half-life: what is popular lately."""

    name = "recent_popular"

    def __init__(self, half_life_s: float = 14 * 86400.0) -> None:
        super().__init__()
        self.half_life_s = half_life_s
        self.t0: float | None = None

    def learn(self, x: Interaction, positive: bool) -> None:
        i = self.catalog.index.get(x.item)
        if i is not None and positive:
            if self.t0 is None:
                self.t0 = x.ts
            exponent = (x.ts - self.t0) / self.half_life_s
            if exponent > 500:  # rescale before overflow
                self.counts *= 2.0**-exponent
                self.t0, exponent = x.ts, 0.0
            self.counts[i] += 2.0**exponent
        self.catalog.saw(x.user, x.item)


class ItemKNNSystem:
    """Item-based CF: cosine over users' positives, the `neighbours` most similar items
    per item, recomputed from the interactions so far whenever the positives grew by a
    `refresh` share (at least 200) since the last build; a user is scored by the summed
    similarity to their last `history` positives."""

    name = "item_knn"

    def __init__(self, neighbours: int = 50, history: int = 20, refresh: float = 0.1) -> None:
        self.catalog = _Catalog()
        self.neighbours = neighbours
        self.history = history
        self.refresh = refresh
        self.pairs: list[tuple[int, int]] = []  # (user index, item index) positives
        self.users: dict[str, int] = {}
        self.recent: dict[str, list[int]] = {}
        self.sim: sparse.csr_matrix | None = None
        self._since = 0

    def add_item(self, item: str, ts: float) -> None:
        self.catalog.add(item)

    def _rebuild(self) -> None:
        n_items = len(self.catalog.ids)
        if not self.pairs:
            return
        u, i = np.array(self.pairs).T
        x = sparse.csr_matrix(
            (np.ones(len(u), np.float32), (u, i)), shape=(len(self.users), n_items)
        )
        x.data[:] = 1.0  # repeated pairs count once
        norms = np.sqrt(np.asarray(x.sum(axis=0)).ravel())
        norms[norms == 0] = 1.0
        xt = x.T.tocsr()
        rows, cols, vals = [], [], []
        block = 512
        for start in range(0, n_items, block):
            co = (xt[start : start + block] @ x).toarray()  # (block, n_items)
            co /= norms[start : start + block, None] * norms[None, :]
            for r in range(co.shape[0]):
                co[r, start + r] = 0.0
            k = min(self.neighbours, n_items - 1)
            if k <= 0:
                continue
            top = np.argpartition(-co, k - 1, axis=1)[:, :k]
            for r in range(co.shape[0]):
                keep = top[r][co[r, top[r]] > 0]
                rows.extend([start + r] * len(keep))
                cols.extend(keep.tolist())
                vals.extend(co[r, keep].tolist())
        self.sim = sparse.csr_matrix((vals, (rows, cols)), shape=(n_items, n_items))
        self._since = 0

    def recommend(self, user: str, ts: float, k: int) -> list[str]:
        n_items = len(self.catalog.ids)
        history = self.recent.get(user)
        if self.sim is None or not history or n_items == 0:
            return []
        known = [i for i in history if i < self.sim.shape[0]]
        if not known:
            return []
        scores = np.zeros(n_items)
        got = np.asarray(self.sim[known].sum(axis=0)).ravel()
        scores[: len(got)] = got
        scores[scores <= 0] = -np.inf  # no evidence: not recommended
        return self.catalog.top(scores, user, k)

    def learn(self, x: Interaction, positive: bool) -> None:
        self.catalog.saw(x.user, x.item)
        i = self.catalog.index.get(x.item)
        if i is None or not positive:
            return
        u = self.users.setdefault(x.user, len(self.users))
        self.pairs.append((u, i))
        recent = self.recent.setdefault(x.user, [])
        recent.append(i)
        del recent[: -self.history]
        self._since += 1
        if self._since >= max(200, self.refresh * len(self.pairs)):
            self._rebuild()


class ReelrankSystem:
    """The engine itself: items become videos (title as caption, genres as hashtags),
    interactions become the events an app would send, and rankings are feed pages
    computed at the interaction's time without being logged as served."""

    name = "reelrank"

    def __init__(self, engine: Engine, dataset: Dataset) -> None:
        self.engine = engine
        self.dataset = dataset
        self._n = 0

    def add_item(self, item: str, ts: float) -> None:
        tags = [g.lower().replace(" ", "-") for g in self.dataset.genres.get(item, [])]
        title = self.dataset.titles.get(item, f"item {item}")
        got = self.engine.upsert_videos(
            [
                {
                    "id": item,
                    "creator_id": f"creator-{item}",
                    "caption": title[:4000],
                    "hashtags": tags[:30],
                    "duration_ms": DURATION_MS,
                    "created_at": ts,
                }
            ]
        )
        if "error" in got[0]:
            raise ValueError(f"item {item!r}: {got[0]['error']}")

    def recommend(self, user: str, ts: float, k: int) -> list[str]:
        feed = self.engine.feed(user, n=k, now=ts, record=False)
        return [it.video_id for it in feed.items]

    def learn(self, x: Interaction, positive: bool) -> None:
        result = self.engine.ingest(self._events(x, positive))
        if result.rejected:
            raise ValueError(f"replayed events rejected: {result.rejected[:3]}")

    def _events(
        self, x: Interaction, positive: bool, request_id: str | None = None
    ) -> list[dict[str, Any]]:
        """The interaction's events, joined to `request_id`'s page when there is one."""
        if x.rating is not None:
            ratio = min(max(x.rating / 5.0, 0.0), 1.0)  # the rating stands in for watch ratio
        elif x.watch_ratio is not None:
            ratio = min(max(x.watch_ratio, 0.0), 2.0)
        else:
            ratio = 1.0 if positive else 0.1
        kinds = ["play", "watch"]
        if positive:
            kinds.append("finish")
            if x.rating is not None and x.rating >= 4.5:
                kinds.append("like")
        if x.event and x.event not in kinds and x.event not in ("watch",):
            kinds.append(x.event)
        events = []
        for kind in kinds:
            self._n += 1
            event: dict[str, Any] = {
                "event_id": f"replay-{self._n}",
                "type": kind,
                "user_id": x.user,
                "video_id": x.item,
                "ts": x.ts,
            }
            if kind == "watch":
                event["watch_ms"] = int(ratio * DURATION_MS)
            if request_id is not None:
                event["request_id"] = request_id
            events.append(event)
        return events


class LearnedReelrankSystem(ReelrankSystem):
    """The engine with its online-trained multi-task ranker, learning from the replay.

    Each interaction becomes a logged page in the trainer's own log: the chosen item plus
    `negatives` items drawn at random from the catalog known at that moment (a log of
    ratings says nothing of what else was on screen; negatives from reelrank's own pages
    would be the model's own favourites, and its AUC against them is biased low), each
    impression with the features the ranker saw, then the chosen item's events (play,
    watch, finish, like) and a play and skip for the others. The trainer joins and trains
    on these as it would on a live log. The engine itself receives only the chosen item's
    events, as the heuristic replay does: the unchosen page items are the trainer's
    negatives, not things the user did, so they are neither marked seen nor counted as
    skips in the engine's state. New parameters reach serving every `sync_every` interactions
    (online), or, with `sync_every=None`, once per simulated day (a daily batch job on
    the same model and data). Before learning, the serving model scores the logged page:
    per-head AUC of the ranker as served (the finish head against the chosen item, the
    like head against ratings >= 4.5; the random items are the negatives), and the
    heuristic scorer's AUC on the same pages for reference (`auc_heuristic`, against the
    finish label).
    """

    def __init__(
        self,
        engine: Engine,
        dataset: Dataset,
        name: str = "reelrank_learned",
        sync_every: int | None = 50,
        negatives: int = 4,
        seed: int = 0,
    ) -> None:
        from ..train.trainer import OnlineTrainer

        super().__init__(engine, dataset)
        self.name = name
        self.sync_every = sync_every
        self.negatives = negatives
        self.log = open_store("memory://")  # the trainer's impression and event log
        self.trainer = OnlineTrainer(engine.settings, self.log, engine.params, None)
        self.trainer.publish_full()
        self.engine.sync_model()
        self._interactions = 0
        self._day: int | None = None
        self.syncs = 0
        self.scored: dict[str, tuple[list[float], list[float]]] = {
            "finish": ([], []),
            "like": ([], []),
            "heuristic": ([], []),  # the heuristic scorer on the same pages, as a baseline
        }
        self.learned_pages = 0  # test pages served by the learned ranker
        self._rng = np.random.default_rng(seed)

    def recommend(self, user: str, ts: float, k: int) -> list[str]:
        feed = self.engine.feed(user, n=k, now=ts, record=False)
        if feed.ranker == "learned":
            self.learned_pages += 1
        return [it.video_id for it in feed.items]

    def _sync(self) -> None:
        self.trainer.drain()
        self.trainer.publish_full()
        self.engine.sync_model()
        self.syncs += 1

    def learn(self, x: Interaction, positive: bool) -> None:
        from ..pipeline.query import Candidates, FeedRequest
        from ..rank.features import extract
        from ..rank.model import HEADS

        engine = self.engine
        day = int(x.ts // 86400)
        if self.sync_every is None and self._day is not None and day != self._day:
            self._sync()  # the new day starts with a model trained on every earlier day
        self._day = day
        self._n += 1
        request_id = f"replay-page-{self._n}"
        table = engine.state.table
        row = table.row_of(x.item)
        drawn = self._rng.integers(0, table.size, size=2 * self.negatives)
        rows = np.asarray(
            [row, *dict.fromkeys(int(r) for r in drawn if r != row)][: self.negatives + 1],
            dtype=np.int64,
        )
        others = [table.video(int(r)).id for r in rows[1:]]
        query = engine.hydrate(FeedRequest(x.user, len(rows), request_id, x.ts))
        feats = extract(query, rows, engine.pipeline.scorer.smoothing)
        if engine.model.ready():
            probs = engine.model.predict(feats)
            liked = positive and x.rating is not None and x.rating >= 4.5
            for head, label in (("finish", positive), ("like", liked)):
                col = probs[:, HEADS.index(head)]
                labels, scores = self.scored[head]
                labels.extend([float(label)] + [0.0] * len(others))
                scores.extend(float(v) for v in col)
            cands = Candidates(rows, np.zeros(len(rows), np.int16), np.full(len(rows), ""))
            labels, scores = self.scored["heuristic"]
            labels.extend([float(positive)] + [0.0] * len(others))
            scores.extend(float(v) for v in engine.pipeline.scorer.score(query, cands))
        version = engine.model.version()
        self.log.events.append_impressions(
            [
                Impression(
                    request_id=request_id,
                    position=i,
                    user_id=x.user,
                    video_id=vid,
                    source="replay",
                    score=0.0,
                    model_version=version,
                    ts=x.ts,
                    features=feats.record(query, i),
                )
                for i, vid in enumerate([x.item, *others])
            ]
        )
        chosen = self._events(x, positive, request_id)
        result = engine.ingest(chosen)
        if result.rejected:
            raise ValueError(f"replayed events rejected: {result.rejected[:3]}")
        events = list(chosen)
        for vid in others:
            for kind in ("play", "skip"):
                self._n += 1
                events.append(
                    {
                        "event_id": f"replay-{self._n}",
                        "type": kind,
                        "user_id": x.user,
                        "video_id": vid,
                        "ts": x.ts,
                        "request_id": request_id,
                    }
                )
        self.log.events.append([Event.model_validate(e) for e in events], x.ts)
        self.trainer.step()
        self._interactions += 1
        if self.sync_every is not None and self._interactions % self.sync_every == 0:
            self._sync()

    def figures(self) -> dict[str, Any]:
        """Per-head AUC of the ranker as served, and the trainer's own figures."""
        out: dict[str, Any] = {"syncs": self.syncs, "learned_pages": self.learned_pages}
        for head, (labels, scores) in self.scored.items():
            got = metrics.auc(labels, scores)
            out[f"auc_{head}"] = round(got, 4) if got is not None else None
        out["scored"] = len(self.scored["finish"][0])
        status = self.trainer.status()
        out["examples_trained"] = status["examples_trained"]
        out["trainer_auc"] = {
            h: f.get("auc") for h, f in status.get("heads", {}).items() if f.get("auc") is not None
        }
        return out


@dataclass
class _Score:
    ranks: list[int | None] = field(default_factory=list)
    exposure: dict[str, int] = field(default_factory=dict)
    novelty: list[float] = field(default_factory=list)
    seconds: float = 0.0


def replay(
    dataset: Dataset,
    systems: list[System],
    ks: tuple[int, ...] = (10, 20),
    positive_rating: float = 4.0,
    limit: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run the protocol over `dataset` (the first `limit` interactions); the report."""
    interactions = dataset.interactions[:limit] if limit else dataset.interactions
    k_max = max(ks)
    scores = {s.name: _Score() for s in systems}
    known: set[str] = set()
    positives: dict[str, int] = {}
    total_positives = 0
    tests = 0
    for n, x in enumerate(interactions, start=1):
        positive = is_positive(x, positive_rating)
        if positive:
            tests += 1
            for system in systems:
                started = time.perf_counter()
                ranking = system.recommend(x.user, x.ts, k_max)
                score = scores[system.name]
                score.seconds += time.perf_counter() - started
                score.ranks.append(metrics.rank_of(x.item, ranking))
                for item in ranking[: min(ks)]:
                    score.exposure[item] = score.exposure.get(item, 0) + 1
                    if total_positives:
                        score.novelty.append(max(positives.get(item, 0), 1) / total_positives)
        new_item = x.item not in known
        known.add(x.item)
        for system in systems:
            started = time.perf_counter()
            if new_item:  # it exists from its first interaction on, after that test
                system.add_item(x.item, x.ts)
            system.learn(x, positive)
            scores[system.name].seconds += time.perf_counter() - started
        if positive:
            positives[x.item] = positives.get(x.item, 0) + 1
            total_positives += 1
        if progress is not None:
            progress(n)
    replayed = Dataset(dataset.name, interactions, signal=dataset.signal)
    report: dict[str, Any] = {
        "dataset": {
            **replayed.describe(),
            "replayed": len(interactions),
            "rating_as_watch_ratio": dataset.signal == "rating",
        },
        "protocol": {
            "order": "time order; test then train; an item joins the catalog after its "
            "first interaction",
            "positive": f"rating >= {positive_rating}"
            if dataset.signal == "rating"
            else "watch_ratio >= 0.8, an engagement event, or every interaction",
            "ranking": "full catalog known so far, items the user already interacted with excluded",
            "ks": list(ks),
            "tests": tests,
        },
        "systems": {},
    }
    catalog = len(known)
    for name, score in scores.items():
        row: dict[str, Any] = {}
        for k in ks:
            row[f"hr@{k}"] = _mean(metrics.hit(r, k) for r in score.ranks)
            row[f"ndcg@{k}"] = _mean(metrics.ndcg(r, k) for r in score.ranks)
            row[f"mrr@{k}"] = _mean(metrics.mrr(r, k) for r in score.ranks)
        k = min(ks)
        exposures = list(score.exposure.values()) + [0] * (catalog - len(score.exposure))
        row[f"coverage@{k}"] = round(metrics.coverage(score.exposure, catalog), 4)
        row[f"gini@{k}"] = round(metrics.gini(exposures), 4)
        row[f"novelty@{k}"] = round(metrics.novelty(score.novelty), 4)
        row["seconds"] = round(score.seconds, 1)
        report["systems"][name] = row
    return report


def _mean(values: Any) -> float:
    got = list(values)
    return round(float(np.mean(got)), 5) if got else math.nan
