"""The multi-task ranker: embeddings of sparse ids plus dense features -> one logit per
action head. The score is sum_a w_a * P(a).

Two architectures share the input and heads: a shared bottom MLP, and MMoE (experts mixed
per head by softmax gates). `benchmarks/bench_ranker.py` compares them.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .features import DENSE, SINGLE_SLOTS

HEADS = (
    "finish",
    "long_view",
    "like",
    "share",
    "comment",
    "follow",
    "skip",
    "negative",
    "watch_ratio",
)
BINARY_HEADS = HEADS[:-1]  # watch_ratio is a soft label in [0, 1]
USER, VIDEO = SINGLE_SLOTS.index("user"), SINGLE_SLOTS.index("video")


@dataclass(frozen=True)
class RankerConfig:
    """Hyperparameters of the ranker and its online optimisers."""

    dim: int = 16  # embedding size per slot
    arch: str = "shared_bottom"  # or "mmoe"
    hidden: tuple[int, ...] = (96, 48)  # shared bottom layers (measured: see the README)
    experts: int = 4  # MMoE experts
    expert_hidden: int = 64  # MMoE expert width
    tower: int = 16  # per-head tower width
    dense_lr: float = 2e-3  # Adam on the dense weights
    sparse_lr: float = 0.05  # row-wise Adagrad on embedding rows
    head_weights: dict[str, float] = field(default_factory=lambda: dict.fromkeys(HEADS, 1.0))
    seed: int = 0

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, object]) -> RankerConfig:
        raw = dict(raw)
        raw["hidden"] = tuple(raw["hidden"])  # type: ignore[arg-type]
        return cls(**raw)  # type: ignore[arg-type]

    @property
    def input_dim(self) -> int:
        # every single slot, the pooled hashtags, the dense features, user.video dot
        return (len(SINGLE_SLOTS) + 1) * self.dim + len(DENSE) + 1


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers)


class MultiTaskRanker(nn.Module):
    """Dense part of the ranker; embeddings live in tables outside the module."""

    def __init__(self, config: RankerConfig) -> None:
        super().__init__()
        torch.manual_seed(config.seed)
        self.config = config
        d_in = config.input_dim
        if config.arch == "shared_bottom":
            self.bottom = mlp([d_in, *config.hidden])
            d_out = config.hidden[-1]
        elif config.arch == "mmoe":
            self.experts = nn.ModuleList(
                mlp([d_in, config.expert_hidden]) for _ in range(config.experts)
            )
            self.gates = nn.Linear(d_in, config.experts * len(HEADS))
            d_out = config.expert_hidden
        else:
            raise ValueError(f"unknown ranker arch {config.arch!r}")
        self.towers = nn.ModuleList(
            nn.Sequential(nn.Linear(d_out, config.tower), nn.ReLU(), nn.Linear(config.tower, 1))
            for _ in HEADS
        )

    def inputs(
        self, single: torch.Tensor, tags: torch.Tensor, tag_mask: torch.Tensor, dense: torch.Tensor
    ) -> torch.Tensor:
        """single (B, S, d), tags (B, T, d), tag_mask (B, T), dense (B, D) -> (B, input_dim)."""
        count = tag_mask.sum(dim=1, keepdim=True).clamp(min=1.0)
        pooled = (tags * tag_mask.unsqueeze(2)).sum(dim=1) / count
        dot = (single[:, USER] * single[:, VIDEO]).sum(dim=1, keepdim=True)
        return torch.cat([single.flatten(1), pooled, dense, dot], dim=1)

    def forward(
        self, single: torch.Tensor, tags: torch.Tensor, tag_mask: torch.Tensor, dense: torch.Tensor
    ) -> torch.Tensor:
        """-> logits (B, len(HEADS))."""
        x = self.inputs(single, tags, tag_mask, dense)
        if self.config.arch == "shared_bottom":
            h = self.bottom(x)
            return torch.cat([tower(h) for tower in self.towers], dim=1)
        experts = torch.stack([e(x) for e in self.experts], dim=1)  # (B, E, H)
        gates = self.gates(x).view(len(x), len(HEADS), -1).softmax(dim=2)  # (B, heads, E)
        mixed = torch.einsum("bte,beh->bth", gates, experts)  # (B, heads, H)
        return torch.cat([tower(mixed[:, i]) for i, tower in enumerate(self.towers)], dim=1)
