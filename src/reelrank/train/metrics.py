"""Progressive (test-then-train) model metrics over a sliding window of examples."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..evaluate.metrics import auc
from ..rank.model import BINARY_HEADS, HEADS


class ProgressiveMetrics:
    """Predictions made before training on each batch, kept for the last `window`.

    The summary (a sort per head over the window) is recomputed once `refresh` new
    examples (a tenth of those seen, while fewer) have arrived since the last one, not at
    every status publication."""

    def __init__(self, window: int = 20_000, refresh: int = 1_000) -> None:
        self.window = window
        self.refresh = refresh
        self.preds = np.zeros((window, len(HEADS)), dtype=np.float32)
        self.labels = np.zeros((window, len(HEADS)), dtype=np.float32)
        self.n = 0  # total recorded
        self._summary: tuple[int, dict[str, dict[str, Any]]] | None = None

    def add(self, preds: np.ndarray, labels: np.ndarray) -> None:
        preds, labels = preds[-self.window :], labels[-self.window :]
        at = (self.n + np.arange(len(preds))) % self.window
        self.preds[at] = preds
        self.labels[at] = labels
        self.n += len(preds)

    def summary(self) -> dict[str, dict[str, Any]]:
        due = min(self.refresh, max(1, self.n // 10))  # often while the window fills
        if self._summary is not None and self.n - self._summary[0] < due:
            return self._summary[1]
        out = self._compute()
        self._summary = (self.n, out)
        return out

    def _compute(self) -> dict[str, dict[str, Any]]:
        k = min(self.n, self.window)
        out: dict[str, dict[str, Any]] = {}
        for j, head in enumerate(HEADS):
            p = np.clip(self.preds[:k, j].astype(np.float64), 1e-6, 1 - 1e-6)
            y = self.labels[:k, j].astype(np.float64)
            entry: dict[str, Any] = {"n": k}
            if k:
                entry["logloss"] = round(
                    float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()), 5
                )
                entry["predicted_rate"] = round(float(p.mean()), 5)
                entry["observed_rate"] = round(float(y.mean()), 5)
                if head in BINARY_HEADS:
                    a = auc(y, p)
                    entry["auc"] = None if a is None else round(a, 5)
            out[head] = entry
        return out
