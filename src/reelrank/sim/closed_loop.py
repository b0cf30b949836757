"""Closed-loop simulation: simulated viewers (sim.viewers) watch the feeds of reelrank and
of reference systems (sim.reference_feeds), session after session, while new videos
arrive.

Every system meets the same viewers (same planted tastes, fresh satiation), the same
schedule of sessions, the same arrivals and the same random stream, so differences come
from the feeds alone. A session: the app fetches a page, the viewer goes through it video
by video (reacting, satiating, maybe leaving), the app sends the page's events, and
fetches the next page until the viewer leaves.

The simulation keeps its own clock, which starts at the wall clock and runs ahead of it:
round r gives every viewer one session, the p-th of the round starting at
`start + (r * viewers + p) * round_s / viewers`, whatever the feeds did before, so every
system lives on the same timeline. Within a session each video moves the clock by its
watch time and a second's swipe; pages are requested, and events stamped, at that
clock, so decays, daily fatigue caps, join windows and pool timers see simulated time.
Sessions may overlap in simulated time, as on a real app, but run one after another, so
events reach a system in session order (out of time order by at most a session's
length). New videos arrive at evenly spaced sessions over the first `ARRIVAL_SPAN` of
the run.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..engine import Engine
from ..evaluate.clocked import ClockedTrainer
from .catalog import SimCatalog
from .tally import Tally
from .viewers import Behaviour, Reaction, SessionMood, SimViewer, match, react

ARRIVAL_SPAN = 0.75  # arrivals are spread over this share of the run's sessions
SWIPE_S = 1.0  # seconds between one video and the next


@dataclass(frozen=True)
class Viewed:
    """One video the viewer went through: catalog index, reaction, when it started."""

    video: int
    reaction: Reaction
    at: float


class FeedSystem(Protocol):
    """A feed under closed-loop simulation; videos are catalog indices, times are the
    simulation's clock."""

    name: str

    def start(self, catalog: SimCatalog, viewers: list[SimViewer], now: float) -> None:
        """Load the back catalog (`catalog.initial` videos) and the viewers."""

    def upload(self, videos: list[int], now: float) -> None:
        """New videos arrive."""

    def page(self, viewer: SimViewer, n: int, now: float) -> tuple[list[int], str | None]:
        """Up to n videos for the viewer, and the page's request id if any."""

    def send(self, viewer: SimViewer, request_id: str | None, shown: list[Viewed]) -> None:
        """The events of the videos the viewer went through on one page."""

    def end_session(self, now: float) -> None:
        """A session ended (periodic work between sessions)."""


class ReelrankFeed:
    """The engine in process, fed every event a real app sends with the page's request
    id. Its state updaters learn from every event; `trainer`, when given, is the online
    trainer stepped on the simulation's clock."""

    name = "reelrank"

    def __init__(
        self, engine: Engine, trainer: ClockedTrainer | None = None, name: str = "reelrank"
    ) -> None:
        if engine.event_clock is None:
            raise ValueError("a simulation drives an event-clocked engine: Engine(..., clock=...)")
        self.name = name
        self.engine = engine
        self.clock = engine.event_clock
        self.trainer = trainer
        self._ids = itertools.count()
        self.ids: list[str] = []
        self.index: dict[str, int] = {}
        self.catalog: SimCatalog | None = None
        self.rankers: dict[str, int] = {}  # pages served by each ranker

    def _at(self, now: float) -> None:
        """The engine's clock moves to the simulation's."""
        self.clock.advance(now)

    def start(self, catalog: SimCatalog, viewers: list[SimViewer], now: float) -> None:
        self._at(now)
        self.catalog = catalog
        self.ids = catalog.ids
        self.index = {v: i for i, v in enumerate(catalog.ids)}
        back = [catalog.record(i, now - float(catalog.age_s[i])) for i in range(catalog.initial)]
        for i in range(0, len(back), 2000):
            _check(self.engine.upsert_videos(back[i : i + 2000]))
        users = [
            {"id": v.id, "interests": [catalog.tag_names[t] for t in v.declared]} for v in viewers
        ]
        for i in range(0, len(users), 2000):
            _check(self.engine.upsert_users(users[i : i + 2000]))

    def upload(self, videos: list[int], now: float) -> None:
        self._at(now)
        assert self.catalog is not None
        _check(self.engine.upsert_videos([self.catalog.record(i, now) for i in videos]))

    def page(self, viewer: SimViewer, n: int, now: float) -> tuple[list[int], str | None]:
        self._at(now)
        feed = self.engine.feed(viewer.id, n=n, now=now)
        self.rankers[feed.ranker] = self.rankers.get(feed.ranker, 0) + 1
        return [self.index[it.video_id] for it in feed.items], feed.request_id

    def send(self, viewer: SimViewer, request_id: str | None, shown: list[Viewed]) -> None:
        events = [e for v in shown for e in self._events(viewer, request_id, v)]
        result = self.engine.ingest(events)
        if result.rejected:
            raise ValueError(f"the engine rejected simulated events: {result.rejected[:3]}")

    def _events(self, viewer: SimViewer, request_id: str | None, v: Viewed) -> list[Any]:
        """What the app sends for one video: impression and play when it starts, the
        rest when the viewer moves on."""
        r = v.reaction
        done = v.at + r.watch_ms / 1000.0
        kinds: list[tuple[str, float, dict[str, Any]]] = [
            ("impression", v.at, {}),
            ("play", v.at, {}),
            ("watch", done, {"watch_ms": r.watch_ms}),
        ]
        if r.skipped:
            kinds.append(("skip", done, {"watch_ms": r.watch_ms}))
        for kind, happened in (
            ("finish", r.finished),
            ("like", r.liked),
            ("share", r.shared),
            ("comment", r.commented),
            ("follow", r.followed),
            ("not_interested", r.not_interested),
        ):
            if happened:
                kinds.append((kind, done, {}))
        base: dict[str, Any] = {"user_id": viewer.id, "video_id": self.ids[v.video]}
        if request_id is not None:
            base["request_id"] = request_id
        return [
            {"event_id": f"{viewer.id}-{next(self._ids)}", "type": kind, "ts": ts, **base, **extra}
            for kind, ts, extra in kinds
        ]

    def end_session(self, now: float) -> None:
        self._at(now)
        self.engine.tick()  # its jobs, on the simulation's clock
        if self.trainer is not None:
            self.trainer.tick(now)


def _check(results: list[dict[str, Any]]) -> None:
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        raise ValueError(f"the engine refused simulated records: {errors[:3]}")


def plan_sessions(
    n_viewers: int, sessions: int, arrivals: int, seed: int
) -> tuple[list[np.ndarray], np.ndarray]:
    """Each round's order of viewers, and the session step at which each arrival is
    uploaded (before that session)."""
    rng = np.random.default_rng([seed, 1])
    rounds = [rng.permutation(n_viewers) for _ in range(sessions)]
    total = n_viewers * sessions
    at = np.floor(np.arange(arrivals) * (ARRIVAL_SPAN * total) / max(arrivals, 1)).astype(int)
    return rounds, at


def run_closed_loop(
    system: FeedSystem,
    catalog: SimCatalog,
    viewers: list[SimViewer],
    sessions: int,
    behaviour: Behaviour,
    start: float,
    page: int = 8,
    seed: int = 7,
    round_hours: float = 8.0,
    discovery_impressions: int = 10,
    progress: Callable[[int], None] | None = None,
) -> Tally:
    """Run `sessions` rounds of every viewer's session against one system, from the
    simulated time `start`; the tally of what happened."""
    b = behaviour
    viewers = [v.fresh() for v in viewers]
    arrivals = len(catalog) - catalog.initial
    rounds, arrival_steps = plan_sessions(len(viewers), sessions, arrivals, seed)
    rng = np.random.default_rng([seed, 2])
    tally = Tally(catalog, discovery_impressions)
    gap = round_hours * 3600.0 / len(viewers)
    system.start(catalog, viewers, start)
    latest = start  # the newest simulated time any event carried
    uploaded = 0
    step = 0
    for r, order in enumerate(rounds):
        for u in order.tolist():
            begin = start + step * gap
            due = int(np.searchsorted(arrival_steps, step, side="right"))
            if due > uploaded:
                videos = list(range(catalog.initial + uploaded, catalog.initial + due))
                system.upload(videos, begin)
                tally.arrived(videos, step, begin)
                uploaded = due
            end = _session(system, viewers[u], catalog, b, page, rng, tally, r, step, begin)
            latest = max(latest, end)
            system.end_session(latest)
            step += 1
            if progress is not None:
                progress(1)
    tally.span_s = latest - start
    return tally


def _session(
    system: FeedSystem,
    viewer: SimViewer,
    catalog: SimCatalog,
    b: Behaviour,
    n: int,
    rng: np.random.Generator,
    tally: Tally,
    round_: int,
    step: int,
    clock: float,
) -> float:
    """One session from `clock`; returns the clock at its end."""
    mood = SessionMood(b)
    tally.begin_session(round_)
    leave = False
    while not leave:
        videos, request_id = system.page(viewer, n, clock)
        if not videos:
            break
        shown: list[Viewed] = []
        for i in videos:
            duration = int(catalog.duration_ms[i])
            m = match(viewer.interest(catalog.tags[i], b), float(catalog.quality[i]))
            r = react(m, duration, rng, b)
            viewer.satiate(catalog.tags[i], b)
            shown.append(Viewed(i, r, clock))
            tally.viewed(i, r, step, clock)
            clock += r.watch_ms / 1000.0 + SWIPE_S
            if mood.after(r, duration, rng):
                leave = True
                break
        system.send(viewer, request_id, shown)
    viewer.rest(b)
    tally.end_session()
    return clock
