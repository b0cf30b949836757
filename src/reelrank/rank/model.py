"""The multi-task ranker: embeddings of sparse ids plus dense features -> one logit per
action head. The score is sum_a w_a * P(a).

Two architectures share the input and heads: a shared bottom MLP, and MMoE (experts mixed
per head by softmax gates). `benchmarks/bench_ranker.py` compares them.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
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


_SHAPES: dict[tuple[str, str], dict[str, tuple[int, ...]]] = {}


def check_weights(module: type[nn.Module], config: Any, state: dict[str, torch.Tensor]) -> None:
    """Raise ValueError unless `state` has exactly the weights, by name and shape, of the
    module `module(config)` builds (built once per config). The modules are small dense
    networks: built on the CPU in milliseconds, with the caller's random state kept. (On
    the meta device an embedding's initialisation imports torch's compiler stack, 1-4 s
    of a server's start.)"""
    key = (module.__name__, json.dumps(config.to_json(), sort_keys=True))
    if key not in _SHAPES:
        with torch.random.fork_rng(devices=[]):
            built = module(config)
        _SHAPES[key] = {k: tuple(v.shape) for k, v in built.state_dict().items()}
    want = _SHAPES[key]
    got = {k: tuple(v.shape) for k, v in state.items()}
    if got != want:
        wrong = sorted(set(got) ^ set(want) | {k for k in got if got[k] != want.get(k)})
        raise ValueError(f"{module.__name__} weights do not fit the config: {wrong[:5]}")


class NumpyRanker:
    """`MultiTaskRanker` in eval mode, in numpy, from a state dict: serving scores a page
    with a handful of matrix products (the heads' towers stacked into one), where the
    module calls about forty layers, and a new set of weights needs no module built.
    `tests/test_trainer.py` holds the two together for both architectures."""

    def __init__(self, config: RankerConfig, state: dict[str, torch.Tensor]) -> None:
        check_weights(MultiTaskRanker, config, state)
        w = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in state.items()}
        self.config = config
        self.layers: list[tuple[np.ndarray, np.ndarray]] = []
        if config.arch == "shared_bottom":
            self.layers = [
                (w[f"bottom.{2 * i}.weight"].T.copy(), w[f"bottom.{2 * i}.bias"])
                for i in range(len(config.hidden))
            ]
        else:  # mmoe: every expert in one product, (d_in, E * H)
            e = range(config.experts)
            self.expert_w = np.concatenate([w[f"experts.{i}.0.weight"].T for i in e], axis=1)
            self.expert_b = np.concatenate([w[f"experts.{i}.0.bias"] for i in e])
            self.gate_w, self.gate_b = w["gates.weight"].T.copy(), w["gates.bias"]
        heads = range(len(HEADS))
        # Tower layer 1 per head, (heads, d_out, tower); layer 2, (heads, tower), (heads,)
        self.t1_w = np.stack([w[f"towers.{h}.0.weight"].T for h in heads])
        self.t1_b = np.stack([w[f"towers.{h}.0.bias"] for h in heads])
        self.t2_w = np.stack([w[f"towers.{h}.2.weight"][0] for h in heads])
        self.t2_b = np.array([w[f"towers.{h}.2.bias"][0] for h in heads], dtype=np.float32)
        # The shared bottom feeds every tower the same input: one product for all heads.
        self.t1_flat = np.concatenate(list(self.t1_w), axis=1)  # (d_out, heads * tower)

    def __call__(
        self, single: np.ndarray, tags: np.ndarray, tag_mask: np.ndarray, dense: np.ndarray
    ) -> np.ndarray:
        """single (B, S, d), tags (B, T, d), tag_mask (B, T), dense (B, D) -> logits
        (B, len(HEADS)), as `MultiTaskRanker.forward`."""
        b = len(single)
        count = np.maximum(tag_mask.sum(axis=1, keepdims=True), 1.0)
        pooled = np.einsum("btd,bt->bd", tags, tag_mask) / count
        dot = np.einsum("bd,bd->b", single[:, USER], single[:, VIDEO])[:, None]
        x = np.concatenate([single.reshape(b, -1), pooled, dense, dot], axis=1, dtype=np.float32)
        heads, tower = self.t1_b.shape
        if self.config.arch == "shared_bottom":
            h = x
            for weight, bias in self.layers:
                h = np.maximum(h @ weight + bias, 0.0)
            t = np.maximum((h @ self.t1_flat).reshape(b, heads, tower) + self.t1_b, 0.0)
        else:
            experts = np.maximum(x @ self.expert_w + self.expert_b, 0.0)
            experts = experts.reshape(b, self.config.experts, -1)  # (B, E, H)
            g = (x @ self.gate_w + self.gate_b).reshape(b, heads, -1)
            g = np.exp(g - g.max(axis=2, keepdims=True))
            g /= g.sum(axis=2, keepdims=True)
            mixed = np.einsum("bte,beh->bth", g, experts)  # (B, heads, H)
            t = np.maximum(np.einsum("bth,thk->btk", mixed, self.t1_w) + self.t1_b, 0.0)
        out: np.ndarray = np.einsum("btk,tk->bt", t, self.t2_w) + self.t2_b
        return out
