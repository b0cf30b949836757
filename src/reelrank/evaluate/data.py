"""Interaction logs for replay: MovieLens `ratings.csv` (with `movies.csv` for titles and
genres) and a generic CSV.

Generic CSV: a header row with `user`, `item`, `timestamp` (Unix seconds), and optionally
`rating`, `watch_ratio` (watched / duration) and `event` (a reelrank event type). An
interaction is positive when its rating is at least `positive_rating`, else when its
watch ratio is at least `positive_watch_ratio`, else when its event is an engagement
(finish, like, share, comment, follow, replay); a log with none of the three columns
counts every interaction as positive.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InvalidInput

ENGAGEMENT_EVENTS = {"finish", "like", "share", "comment", "follow", "replay"}


@dataclass(frozen=True)
class Interaction:
    user: str
    item: str
    ts: float
    rating: float | None = None
    watch_ratio: float | None = None
    event: str | None = None


@dataclass
class Dataset:
    name: str
    interactions: list[Interaction]  # in time order (stable for equal times)
    titles: dict[str, str] = field(default_factory=dict)
    genres: dict[str, list[str]] = field(default_factory=dict)
    signal: str = "all"  # what decides a positive: rating, watch_ratio, event or all

    def describe(self) -> dict[str, object]:
        ts = [x.ts for x in self.interactions]
        return {
            "name": self.name,
            "interactions": len(self.interactions),
            "users": len({x.user for x in self.interactions}),
            "items": len({x.item for x in self.interactions}),
            "first": min(ts) if ts else None,
            "last": max(ts) if ts else None,
            "signal": self.signal,
        }


def _number(raw: str, where: str, name: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInput(where, f"{name} {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise InvalidInput(where, f"{name} {raw!r} is not finite")
    return value


def _rows(path: Path, required: list[str]) -> tuple[list[str], csv.DictReader[str]]:
    if not path.is_file():
        raise InvalidInput(str(path), "no such file")
    handle = path.open(newline="", encoding="utf-8")
    reader = csv.DictReader(handle)
    header = list(reader.fieldnames or [])
    missing = [c for c in required if c not in header]
    if missing:
        handle.close()
        raise InvalidInput(str(path), f"missing column(s) {missing}; the header has {header}")
    return header, reader


def load_movielens(ratings: str | Path, movies: str | Path | None = None) -> Dataset:
    """MovieLens ratings (userId,movieId,rating,timestamp), any size."""
    path = Path(ratings)
    _, reader = _rows(path, ["userId", "movieId", "rating", "timestamp"])
    out = []
    for n, row in enumerate(reader, start=2):
        where = f"{path.name}:{n}"
        out.append(
            Interaction(
                user=row["userId"],
                item=row["movieId"],
                ts=_number(row["timestamp"], where, "timestamp"),
                rating=_number(row["rating"], where, "rating"),
            )
        )
    out.sort(key=lambda x: x.ts)
    data = Dataset(path.parent.name or path.name, out, signal="rating")
    if movies is not None:
        mpath = Path(movies)
        _, mreader = _rows(mpath, ["movieId", "title", "genres"])
        for row in mreader:
            data.titles[row["movieId"]] = row["title"]
            genres = [g for g in row["genres"].split("|") if g and g != "(no genres listed)"]
            data.genres[row["movieId"]] = genres
    return data


def load_csv(path: str | Path) -> Dataset:
    """The generic format (see the module docstring)."""
    p = Path(path)
    header, reader = _rows(p, ["user", "item", "timestamp"])
    out = []
    for n, row in enumerate(reader, start=2):
        where = f"{p.name}:{n}"
        rating = row.get("rating") or None
        ratio = row.get("watch_ratio") or None
        out.append(
            Interaction(
                user=row["user"],
                item=row["item"],
                ts=_number(row["timestamp"], where, "timestamp"),
                rating=_number(rating, where, "rating") if rating else None,
                watch_ratio=_number(ratio, where, "watch_ratio") if ratio else None,
                event=(row.get("event") or None),
            )
        )
    out.sort(key=lambda x: x.ts)
    signal = next((c for c in ("rating", "watch_ratio", "event") if c in header), "all")
    return Dataset(p.stem, out, signal=signal)


def is_positive(x: Interaction, positive_rating: float = 4.0, positive_watch: float = 0.8) -> bool:
    if x.rating is not None:
        return x.rating >= positive_rating
    if x.watch_ratio is not None:
        return x.watch_ratio >= positive_watch
    if x.event is not None:
        return x.event in ENGAGEMENT_EVENTS
    return True
