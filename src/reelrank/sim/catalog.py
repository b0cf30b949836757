"""Catalogs for closed-loop simulation: the KuaiRand-Pure video features (real durations,
creators, sounds and tags) or a generated world, with a planted quality per video and
the newest share held back to arrive during the run."""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInput
from .world import make_world

DAY = 86400.0
KUAIRAND_FILE = "video_features_basic_pure.csv"
KUAIRAND_COLUMNS = ("video_id", "author_id", "upload_dt", "video_duration", "music_id", "tag")


@dataclass
class SimCatalog:
    """Videos as parallel lists, in arrival order: the first `initial` are the back
    catalog, the rest arrive one by one during the run."""

    source: str
    ids: list[str]
    creators: list[str]
    sounds: list[str | None]
    tags: list[list[int]]  # tag indices per video
    tag_names: list[str]
    duration_ms: np.ndarray  # (n,) int64
    quality: np.ndarray  # (n,) planted quality in [0, 1]
    age_s: np.ndarray  # (n,) back catalog: seconds before the run's start it was made
    initial: int
    imputed_durations: int = 0

    def __len__(self) -> int:
        return len(self.ids)

    def tag_matrix(self) -> np.ndarray:
        """Multi-hot tags: (n_videos, n_tags) float32."""
        out = np.zeros((len(self.ids), len(self.tag_names)), dtype=np.float32)
        for i, tags in enumerate(self.tags):
            out[i, tags] = 1.0
        return out

    def tag_counts(self) -> np.ndarray:
        """Videos per tag: (n_tags,)."""
        counts = np.zeros(len(self.tag_names), dtype=np.int64)
        for tags in self.tags:
            counts[tags] += 1
        return counts

    def record(self, i: int, created_at: float) -> dict[str, Any]:
        """Video i as an app uploads it to reelrank."""
        return {
            "id": self.ids[i],
            "creator_id": self.creators[i],
            "caption": "",
            "hashtags": [self.tag_names[t] for t in self.tags[i]][:30],
            "sound_id": self.sounds[i],
            "duration_ms": int(self.duration_ms[i]),
            "created_at": created_at,
        }

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "videos": len(self.ids),
            "back_catalog": self.initial,
            "arrivals": len(self.ids) - self.initial,
            "tags": len(self.tag_names),
            "creators": len(set(self.creators)),
            "sounds": len({s for s in self.sounds if s}),
            "median_duration_s": round(float(np.median(self.duration_ms)) / 1000, 1),
            "imputed_durations": self.imputed_durations,
        }


def _arrival_order(newness: np.ndarray, arrival_share: float, rng: np.random.Generator) -> Any:
    """Indices with the newest `arrival_share` last (in upload order), ties broken at
    random; and how many come before them."""
    if not 0.0 <= arrival_share < 1.0:
        raise InvalidInput("arrival_share", f"must be in [0, 1), got {arrival_share}")
    order = np.lexsort((rng.random(len(newness)), newness))
    held = round(arrival_share * len(order))
    back = order[: len(order) - held]
    return np.concatenate([rng.permutation(back), order[len(order) - held :]]), len(back)


def load_kuairand(path: str | Path, arrival_share: float = 0.1, seed: int = 7) -> SimCatalog:
    """KuaiRand-Pure `video_features_basic_pure.csv` (or the folder holding it): author_id
    becomes the creator, music_id the sound (0: none), tag ids the hashtags (`tagN`), and a
    missing duration the median; quality is planted (the file has none)."""
    path = Path(path)
    if path.is_dir():
        path = path / KUAIRAND_FILE
    if not path.is_file():
        raise InvalidInput("catalog", f"{path} does not exist")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in KUAIRAND_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InvalidInput("catalog", f"{path} lacks columns {missing}")
        rows = list(reader)
    rng = np.random.default_rng(seed)
    durations = np.array(
        [float(r["video_duration"]) if r["video_duration"].strip() else np.nan for r in rows]
    )
    imputed = int(np.isnan(durations).sum())
    durations[np.isnan(durations)] = float(np.nanmedian(durations))
    tag_index: dict[str, int] = {}
    tags = []
    for r in rows:
        names = [f"tag{t.strip()}" for t in r["tag"].split(",") if t.strip()]
        tags.append([tag_index.setdefault(n, len(tag_index)) for n in dict.fromkeys(names)])
    uploaded = np.array(
        [datetime.fromisoformat(r["upload_dt"]).replace(tzinfo=UTC).timestamp() for r in rows]
    )
    order, initial = _arrival_order(uploaded, arrival_share, rng)
    # The back catalog is at least four days old (older than any first traffic pool).
    age = (uploaded.max() - uploaded) + 4 * DAY + rng.uniform(0, DAY, len(rows))
    quality = rng.beta(2, 2, len(rows))

    def sound(raw: str) -> str | None:
        raw = raw.strip()
        return f"m{raw}" if raw and raw not in ("0", "0.0") else None

    return SimCatalog(
        source="kuairand",
        ids=[f"k{rows[i]['video_id']}" for i in order],
        creators=[f"a{rows[i]['author_id']}" for i in order],
        sounds=[sound(rows[i]["music_id"]) for i in order],
        tags=[tags[i] for i in order],
        tag_names=list(tag_index),
        duration_ms=np.maximum(durations[order], 1000).astype(np.int64),
        quality=quality[order],
        age_s=age[order],
        initial=initial,
        imputed_durations=imputed,
    )


def generated_catalog(n_videos: int, arrival_share: float = 0.1, seed: int = 7) -> SimCatalog:
    """world.make_world's videos (topics as tags, planted quality), made over the two
    weeks before the run's start."""
    start = time.time()
    world = make_world(n_videos=n_videos, n_viewers=1, seed=seed, now=start - 4 * DAY)
    rng = np.random.default_rng(seed + 1)
    created = np.array([v["created_at"] for v in world.videos])
    order, initial = _arrival_order(created, arrival_share, rng)
    tag_index: dict[str, int] = {}
    tags = [[tag_index.setdefault(t, len(tag_index)) for t in v["hashtags"]] for v in world.videos]
    videos = world.videos
    return SimCatalog(
        source="generated",
        ids=[videos[i]["id"] for i in order],
        creators=[videos[i]["creator_id"] for i in order],
        sounds=[videos[i]["sound_id"] for i in order],
        tags=[tags[i] for i in order],
        tag_names=list(tag_index),
        duration_ms=np.array([videos[i]["duration_ms"] for i in order], dtype=np.int64),
        quality=np.array([world.quality[videos[i]["id"]] for i in order]),
        age_s=start - created[order],
        initial=initial,
    )


def open_catalog(spec: str, videos: int, arrival_share: float, seed: int) -> SimCatalog:
    """`generated` or `kuairand:PATH`."""
    if spec == "generated":
        return generated_catalog(videos, arrival_share, seed)
    kind, _, path = spec.partition(":")
    if kind == "kuairand" and path:
        return load_kuairand(path, arrival_share, seed)
    raise InvalidInput("catalog", f"expected 'generated' or 'kuairand:PATH', got {spec!r}")
