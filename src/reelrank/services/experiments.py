"""The experiments use case: create, stop, list and report A/B experiments, stored as
catalog controls so every process applies them (through the catalog's change feed)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ..errors import ReelrankError
from ..experiments.registry import CONTROL_KIND, ExperimentBook, parse_spec
from ..experiments.report import Tracker
from ..state.changes import CatalogFollower
from ..storage import CONTROLS, CatalogChange, Store

log = logging.getLogger(__name__)


class ExperimentService:
    def __init__(
        self,
        book: ExperimentBook,
        store: Store,
        changes: CatalogFollower,
        flush_impressions: Callable[[], int],
    ) -> None:
        self.book = book
        self.store = store
        self.tracker = Tracker(store)
        self._flush = flush_impressions
        changes.on(CONTROLS, self._on_change, kind=CONTROL_KIND)

    def load(self) -> None:
        """Apply stored experiments and stops; give settings-defined experiments their
        first start time, kept across restarts."""
        catalog = self.store.catalog
        stored = dict(catalog.iter_controls(CONTROL_KIND))
        for body in stored.values():
            self.book.restore(body)
        for exp in list(self.book.experiments.values()):
            if exp.spec.id not in stored:
                catalog.put_control(CONTROL_KIND, exp.spec.id, self.book.control_body(exp))
            else:
                exp.started_at = float(stored[exp.spec.id].get("started_at", exp.started_at))

    def _on_change(self, change: CatalogChange) -> None:
        """An experiment created or stopped, by this process or another."""
        body = self.store.catalog.get_control(CONTROL_KIND, change.key)
        if body is None:
            return
        try:
            self.book.restore(body)
        except ReelrankError as exc:  # e.g. overlaps one of this process's settings
            log.warning("stored experiment %s not applied: %s", body.get("id"), exc)

    def create(self, raw: Any) -> dict[str, Any]:
        spec = parse_spec(raw, "body")
        exp = self.book.create(spec, time.time())
        self.store.catalog.put_control(CONTROL_KIND, spec.id, self.book.control_body(exp))
        return exp.describe()

    def stop(self, experiment_id: str) -> dict[str, Any]:
        exp = self.book.stop(experiment_id, time.time())
        self.store.catalog.put_control(CONTROL_KIND, exp.spec.id, self.book.control_body(exp))
        return exp.describe()

    def describe_all(self) -> list[dict[str, Any]]:
        return [e.describe() for e in self.book.experiments.values()]

    def report(self, experiment_id: str, level: float = 0.95) -> dict[str, Any]:
        """Per-arm results from the impression and event logs (served impressions are
        flushed first, so the report includes this process's latest pages)."""
        exp = self.book.get(experiment_id)
        self._flush()
        return self.tracker.report(exp, level)
