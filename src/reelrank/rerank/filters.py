"""Filters: each keeps a subset of candidates and reports how many it removed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..types import Candidates, Query, marked


@dataclass(frozen=True)
class FilterResult:
    kept: Candidates
    removed: int


class Filter(Protocol):
    name: str

    def keep(self, query: Query, cands: Candidates) -> np.ndarray:
        """A boolean mask over the candidates: True keeps."""


def run_filter(f: Filter, query: Query, cands: Candidates) -> FilterResult:
    if len(cands) == 0:
        return FilterResult(cands, 0)
    mask = f.keep(query, cands)
    return FilterResult(cands.take(mask), int(len(mask) - mask.sum()))


class DuplicateFilter:
    """The same video from two channels: keep the first (channels are in priority order)."""

    name = "duplicate"

    def keep(self, query: Query, cands: Candidates) -> np.ndarray:
        rows = cands.rows
        n = len(rows)
        if n == 0:
            return np.zeros(0, dtype=bool)
        at = np.arange(n)
        first = np.empty(int(rows.max()) + 1, np.int64)  # per row: its first place here
        first[rows] = n  # only the candidates' entries are initialised (catalogs are large)
        np.minimum.at(first, rows, at)
        return first[rows] == at


class ApprovedFilter:
    """Only approved videos are ever served."""

    name = "not_approved"

    def keep(self, query: Query, cands: Candidates) -> np.ndarray:
        return query.table.approved[cands.rows].copy()


class SeenFilter:
    """A video served to or watched by the user is not served again."""

    name = "seen"

    def keep(self, query: Query, cands: Candidates) -> np.ndarray:
        if query.user is None or len(query.user.seen) == 0:
            return np.ones(len(cands), dtype=bool)
        rows = cands.rows
        hit = query.user.seen.members_of(rows.tolist())
        if not hit:
            return np.ones(len(cands), dtype=bool)
        return ~marked(rows, np.fromiter(hit, np.int64, len(hit)))


class NotInterestedFilter:
    """Videos the user marked not interested in or reported."""

    name = "not_interested"

    def keep(self, query: Query, cands: Candidates) -> np.ndarray:
        if query.user is None or not query.user.not_interested:
            return np.ones(len(cands), dtype=bool)
        blocked = np.fromiter(query.user.not_interested.copy(), np.int64)
        return ~marked(cands.rows, blocked)


class HiddenFilter:
    """Videos by creators or with sounds the user hid."""

    name = "hidden"

    def keep(self, query: Query, cands: Candidates) -> np.ndarray:
        mask = np.ones(len(cands), dtype=bool)
        user = query.user
        if user is None:
            return mask
        table = query.table
        if user.hidden_creators:
            ids = [table.creators.get(c) for c in user.hidden_creators.copy()]
            mask &= ~np.isin(table.creator[cands.rows], ids)
        if user.hidden_sounds:
            ids = [table.sounds.get(s) for s in user.hidden_sounds.copy()]
            ids = [i for i in ids if i >= 0]
            mask &= ~np.isin(table.sound[cands.rows], ids)
        return mask


class MutedFilter:
    """Videos whose caption or hashtags hold a keyword the user muted, or that carry a
    muted hashtag."""

    name = "muted"

    def keep(self, query: Query, cands: Candidates) -> np.ndarray:
        mutes = query.mutes
        if mutes is None:
            return np.ones(len(cands), dtype=bool)
        table = query.table
        mask = np.ones(len(cands), dtype=bool)
        if mutes.hashtags:
            ids = [t for t in (table.tags.get(h) for h in mutes.hashtags) if t >= 0]
            if ids:
                mask &= ~np.isin(table.tag_ids[cands.rows], ids).any(axis=1)
        if mutes.pattern is not None:
            pattern = mutes.pattern
            for i, row in enumerate(cands.rows.tolist()):
                if mask[i]:
                    video = table.video(row)
                    text = video.caption + " " + " ".join(video.hashtags)
                    mask[i] = pattern.search(text) is None
        return mask


def default_filters() -> list[Filter]:
    return [
        DuplicateFilter(),
        ApprovedFilter(),
        SeenFilter(),
        NotInterestedFilter(),
        HiddenFilter(),
        MutedFilter(),
    ]
