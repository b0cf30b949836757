"""The synthetic logs of benchmarks/logs/synthetic.py have the dynamics they claim, and
`reelrank evaluate --format csv` reads them."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path

import numpy as np

from reelrank.evaluate.data import load_csv

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "logs" / "synthetic.py"
_spec = importlib.util.spec_from_file_location("synthetic_logs", _PATH)
assert _spec is not None and _spec.loader is not None
synthetic = importlib.util.module_from_spec(_spec)
sys.modules["synthetic_logs"] = synthetic
_spec.loader.exec_module(synthetic)


def test_releases_are_watched_while_new(tmp_path: Path) -> None:
    rows = synthetic.releases(days=20, per_day=10, users=150)
    path = tmp_path / "releases.csv"
    synthetic.write(rows, path)
    data = load_csv(path)
    assert len(data.interactions) == len(rows) and data.signal == "rating"
    ts = [x.ts for x in data.interactions]
    assert ts == sorted(ts)
    first = {}
    for x in data.interactions:
        first.setdefault(x.item, x.ts)
    # Most picks come within a week of an item's first pick: what is hot now dominates.
    ages = np.array([x.ts - first[x.item] for x in data.interactions])
    assert np.mean(ages < 7 * 86400) > 0.8
    pairs = {(x.user, x.item) for x in data.interactions}
    assert len(pairs) == len(rows)  # nobody picks the same item twice


def test_series_are_watched_in_order() -> None:
    rows = synthetic.series(n_series=40, users=60, per_user=30)
    by_user: dict[str, list[str]] = {}
    for user, item, _, rating in rows:
        if rating >= 4:
            by_user.setdefault(user, []).append(item)
    steps = nexts = 0
    for items in by_user.values():
        for a, b in itertools.pairwise(items):
            steps += 1
            sa, pa = a[1:].split("p")
            sb, pb = b[1:].split("p")
            nexts += sa == sb and int(pb) == int(pa) + 1
    assert nexts / steps > 0.6  # the next positive is mostly the next part of the series
