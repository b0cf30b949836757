"""The trainer's checkpoints: model, optimiser, embedding tables, the retrieval and
sequence learners, the joiner, the champion's window, the unconsumed buffer and the log
offsets, saved together atomically, so a restart resumes exactly where it left off."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch

from ..rank.model import MultiTaskRanker, RankerConfig
from ..schema import Impression
from ..storage import EventLog, Store
from ..storage.params import ParamChannel
from .champion import ChampionChallenger
from .embedding import EmbeddingTable
from .joiner import Example, SampleJoiner
from .sequence import SequenceLearner
from .two_tower import TwoTowerLearner

log = logging.getLogger(__name__)
NUMPY = orjson.OPT_SERIALIZE_NUMPY  # numpy scalars in features, as json.dumps took them


class Checkpoints:
    """Saving and restoring the online trainer (`OnlineTrainer` mixes this in): what a
    checkpoint holds is declared here."""

    checkpoint_path: Path | None
    store: Store
    params: ParamChannel
    lock: threading.Lock
    config: RankerConfig
    model: MultiTaskRanker
    optimizer: torch.optim.Adam
    tables: dict[str, EmbeddingTable]
    tt: TwoTowerLearner
    sequence: SequenceLearner
    joiner: SampleJoiner
    champion: ChampionChallenger
    event_offset: int
    impression_offset: int
    examples_trained: int
    batches: int
    dense_version: int
    sparse_version: int
    newest_ts: float
    duration_sum_s: float
    buffer: list[Example]
    buffer_since: float

    def _flush(self) -> int:
        raise NotImplementedError

    def _impressions(self, seqs: list[int]) -> dict[int, Impression]:
        return _read_impressions(self.store.events, seqs)

    def _publish_sparse(self) -> None:
        raise NotImplementedError

    def _publish_dense(self) -> None:
        raise NotImplementedError

    def _publish_full(self) -> int:
        raise NotImplementedError

    def checkpoint(self, train_buffer: bool = True) -> None:
        """Save everything with the log offsets, atomically: what is buffered is trained
        first, or (`train_buffer=False`, on the way out) saved untrained and trained after
        the restore, so stopping never waits for a backlog.

        Then a full model for servers that start later, so older entries can go. Those
        already running get the same model as a sparse delta of the pending rows and a
        dense entry first, which they apply in milliseconds, and skip the full one at the
        version they then hold (rebuilding every table from it took 1.2-1.6 s of a
        serving process at a million videos, once a minute)."""
        if self.checkpoint_path is None:
            return
        with self.lock, _no_collection():
            if train_buffer:
                self._flush()
            self._publish_sparse()
            self.dense_version += 1  # the weights the checkpoint and its snapshot carry
            self._publish_dense()
            state = {
                "config": json.dumps(self.config.to_json()),
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "tables": {s: t.state() for s, t in self.tables.items()},
                "two_tower": self.tt.state(),
                "sequence": self.sequence.state(),
                # orjson: the joiner's open impressions are hundreds of MB at a million
                # videos, tens of seconds through the standard library's json
                "joiner": orjson.dumps(self.joiner.state(), option=NUMPY).decode(),
                "event_offset": self.event_offset,
                "impression_offset": self.impression_offset,
                "examples_trained": self.examples_trained,
                "batches": self.batches,
                "dense_version": self.dense_version,
                "sparse_version": self.sparse_version,
                "newest_ts": self.newest_ts,
                "champion": {
                    k: torch.from_numpy(v.copy()) if isinstance(v, np.ndarray) else v
                    for k, v in self.champion.state().items()
                },
                "duration_sum_s": self.duration_sum_s,
                "buffer": orjson.dumps([e.to_json() for e in self.buffer], option=NUMPY).decode(),
            }
            path = self.checkpoint_path
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save(state, tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            before = self._publish_full()
        self.params.prune(before)

    def restore(self) -> bool:
        """Load the last checkpoint if there is one; True when loaded."""
        if self.checkpoint_path is None or not self.checkpoint_path.exists():
            return False
        with self.lock, _no_collection():
            state = torch.load(self.checkpoint_path, weights_only=True)
            config = RankerConfig.from_json(json.loads(state["config"]))
            model = MultiTaskRanker(config)
            try:
                model.load_state_dict(state["model"])
            except RuntimeError:
                log.warning(
                    "the trainer checkpoint %s holds a ranker of another shape (an older "
                    "feature set); training starts afresh from the logs",
                    self.checkpoint_path,
                )
                return False
            self.config, self.model = config, model
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.config.dense_lr)
            self.optimizer.load_state_dict(state["optimizer"])
            for slot, t in self.tables.items():
                t.load_state(state["tables"][slot])
            if "two_tower" in state:  # checkpoints from before the retrieval model lack it
                self.tt.load_state(state["two_tower"])
            if "sequence" in state:  # nor the sequence model
                self.sequence.load_state(state["sequence"])
            lost = self.joiner.load_state(_loads(state["joiner"]), self._impressions)
            if lost:
                log.warning("%d joined impressions are no longer in the log: left out", lost)
            self.event_offset = int(state["event_offset"])
            self.impression_offset = int(state["impression_offset"])
            self.examples_trained = int(state["examples_trained"])
            self.batches = int(state["batches"])
            self.dense_version = int(state["dense_version"])
            self.sparse_version = int(state["sparse_version"])
            self.newest_ts = float(state["newest_ts"])
            if "champion" in state:
                self.champion.load_state(state["champion"])
                self.duration_sum_s = float(state["duration_sum_s"])
            self.buffer = [Example.from_json(r) for r in _loads(state.get("buffer", "[]"))]
            self.buffer_since = time.monotonic()
        log.info(
            "trainer resumed at event offset %d, impression offset %d (%d examples trained)",
            self.event_offset,
            self.impression_offset,
            self.examples_trained,
        )
        return True


@contextlib.contextmanager
def _no_collection() -> Iterator[None]:
    """The cyclic collector off while a checkpoint is built or read: it makes millions of
    short-lived lists and dicts without cycles, and each collection they set off scans
    every object of a trainer holding a million videos' open impressions (seconds each,
    most of a checkpoint's time)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def _read_impressions(log_: EventLog, seqs: list[int]) -> dict[int, Impression]:
    """The impressions at these offsets of the impression log, read in offset order."""
    want, out = set(seqs), {}
    at, top = min(want) - 1, max(want)
    while at < top:
        batch = log_.read_impressions(at, 5000)
        if not batch:
            break
        for offset, imp in batch:
            if offset in want:
                out[offset] = imp
        at = batch[-1][0]
    return out


def _loads(text: str) -> Any:
    """JSON a checkpoint holds; one written by the standard library's json may spell a
    NaN as NaN, which orjson refuses."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
