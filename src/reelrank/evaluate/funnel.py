"""The funnel of test positives through reelrank's stages: where relevance is lost.

For every tested positive, the item the user actually chose next is followed through the
page reelrank computed for that test: known to the catalog at all; recalled by any
channel; still there after the filters; among the top k by ranker score (before the
policy layer); on the served top k. Each recalled positive is credited to every channel
that returned it, and so is each served hit.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..pipeline.feed import FeedTrace

STAGES = ("in_catalog", "recalled", "filtered", "ranked", "served")


@dataclass
class Funnel:
    k: int = 10
    tests: int = 0
    reached: Counter[str] = field(default_factory=Counter)
    recalled_by: Counter[str] = field(default_factory=Counter)
    hits_by: Counter[str] = field(default_factory=Counter)
    hits_only_by: Counter[str] = field(default_factory=Counter)  # no other channel had it
    candidates: int = 0  # summed over tests: rows recalled (distinct)

    def add(self, trace: FeedTrace | None, row: int) -> None:
        """One test: `row` is the chosen item's catalog row, -1 when it is not known yet."""
        self.tests += 1
        if trace is None:
            return
        self.candidates += len(set(trace.candidates.rows.tolist()))
        if row < 0:
            return
        self.reached["in_catalog"] += 1
        channels = trace.channels_of(row)
        if not channels:
            return
        self.reached["recalled"] += 1
        for name in channels:
            self.recalled_by[name] += 1
        if not np.any(trace.filtered == row):
            return
        self.reached["filtered"] += 1
        if np.any(trace.ranked[: self.k] == row):
            self.reached["ranked"] += 1
        if np.any(trace.served[: self.k] == row):
            self.reached["served"] += 1
            for name in channels:
                self.hits_by[name] += 1
            if len(channels) == 1:
                self.hits_only_by[channels[0]] += 1

    def report(self) -> dict[str, Any]:
        """Shares of the tested positives at each stage, and per channel."""
        n = max(self.tests, 1)
        out: dict[str, Any] = {"k": self.k, "tests": self.tests}
        out["share"] = {s: round(self.reached[s] / n, 4) for s in STAGES}
        ranked = self.reached["ranked"]
        # Hits the policy layer (diversity, exploration slots) cost the ranked top k.
        out["policy_cost"] = round(1 - self.reached["served"] / ranked, 4) if ranked else None
        out["candidates_per_test"] = round(self.candidates / n, 1)
        out["recalled_by"] = {c: round(v / n, 4) for c, v in self.recalled_by.most_common()}
        out["hits_by"] = dict(self.hits_by.most_common())
        out["hits_only_by"] = dict(self.hits_only_by.most_common())
        return out


def funnel_table(name: str, funnel: dict[str, Any]) -> str:
    """One system's funnel as text lines."""
    share = funnel["share"]
    k = funnel["k"]
    lines = [
        f"{name}: funnel of {funnel['tests']} test positives "
        f"({funnel['candidates_per_test']} candidates per test)",
        "  "
        + "  ".join(
            f"{label} {share[s]:.3f}"
            for s, label in zip(
                STAGES,
                ("in catalog", "recalled", "after filters", f"ranked top {k}", f"served top {k}"),
                strict=True,
            )
        ),
        f"  the policy layer cost {funnel['policy_cost'] or 0:.1%} of the ranked top {k}'s hits",
        "  recalled by: " + ", ".join(f"{c} {v:.3f}" for c, v in funnel["recalled_by"].items()),
        f"  hits in the served top {k} by channel (alone): "
        + ", ".join(
            f"{c} {v} ({funnel['hits_only_by'].get(c, 0)})" for c, v in funnel["hits_by"].items()
        ),
    ]
    return "\n".join(lines)
