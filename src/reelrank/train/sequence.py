"""The sequence model's online learner: every engagement extends its user's sequence and
the sequence is learned at once.

The learner folds the event log in offset order. An engagement (finish, replay, like,
share, comment, follow) appends the video to its user's sequence (a video engaged again
moves to the end); the sequence, newest last, joins the next mini-batch. A batch trains
every position of its sequences to predict the video that followed, against the true next
video and `negatives` videos drawn uniformly from the table, with a softmax cross-entropy
(a sampled softmax: many negatives train the top of the ranking far faster than one).
Each step also rehearses the current sequences of `rehearse` users drawn at random, so a
single pass over the stream does not leave the attention weights under-trained.
Item rows learn by row-wise Adagrad and are published as sparse deltas; the attention
weights by Adam, published with the dense weights.
"""

from __future__ import annotations

import json
from collections import OrderedDict, deque
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from ..rank.sequence import SEQ_EVENTS, SEQ_SLOT, SequenceConfig, SequenceEncoder
from ..schema import Event
from .embedding import EmbeddingTable, pack_sequences, unpack_sequences

MAX_USERS = 1_000_000  # sequences kept in memory; the least recently active go first
MAX_BACKLOG = 200_000  # sequences waiting to be trained; beyond, the oldest are dropped


class SequenceLearner:
    def __init__(
        self,
        config: SequenceConfig,
        capacity: int = 1 << 20,
        min_count: int = 1,
        expire_s: float = 7 * 86400.0,
    ) -> None:
        self.config = config
        self.model = SequenceEncoder(config)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.table = EmbeddingTable(
            SEQ_SLOT, config.dim, capacity, min_count, expire_s, init_std=0.1, seed=config.seed
        )
        self.history: OrderedDict[str, deque[str]] = OrderedDict()
        self.pending: deque[tuple[list[str], float]] = deque()  # sequences to train
        self.rng = np.random.default_rng(config.seed)
        self.sequences = 0  # sequences trained
        self.batches = 0
        self.skipped = 0  # sequences dropped untrained, over MAX_BACKLOG behind
        self.budget: int | None = None  # batches it may still train; None: no bound
        self.loss = 0.0  # moving average of the batch loss

    def observe(self, event: Event) -> int:
        """Fold one event; train when a batch is full. Returns sequences trained."""
        if event.type.value not in SEQ_EVENTS:
            return 0
        seq = self.history.get(event.user_id)
        if seq is None:
            seq = self.history[event.user_id] = deque(maxlen=self.config.max_len + 1)
            if len(self.history) > MAX_USERS:
                self.history.popitem(last=False)
        else:
            self.history.move_to_end(event.user_id)
        if seq and seq[-1] == event.video_id:
            return 0  # a second engagement with the video just engaged (finish, then like)
        if event.video_id in seq:
            seq.remove(event.video_id)
        seq.append(event.video_id)
        if len(seq) < 2:
            return 0
        self.pending.append((list(seq), event.ts))
        if len(self.pending) > MAX_BACKLOG:  # far behind: the oldest go untrained
            self.pending.popleft()
            self.skipped += 1
        return self.train_pending()

    def renew(self, batches: int | None) -> None:
        """Allow `batches` more training batches (None: no bound). The trainer renews this
        at every step, so a live stream (a few batches a step) trains as it arrives, while
        a backlog (a long log read from its start, thousands of engagements a step) waits
        in `pending` and is trained `batches` at a time, step after step, the idle ones
        too: the sequence model's training never holds the ranker's behind it."""
        self.budget = batches

    def train_pending(self) -> int:
        """Train full batches of what is pending, oldest first, while the budget allows;
        returns the sequences trained."""
        trained = 0
        size = self.config.batch
        while len(self.pending) >= size and (self.budget is None or self.budget > 0):
            if self.budget is not None:
                self.budget -= 1
            trained += self._train_batch([self.pending.popleft() for _ in range(size)])
        return trained

    def flush(self) -> int:
        """Train everything pending, in batches, whatever the budget."""
        trained = 0
        while self.pending:
            take = min(self.config.batch, len(self.pending))
            trained += self._train_batch([self.pending.popleft() for _ in range(take)])
        return trained

    def _train_batch(self, batch: list[tuple[list[str], float]]) -> int:
        seqs = [s for s, _ in batch]
        if self.config.rehearse and len(self.history) > 1:
            # Rehearsal: a single pass over a stream under-trains attention; users' current
            # sequences drawn at random revisit what was learned (online, bounded cost).
            users = list(self.history.values())
            for i in self.rng.integers(0, len(users), self.config.rehearse):
                if len(users[i]) >= 2:
                    seqs.append(list(users[i]))
        self._train(seqs, max(t for _, t in batch))
        return len(batch)

    def _train(self, seqs: list[list[str]], ts: float) -> None:
        c = self.config
        n = c.max_len + 1
        keys: list[str | None] = []
        for s in seqs:
            s = s[-n:]
            keys += [None] * (n - len(s)) + list(s)
        table = self.table
        rows = table.lookup(keys, admit=True, ts=ts).reshape(len(seqs), n)
        present = torch.tensor([k is not None for k in keys]).view(len(seqs), n)
        inputs, targets = rows[:, :-1], rows[:, 1:]
        valid_in = present[:, :-1]
        valid = valid_in & present[:, 1:] & torch.from_numpy(targets > 0)
        if not bool(valid.any()):
            return
        known = len(table.ids)
        negs = self.rng.integers(1, max(known, 2), size=c.negatives)
        emb_in = table.weight[inputs].requires_grad_(True)
        emb_t = table.weight[targets].requires_grad_(True)
        emb_n = table.weight[negs].requires_grad_(True)
        self.model.train()
        h = self.model(emb_in, valid_in)  # (B, L, d)
        pos = (h * emb_t).sum(-1, keepdim=True)  # (B, L, 1)
        neg = h @ emb_n.T  # (B, L, K)
        hit = torch.from_numpy(negs[None, None, :] == targets[:, :, None])
        neg = neg.masked_fill(hit, -1e9)  # a drawn negative that is the true next video
        logits = torch.cat([pos, neg], dim=-1)[valid]
        loss = F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long))
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        assert emb_in.grad is not None and emb_t.grad is not None and emb_n.grad is not None
        grads = torch.cat(
            [emb_in.grad.reshape(-1, c.dim), emb_t.grad.reshape(-1, c.dim), emb_n.grad]
        )
        used = np.concatenate([inputs.reshape(-1), targets.reshape(-1), negs])
        keep = used > 0  # the shared default row (padding, unadmitted ids) stays put
        table.apply_gradients(used[keep], grads[torch.from_numpy(keep)], c.sparse_lr, ts)
        self.sequences += len(seqs)
        self.batches += 1
        value = float(loss.detach())
        self.loss = value if self.batches == 1 else 0.98 * self.loss + 0.02 * value

    # -- publishing and checkpoints ------------------------------------------------------
    def payload(self) -> dict[str, Any]:
        """What serving needs besides the item rows: config and attention weights."""
        return {"config": json.dumps(self.config.to_json()), "state": self.model.state_dict()}

    def status(self) -> dict[str, Any]:
        return {
            "sequences_trained": self.sequences,
            "sequences_pending": len(self.pending),
            "sequences_dropped_behind": self.skipped,
            "users": len(self.history),
            "items": len(self.table),
            "loss": round(self.loss, 4) if self.batches else None,
        }

    def state(self) -> dict[str, Any]:
        return {
            "config": json.dumps(self.config.to_json()),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "table": self.table.state(),
            # Packed (ids once, codes in int32 tensors): a backlog of MAX_BACKLOG
            # sequences costs well under a second to save instead of several.
            "history_users": pack_sequences([self.history]),
            "history_packed": pack_sequences(self.history.values()),
            "sequences": self.sequences,
            "batches": self.batches,
            "skipped": self.skipped,
            "pending_packed": pack_sequences(seq for seq, _ in self.pending),
            "pending_ts": torch.tensor([ts for _, ts in self.pending], dtype=torch.float64),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        if SequenceConfig.from_json(json.loads(state["config"])) != self.config:
            return  # another shape: the sequence model starts afresh
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.table.load_state(state["table"])
        n = self.config.max_len + 1
        if "history_packed" in state:
            (users,) = unpack_sequences(state["history_users"])
            seqs = unpack_sequences(state["history_packed"])
            history = dict(zip(users, seqs, strict=True))
            pending = list(
                zip(
                    unpack_sequences(state["pending_packed"]),
                    state["pending_ts"].tolist(),
                    strict=True,
                )
            )
        else:  # a checkpoint written before the packed form
            history = json.loads(state["history"])
            pending = [(list(q), float(t)) for q, t in json.loads(state.get("pending", "[]"))]
        self.history = OrderedDict((u, deque(s, maxlen=n)) for u, s in history.items())
        self.sequences = int(state["sequences"])
        self.batches = int(state["batches"])
        self.skipped = int(state.get("skipped", 0))
        self.pending = deque(pending)
