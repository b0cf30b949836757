"""Simulated viewers for closed-loop runs: planted tastes over a catalog's tags, satiation,
watch time that depends on the video's length and on how well it matches, engagement
drawn from the match, and sessions that end sooner when the feed is poor.

The model, per video shown:
  interest = max over the video's tags of taste[tag] * (1 - depth * satiation[tag])
  match    = interest * (0.4 + 0.6 * quality)          (quality: planted, in [0, 1])
  skip early with P = skip_scale * (1 - match)^2 + skip_floor (a few seconds watched);
  else finish with P = sigmoid(f0 + f_match * (match - 0.5) - f_len * ln(duration / 30 s)),
  else watch a ratio ~ Beta with mean ratio_base + ratio_match * match;
  like / share / comment / follow with P = rate * match^2 when not skipped,
  "not interested" with P = ni_rate * (1 - match)^2 when skipped.
Satiation of the video's tags rises toward 1 by `satiation_gain` per video; every other
tag's recovers by `satiation_recovery` per video, and all recover by `rest_recovery`
between sessions. After each video the viewer leaves with P = leave_base + leave_per_poor
* poor, where `poor` rises by one per skipped video and falls by one (not below zero) per
good one (finished, or watched at least `good_ratio` of it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Behaviour:
    """The simulated viewers' parameters (the model is in the module docstring)."""

    loved_tags: tuple[int, int] = (2, 4)  # tags each viewer loves: from .. to (inclusive)
    loved_taste: tuple[float, float] = (0.6, 0.95)
    other_taste: tuple[float, float] = (0.02, 0.15)
    popularity_bias: float = 0.5  # loved tags drawn with P ~ (videos with the tag)^this
    untagged_taste: float = 0.1
    declare_share: float = 0.5  # viewers who name their first loved tag at sign-up
    satiation_depth: float = 0.7
    satiation_gain: float = 0.12
    satiation_recovery: float = 0.9
    rest_recovery: float = 0.2
    skip_scale: float = 0.9
    skip_floor: float = 0.02
    skip_seconds: tuple[float, float] = (0.5, 4.0)
    finish_bias: float = 0.3
    finish_match: float = 3.0
    finish_length: float = 1.0
    ratio_base: float = 0.15
    ratio_match: float = 0.65
    ratio_concentration: float = 4.0
    like_rate: float = 0.25
    share_rate: float = 0.04
    comment_rate: float = 0.03
    follow_rate: float = 0.02
    not_interested_rate: float = 0.05
    leave_base: float = 0.02
    leave_per_poor: float = 0.06
    good_ratio: float = 0.5
    max_session_videos: int = 200


@dataclass
class SimViewer:
    """A viewer with a planted taste over tag indices and the satiation state it carries."""

    id: str
    taste: np.ndarray  # (n_tags,) probability of enjoying a video of each tag
    loved: list[int]
    declared: list[int]  # loved tags the viewer named at sign-up (the app knows them)
    satiation: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.satiation = np.zeros_like(self.taste)

    def fresh(self) -> SimViewer:
        """The same viewer before any session (no satiation)."""
        return SimViewer(self.id, self.taste, self.loved, self.declared)

    def effective_taste(self, b: Behaviour) -> np.ndarray:
        """Taste per tag after satiation: (n_tags,)."""
        out: np.ndarray = self.taste * (1.0 - b.satiation_depth * self.satiation)
        return out

    def interest(self, tags: list[int], b: Behaviour) -> float:
        """Interest in a video with these tags, now."""
        if not tags:
            return b.untagged_taste
        idx = np.asarray(tags)
        return float(np.max(self.taste[idx] * (1.0 - b.satiation_depth * self.satiation[idx])))

    def satiate(self, tags: list[int], b: Behaviour) -> None:
        """One more video with these tags: they satiate, every other tag recovers."""
        shown = np.zeros(len(self.satiation), dtype=bool)
        shown[tags] = True
        self.satiation[~shown] *= b.satiation_recovery
        self.satiation[shown] += b.satiation_gain * (1.0 - self.satiation[shown])

    def rest(self, b: Behaviour) -> None:
        """Time passes between two sessions."""
        self.satiation *= b.rest_recovery


def draw_viewers(
    n: int, tag_counts: np.ndarray, rng: np.random.Generator, b: Behaviour, prefix: str = "sv"
) -> list[SimViewer]:
    """n viewers who love a few tags, drawn with a bias toward common tags; a
    `declare_share` of them name their first loved tag at sign-up."""
    n_tags = len(tag_counts)
    weights = np.maximum(tag_counts.astype(np.float64), 0.0) ** b.popularity_bias
    weights = weights / weights.sum()
    drawable = int(np.count_nonzero(weights))
    viewers = []
    for u in range(n):
        k = min(int(rng.integers(b.loved_tags[0], b.loved_tags[1] + 1)), drawable)
        loved = [int(t) for t in rng.choice(n_tags, size=k, replace=False, p=weights)]
        taste = rng.uniform(*b.other_taste, size=n_tags)
        taste[loved] = rng.uniform(*b.loved_taste, size=k)
        declared = loved[:1] if rng.random() < b.declare_share else []
        viewers.append(SimViewer(f"{prefix}{u}", taste, loved, declared))
    return viewers


def match(interest: float, quality: float) -> float:
    """How well a video suits the viewer now, in [0, 1]."""
    return interest * (0.4 + 0.6 * quality)


def finish_probability(m: float, duration_ms: int, b: Behaviour) -> float:
    """P(finish | not skipped): rises with the match, falls with the length."""
    x = b.finish_bias + b.finish_match * (m - 0.5)
    x -= b.finish_length * math.log(max(duration_ms, 1000) / 30_000)
    return 1.0 / (1.0 + math.exp(-x))


def skip_probability(m: float, b: Behaviour) -> float:
    return min(b.skip_scale * (1.0 - m) ** 2 + b.skip_floor, 1.0)


def mean_watch_ratio(m: float, b: Behaviour) -> float:
    """Mean watch ratio of a video watched but not finished."""
    return b.ratio_base + b.ratio_match * m


@dataclass
class Reaction:
    """What one viewer did with one video."""

    watch_ms: int
    skipped: bool = False
    finished: bool = False
    liked: bool = False
    shared: bool = False
    commented: bool = False
    followed: bool = False
    not_interested: bool = False
    match: float = 0.0

    def positive(self, duration_ms: int) -> bool:
        """An engagement a baseline counts: finished, engaged, or watched 80 %."""
        return (
            self.finished
            or self.liked
            or self.shared
            or self.commented
            or self.followed
            or self.watch_ms >= 0.8 * duration_ms
        )


def react(m: float, duration_ms: int, rng: np.random.Generator, b: Behaviour) -> Reaction:
    """The viewer's reaction to a video of this match and length."""
    if rng.random() < skip_probability(m, b):
        seconds = rng.uniform(*b.skip_seconds)
        watch = int(min(seconds * 1000, 0.5 * duration_ms))
        ni = bool(rng.random() < b.not_interested_rate * (1.0 - m) ** 2)
        return Reaction(watch, skipped=True, not_interested=ni, match=m)
    if rng.random() < finish_probability(m, duration_ms, b):
        out = Reaction(duration_ms, finished=True, match=m)
    else:
        mean = min(max(mean_watch_ratio(m, b), 0.02), 0.98)
        k = b.ratio_concentration
        ratio = float(rng.beta(mean * k, (1.0 - mean) * k))
        out = Reaction(int(ratio * duration_ms), match=m)
    m2 = m * m
    out.liked = bool(rng.random() < b.like_rate * m2)
    out.shared = bool(rng.random() < b.share_rate * m2)
    out.commented = bool(rng.random() < b.comment_rate * m2)
    out.followed = bool(rng.random() < b.follow_rate * m2)
    return out


class SessionMood:
    """Whether the viewer stays for another video: patience wears with poor videos."""

    def __init__(self, b: Behaviour) -> None:
        self.b = b
        self.poor = 0
        self.videos = 0

    def leave_probability(self) -> float:
        return min(self.b.leave_base + self.b.leave_per_poor * self.poor, 1.0)

    def after(self, r: Reaction, duration_ms: int, rng: np.random.Generator) -> bool:
        """Take in a reaction; True when the viewer leaves now."""
        self.videos += 1
        if r.skipped:
            self.poor += 1
        elif r.finished or r.watch_ms >= self.b.good_ratio * duration_ms:
            self.poor = max(self.poor - 1, 0)
        if self.videos >= self.b.max_session_videos:
            return True
        return bool(rng.random() < self.leave_probability())
