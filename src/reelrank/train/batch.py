"""Training examples as the ranker's inputs: each sparse slot's embedding rows, the
hashtag rows and their mask, the dense features and the labels of a batch."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..rank.features import SINGLE_SLOTS, TAG_SLOT, tag_keys
from ..state.catalog import MAX_TAGS
from .embedding import EmbeddingTable
from .joiner import Example


def tensors(
    tables: dict[str, EmbeddingTable], examples: list[Example], admit: int = 0
) -> tuple[Any, ...]:
    """single rows (B, S), tag rows (B, T), tag mask, dense, labels and the newest example
    time; the ids of the first `admit` examples count towards admission (training)."""
    b = len(examples)
    ts = max(e.ts for e in examples)
    single_rows = np.zeros((b, len(SINGLE_SLOTS)), dtype=np.int64)
    for j, slot in enumerate(SINGLE_SLOTS):
        keys = [e.features["slots"].get(slot) for e in examples]
        single_rows[:, j] = _lookup(tables[slot], keys, admit, ts)
    flat = [k for e in examples for k in tag_keys(e.features.get("hashtags", []))]
    tag_rows = _lookup(tables[TAG_SLOT], flat, admit * MAX_TAGS, ts).reshape(b, MAX_TAGS)
    mask = torch.tensor([k is not None for k in flat], dtype=torch.float32).view(b, MAX_TAGS)
    dense = torch.from_numpy(np.array([e.features["dense"] for e in examples], np.float32))
    labels = torch.from_numpy(np.stack([e.labels for e in examples]))
    return single_rows, tag_rows, mask, dense, labels, ts


def _lookup(table: EmbeddingTable, keys: list[str | None], admit: int, ts: float) -> np.ndarray:
    """Rows of `keys`; the first `admit` of them are sightings that may admit a new id."""
    head = table.lookup(keys[:admit], admit=True, ts=ts)
    return head if admit >= len(keys) else np.concatenate([head, table.lookup(keys[admit:])])
