"""The two-tower retrieval model: a user tower and a video tower map to one unit-vector
space, so retrieval is a nearest-neighbour search of the user's vector among videos'.

User tower input: embeddings of the user id and the request context (region, language,
device, hour) and the mean embedding of the videos the user engaged with most recently
(the same table as the video tower's ids, so the user is described in video space).
Video tower input: embeddings of the video id, creator and sound and the mean of its
hashtags. A brand-new video has no id row yet (it shares the default row) but its creator,
sound and hashtags place it.

The trainer learns it with in-batch negatives and the logQ correction for the sampling
bias of popular videos (Yi et al., "Sampling-bias-corrected neural modeling for large
corpus item recommendations", RecSys 2019). Serving runs the towers in numpy (`Tower`):
a handful of small matrix products is cheaper without a framework call per request.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

USER_CONTEXT = ("user", "region", "language", "device", "hour")  # request-level slots
VIDEO_IDS = ("video", "creator", "sound")
HISTORY = 10  # recent engagements in the user tower


def tt_slot(slot: str) -> str:
    """The two-tower's own embedding table for a slot (its rows never mix with the
    ranker's)."""
    return f"tt_{slot}"


TT_SLOTS = tuple(tt_slot(s) for s in (*USER_CONTEXT, *VIDEO_IDS, "hashtag"))


@dataclass(frozen=True)
class TwoTowerConfig:
    dim: int = 16  # embedding size per slot
    hidden: int = 64
    out: int = 32  # the shared vector space
    temperature: float = 0.05
    lr: float = 2e-3  # Adam on the towers
    sparse_lr: float = 0.05  # row-wise Adagrad on the embedding rows
    seed: int = 1

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> TwoTowerConfig:
        return cls(**raw)

    @property
    def user_in(self) -> int:
        return (len(USER_CONTEXT) + 1) * self.dim  # context slots + history mean

    @property
    def video_in(self) -> int:
        return (len(VIDEO_IDS) + 1) * self.dim  # id slots + hashtag mean


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class TwoTower(nn.Module):
    def __init__(self, config: TwoTowerConfig) -> None:
        super().__init__()
        torch.manual_seed(config.seed)
        self.config = config
        self.user = _mlp([config.user_in, config.hidden, config.out])
        self.video = _mlp([config.video_in, config.hidden, config.out])

    def user_vectors(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.user(x), dim=1)

    def video_vectors(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.video(x), dim=1)


def masked_mean(rows: torch.Tensor | np.ndarray, mask: torch.Tensor | np.ndarray) -> Any:
    """(B, T, d) rows and (B, T) 0/1 mask -> (B, d) mean over the unmasked rows (0 if none)."""
    count = mask.sum(1)[:, None]
    total = (rows * mask[:, :, None]).sum(1)
    if isinstance(count, torch.Tensor):
        return total / count.clamp(min=1.0)
    return total / np.maximum(count, 1.0)


class Tower:
    """One tower's weights in numpy, for serving: Linear, ReLU, Linear, then unit length."""

    def __init__(self, state: dict[str, torch.Tensor], prefix: str) -> None:
        self.layers = [
            (
                state[f"{prefix}.{i}.weight"].numpy().T.astype(np.float32).copy(),
                state[f"{prefix}.{i}.bias"].numpy().astype(np.float32).copy(),
            )
            for i in (0, 2)
        ]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        (w1, b1), (w2, b2) = self.layers
        h = np.maximum(x @ w1 + b1, 0.0)
        out = h @ w2 + b2
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return (out / np.maximum(norms, 1e-12)).astype(np.float32)
