"""Champion and challenger: the learned ranker serves only while it orders recent traffic
better than the heuristic scorer does.

Progressive validation, test then train: before the trainer learns from a batch, the
learned model's fused score and the heuristic's score (logged with each impression) are
compared on it. The measure is the share of correctly ordered pairs within each page
(impressions of one request): a pair whose realised values differ counts 1 for a ranker
that put the better one higher, a half for a tie, and weighs as much as the two values
differ. The realised value of an impression is the fusion applied to what happened
(finish, like, share, ..., watch time), so the comparison asks exactly what the feed
optimises: telling a long video watched through from a skip matters more than telling
two near-equal videos apart. Pairs are kept for the last `window`;
the learned ranker is the champion while its share beats the heuristic's by `margin`
over at least `min_pairs` pairs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..rank.value import realised_value


class ChampionChallenger:
    def __init__(
        self,
        weights: dict[str, float],
        window: int = 20_000,
        min_pairs: int = 2_000,
        margin: float = 0.0,
    ) -> None:
        self.weights = weights
        self.window = window
        self.min_pairs = min_pairs
        self.margin = margin
        self.learned = np.zeros(window, dtype=np.float32)  # per pair: 1, 0.5 or 0
        self.heuristic = np.zeros(window, dtype=np.float32)
        self.weight = np.zeros(window, dtype=np.float32)  # per pair: the value difference
        self.pairs = 0  # total recorded

    def add(
        self,
        request_ids: list[str],
        learned: np.ndarray,
        heuristic: np.ndarray,
        labels: np.ndarray,
        duration_s: np.ndarray,
        mean_duration_s: float,
    ) -> None:
        """One batch, scored before training: learned and heuristic scores (n,), labels
        (n, len(HEADS)), each impression's duration. Impressions without a heuristic
        score (NaN) are left out."""
        value = realised_value(labels, duration_s, mean_duration_s, self.weights)
        groups: dict[str, list[int]] = {}
        for i, rid in enumerate(request_ids):
            if np.isfinite(heuristic[i]):
                groups.setdefault(rid, []).append(i)
        got_l: list[np.ndarray] = []
        got_h: list[np.ndarray] = []
        got_w: list[np.ndarray] = []
        for idx in groups.values():
            if len(idx) < 2:
                continue
            ix = np.asarray(idx)
            a, b = np.triu_indices(len(ix), k=1)
            dv = value[ix[a]] - value[ix[b]]
            keep = np.abs(dv) > 1e-9
            if not keep.any():
                continue
            a, b, sign = a[keep], b[keep], np.sign(dv[keep])
            got_w.append(np.abs(dv[keep]))
            for scores, out in ((learned, got_l), (heuristic, got_h)):
                ds = (scores[ix[a]] - scores[ix[b]]) * sign
                out.append(np.where(ds > 0, 1.0, np.where(ds == 0, 0.5, 0.0)))
        if not got_l:
            return
        vl = np.concatenate(got_l)[-self.window :]
        vh = np.concatenate(got_h)[-self.window :]
        vw = np.concatenate(got_w)[-self.window :]
        at = (self.pairs + np.arange(len(vl))) % self.window
        self.learned[at] = vl
        self.heuristic[at] = vh
        self.weight[at] = vw
        self.pairs += len(vl)

    def status(self) -> dict[str, Any]:
        k = min(self.pairs, self.window)
        w = self.weight[:k].astype(np.float64)
        total = float(w.sum())
        learned = float(self.learned[:k] @ w) / total if total > 0 else None
        heuristic = float(self.heuristic[:k] @ w) / total if total > 0 else None
        wins = (
            k >= self.min_pairs
            and learned is not None
            and heuristic is not None
            and learned > heuristic + self.margin
        )
        return {
            "pairs": k,
            "learned": None if learned is None else round(learned, 5),
            "heuristic": None if heuristic is None else round(heuristic, 5),
            "min_pairs": self.min_pairs,
            "margin": self.margin,
            "champion": "learned" if wins else "heuristic",
        }

    def state(self) -> dict[str, Any]:
        return {
            "learned": self.learned,
            "heuristic": self.heuristic,
            "weight": self.weight,
            "pairs": self.pairs,
        }

    def load_state(self, raw: dict[str, Any]) -> None:
        if len(raw["learned"]) == self.window and "weight" in raw:
            self.learned[:] = np.asarray(raw["learned"])
            self.heuristic[:] = np.asarray(raw["heuristic"])
            self.weight[:] = np.asarray(raw["weight"])
            self.pairs = int(raw["pairs"])
