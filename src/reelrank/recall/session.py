"""Session: short-term interest, the hashtags of the user's last few engagements."""

from __future__ import annotations

from ..types import Query, Recalled
from .base import HotLists

LAST = 5


class SessionRecall:
    name = "session"

    def __init__(self, refresh_s: float = 2.0, hot: HotLists | None = None) -> None:
        self._hot = hot if hot is not None else HotLists(refresh_s)  # may be shared

    def recall(self, query: Query, quota: int) -> Recalled:
        if query.user is None or not query.user.session:
            return Recalled.join([])
        table = query.table
        weights: dict[int, float] = {}
        for age, (video_id, _, _) in enumerate(reversed(list(query.user.session)[-LAST:])):
            row = table.row_of(video_id)
            if row < 0:
                continue
            for tag in table.tag_ids[row]:
                if tag >= 0:
                    weights[int(tag)] = weights.get(int(tag), 0.0) + 0.8**age
        if not weights:
            return Recalled.join([])
        total = sum(weights.values())
        hot = query.counters.hotness
        parts = []
        for tag, w in sorted(weights.items(), key=lambda kv: -kv[1]):
            share = max(1, round(quota * w / total))
            name = table.tags.names[tag]
            rows = self._hot.top(table.by_tag, tag, hot, query.size, share, query.request.now)
            parts.append(Recalled.of(rows, f"more like what you just watched (#{name})"))
        merged = Recalled.join(parts)
        return Recalled(merged.rows[:quota], merged.reasons[:quota])
