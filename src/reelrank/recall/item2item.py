"""Item-to-item: videos co-engaged with the ones this user just engaged with."""

from __future__ import annotations

import numpy as np

from ..types import Query, Recalled

SEEDS = 5


class ItemToItemRecall:
    name = "item2item"

    def recall(self, query: Query, quota: int) -> Recalled:
        graph = query.coengagement
        if graph is None or query.user is None or not query.user.session:
            return Recalled.join([])
        table = query.table
        seeds: list[int] = []
        for video_id, _, _ in reversed(list(query.user.session)):
            row = table.row_of(video_id)
            if row >= 0 and row not in seeds:
                seeds.append(row)
            if len(seeds) == SEEDS:
                break
        per = max(1, quota // max(len(seeds), 1))
        parts = []
        for seed in seeds:
            rows = np.array([b for b, _ in graph.neighbours(seed, per)], dtype=np.int64)
            rows = rows[rows < query.size]
            parts.append(Recalled.of(rows, "viewers of a video you engaged with also liked this"))
        merged = Recalled.join(parts)
        return Recalled(merged.rows[:quota], merged.reasons[:quota])
