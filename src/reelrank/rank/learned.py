"""Serving the learned ranker: parameters applied live from the channel, and the scorer.

Sparse deltas are written into the serving tables row by row (each row write is one
numpy call under the GIL, so a request never sees a torn row, only a mix of rows from two
adjacent syncs); dense updates build a new network and swap the reference. Requests never
wait for either.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import numpy as np
import orjson
import torch

from ..pipeline.query import Query
from ..state.catalog import IdMap, VideoTable
from ..storage.params import ParamChannel
from ..train.embedding import ServingTable
from ..train.trainer import decode
from .features import CONTEXT_SLOTS, SINGLE_SLOTS, TAG_SLOT, CandidateFeatures
from .model import HEADS, USER, VIDEO, MultiTaskRanker, RankerConfig, fuse

log = logging.getLogger(__name__)

_CATALOG_SLOTS = ("video", "creator", "sound", TAG_SLOT)


class _Aligned:
    """catalog int id -> serving row, for one slot, so candidate lookups are gathers."""

    def __init__(self, names: IdMap | None) -> None:
        self.names = names
        self.rows = np.zeros(1024, dtype=np.int64)
        self.known = 0  # catalog ints below this have been resolved

    def set(self, i: int, row: int) -> None:
        if i >= len(self.rows):
            grown = np.zeros(max(i + 1, len(self.rows) * 2), dtype=np.int64)
            grown[: len(self.rows)] = self.rows
            self.rows = grown
        self.rows[i] = row

    def gather(self, ints: np.ndarray) -> np.ndarray:
        rows = self.rows
        ok = (ints >= 0) & (ints < len(rows))
        return np.where(ok, rows[np.clip(ints, 0, len(rows) - 1)], 0)


class ModelServer:
    """Holds the serving model and keeps it in step with the parameter channel."""

    def __init__(self, channel: ParamChannel, catalog: VideoTable, min_examples: int) -> None:
        self.channel = channel
        self.catalog = catalog
        self.min_examples = min_examples
        self.after = 0
        self.module: MultiTaskRanker | None = None
        self.config: RankerConfig | None = None
        self.tables: dict[str, ServingTable] = {}
        self.aligned = {
            "video": _Aligned(None),
            "creator": _Aligned(catalog.creators),
            "sound": _Aligned(catalog.sounds),
            TAG_SLOT: _Aligned(catalog.tags),
        }
        self.dense_version = 0
        self.sparse_version = 0
        self.examples = 0
        self.trainer_status: dict[str, Any] = {}
        self.last_applied = 0.0
        self._lock = threading.Lock()  # one applier at a time; readers never take it

    # -- applying ------------------------------------------------------------------------
    def bootstrap(self) -> None:
        """Start from the newest full snapshot, then apply what came after it."""
        full = self.channel.latest("full")
        if full is not None:
            with self._lock:
                self.after = full[0] - 1
        self.poll()

    def poll(self) -> int:
        """Apply every new channel entry; return how many."""
        with self._lock:
            n = 0
            while True:
                entries = self.channel.read(self.after, 16)
                if not entries:
                    return n
                for seq, kind, _version, blob in entries:
                    try:
                        self._apply(kind, blob)
                    except Exception:
                        log.exception("could not apply %s parameters (seq %d)", kind, seq)
                    self.after = seq
                    n += 1
                self.last_applied = time.time()

    def _apply(self, kind: str, blob: bytes) -> None:
        if kind == "status":
            self.trainer_status = orjson.loads(blob)
            return
        payload = decode(blob)
        if kind in ("full", "dense"):
            config = RankerConfig.from_json(json.loads(payload["config"]))
            module = MultiTaskRanker(config)
            module.load_state_dict(payload["state"])
            module.eval()
            if kind == "full" or self.config != config:
                self.tables = {s: ServingTable(s, config.dim) for s in (*SINGLE_SLOTS, TAG_SLOT)}
                for aligned in self.aligned.values():
                    aligned.rows[:] = 0
                    aligned.known = 0
            self.config = config
            self.dense_version = int(payload["dense_version"])
            self.examples = int(payload["examples"])
            if kind == "full":
                self.sparse_version = int(payload["sparse_version"])
                self._apply_rows(payload["slots"])
            self.module = module  # the swap: requests pick up the new network from here on
        elif kind == "sparse" and self.tables:
            self._apply_rows(payload["slots"])
            self.sparse_version = int(payload["sparse_version"])

    def _apply_rows(self, slots: dict[str, dict[str, Any]]) -> None:
        for slot, delta in slots.items():
            table = self.tables.get(slot)
            if table is None:
                continue
            changed = table.apply({**delta, "vectors": delta["vectors"].numpy()})
            aligned = self.aligned.get(slot)
            if aligned is not None:
                for key in changed:
                    i = self._catalog_int(slot, key)
                    if 0 <= i < aligned.known:
                        aligned.set(i, table.rows.get(key, 0))

    def _catalog_int(self, slot: str, key: str) -> int:
        if slot == "video":
            return self.catalog.row_of(key)
        names = self.aligned[slot].names
        return names.get(key) if names is not None else -1

    def _resolve_new_catalog_ids(self) -> None:
        """Ids the catalog interned since the last look get their serving rows."""
        for slot, aligned in self.aligned.items():
            table = self.tables.get(slot)
            if table is None:
                continue
            if slot == "video":
                names = [
                    v.id if v is not None else "" for v in self.catalog.records[aligned.known :]
                ]
            else:
                assert aligned.names is not None
                names = aligned.names.names[aligned.known :]
            for offset, key in enumerate(names):
                aligned.set(aligned.known + offset, table.rows.get(key, 0))
            aligned.known += len(names)

    # -- serving -------------------------------------------------------------------------
    def ready(self) -> bool:
        return self.module is not None and self.examples >= self.min_examples

    def version(self) -> str:
        return f"mtl-{self.dense_version}.{self.sparse_version}"

    def _video_side(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        if any(a.known < n for a, n in self._catalog_sizes()):
            with self._lock:
                self._resolve_new_catalog_ids()
        c = self.catalog
        return {
            "video": self.aligned["video"].gather(rows),
            "creator": self.aligned["creator"].gather(c.creator[rows].astype(np.int64)),
            "sound": self.aligned["sound"].gather(c.sound[rows].astype(np.int64)),
            TAG_SLOT: self.aligned[TAG_SLOT].gather(c.tag_ids[rows].astype(np.int64)),
        }

    def _catalog_sizes(self) -> list[tuple[_Aligned, int]]:
        c = self.catalog
        return [
            (self.aligned["video"], len(c.records)),
            (self.aligned["creator"], len(c.creators)),
            (self.aligned["sound"], len(c.sounds)),
            (self.aligned[TAG_SLOT], len(c.tags)),
        ]

    def dot(self, query: Query, rows: np.ndarray) -> np.ndarray:
        """user . video embeddings, the pre-ranker's learned signal. (n,) -> (n,)."""
        user = self.tables["user"]
        u = user.weight[user.lookup([query.request.user_id])[0]]
        video_rows = self._video_side(rows)["video"]
        return np.asarray(self.tables["video"].weight[video_rows] @ u)

    def predict(self, feats: CandidateFeatures) -> np.ndarray:
        """P(action) for each candidate and head: (n, len(HEADS))."""
        module = self.module
        assert module is not None and self.config is not None
        rows = feats.rows
        n, dim = len(rows), self.config.dim
        side = self._video_side(rows)
        single = np.empty((n, len(SINGLE_SLOTS), dim), dtype=np.float32)
        for j, slot in enumerate(SINGLE_SLOTS):
            table = self.tables[slot]
            if slot in CONTEXT_SLOTS:
                single[:, j] = table.weight[table.lookup([feats.context.get(slot)])[0]]
            else:
                single[:, j] = table.weight[side[slot]]
        tag_ints = self.catalog.tag_ids[rows]
        tags = self.tables[TAG_SLOT].weight[side[TAG_SLOT]]  # (n, T, d)
        mask = torch.from_numpy((tag_ints >= 0).astype(np.float32))
        with torch.inference_mode():
            logits = module(
                torch.from_numpy(single), torch.from_numpy(tags), mask,
                torch.from_numpy(feats.dense),
            )  # fmt: skip
            return torch.sigmoid(logits).numpy()

    def status(self) -> dict[str, Any]:
        return {
            "loaded": self.module is not None,
            "ready": self.ready(),
            "model_version": self.version() if self.module is not None else None,
            "examples": self.examples,
            "min_examples": self.min_examples,
            "dense_version": self.dense_version,
            "sparse_version": self.sparse_version,
            "embedding_rows": {s: len(t.rows) for s, t in self.tables.items()},
            "last_applied_age_s": round(time.time() - self.last_applied, 3)
            if self.last_applied
            else None,
        }


def fuse_scores(probs: np.ndarray, weights: dict[str, float]) -> np.ndarray:
    """sum_a w_a * P(a) per candidate."""
    return np.asarray(fuse(torch.from_numpy(probs), weights).numpy(), dtype=np.float64)


__all__ = ["HEADS", "USER", "VIDEO", "ModelServer", "fuse_scores"]
