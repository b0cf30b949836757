"""What the online trainer publishes to serving (`OnlineTrainer` mixes this in): the
embedding rows touched since the last sync (`sparse`), the network weights (`dense`), and
whole models (`full`) for servers that start later, over the parameter channel."""

from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np
import orjson
import torch

from ..rank.model import MultiTaskRanker, RankerConfig
from ..storage.codec import encode, encode_sparse
from ..storage.params import ParamChannel
from .embedding import EmbeddingTable
from .sequence import SequenceLearner
from .two_tower import TwoTowerLearner


class Publishing:
    params: ParamChannel
    lock: threading.Lock
    config: RankerConfig
    model: MultiTaskRanker
    tt: TwoTowerLearner
    sequence: SequenceLearner
    dense_version: int
    sparse_version: int
    examples_trained: int
    _full_seq: int

    def all_tables(self) -> dict[str, EmbeddingTable]:
        raise NotImplementedError

    def status(self) -> dict[str, Any]:
        raise NotImplementedError

    def version(self) -> str:
        return f"mtl-{self.dense_version}.{self.sparse_version}"

    def publish_sparse(self) -> None:
        with self.lock:
            self._publish_sparse()

    def _publish_sparse(self) -> None:
        deltas = {s: t.take_delta() for s, t in self.all_tables().items()}
        if any(d["ids"] or d["evicted"] for d in deltas.values()):
            self.sparse_version += 1
            self.params.publish(
                "sparse", self.version(), encode_sparse(deltas, self.sparse_version)
            )
        self.params.publish("status", self.version(), orjson.dumps(self.status()))

    def publish_dense(self) -> None:
        with self.lock:
            self.dense_version += 1
            self._publish_dense()

    def _publish_dense(self) -> None:
        self.params.publish("dense", self.version(), encode(self._dense_payload()))

    def _dense_payload(self) -> dict[str, Any]:
        """The weights every publication carries: ranker, two-tower and sequence model."""
        return {
            "config": json.dumps(self.config.to_json()),
            "state": self.model.state_dict(),
            "tt": self.tt.payload(),
            "seq": self.sequence.payload(),
            "dense_version": self.dense_version,
            "examples": self.examples_trained,
        }

    def publish_full(self) -> None:
        """Everything serving needs to start from, at a new version; the entries before the
        previous one are pruned."""
        with self.lock:
            self.dense_version += 1
            before = self._publish_full()
        self.params.prune(before)

    def _publish_full(self) -> int:
        for t in self.all_tables().values():
            t.take_delta()  # the full snapshot includes what was pending
        slots = {s: _delta_tensors(t.full_delta()) for s, t in self.all_tables().items()}
        blob = encode(
            {**self._dense_payload(), "slots": slots, "sparse_version": self.sparse_version}
        )
        seq = self.params.publish("full", self.version(), blob)
        self.params.publish("status", self.version(), orjson.dumps(self.status()))
        # What to prune: everything before the previous full model, so a running server
        # that polls within one checkpoint interval still finds the entries that lead to
        # this one and never needs to load it.
        prune, self._full_seq = self._full_seq, seq
        return prune


def _delta_tensors(delta: dict[str, Any]) -> dict[str, Any]:
    """A table delta with its vectors as a tensor (the codec stores tensors as raw buffers)."""
    return {**delta, "vectors": torch.from_numpy(np.ascontiguousarray(delta["vectors"]))}
