"""Content similarity: videos whose caption and hashtags embed close to what the user just
engaged with and liked. A brand-new video is found here before anyone has engaged with it."""

from __future__ import annotations

import numpy as np

from ..index.vectors import VectorIndex
from ..types import Query, Recalled, marked

SESSION_DECAY = 0.85  # weight of the i-th most recent engagement: 0.85 ** i
LIKED = 10  # most recent likes mixed in at weight 0.5 each


def content_profile(
    query: Query, index: VectorIndex | None
) -> tuple[np.ndarray | None, np.ndarray]:
    """The user's content vector (unnormalised) in `index` and the seed rows it came from."""
    user = query.user
    if index is None or user is None:
        return None, np.zeros(0, np.int64)
    table = query.table
    rows: list[int] = []
    weights: list[float] = []
    for age, (video_id, _, _) in enumerate(reversed(list(user.session))):
        row = table.row_of(video_id)
        if row >= 0:
            rows.append(row)
            weights.append(SESSION_DECAY**age)
    for row in user.liked.recent(LIKED):
        rows.append(int(row))
        weights.append(0.5)
    if not rows:
        return None, np.zeros(0, np.int64)
    seeds = np.array(rows, dtype=np.int64)
    vec = np.asarray(weights, dtype=np.float32) @ index.vectors_of(seeds)
    if not np.any(vec):
        return None, seeds
    return vec, seeds


class ContentRecall:
    name = "content"

    def __init__(self, index: VectorIndex | None = None) -> None:
        self.index = index  # caption and hashtag embeddings by row; None: recalls nothing

    def recall(self, query: Query, quota: int) -> Recalled:
        vec, seeds = content_profile(query, self.index)
        if vec is None or self.index is None:
            return Recalled.join([])
        keys, _ = self.index.search(vec, quota + len(seeds))
        keys = keys[keys < query.size]
        keys = keys[~marked(keys, seeds)]
        return Recalled.of(keys[:quota], "close in content to videos you enjoyed")
