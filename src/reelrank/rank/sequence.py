"""The sequence model: self-attention over the user's latest engaged videos, in the
spirit of SASRec (Kang and McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018).

The ordered videos a user engaged with (newest last) go through causal self-attention
blocks; the output at the last position is the user's next-video vector, and a video's
score is its dot product with its own item embedding (the same table as the inputs). On
next-item tasks sequence models are the ones to beat: the order of what someone just
watched says more about what comes next than the set of what they ever liked.

The module holds positions, attention and feed-forward weights; item embeddings live in a
collisionless table outside it (trained row-wise, published as sparse deltas like every
other embedding). Serving runs it in torch on one sequence per request.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from scipy.special import erf
from torch import nn

SEQ_SLOT = "seq_video"  # the item embedding table's slot name
SEQ_EVENTS = frozenset({"finish", "replay", "like", "share", "comment", "follow"})


@dataclass(frozen=True)
class SequenceConfig:
    dim: int = 32
    max_len: int = 20  # latest engagements a user vector is built from
    blocks: int = 2
    heads: int = 1
    dropout: float = 0.1
    lr: float = 1e-3  # Adam on the attention weights
    sparse_lr: float = 0.05  # row-wise Adagrad on the item rows
    negatives: int = 128  # sampled items per batch, shared by every position
    batch: int = 64  # new sequences per training step
    rehearse: int = 64  # and current sequences of users drawn at random, learned again
    seed: int = 2

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> SequenceConfig:
        return cls(**raw)


class _Block(nn.Module):
    """Pre-norm causal self-attention and a point-wise feed-forward layer."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(
            nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q = self.norm1(x)
        a, _ = self.attn(q, q, q, attn_mask=mask, need_weights=False)
        x = x + self.drop(a)
        return x + self.drop(self.ff(self.norm2(x)))


class SequenceEncoder(nn.Module):
    """items (B, L, d) left-padded, valid (B, L) -> next-item vectors (B, L, d)."""

    def __init__(self, config: SequenceConfig) -> None:
        super().__init__()
        torch.manual_seed(config.seed)
        self.config = config
        self.position = nn.Embedding(config.max_len, config.dim)
        nn.init.normal_(self.position.weight, std=0.02)
        self.blocks = nn.ModuleList(
            _Block(config.dim, config.heads, config.dropout) for _ in range(config.blocks)
        )
        self.norm = nn.LayerNorm(config.dim)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, items: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        b, n, d = items.shape
        pos = self.position.weight[self.config.max_len - n :]  # the newest is always last
        x = self.drop(items * math.sqrt(d) + pos) * valid.unsqueeze(2)
        # Causal, and padding keys masked; a position always sees itself (no empty rows).
        blocked = torch.ones(n, n, dtype=torch.bool).triu(1).unsqueeze(0) | ~valid.unsqueeze(1)
        blocked = blocked & ~torch.eye(n, dtype=torch.bool).unsqueeze(0)
        mask = torch.zeros(b, n, n).masked_fill(blocked, -1e9)
        mask = mask.repeat_interleave(self.config.heads, dim=0)
        for block in self.blocks:
            x = block(x, mask) * valid.unsqueeze(2)
        out: torch.Tensor = self.norm(x)
        return out


LN_EPS = 1e-5  # torch's LayerNorm default


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    out: np.ndarray = (x - mean) / np.sqrt(var + LN_EPS) * w + b
    return out


class NumpyEncoder:
    """The encoder's last output for one sequence, in numpy: serving asks for one user
    vector per request, where a framework call per layer costs more than the arithmetic.
    Matches `SequenceEncoder` in eval mode (tests/test_sequence.py holds them together)."""

    def __init__(self, config: SequenceConfig, state: dict[str, torch.Tensor]) -> None:
        self.config = config
        w = {k: v.detach().numpy().astype(np.float64) for k, v in state.items()}
        d = config.dim
        self.position = w["position.weight"]
        self.norm = (w["norm.weight"], w["norm.bias"])
        self.blocks = []
        for i in range(config.blocks):
            b = f"blocks.{i}."
            w_in, b_in = w[b + "attn.in_proj_weight"], w[b + "attn.in_proj_bias"]
            self.blocks.append(
                {
                    "norm1": (w[b + "norm1.weight"], w[b + "norm1.bias"]),
                    "norm2": (w[b + "norm2.weight"], w[b + "norm2.bias"]),
                    "q": (w_in[:d].T, b_in[:d]),
                    "k": (w_in[d : 2 * d].T, b_in[d : 2 * d]),
                    "v": (w_in[2 * d :].T, b_in[2 * d :]),
                    "out": (w[b + "attn.out_proj.weight"].T, w[b + "attn.out_proj.bias"]),
                    "ff1": (w[b + "ff.0.weight"].T, w[b + "ff.0.bias"]),
                    "ff2": (w[b + "ff.3.weight"].T, w[b + "ff.3.bias"]),
                }
            )

    def last(self, items: np.ndarray) -> np.ndarray:
        """items (n, d), oldest first -> the next-item vector (d,)."""
        n, d = items.shape
        heads = self.config.heads
        hd = d // heads
        x = items.astype(np.float64) * math.sqrt(d) + self.position[self.config.max_len - n :]
        causal = np.triu(np.full((n, n), -1e9), 1)
        for j, blk in enumerate(self.blocks):
            q_in = _layer_norm(x, *blk["norm1"])
            only_last = j == len(self.blocks) - 1  # only the last position is read
            rows = q_in[-1:] if only_last else q_in
            m = len(rows)
            (wq, bq), (wk, bk), (wv, bv) = blk["q"], blk["k"], blk["v"]
            q = (rows @ wq + bq).reshape(m, heads, hd).transpose(1, 0, 2)
            k = (q_in @ wk + bk).reshape(n, heads, hd).transpose(1, 0, 2)
            v = (q_in @ wv + bv).reshape(n, heads, hd).transpose(1, 0, 2)
            scores = q @ k.transpose(0, 2, 1) / math.sqrt(hd) + causal[n - m :]
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores /= scores.sum(axis=-1, keepdims=True)
            wo, bo = blk["out"]
            x = (x[-1:] if only_last else x) + (scores @ v).transpose(1, 0, 2).reshape(m, d) @ wo
            x = x + bo
            (w1, b1), (w2, b2) = blk["ff1"], blk["ff2"]
            h = _layer_norm(x, *blk["norm2"]) @ w1 + b1
            h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)))  # exact GELU, as torch's default
            x = x + h @ w2 + b2
        out: np.ndarray = _layer_norm(x, *self.norm)[-1].astype(np.float32)
        return out
