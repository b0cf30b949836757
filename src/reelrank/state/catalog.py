"""The catalog in memory as columns, so the feed path works on arrays of video rows."""

from __future__ import annotations

import threading

import numpy as np

from ..arrays import doubled
from ..schema import ReviewStatus, Video

MAX_TAGS = 8  # hashtags per video used as features; the record keeps all of them


class IdMap:
    """Interns string ids as dense ints (append-only, so ints are stable in a process)."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.names: list[str] = []

    def get(self, name: str) -> int:
        """The int for a name, -1 when unknown."""
        return self.index.get(name, -1)

    def add(self, name: str) -> int:
        """The int for a name, interning it when new."""
        found = self.index.get(name)
        if found is None:
            found = len(self.names)
            self.names.append(name)
            self.index[name] = found
        return found

    def __len__(self) -> int:
        return len(self.names)


class Postings:
    """key -> video rows, with an array view cached until the list changes."""

    def __init__(self) -> None:
        self._rows: dict[int, list[int]] = {}
        self._arrays: dict[int, np.ndarray] = {}

    def add(self, key: int, row: int) -> None:
        self._rows.setdefault(key, []).append(row)
        self._arrays.pop(key, None)

    def extend(self, keys: list[int], rows: list[int]) -> None:
        """`add` for each (key, row) pair, in order."""
        lists = self._rows
        for key, row in zip(keys, rows, strict=True):
            found = lists.get(key)
            if found is None:
                lists[key] = [row]
            else:
                found.append(row)
        for key in set(keys) & self._arrays.keys():
            del self._arrays[key]

    def remove(self, key: int, row: int) -> None:
        rows = self._rows.get(key)
        if rows and row in rows:
            rows.remove(row)
            self._arrays.pop(key, None)

    def rows(self, key: int) -> np.ndarray:
        """The rows under a key as an int64 array (empty when none)."""
        found = self._arrays.get(key)
        if found is None:
            found = np.array(self._rows.get(key, ()), dtype=np.int64)
            self._arrays[key] = found
        return found


class VideoTable:
    """Column arrays indexed by the store's stable video row.

    Writers hold `lock`; readers take `view()` and only look at rows below its `size`.
    Arrays grow by doubling and are swapped in whole, so a reader never sees a torn array.
    """

    def __init__(self, capacity: int = 1024) -> None:
        self.lock = threading.RLock()
        self.size = 0
        self.records: list[Video | None] = []
        self.rows: dict[str, int] = {}
        self.creators = IdMap()
        self.sounds = IdMap()
        self.tags = IdMap()
        self.regions = IdMap()
        self.languages = IdMap()
        self.by_creator = Postings()
        self.by_sound = Postings()
        self.by_tag = Postings()
        self.suspended: set[int] = set()  # creator ints whose videos are not distributed
        self.duration_sum_ms = 0.0  # over every placed video, for the mean duration
        self._alloc(capacity)

    def _alloc(self, capacity: int) -> None:
        def grow(
            old: np.ndarray | None, shape: tuple[int, ...], dtype: type, fill: float
        ) -> np.ndarray:
            new: np.ndarray = np.full(shape, fill, dtype=dtype)
            if old is not None:
                new[: len(old)] = old
            return new

        g = getattr
        self.capacity = capacity
        self.creator = grow(g(self, "creator", None), (capacity,), np.int32, -1)
        self.sound = grow(g(self, "sound", None), (capacity,), np.int32, -1)
        self.region = grow(g(self, "region", None), (capacity,), np.int32, -1)
        self.language = grow(g(self, "language", None), (capacity,), np.int32, -1)
        self.created_at = grow(g(self, "created_at", None), (capacity,), np.float64, 0.0)
        self.duration_ms = grow(g(self, "duration_ms", None), (capacity,), np.float64, 1.0)
        # Servable: approved by review and the creator is in good standing.
        self.approved = grow(g(self, "approved", None), (capacity,), np.bool_, False)
        self.tag_ids = grow(g(self, "tag_ids", None), (capacity, MAX_TAGS), np.int32, -1)

    def upsert(self, row: int, video: Video) -> None:
        """Place a video at its store row (new or updated)."""
        with self.lock:
            while row >= self.capacity:
                self._alloc(self.capacity * 2)
            old = self.records[row] if row < len(self.records) else None
            while len(self.records) <= row:
                self.records.append(None)
            if old is not None:
                self._unindex(row, old)
                self.duration_sum_ms -= float(self.duration_ms[row])
            self.duration_sum_ms += float(video.duration_ms)
            creator = self.creators.add(video.creator_id)
            sound = self.sounds.add(video.sound_id) if video.sound_id else -1
            tags = list(dict.fromkeys(self.tags.add(t) for t in video.hashtags))[:MAX_TAGS]
            self.creator[row] = creator
            self.sound[row] = sound
            self.region[row] = self.regions.add(video.region) if video.region else -1
            self.language[row] = self.languages.add(video.language) if video.language else -1
            self.created_at[row] = video.created_at
            self.duration_ms[row] = float(video.duration_ms)
            self.tag_ids[row] = -1
            self.tag_ids[row, : len(tags)] = tags
            self.approved[row] = (
                video.status is ReviewStatus.APPROVED and creator not in self.suspended
            )
            self.records[row] = video
            self.rows[video.id] = row
            self.by_creator.add(creator, row)
            if sound >= 0:
                self.by_sound.add(sound, row)
            for t in tags:
                self.by_tag.add(t, row)
            self.size = max(self.size, row + 1)

    def load(self, placed: list[tuple[int, Video]]) -> None:
        """Place many videos at once (a catalog read at start): the same table as
        upserting them one by one, in order, with the columns written as arrays instead
        of a row at a time. Rows already placed, or placed twice, go one by one."""
        if not placed:
            return
        with self.lock:
            rows = [r for r, _ in placed]
            if self.rows or len(set(rows)) != len(rows):
                for row, video in placed:
                    self.upsert(row, video)
                return
            top = max(rows) + 1
            if top > self.capacity:
                self._alloc(doubled(self.capacity, top))
            if len(self.records) < top:
                self.records.extend([None] * (top - len(self.records)))
            creators, sounds, regions, languages = (
                self.creators.add,
                self.sounds.add,
                self.regions.add,
                self.languages.add,
            )
            approved_status, suspended = ReviewStatus.APPROVED, self.suspended
            creator, sound, region, language, ok = [], [], [], [], []
            created, duration = [], []
            tag_rows: list[int] = []  # (row, slot, tag) of every tag used as a feature
            tag_slots: list[int] = []
            tag_ints: list[int] = []
            records, ids = self.records, self.rows
            for row, video in placed:
                c = creators(video.creator_id)
                creator.append(c)
                sound.append(sounds(video.sound_id) if video.sound_id else -1)
                region.append(regions(video.region) if video.region else -1)
                language.append(languages(video.language) if video.language else -1)
                created.append(video.created_at)
                duration.append(float(video.duration_ms))
                ok.append(video.status is approved_status and c not in suspended)
                tags = list(dict.fromkeys(self.tags.add(t) for t in video.hashtags))[:MAX_TAGS]
                tag_rows += [row] * len(tags)
                tag_slots += range(len(tags))
                tag_ints += tags
                records[row] = video
                ids[video.id] = row
            at = np.array(rows, np.int64)
            self.creator[at] = creator
            self.sound[at] = sound
            self.region[at] = region
            self.language[at] = language
            self.created_at[at] = created
            self.duration_ms[at] = duration
            self.approved[at] = ok
            self.tag_ids[tag_rows, tag_slots] = tag_ints  # the rest holds -1 in a new table
            self.duration_sum_ms += float(np.sum(duration))
            self.by_creator.extend(creator, rows)
            with_sound = [i for i, x in enumerate(sound) if x >= 0]
            self.by_sound.extend([sound[i] for i in with_sound], [rows[i] for i in with_sound])
            self.by_tag.extend(tag_ints, tag_rows)
            self.size = max(self.size, top)

    def suspend(self, creator_id: str, suspended: bool) -> list[int]:
        """Stop (or resume) distributing a creator's videos; the rows whose eligibility
        changed."""
        with self.lock:
            creator = self.creators.add(creator_id)
            if suspended:
                self.suspended.add(creator)
            else:
                self.suspended.discard(creator)
            changed = []
            for row in self.by_creator.rows(creator).tolist():
                video = self.records[row]
                eligible = (
                    video is not None and video.status is ReviewStatus.APPROVED and not suspended
                )
                if bool(self.approved[row]) != eligible:
                    self.approved[row] = eligible
                    changed.append(row)
            return changed

    def _unindex(self, row: int, old: Video) -> None:
        self.by_creator.remove(self.creators.get(old.creator_id), row)
        if old.sound_id:
            self.by_sound.remove(self.sounds.get(old.sound_id), row)
        for t in self.tag_ids[row]:
            if t >= 0:
                self.by_tag.remove(int(t), row)

    @property
    def mean_duration_s(self) -> float:
        """The mean duration of the catalog's videos, in seconds (1 when empty)."""
        placed = len(self.rows)
        return self.duration_sum_ms / placed / 1000.0 if placed else 1.0

    def video(self, row: int) -> Video:
        """The record at a row."""
        found = self.records[row]
        if found is None:  # pragma: no cover - rows are dense in every store
            raise KeyError(row)
        return found

    def row_of(self, video_id: str) -> int:
        """The row of a video id, -1 when unknown."""
        return self.rows.get(video_id, -1)

    def tag_names(self, row: int) -> list[str]:
        names = self.tags.names
        return [names[t] for t in self.tag_ids[row].tolist() if t >= 0]
