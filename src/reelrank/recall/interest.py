"""Interest: the hottest videos under the user's strongest hashtags, sounds and creators,
plus onboarding interests (inverted index key -> videos, ranked by hotness)."""

from __future__ import annotations

from ..state.catalog import Postings
from ..types import Query, Recalled
from .base import HotLists

TOP_TAGS, TOP_SOUNDS, TOP_CREATORS = 6, 3, 3


class InterestRecall:
    name = "interest"

    def __init__(self, refresh_s: float = 2.0, hot: HotLists | None = None) -> None:
        self._hot = hot if hot is not None else HotLists(refresh_s)  # may be shared

    def recall(self, query: Query, quota: int) -> Recalled:
        table = query.table
        keys: list[tuple[Postings, int, float, str]] = []

        def strongest(aff: dict[str, float], k: int) -> list[tuple[str, float]]:
            return sorted(((n, w) for n, w in aff.items() if w > 0), key=lambda kv: -kv[1])[:k]

        for tag, w in strongest(query.tag_affinity, TOP_TAGS):
            t = table.tags.get(tag)
            if t >= 0:
                keys.append((table.by_tag, t, w, f"you engaged with #{tag}"))
        if query.profile is not None:
            for tag in query.profile.interests:
                t = table.tags.get(tag)
                if t >= 0 and tag not in query.tag_affinity:
                    keys.append((table.by_tag, t, 1.0, f"matches your interest #{tag}"))
        for sound, w in strongest(query.sound_affinity, TOP_SOUNDS):
            s = table.sounds.get(sound)
            if s >= 0:
                keys.append((table.by_sound, s, w, "uses a sound you like"))
        for creator, w in strongest(query.creator_affinity, TOP_CREATORS):
            c = table.creators.get(creator)
            if c >= 0:
                keys.append((table.by_creator, c, w, f"more from @{creator}, whom you watch"))
        if not keys:
            return Recalled.join([])
        total = sum(w for _, _, w, _ in keys)
        hot = query.counters.hotness
        parts = []
        for postings, key, w, reason in keys:
            share = max(1, round(quota * w / total))
            rows = self._hot.top(postings, key, hot, query.size, share, query.request.now)
            parts.append(Recalled.of(rows, reason))
        merged = Recalled.join(parts)
        return Recalled(merged.rows[:quota], merged.reasons[:quota])
