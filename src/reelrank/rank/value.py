"""What a served video is worth: the fusion of the ranker's heads, predicted or realised.

    value = sum over heads a of  w_a * P(a)  +  w_watch_time * P(watch ratio) * duration / mean

The watch-time term is the expected share of the catalog's mean duration watched: a
finished 15 s clip earns a quarter of what three quarters of a 60 s video earns (when the
mean is 60 s), so short videos do not win on finish rate alone. The realised value is the
same sum over what the viewer actually did; the champion/challenger comparison orders
pages by it.
"""

from __future__ import annotations

import numpy as np

from .model import HEADS

WATCH_TIME = "watch_time"  # the fusion key of expected watch time
FUSION_KEYS = (*HEADS, WATCH_TIME)
_RATIO = HEADS.index("watch_ratio")


def _weights(weights: dict[str, float]) -> np.ndarray:
    return np.array([weights.get(h, 0.0) for h in HEADS], dtype=np.float64)


def _relative_length(duration_s: np.ndarray, mean_duration_s: float | np.ndarray) -> np.ndarray:
    return np.asarray(duration_s, np.float64) / np.maximum(mean_duration_s, 1e-3)


def fuse_scores(
    probs: np.ndarray,
    weights: dict[str, float],
    duration_s: np.ndarray | None = None,
    mean_duration_s: float | np.ndarray = 1.0,
) -> np.ndarray:
    """(n, len(HEADS)) probabilities -> (n,) predicted value; `mean_duration_s` is the
    catalog's mean when the videos were scored (one for all, or one per video)."""
    score = np.asarray(probs, np.float64) @ _weights(weights)
    w = weights.get(WATCH_TIME, 0.0)
    if w and duration_s is not None:
        score = score + w * probs[:, _RATIO] * _relative_length(duration_s, mean_duration_s)
    return score


def realised_value(
    labels: np.ndarray,
    duration_s: np.ndarray,
    mean_duration_s: float | np.ndarray,
    weights: dict[str, float],
) -> np.ndarray:
    """(n, len(HEADS)) labels -> (n,) the value of what happened, with the watch time
    measured against the catalog mean its page was scored with."""
    return fuse_scores(labels, weights, duration_s, mean_duration_s)
