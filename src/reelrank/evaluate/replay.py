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
from typing import Any

import numpy as np

from ..engine import Engine
from ..pipeline.feed import FeedTrace
from ..rank.cascade import sequence_feature
from ..rank.features import JUDGE_ONLY, extract
from ..schema import Event, EventType, Impression
from ..types import Candidates
from . import metrics
from .baselines import ItemKNNSystem, PopularSystem, RecentPopularSystem, System
from .clocked import ClockedTrainer
from .data import Dataset, Interaction, is_positive
from .funnel import Funnel

__all__ = [
    "ItemKNNSystem",
    "PopularSystem",
    "RecentPopularSystem",
    "ReelrankSystem",
    "System",
    "replay",
]

DURATION_MS = 300_000  # every item's length: watch ratios carry the signal


class ReelrankSystem:
    """The engine itself: items become videos (title as caption, genres as hashtags),
    interactions become the events an app would send, and rankings are feed pages
    computed at the interaction's time without being logged as served.

    With a `trainer` (what `reelrank serve` runs by default) the engine also learns
    online. A log of ratings says nothing of what else was on screen, so each tested
    interaction whose item reelrank had among its candidates becomes a logged page in the
    trainer's own log: the chosen item; `negatives` drawn at random from the other
    candidates (uniform draws teach the ranker how likely each candidate is to be the
    chosen one); once the learned ranker exists, the best other candidate of each ranker,
    the pairs the champion/challenger comparison judges them on, marked as judged only
    (a ranker's best pick that the user did not choose now is often chosen later: as a
    trained skip it would be a false negative); each impression with the features the
    ranker saw, then the chosen item's events (play, watch, finish, like) and a play and
    skip for the others. The trainer joins and trains on these as on a live log,
    publishes on the event clock, and the learned ranker serves while it orders these
    pages better than the heuristic (champion/challenger). The engine's own state receives
    only the chosen item's events: the other page items are the trainer's negatives, not
    things the user did, so they are neither marked seen nor counted as skips.
    """

    def __init__(
        self,
        engine: Engine,
        dataset: Dataset,
        name: str = "reelrank",
        trainer: ClockedTrainer | None = None,
        negatives: int = 16,
        seed: int = 0,
    ) -> None:
        if engine.event_clock is None:
            raise ValueError("a replay drives an event-clocked engine: Engine(..., clock=...)")
        self.engine = engine
        self.clock = engine.event_clock
        self.dataset = dataset
        self.name = name
        self.trainer = trainer
        self.log = trainer.trainer.store if trainer is not None else None
        self.negatives = negatives
        self._rng = np.random.default_rng(seed)
        self._n = 0
        self.funnel = Funnel()
        self._trace: FeedTrace | None = None
        self._traced: tuple[str, float, str] | None = None  # (user, ts, item) of the last test
        self._ranker = "heuristic"  # which ranker ranked the last test's page
        self.pages_by_ranker: dict[str, int] = {}

    def _at(self, ts: float) -> None:
        """The engine's clock moves to the interaction's time."""
        self.clock.advance(ts)

    def add_item(self, item: str, ts: float) -> None:
        self._at(ts)
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
        self._at(ts)
        feed = self.engine.feed(user, n=k, now=ts, record=False, trace=True, explain=False)
        self._trace, self._traced, self._ranker = feed.trace, None, feed.ranker
        self._asked = (user, ts)
        self.pages_by_ranker[feed.ranker] = self.pages_by_ranker.get(feed.ranker, 0) + 1
        return [it.video_id for it in feed.items]

    def tested(self, item: str) -> None:
        """The item chosen in the test just ranked: follow it through the funnel."""
        self._traced = (*self._asked, item)
        self.funnel.add(self._trace, self.engine.state.table.row_of(item))

    def learn(self, x: Interaction, positive: bool) -> None:
        self._at(x.ts)
        if self.trainer is not None and not self._log_page(x, positive):
            # No page: the events alone, as an app's log holds engagements that came from
            # elsewhere than the feed (the sequence model learns from every engagement).
            assert self.log is not None
            events = [Event.model_validate(e) for e in self._events(x, positive)]
            self.log.events.append(events, x.ts)
        result = self.engine.ingest(self._events(x, positive))
        if result.rejected:
            raise ValueError(f"replayed events rejected: {result.rejected[:3]}")
        self.engine.tick()  # its jobs, on the event clock
        if self.trainer is not None:
            self.trainer.tick(x.ts)

    def _log_page(self, x: Interaction, positive: bool) -> bool:
        """Log the page this test stands for, when the chosen item was among reelrank's
        own candidates for it (the ranker only ever scores candidates, so a page with an
        item recall missed would teach it a difference serving never sees)."""
        assert self.log is not None
        engine = self.engine
        table = engine.state.table
        row = table.row_of(x.item)
        rows: np.ndarray
        trace = self._trace if self._traced == (x.user, x.ts, x.item) else None
        if trace is None or not np.any(trace.filtered == row):
            return False
        self._n += 1
        request_id = f"replay-page-{self._n}"
        query = trace.query  # the test's own request: the state is what it was then
        rows = trace.filtered
        names = engine.pipeline.channel_names
        others = rows != row
        # The best other candidate of each ranker, once both rankers exist: the pairs the
        # champion/challenger comparison judges them on (a top-of-the-list test, fair to
        # both: each ranker's own pick counts against it alone). They are judged, never
        # learned from: nobody saw this page, and a ranker's best other pick is often a
        # video the user chooses a little later, so a skip would be a false negative
        # aimed at the best candidates (training on them made the learned ranker's pages
        # for a returning user a fifth to a half as good as the heuristic's).
        hard = np.zeros(0, np.int64)
        if engine.model.trained():
            hard = _best(trace.heuristic, others, 1)
            taken = [row, *rows[hard].tolist()]
            if self._ranker == "learned":  # the page's own ranking is the learned one's
                mine = _first(rows, trace.ranked, taken, 1)
            else:
                cands = Candidates(
                    rows, np.zeros(len(rows), np.int16), np.full(len(rows), "", object)
                )
                view = trace.recall_view(rows, names)
                by_learned = engine.pipeline.ranker.learned_scores(query, cands, view)
                mine = _best(by_learned, ~np.isin(rows, taken), 1)
            hard = np.concatenate([hard, mine])
        # Random draws from the other candidates teach the ranker how likely each one is
        # to be the chosen one; they train but are left out of the comparison.
        rest = np.flatnonzero(others & ~np.isin(np.arange(len(rows)), hard))
        drawn = self._rng.choice(rest, min(self.negatives, len(rest)), replace=False)
        at = np.concatenate([[int(np.flatnonzero(~others)[0])], hard, drawn]).astype(np.int64)
        page = rows[at]
        feats = extract(
            query,
            page,
            engine.pipeline.scorer.smoothing,
            trace.recall_view(page, names),
            sequence_feature(query, page, engine.sequence),
        )
        # Scores as the heuristic gave them among all the candidates; NaN leaves an
        # impression out of the comparison.
        heuristic = trace.heuristic[at].astype(np.float64)
        heuristic[1 + len(hard) :] = np.nan
        if not len(hard):
            heuristic[:] = np.nan
        feats.heuristic = heuristic
        rows = page
        version = engine.model.version()
        ids = [table.video(r).id for r in rows.tolist()]
        records = feats.records(query, np.arange(len(rows)))
        for record in records[1 : 1 + len(hard)]:
            record[JUDGE_ONLY] = True
        # Built here from checked values: no validation needed; one record per page is
        # constructed, the others are copies with their own fields (several times cheaper).
        first = Impression.model_construct(
            request_id=request_id,
            position=0,
            user_id=x.user,
            video_id=ids[0],
            source="replay",
            score=0.0,
            model_version=version,
            ts=x.ts,
            features=records[0],
        )
        later = zip(ids[1:], records[1:], strict=True)  # the page past its first video
        self.log.events.append_impressions(
            [
                first,
                *(
                    first.model_copy(update={"position": i, "video_id": vid, "features": record})
                    for i, (vid, record) in enumerate(later, start=1)
                ),
            ]
        )
        events = [Event.model_validate(e) for e in self._events(x, positive, request_id)]
        play = Event.model_construct(  # the same fields a validated play has
            event_id="", type=EventType.PLAY, user_id=x.user, video_id=ids[0],
            ts=float(x.ts), request_id=request_id,
        )  # fmt: skip
        for vid in ids[1:]:
            for kind in (EventType.PLAY, EventType.SKIP):
                self._n += 1
                events.append(
                    play.model_copy(
                        update={"event_id": f"replay-{self._n}", "type": kind, "video_id": vid}
                    )
                )
        self.log.events.append(events, x.ts)
        return True

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

    def figures(self) -> dict[str, Any]:
        """Pages by ranker, and the trainer's figures (champion/challenger included)."""
        out: dict[str, Any] = {"pages_by_ranker": dict(self.pages_by_ranker)}
        if self.trainer is not None:
            out["trainer"] = self.trainer.status()
        return out


def _first(rows: np.ndarray, ranking: np.ndarray, taken: list[int], k: int) -> np.ndarray:
    """Indices in `rows` of the first k of `ranking` (rows, best first) not `taken`."""
    picked = [r for r in ranking.tolist() if r not in taken][:k]
    return np.array([int(np.flatnonzero(rows == r)[0]) for r in picked], dtype=np.int64)


def _best(scores: np.ndarray, allowed: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best scores among the allowed, best first."""
    idx = np.flatnonzero(allowed)
    return idx[np.argsort(-scores[idx], kind="stable")[:k]]


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
                if isinstance(system, ReelrankSystem):
                    system.tested(x.item)
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
    for system in systems:
        if isinstance(system, ReelrankSystem):
            report["systems"][system.name]["funnel"] = system.funnel.report()
    return report


def _mean(values: Any) -> float:
    got = list(values)
    return round(float(np.mean(got)), 5) if got else math.nan
