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

Ordering the videos of a page is not choosing them: a ranker can order pages well and
fill them worse. So live pages also say which ranker served them (`served_by`): the
serving path gives a small share of pages to the ranker that is not the champion (the
`champion_holdout` setting), at random by request, and the mean realised value of the
viewed impressions of each ranker's pages is compared, an A/B test inside the engine.
Once both rankers have `min_impressions` of evidence, that comparison decides, with
hysteresis: the challenger takes over only when its mean beats the champion's by two
standard errors of the difference (values are noisy; a coin toss must not flip the
feed). Until then the pairs decide (a replayed log, whose pages nobody served, only ever
has pairs). While served pages are logged but the comparison is not settled either way,
serving splits pages half and half (see `rank/cascade.py`), so it settles in hundreds of
pages, not in the thousands a small holdout would need. The values are forgotten
exponentially over all traffic (a memory of `window` impressions), so a challenger that
served few pages for a while loses its old evidence, the comparison unsettles, and the
rankers are tested half and half again: the learned model keeps changing, the evidence
about what it was does not.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..rank.value import fuse_scores, realised_value
from .joiner import Example

RANKERS = ("learned", "heuristic")


class ChampionChallenger:
    def __init__(
        self,
        weights: dict[str, float],
        window: int = 20_000,
        min_pairs: int = 2_000,
        margin: float = 0.0,
        min_impressions: int = 500,
    ) -> None:
        self.weights = weights
        self.window = window
        self.min_pairs = min_pairs
        self.margin = margin
        self.min_impressions = min_impressions
        # Per ranker, exponentially forgotten sums over the viewed impressions of the pages
        # it served: weight, weight x value, weight x value^2. The weight is the evidence
        # (an impression counts 1 when new, less as it ages); forgetting runs on all
        # traffic, so a challenger that serves few pages loses its old evidence (about a
        # model it no longer is) and is tested again.
        self.keep = 1.0 - 1.0 / window
        self.served = {r: np.zeros(3) for r in RANKERS}
        self.current = "heuristic"  # the champion, decided as evidence arrives
        self.settled = False  # the served pages tell the rankers apart (two standard errors)
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
        mean_duration_s: float | np.ndarray,
        served_by: list[str | None] | None = None,
    ) -> None:
        """One batch, scored before training: learned and heuristic scores (n,), labels
        (n, len(HEADS)), each impression's duration, and which ranker served its page
        (None when no ranker did). Impressions without a heuristic score (NaN) are left
        out of the pairs."""
        value = realised_value(labels, duration_s, mean_duration_s, self.weights)
        if served_by is not None:
            logged = [i for i, r in enumerate(served_by) if r in RANKERS]
            if logged:
                fade = self.keep ** len(logged)
                for ranker in RANKERS:
                    mine = value[[i for i in logged if served_by[i] == ranker]]
                    self.served[ranker] *= fade
                    self.served[ranker] += [len(mine), mine.sum(), (mine * mine).sum()]
        self._add_pairs(request_ids, learned, heuristic, value)
        self._decide()

    def judge(
        self,
        examples: list[Example],
        probs: np.ndarray,
        labels: np.ndarray,
        duration_s: np.ndarray,
        served_mean_s: float,
    ) -> None:
        """A training batch before the trainer learns from it: the learned fusion of the
        model's `probs` against the heuristic score logged with each impression
        (corrections, already judged once, are left out). Watch time is valued against
        the catalog's mean duration logged with each page, the yardstick the ranker
        scored it by; impressions logged without it fall back to `served_mean_s`, the
        mean of what was served (which moves with what the rankers choose)."""
        fresh = [i for i, e in enumerate(examples) if not e.correction]
        if not fresh:
            return
        ix = np.asarray(fresh)
        fallback_ms = served_mean_s * 1000.0
        mean_ms = [examples[i].features.get("mean_duration_ms", fallback_ms) for i in fresh]
        mean_s = np.array(mean_ms, np.float64) / 1000.0
        # No heuristic score: NaN, or null once JSON has carried it (orjson writes NaN so)
        heuristic = np.array(
            [_or_nan(examples[i].features.get("heuristic")) for i in fresh], np.float64
        )
        self.add(
            [examples[i].request_id for i in fresh],
            fuse_scores(probs[ix], self.weights, duration_s[ix], mean_s),
            heuristic,
            labels[ix],
            duration_s[ix],
            mean_s,
            [examples[i].features.get("served_by") for i in fresh],
        )

    def _add_pairs(
        self, request_ids: list[str], learned: np.ndarray, heuristic: np.ndarray, value: np.ndarray
    ) -> None:
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

    def _served(self, ranker: str) -> tuple[int, float | None, float]:
        """Impressions as evidence (faded with age), mean value and the mean's squared
        standard error."""
        w, sv, sq = self.served[ranker]
        if w <= 1e-9:
            return 0, None, 0.0
        mean = sv / w
        var = max(sq / w - mean * mean, 0.0)
        return int(w), float(mean), float(var / w)

    def _decide(self) -> None:
        k = min(self.pairs, self.window)
        (n_l, v_l, se_l), (n_h, v_h, se_h) = self._served("learned"), self._served("heuristic")
        if min(n_l, n_h) >= self.min_impressions and v_l is not None and v_h is not None:
            diff, se = v_l - v_h, float(np.sqrt(se_l + se_h))
            self.settled = abs(diff) > 2.0 * se
            if self.settled:
                self.current = "learned" if diff > 0 else "heuristic"
            return
        self.settled = False
        w = self.weight[:k].astype(np.float64)
        total = float(w.sum())
        wins = (
            k >= self.min_pairs
            and total > 0
            and float(self.learned[:k] @ w) / total
            > float(self.heuristic[:k] @ w) / total + self.margin
        )
        self.current = "learned" if wins else "heuristic"

    def status(self) -> dict[str, Any]:
        k = min(self.pairs, self.window)
        w = self.weight[:k].astype(np.float64)
        total = float(w.sum())
        learned = float(self.learned[:k] @ w) / total if total > 0 else None
        heuristic = float(self.heuristic[:k] @ w) / total if total > 0 else None
        (n_l, v_l, _), (n_h, v_h, _) = self._served("learned"), self._served("heuristic")
        by_pages = min(n_l, n_h) >= self.min_impressions
        return {
            "pairs": k,
            "learned": None if learned is None else round(learned, 5),
            "heuristic": None if heuristic is None else round(heuristic, 5),
            "min_pairs": self.min_pairs,
            "margin": self.margin,
            "served": {
                "learned": {"impressions": n_l, "value": None if v_l is None else round(v_l, 5)},
                "heuristic": {
                    "impressions": n_h,
                    "value": None if v_h is None else round(v_h, 5),
                },
                "min_impressions": self.min_impressions,
            },
            "decided_by": "served pages" if by_pages else "pairs",
            "settled": self.settled,
            "champion": self.current,
        }

    def state(self) -> dict[str, Any]:
        return {
            "learned": self.learned,
            "heuristic": self.heuristic,
            "weight": self.weight,
            "pairs": self.pairs,
            "served_learned": self.served["learned"],
            "served_heuristic": self.served["heuristic"],
            "current": self.current,
        }

    def load_state(self, raw: dict[str, Any]) -> None:
        if len(raw["learned"]) == self.window and "weight" in raw:
            self.learned[:] = np.asarray(raw["learned"])
            self.heuristic[:] = np.asarray(raw["heuristic"])
            self.weight[:] = np.asarray(raw["weight"])
            self.pairs = int(raw["pairs"])
        if "served_learned" in raw and len(raw["served_learned"]) == 3:
            for r in RANKERS:
                self.served[r][:] = np.asarray(raw[f"served_{r}"], dtype=np.float64)
            self.current = str(raw.get("current", "heuristic"))


def _or_nan(value: Any) -> float:
    return np.nan if value is None else float(value)
