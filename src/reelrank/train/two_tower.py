"""Online training of the two-tower retrieval model from the joined example stream.

Positives are the examples whose video drew an engagement (finish, long view, like,
share, comment or follow). Each mini-batch of positives is a softmax over the batch's
videos (in-batch negatives) with the logQ correction: the logit of video j is lowered by
log q_j, its estimated probability of appearing in a batch, so popular videos are not
pushed down just for being everyone's negative. q comes from the streaming frequency
estimate of Yi et al. (RecSys 2019): per hashed video id, the steps since it was last
seen, averaged (bounded memory, no per-id dictionary).
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from ..rank.model import HEADS
from ..rank.two_tower import (
    HISTORY,
    TT_SLOTS,
    USER_CONTEXT,
    VIDEO_IDS,
    TwoTower,
    TwoTowerConfig,
    masked_mean,
    tt_slot,
)
from ..state.catalog import MAX_TAGS
from .embedding import EmbeddingTable
from .joiner import Example

POSITIVE = ("finish", "long_view", "like", "share", "comment", "follow")
POSITIVE_HEADS = [HEADS.index(h) for h in POSITIVE]
FREQ_BUCKETS = 1 << 20
FREQ_ALPHA = 0.05


def is_positive(labels: np.ndarray) -> bool:
    return bool(np.max(labels[POSITIVE_HEADS]) >= 0.5)


class FrequencyEstimate:
    """Streaming estimate of how often each video appears among positives: per hashed id,
    an exponential average of the steps between sightings (q = 1 / gap)."""

    def __init__(self, buckets: int = FREQ_BUCKETS, alpha: float = FREQ_ALPHA) -> None:
        self.buckets = buckets
        self.alpha = alpha
        self.last = np.zeros(buckets, dtype=np.int64)
        self.gap = np.zeros(buckets, dtype=np.float32)
        self.step = 0

    def _hash(self, keys: list[str]) -> np.ndarray:
        return np.array([zlib.crc32(k.encode()) % self.buckets for k in keys], dtype=np.int64)

    def update(self, keys: list[str]) -> np.ndarray:
        """Count one batch; return log q for each key (after the update)."""
        self.step += 1
        h = self._hash(keys)
        uniq = np.unique(h)
        seen = self.last[uniq] > 0
        gap = (self.step - self.last[uniq]).astype(np.float32)
        # A first sighting counts the whole stream so far as its gap.
        self.gap[uniq] = np.where(
            seen, (1 - self.alpha) * self.gap[uniq] + self.alpha * gap, float(self.step)
        )
        self.last[uniq] = self.step
        return np.asarray(-np.log(np.maximum(self.gap[h], 1.0)), dtype=np.float32)

    def state(self) -> dict[str, Any]:
        return {
            "last": torch.from_numpy(self.last.copy()),
            "gap": torch.from_numpy(self.gap.copy()),
            "step": self.step,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.last = state["last"].numpy().copy()
        self.gap = state["gap"].numpy().copy()
        self.step = int(state["step"])


class TwoTowerLearner:
    """The two-tower model, its embedding tables and optimisers, trained batch by batch."""

    def __init__(
        self,
        config: TwoTowerConfig,
        capacity: int,
        min_count: int,
        expire_s: float,
    ) -> None:
        self.config = config
        self.model = TwoTower(config)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.tables = {
            name: EmbeddingTable(
                name,
                config.dim,
                capacity=capacity,
                min_count=1
                if name in ("tt_region", "tt_language", "tt_device", "tt_hour")
                else min_count,
                expire_s=expire_s,
                seed=100 + i,
            )
            for i, name in enumerate(TT_SLOTS)
        }
        self.freq = FrequencyEstimate()
        self.batches = 0
        self.positives = 0
        self.loss = float("nan")
        self.recall_at_10: float | None = None  # in-batch, measured before each update

    # -- inputs --------------------------------------------------------------------------
    def _rows(self, slot: str, keys: list[str | None], admit: bool, ts: float) -> np.ndarray:
        return self.tables[tt_slot(slot)].lookup(keys, admit=admit, ts=ts)

    def user_rows(
        self, examples: list[Example], admit: bool, ts: float
    ) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        ctx = np.stack(
            [
                self._rows(s, [e.features["slots"].get(s) for e in examples], admit, ts)
                for s in USER_CONTEXT
            ],
            axis=1,
        )
        hist_keys: list[str | None] = []
        for e in examples:
            h = list(e.features.get("history", ()))[:HISTORY]
            hist_keys += h + [None] * (HISTORY - len(h))
        # History ids are looked up, never admitted: they are admitted as videos.
        hist = self._rows("video", hist_keys, False, ts).reshape(len(examples), HISTORY)
        mask = torch.tensor([k is not None for k in hist_keys], dtype=torch.float32)
        return ctx, hist, mask.view(len(examples), HISTORY)

    def video_rows(
        self, examples: list[Example], admit: bool, ts: float
    ) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        ids = np.stack(
            [
                self._rows(s, [e.features["slots"].get(s) for e in examples], admit, ts)
                for s in VIDEO_IDS
            ],
            axis=1,
        )
        flat: list[str | None] = []
        for e in examples:
            names = list(e.features.get("hashtags", ()))[:MAX_TAGS]
            flat += names + [None] * (MAX_TAGS - len(names))
        tags = self._rows("hashtag", flat, admit, ts).reshape(len(examples), MAX_TAGS)
        mask = torch.tensor([k is not None for k in flat], dtype=torch.float32)
        return ids, tags, mask.view(len(examples), MAX_TAGS)

    def _gather(self, slot: str, rows: np.ndarray, grad: bool) -> torch.Tensor:
        out = self.tables[tt_slot(slot)].weight[torch.from_numpy(rows)]
        return out.requires_grad_(True) if grad else out

    # -- training ------------------------------------------------------------------------
    def train(self, examples: list[Example]) -> int:
        """One step on the batch's positives; returns how many."""
        pos = [e for e in examples if is_positive(e.labels) and e.features.get("slots")]
        if len(pos) < 2:
            return 0
        ts = max(e.ts for e in pos)
        ctx, hist, hist_mask = self.user_rows(pos, admit=True, ts=ts)
        ids, tags, tag_mask = self.video_rows(pos, admit=True, ts=ts)
        u_emb = [self._gather(s, ctx[:, j], True) for j, s in enumerate(USER_CONTEXT)]
        h_emb = self._gather("video", hist, True)  # (B, H, d)
        v_emb = [self._gather(s, ids[:, j], True) for j, s in enumerate(VIDEO_IDS)]
        t_emb = self._gather("hashtag", tags, True)  # (B, T, d)
        user_x = torch.cat([*u_emb, masked_mean(h_emb, hist_mask)], dim=1)
        video_x = torch.cat([*v_emb, masked_mean(t_emb, tag_mask)], dim=1)
        self.model.train()
        u = self.model.user_vectors(user_x)
        v = self.model.video_vectors(video_x)
        video_keys = [str(e.features["slots"].get("video")) for e in pos]
        log_q = torch.from_numpy(self.freq.update(video_keys))
        logits = u @ v.T / self.config.temperature - log_q[None, :]
        # The same video twice in a batch is not its own negative.
        same = np.array(video_keys)[:, None] == np.array(video_keys)[None, :]
        np.fill_diagonal(same, False)
        logits = logits.masked_fill(torch.from_numpy(same), float("-inf"))
        target = torch.arange(len(pos))
        with torch.no_grad():  # test, then train: in-batch recall@10 before the update
            k = min(10, len(pos))
            hit = (logits.topk(k, dim=1).indices == target[:, None]).any(dim=1).float().mean()
            r, prev = float(hit), self.recall_at_10
            self.recall_at_10 = r if prev is None else 0.98 * prev + 0.02 * r
        loss = F.cross_entropy(logits, target)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        lr = self.config.sparse_lr
        d = self.config.dim
        for j, s in enumerate(USER_CONTEXT):
            self._apply(s, ctx[:, j], u_emb[j].grad, lr, ts)
        for j, s in enumerate(VIDEO_IDS):
            self._apply(s, ids[:, j], v_emb[j].grad, lr, ts)
        self._apply_masked("video", hist, h_emb.grad, hist_mask, lr, ts, d)
        self._apply_masked("hashtag", tags, t_emb.grad, tag_mask, lr, ts, d)
        self.batches += 1
        self.positives += len(pos)
        self.loss = float(loss.detach())
        return len(pos)

    def _apply(self, slot: str, rows: np.ndarray, grad: Any, lr: float, ts: float) -> None:
        assert grad is not None
        self.tables[tt_slot(slot)].apply_gradients(rows, grad, lr, ts)

    def _apply_masked(
        self,
        slot: str,
        rows: np.ndarray,
        grad: Any,
        mask: torch.Tensor,
        lr: float,
        ts: float,
        d: int,
    ) -> None:
        assert grad is not None
        used = mask.reshape(-1) > 0
        if bool(used.any()):
            self.tables[tt_slot(slot)].apply_gradients(
                rows.reshape(-1)[used.numpy()], grad.reshape(-1, d)[used], lr, ts
            )

    def expire(self, now: float) -> None:
        for table in self.tables.values():
            table.expire(now)

    # -- publishing and checkpoints ------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "positives": self.positives,
            "loss": None if np.isnan(self.loss) else round(self.loss, 4),
            "in_batch_recall_at_10": None
            if self.recall_at_10 is None
            else round(self.recall_at_10, 4),
            "embedding_rows": {s: len(t) for s, t in self.tables.items()},
        }

    def payload(self) -> dict[str, Any]:
        return {"config": json.dumps(self.config.to_json()), "state": self.model.state_dict()}

    def state(self) -> dict[str, Any]:
        return {
            **self.payload(),
            "optimizer": self.optimizer.state_dict(),
            "tables": {s: t.state() for s, t in self.tables.items()},
            "freq": self.freq.state(),
            "batches": self.batches,
            "positives": self.positives,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.config = TwoTowerConfig.from_json(json.loads(state["config"]))
        self.model = TwoTower(self.config)
        self.model.load_state_dict(state["state"])
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.config.lr)
        self.optimizer.load_state_dict(state["optimizer"])
        for s, t in self.tables.items():
            t.load_state(state["tables"][s])
        self.freq.load_state(state["freq"])
        self.batches = int(state["batches"])
        self.positives = int(state["positives"])
