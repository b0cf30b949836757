"""The online trainer: logs -> joiner -> mini-batches -> model; publishes and checkpoints.

It reads the impression and event logs from its own offsets, joins them into labelled
examples, trains the multi-task ranker in mini-batches (test-then-train metrics first),
publishes touched embedding rows every `sync_interval_s` and the dense weights every
`dense_sync_interval_s`, and checkpoints model, optimisers, joiner and offsets together,
so a restart resumes exactly where the checkpoint left off.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from ..config import Settings
from ..rank.features import CONTEXT_SLOTS, DENSE, JUDGE_ONLY, SINGLE_SLOTS, TAG_SLOT
from ..rank.model import HEADS, MultiTaskRanker, RankerConfig
from ..rank.sequence import SEQ_SLOT, SequenceConfig
from ..rank.two_tower import TwoTowerConfig
from ..storage import Store
from ..storage.params import ParamChannel
from .batch import tensors
from .champion import ChampionChallenger
from .checkpoint import Checkpoints
from .embedding import EmbeddingTable
from .joiner import Example, SampleJoiner
from .metrics import ProgressiveMetrics
from .publishing import Publishing
from .sequence import SequenceLearner
from .two_tower import TwoTowerLearner

log = logging.getLogger(__name__)

READ_LIMIT = 5000
IDLE_CLOSE_S = 2.0  # with no new log records for this long, close windows by wall clock
EXPIRE_EVERY = 200  # batches between expiry sweeps
SEQUENCE_BATCHES_PER_STEP = 8  # the sequence model's training batches per step at most


def two_tower_config(settings: Settings) -> TwoTowerConfig:
    return TwoTowerConfig(
        dim=settings.embedding_dim, out=settings.two_tower_dim, sparse_lr=settings.sparse_lr
    )


def ranker_config(settings: Settings) -> RankerConfig:
    return RankerConfig(
        dim=settings.embedding_dim,
        arch=settings.ranker_arch,
        dense_lr=settings.dense_lr,
        sparse_lr=settings.sparse_lr,
    )


class OnlineTrainer(Publishing, Checkpoints):
    def __init__(
        self,
        settings: Settings,
        store: Store,
        params: ParamChannel,
        checkpoint_path: Path | None = None,
        config: RankerConfig | None = None,
        idle_close: bool = True,
    ) -> None:
        self.settings = settings
        self.idle_close = idle_close  # close windows by the wall clock when input stops
        self.store = store
        self.params = params
        self.checkpoint_path = checkpoint_path
        self.config = config or ranker_config(settings)
        self.model = MultiTaskRanker(self.config)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.config.dense_lr)
        self.tables = {
            slot: EmbeddingTable(
                slot,
                self.config.dim,
                capacity=settings.embedding_capacity,
                min_count=1
                if slot in CONTEXT_SLOTS and slot != "user"
                else settings.embedding_min_count,
                expire_s=settings.embedding_expire_h * 3600.0,
                seed=i,
            )
            for i, slot in enumerate((*SINGLE_SLOTS, TAG_SLOT))
        }
        self.tt = TwoTowerLearner(
            two_tower_config(settings),
            capacity=settings.embedding_capacity,
            min_count=settings.embedding_min_count,
            expire_s=settings.embedding_expire_h * 3600.0,
        )
        self.sequence = SequenceLearner(
            SequenceConfig(),
            capacity=settings.embedding_capacity,
            min_count=settings.embedding_min_count,
            expire_s=settings.embedding_expire_h * 3600.0,
        )
        self.joiner = SampleJoiner(
            settings.join_window_s, settings.join_require_view, settings.correction_window_s
        )
        self.metrics = ProgressiveMetrics()
        self.champion = ChampionChallenger(
            settings.fusion_weights,
            window=settings.champion_window,
            min_pairs=settings.champion_min_pairs,
            margin=settings.champion_margin,
            min_impressions=settings.champion_min_impressions,
        )
        self.duration_sum_s = 0.0  # over examples trained: their mean duration
        self.head_w = torch.tensor([self.config.head_weights.get(h, 1.0) for h in HEADS])
        self.event_offset = 0
        self.impression_offset = 0
        self.buffer: list[Example] = []
        self.buffer_since = 0.0
        self.examples_trained = 0
        self.batches = 0
        self.skipped = 0
        self.dense_version = 0
        self.sparse_version = 0
        self.newest_ts = 0.0
        self.last_input = time.monotonic()
        self._rate: list[tuple[float, int]] = []
        now = time.monotonic()
        self._last_sync = self._last_dense = self._last_checkpoint = now
        self._full_seq = 0  # the last full model this trainer published
        self.lock = threading.Lock()

    # -- the loop ------------------------------------------------------------------------
    def step(self, stop: threading.Event | None = None) -> int:
        """One poll of both logs; trains every full batch; returns examples trained. Once
        `stop` is set it returns at the next event or batch: what it has not trained
        stays in the buffer, and events not yet read stay in the log."""

        def stopping() -> bool:
            return stop is not None and stop.is_set()

        with self.lock:
            trained = 0
            self.sequence.renew(SEQUENCE_BATCHES_PER_STEP)
            events = self.store.events.read(self.event_offset, READ_LIMIT)
            # Impressions are read at least as far as the events (in event time), so an
            # event finds its impression already open; windows close by event time only.
            horizon = events[-1][1].ts if events else float("inf")
            read_imps = 0
            while True:
                imps = self.store.events.read_impressions(self.impression_offset, READ_LIMIT)
                for offset, imp in imps:
                    self._take(self.joiner.add_impression(imp, offset))
                    self.impression_offset = offset
                read_imps += len(imps)
                if len(imps) < READ_LIMIT or imps[-1][1].ts > horizon:
                    break
            for offset, event in events:
                if stopping():
                    break
                self._take(self.joiner.add_event(event))
                self.sequence.observe(event)  # the user's sequence, learned as it grows
                self.event_offset = offset
            if stopping():  # what is left (windows to close, batches) waits for the restart
                return trained
            self.sequence.train_pending()  # a backlog's next batches, on idle steps too
            if events:
                self.last_input = time.monotonic()
            elif self.idle_close and time.monotonic() - self.last_input > IDLE_CLOSE_S:
                self._take(self.joiner.advance(time.time() - 1.0))
            self._take(self.joiner.advance())
            batch = self.settings.train_batch
            while len(self.buffer) >= batch and not stopping():
                trained += self._train(self.buffer[:batch])
                self.buffer = self.buffer[batch:]
            if (
                self.buffer
                and time.monotonic() - self.buffer_since > self.settings.train_max_wait_s
            ):
                trained += self._flush()
            return trained

    def _take(self, examples: list[Example]) -> None:
        if examples and not self.buffer:
            self.buffer_since = time.monotonic()
        self.buffer.extend(examples)

    def drain(self) -> int:
        """Read both logs to the end, close every window and train everything pending."""
        trained = self.step()
        while self.store.events.last_offset() > self.event_offset:
            trained += self.step()
        with self.lock:
            self._take(self.joiner.advance(float("inf")))
            self.sequence.flush()
            return trained + self._flush()

    def _flush(self) -> int:
        trained = self._train(self.buffer) if self.buffer else 0
        self.buffer = []
        return trained

    def run(self, stop: threading.Event, idle_sleep: float = 0.05) -> None:
        """Train until stopped; publish and checkpoint on their intervals."""
        self.restore()
        self.publish_full()
        while not stop.is_set():
            try:
                trained = self.step(stop)
                self.maybe_publish()
            except Exception:
                log.exception("trainer step failed")
                trained = 0
                stop.wait(1.0)
            if trained == 0:
                stop.wait(idle_sleep)
        self.checkpoint(train_buffer=False)  # stopping: the backlog is saved, not trained

    # -- training ------------------------------------------------------------------------
    def _usable(self, examples: list[Example]) -> list[Example]:
        ok = [
            e
            for e in examples
            if e.features.get("slots") and len(e.features.get("dense", ())) == len(DENSE)
        ]
        self.skipped += len(examples) - len(ok)
        return ok

    def _train(self, examples: list[Example]) -> int:
        examples = self._usable(examples)
        # Impressions logged only to be judged on (a replayed page's rankers' own picks,
        # which nobody saw: `evaluate/replay.py`) are compared, never learned from: they
        # neither admit ids nor move a weight.
        judged = [e for e in examples if e.features.get(JUDGE_ONLY)]
        examples = [e for e in examples if not e.features.get(JUDGE_ONLY)]
        n = len(examples)
        if not n:
            if judged:
                self._compare(judged, self.predict(judged), np.stack([e.labels for e in judged]))
            return 0
        batch = tensors(self.tables, examples + judged, admit=n)
        single_rows, tag_rows, mask, dense, labels, ts = batch
        single = torch.stack(
            [self.tables[s].weight[single_rows[:, j]] for j, s in enumerate(SINGLE_SLOTS)], dim=1
        ).requires_grad_(True)
        tags = self.tables[TAG_SLOT].weight[tag_rows].requires_grad_(True)
        self.model.train()
        logits = self.model(single, tags, mask, dense)
        probs = torch.sigmoid(logits).detach().numpy()
        self._compare(examples + judged, probs, labels.numpy())  # test first
        logits, labels, probs, mask = logits[:n], labels[:n], probs[:n], mask[:n]
        single_rows, tag_rows = single_rows[:n], tag_rows[:n]
        self.metrics.add(probs, labels.numpy())
        loss = (
            F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(0)
            * self.head_w
        ).sum()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        lr = self.config.sparse_lr
        assert single.grad is not None and tags.grad is not None
        single_grad, tags_grad = single.grad[:n], tags.grad[:n]
        for j, slot in enumerate(SINGLE_SLOTS):
            self.tables[slot].apply_gradients(single_rows[:, j], single_grad[:, j], lr, ts)
        used = mask.view(-1) > 0
        self.tables[TAG_SLOT].apply_gradients(
            tag_rows.reshape(-1)[used.numpy()], tags_grad.reshape(-1, self.config.dim)[used], lr, ts
        )
        self.tt.train(examples)  # the retrieval model learns from the same stream
        self.batches += 1
        self.examples_trained += len(examples)
        self.newest_ts = max(self.newest_ts, ts)
        self._rate.append((time.monotonic(), len(examples)))
        if self.batches % EXPIRE_EVERY == 0:
            for table in self.tables.values():
                table.expire(self.newest_ts)
            self.tt.expire(self.newest_ts)
            self.sequence.table.expire(self.newest_ts)
        return len(examples)

    def _compare(self, examples: list[Example], probs: np.ndarray, labels: np.ndarray) -> None:
        """Champion/challenger on this batch, before learning from it."""
        duration_s = np.array([e.features.get("duration_ms", 1000.0) for e in examples]) / 1000.0
        self.duration_sum_s += float(duration_s.sum())
        served_mean_s = self.duration_sum_s / max(self.examples_trained + len(examples), 1)
        self.champion.judge(examples, probs, labels, duration_s, served_mean_s)

    def all_tables(self) -> dict[str, EmbeddingTable]:
        """The ranker's tables, the two-tower's (named tt_*) and the sequence model's item
        rows, as published."""
        return {**self.tables, **self.tt.tables, SEQ_SLOT: self.sequence.table}

    def predict(self, examples: list[Example]) -> np.ndarray:
        """P(action) per head for examples, without learning: (n, len(HEADS))."""
        single_rows, tag_rows, mask, dense, _, _ = tensors(self.tables, examples)
        single = torch.stack(
            [self.tables[s].weight[single_rows[:, j]] for j, s in enumerate(SINGLE_SLOTS)], dim=1
        )
        tags = self.tables[TAG_SLOT].weight[tag_rows]
        self.model.eval()
        with torch.no_grad():
            return torch.sigmoid(self.model(single, tags, mask, dense)).numpy()

    # -- publishing ----------------------------------------------------------------------
    def maybe_publish(self) -> None:
        now = time.monotonic()
        s = self.settings
        if now - self._last_sync >= s.sync_interval_s:
            self.publish_sparse()
            self._last_sync = now
        if now - self._last_dense >= s.dense_sync_interval_s:
            self.publish_dense()
            self._last_dense = now
        if now - self._last_checkpoint >= s.checkpoint_interval_s:
            self.checkpoint()
            self._last_checkpoint = now

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        self._rate = [(t, n) for t, n in self._rate if now - t <= 30.0]
        span = max(now - self._rate[0][0], 1.0) if self._rate else 1.0
        stats = self.joiner.stats.__dict__
        return {
            "version": self.version(),
            "examples_trained": self.examples_trained,
            "batches": self.batches,
            "examples_per_s": round(sum(n for _, n in self._rate) / span, 1),
            "lag_s": round(time.time() - self.newest_ts, 3) if self.newest_ts else None,
            "newest_example_ts": self.newest_ts or None,
            "event_offset": self.event_offset,
            "impression_offset": self.impression_offset,
            "join": dict(stats),
            "open_impressions": len(self.joiner.open),
            "skipped_examples": self.skipped,
            "embedding_rows": {s: len(t) for s, t in self.tables.items()},
            "heads": self.metrics.summary(),
            "champion": self.champion.status(),
            "two_tower": self.tt.status(),
            "sequence": self.sequence.status(),
            "published_at": time.time(),
        }
