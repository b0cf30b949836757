"""Following: the newest videos of creators the user follows."""

from __future__ import annotations

import numpy as np

from ..types import Query, Recalled
from .base import top_by


class FollowingRecall:
    name = "following"

    def recall(self, query: Query, quota: int) -> Recalled:
        table = query.table
        parts = []
        for creator_id in query.follows:
            creator = table.creators.get(creator_id)
            if creator < 0:
                continue
            rows = table.by_creator.rows(creator)
            rows = rows[rows < query.size]
            if len(rows):
                newest = top_by(rows, table.created_at[rows], quota)
                parts.append(Recalled.of(newest, f"from @{creator_id}, whom you follow"))
        merged = Recalled.join(parts)
        keep = top_by(np.arange(len(merged.rows)), table.created_at[merged.rows], quota)
        return Recalled(merged.rows[keep], merged.reasons[keep])
