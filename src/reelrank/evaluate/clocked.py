"""The online trainer on a replayed or simulated clock.

`serve` runs the trainer beside the API and publishes on wall-clock intervals. A replay
or a simulation runs faster than the wall clock, so here the trainer is stepped by the
caller and publishes on the event clock: touched embedding rows every `sync_interval_s`,
dense weights every `dense_sync_interval_s` (or, `daily`, everything once per simulated
day), and serving applies them at once. The two-tower index is rebuilt every
`two_tower_refresh_s` of event time after new weights. Partial batches wait for a full
one (`train_batch`) and join windows close by event time only (never by the wall clock,
as a serving trainer's do when input stops), so results do not depend on the machine's
speed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..engine import Engine
from ..storage import Store


class ClockedTrainer:
    def __init__(self, engine: Engine, log: Store | None = None, daily: bool = False) -> None:
        from ..train.trainer import OnlineTrainer

        self.engine = engine
        settings = dataclasses.replace(engine.settings, train_max_wait_s=1e12)
        # Windows close by event time alone: a pause of the wall clock between steps
        # (a slow rebuild) must not close them at today's date.
        self.trainer = OnlineTrainer(settings, log or engine.store, engine.params, idle_close=False)
        self.trainer.publish_full()
        engine.model.poll()
        self.daily = daily
        self.last_sparse = self.last_dense = self.last_index = -np.inf
        self.day: int | None = None
        self.published = {"sparse": 0, "dense": 0}  # examples trained at the last of each
        self.syncs = 0
        # A log of its own (a replay's) is read by this trainer alone: what it has read is
        # released, so a long replay does not hold every page's features in memory.
        self._release = getattr(log.events, "release", None) if log is not None else None

    def tick(self, now: float) -> None:
        """Train what the logs hold; publish what changed once its interval has passed
        (an interval with nothing new trained publishes nothing)."""
        s = self.engine.settings
        t = self.trainer
        t.step()
        if self._release is not None:
            self._release(t.event_offset, t.impression_offset)
        trained = t.examples_trained
        published = False
        if self.daily:
            day = int(now // 86400)
            if self.day is not None and day != self.day and trained > self.published["dense"]:
                t.publish_sparse()
                t.publish_dense()
                self.published = {"sparse": trained, "dense": trained}
                published = True
            self.day = day
        else:
            if now - self.last_sparse >= s.sync_interval_s and trained > self.published["sparse"]:
                t.publish_sparse()
                self.last_sparse, self.published["sparse"], published = now, trained, True
            if (
                now - self.last_dense >= s.dense_sync_interval_s
                and trained > self.published["dense"]
            ):
                t.publish_dense()
                self.last_dense, self.published["dense"], published = now, trained, True
        if published:
            self.syncs += 1
            self.engine.sync_model()
            due = now - self.last_index >= s.two_tower_refresh_s or self.daily
            if due and self.engine.refresh_indexes(force=True):
                self.last_index = now

    def status(self) -> dict[str, Any]:
        st = self.trainer.status()
        return {
            "examples_trained": self.trainer.examples_trained,
            "syncs": self.syncs,
            "join": vars(self.trainer.joiner.stats),
            "champion": st["champion"],
            "sequence": st["sequence"],
            "auc": {h: f.get("auc") for h, f in st["heads"].items() if f.get("auc") is not None},
        }
