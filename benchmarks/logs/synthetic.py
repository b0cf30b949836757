"""Synthetic interaction logs with known dynamics, for checking that what reelrank learns
carries beyond the shared MovieLens data (other domains, other time dynamics).

    .venv/bin/python benchmarks/logs/synthetic.py releases /tmp/releases.csv
    .venv/bin/python benchmarks/logs/synthetic.py series /tmp/series.csv

Both write the generic CSV of `reelrank evaluate --format csv` (user, item, timestamp,
rating; a rating of 4 or more is a positive):

- `releases`: what is hot now is nearly everything. Items are released every day and
  their appeal decays with a half-life of about a day and a half; viewers come back on
  random days and mostly pick among the week's releases, in proportion to their current
  appeal and their taste for the item's topic; a few picks are old favourites.
- `series`: items come in series watched in order (what comes next is the next part),
  with a popularity skew across series and random low-rated picks in between.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np

DAY = 86400.0
T0 = 1_600_000_000.0


def releases(
    days: int = 60, per_day: int = 30, users: int = 800, topics: int = 12, seed: int = 0
) -> list[tuple[str, str, float, float]]:
    rng = np.random.default_rng(seed)
    n = days * per_day
    released = T0 + np.repeat(np.arange(days), per_day) * DAY + rng.uniform(0, DAY, n)
    quality = rng.lognormal(0.0, 1.0, n)
    topic = rng.integers(0, topics, n)
    half_life = 1.5 * DAY
    taste = rng.dirichlet(np.full(topics, 0.3), users)  # each user likes a few topics
    out = []
    for u in range(users):
        active = np.sort(rng.choice(days, size=int(rng.integers(3, 15)), replace=False))
        seen: set[int] = set()
        for day in active:
            ts = T0 + day * DAY + rng.uniform(0, DAY * 0.9)
            out_now = np.flatnonzero(released <= ts)
            if len(out_now) == 0:
                continue
            age = ts - released[out_now]
            appeal = quality[out_now] * 2.0 ** (-age / half_life)
            appeal = appeal + 0.02 * quality[out_now]  # a little evergreen interest
            weight = appeal * (0.2 + taste[u, topic[out_now]] * topics)
            for _ in range(int(rng.integers(2, 8))):
                p = weight.copy()
                p[np.isin(out_now, list(seen))] = 0.0
                if p.sum() <= 0:
                    break
                i = int(out_now[rng.choice(len(out_now), p=p / p.sum())])
                seen.add(i)
                liked = rng.random() < 0.4 + 0.5 * taste[u, topic[i]] * math.sqrt(topics) / 3
                out.append((f"u{u}", f"r{i}", ts, 5.0 if liked else 3.0))
                ts += rng.uniform(60, 900)
    out.sort(key=lambda r: r[2])
    return out


def series(
    n_series: int = 300, users: int = 600, per_user: int = 80, seed: int = 1
) -> list[tuple[str, str, float, float]]:
    rng = np.random.default_rng(seed)
    appeal = 1.0 / np.arange(1, n_series + 1) ** 0.8
    appeal /= appeal.sum()
    items = [f"s{k}p{j}" for k in range(n_series) for j in range(5)]
    out = []
    for u in range(users):
        ts = T0 + rng.uniform(0, 30 * DAY)
        watched: set[str] = set()
        while len(watched) < per_user:
            k = int(rng.choice(n_series, p=appeal))
            for j in range(5):
                if rng.random() < 0.2:
                    other = str(rng.choice(items))
                    if other not in watched:
                        watched.add(other)
                        out.append((f"u{u}", other, ts, 2.0))
                        ts += 600.0
                film = f"s{k}p{j}"
                if film not in watched:
                    watched.add(film)
                    out.append((f"u{u}", film, ts, 5.0))
                    ts += rng.uniform(600, 3 * 3600)
            ts += rng.uniform(DAY / 4, 3 * DAY)
    out.sort(key=lambda r: r[2])
    return out


def write(rows: list[tuple[str, str, float, float]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["user", "item", "timestamp", "rating"])
        for user, item, ts, rating in rows:
            w.writerow([user, item, f"{ts:.0f}", rating])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("kind", choices=("releases", "series"))
    ap.add_argument("output", type=Path)
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    make = releases if args.kind == "releases" else series
    rows = make() if args.seed is None else make(seed=args.seed)
    write(rows, args.output)
    print(f"{len(rows)} interactions written to {args.output}")


if __name__ == "__main__":
    main()
