"""What the serving side of the learned models holds: per-slot alignment of catalog ids
to embedding rows, the retrieval towers and the sequence encoder of one publication, and
the `Live` bundle a request reads (`rank/learned.py` applies publications to it)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..arrays import doubled, grown
from ..state.catalog import IdMap
from .model import NumpyRanker, RankerConfig, check_weights
from .sequence import NumpyEncoder, SequenceConfig, SequenceEncoder
from .tables import ServingTable
from .two_tower import Tower, TwoTowerConfig


class Aligned:
    """catalog int id -> serving row, for one slot, so candidate lookups are gathers."""

    def __init__(self, names: IdMap | None) -> None:
        self.names = names
        self.rows = np.zeros(1024, dtype=np.int64)
        self.known = 0  # catalog ints below this have been resolved

    def set(self, ints: np.ndarray, rows: np.ndarray) -> None:
        """Catalog ints `ints` are served from `rows` (the table's rows), all at once."""
        if len(ints) == 0:
            return
        top = int(ints.max()) + 1
        if top > len(self.rows):
            self.rows = grown(self.rows, doubled(len(self.rows), top))
        self.rows[ints] = rows

    def gather(self, ints: np.ndarray) -> np.ndarray:
        rows = self.rows
        ok = (ints >= 0) & (ints < len(rows))
        # (np.minimum and np.maximum: np.clip's dispatch costs more than the work here)
        return np.where(ok, rows[np.maximum(np.minimum(ints, len(rows) - 1), 0)], 0)


class LiveTwoTower:
    """The retrieval model's towers, in numpy, from one published payload."""

    def __init__(self, payload: dict[str, Any], version: int) -> None:
        self.config = TwoTowerConfig.from_json(json.loads(payload["config"]))
        state = payload["state"]
        self.user = Tower(state, "user")
        self.video = Tower(state, "video")
        self.version = version


class LiveSequence:
    """The sequence model's attention weights, from one published payload."""

    def __init__(self, payload: dict[str, Any], version: int) -> None:
        self.config = SequenceConfig.from_json(json.loads(payload["config"]))
        check_weights(SequenceEncoder, self.config, payload["state"])
        self.encoder = NumpyEncoder(self.config, payload["state"])
        self.version = version


@dataclass
class Live:
    """Everything a request reads. A full snapshot builds a new one aside and swaps it in;
    sparse rows are written into it in place and dense weights swap its `module`."""

    config: RankerConfig
    module: NumpyRanker
    tables: dict[str, ServingTable]
    aligned: dict[str, Aligned]
    dense_version: int
    sparse_version: int
    examples: int
    tt: LiveTwoTower | None = None
    seq: LiveSequence | None = None
