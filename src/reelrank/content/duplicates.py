"""Re-upload detection: the same media, or a near-identical caption, sound and duration.

A duplicate of an approved video is approved but marked `duplicate_of` and gets no fresh
traffic pool (a re-upload must not win a second first audience); a re-upload of a
rejected or taken-down video is rejected, and one of a video under review waits for the
same review. The third kind, an embedding near-duplicate, is found where captions are
embedded (`OnlineState`, via `near_duplicates`), since a slow embedder runs off the
upsert path.
"""

from __future__ import annotations

import re

import numpy as np

from ..index.vectors import VectorIndex
from ..schema import ReviewStatus, Video, VideoIn
from ..state.catalog import VideoTable
from .review import Finding, Outcome

MIN_CAPTION_CHARS = 12  # shorter captions ("lol", "") say nothing about sameness
_PUNCT = re.compile(r"[^\w\s]+")
_DIGITS = re.compile(r"\d+")


def caption_key(caption: str) -> str | None:
    """The caption lowercased without punctuation or extra spaces; None if too short."""
    words = _PUNCT.sub(" ", caption.lower()).split()
    text = " ".join(words)
    return text if len(text) >= MIN_CAPTION_CHARS else None


def _numbers(video: Video | None) -> list[str]:
    return _DIGITS.findall(video.caption) if video is not None else []


def duplicate_finding(original: Video, how: str) -> Finding:
    """What a re-upload of `original` gets, by the original's status."""
    if original.status in (ReviewStatus.REJECTED, ReviewStatus.HIDDEN):
        return Finding(
            "duplicate",
            Outcome.REJECT,
            f"re-upload of {original.status.value} video {original.id} ({how})",
        )
    if original.status is ReviewStatus.PENDING_REVIEW:
        return Finding(
            "duplicate", Outcome.HOLD, f"re-upload of video {original.id} under review ({how})"
        )
    return Finding(
        "duplicate",
        Outcome.APPROVE,
        f"re-upload of video {original.id} ({how}): no fresh traffic pool",
    )


class UploadBatch:
    """The keys of the videos reviewed so far in one upload batch."""

    def __init__(self) -> None:
        self.media: dict[str, Video] = {}
        self.captions: dict[tuple[str, str | None], list[Video]] = {}

    def add(self, video: Video) -> None:
        if video.media_hash:
            self.media.setdefault(video.media_hash, video)
        key = caption_key(video.caption)
        if key is not None:
            self.captions.setdefault((key, video.sound_id), []).append(video)

    def find(self, video: VideoIn, key: str | None, tolerance: int) -> tuple[Video, str] | None:
        if video.media_hash:
            found = self.media.get(video.media_hash)
            if found is not None and found.id != video.id:
                return found, "same media hash"
        if key is not None:
            for found in self.captions.get((key, video.sound_id), ()):
                if found.id != video.id and abs(found.duration_ms - video.duration_ms) <= tolerance:
                    return found, "same caption, sound and duration"
        return None


class DuplicateIndex:
    """Media hashes and caption keys of the catalog, checked on every upsert.

    Keys map to rows; a stale entry (the video changed since) is recognised by reading
    the row's current record, so updates need no removal."""

    def __init__(self, table: VideoTable, duration_tolerance_ms: int) -> None:
        self.table = table
        self.tolerance = duration_tolerance_ms
        self._media: dict[str, int] = {}
        self._captions: dict[int, list[int]] = {}  # hash(caption key, sound) -> rows

    def add(self, row: int, video: Video) -> None:
        if video.media_hash:
            self._media.setdefault(video.media_hash, row)
        key = caption_key(video.caption)
        if key is not None:
            rows = self._captions.setdefault(hash((key, video.sound_id)), [])
            if row not in rows:
                rows.append(row)

    def find(self, video: VideoIn, batch: UploadBatch | None = None) -> tuple[Video, str] | None:
        """The original `video` re-uploads, and how it was recognised, or None. `batch`
        holds the videos reviewed before it in the same upload (not placed yet)."""
        key = caption_key(video.caption)
        if batch is not None:
            in_batch = batch.find(video, key, self.tolerance)
            if in_batch is not None:
                return self.root(in_batch[0]), in_batch[1]
        table = self.table
        if video.media_hash:
            row = self._media.get(video.media_hash)
            if row is not None:
                found = table.records[row]
                if (
                    found is not None
                    and found.id != video.id
                    and found.media_hash == video.media_hash
                ):
                    return self.root(found), "same media hash"
        if key is None:
            return None
        for row in self._captions.get(hash((key, video.sound_id)), ()):
            found = table.records[row]
            if (
                found is not None
                and found.id != video.id
                and found.sound_id == video.sound_id
                and caption_key(found.caption) == key
                and abs(found.duration_ms - video.duration_ms) <= self.tolerance
            ):
                return self.root(found), "same caption, sound and duration"
        return None

    def root(self, video: Video) -> Video:
        """A duplicate's original rather than the duplicate itself."""
        if video.duplicate_of:
            row = self.table.row_of(video.duplicate_of)
            if row >= 0:
                return self.table.video(row)
        return video


def near_duplicates(
    index: VectorIndex,
    table: VideoTable,
    rows: np.ndarray,
    vectors: np.ndarray,
    threshold: float,
    tolerance_ms: int,
) -> list[tuple[int, int, float]]:
    """(row, original row, cosine) for each new vector whose nearest older video, in the
    index or earlier in this batch, is at least `threshold` similar, with the same sound,
    a duration within `tolerance_ms` and the same numbers in the caption (so episode 12
    of a series is not a re-upload of episode 11). Videos already marked and short
    captions are skipped."""
    records = table.records
    check = [
        j
        for j, r in enumerate(rows.tolist())
        if (v := records[r]) is not None
        and v.duplicate_of is None
        and caption_key(v.caption) is not None
    ]
    if not check:
        return []
    q = vectors[check]
    q_rows = rows[check]
    keys, scores = index.search_many(q, 3, nprobe=8, min_score=threshold)
    sims = q @ q.T
    close = np.tril(sims >= threshold, k=-1)  # pairs within this batch, earlier first
    # Only queries with a candidate are looked at one by one.
    candidates = np.flatnonzero(((keys >= 0) & (keys < q_rows[:, None])).any(axis=1))
    candidates = np.union1d(candidates, np.flatnonzero(close.any(axis=1)))
    duration, sound = table.duration_ms, table.sound
    in_batch = set(q_rows.tolist())
    out = []
    for i in candidates.tolist():
        row = int(q_rows[i])
        found = [
            (k, sc)
            for k, sc in zip(keys[i].tolist(), scores[i].tolist(), strict=True)
            if 0 <= k < row and k not in in_batch
        ]
        found += [(int(q_rows[j]), float(sims[i, j])) for j in np.flatnonzero(close[i])]
        found = [
            (k, sc)
            for k, sc in found
            if abs(duration[k] - duration[row]) <= tolerance_ms
            and sound[k] == sound[row]
            and _numbers(records[k]) == _numbers(records[row])
        ]
        if found:
            original, score = max(found, key=lambda kv: kv[1])
            out.append((row, original, round(score, 4)))
    return out
