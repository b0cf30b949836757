"""Layered, deterministic hash bucketing of users into experiment arms.

A user's bucket in a layer is a hash of (layer, user id) into BUCKETS slots, so the same
user lands in the same bucket on every process and every restart, and buckets of
different layers are independent (experiments in different layers overlap freely; two
experiments in one layer share its buckets and never overlap). An experiment owns a
share of its layer's buckets and splits them among its arms by weight.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ..errors import InvalidInput

BUCKETS = 10_000


def bucket(layer: str, user_id: str) -> int:
    """The user's bucket in a layer, 0..BUCKETS-1."""
    digest = hashlib.blake2b(f"{layer}\x00{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


@dataclass(frozen=True)
class Arm:
    name: str
    weight: float


@dataclass(frozen=True)
class Allocation:
    """An experiment's place in a layer: buckets [start, start + size), split among arms."""

    experiment: str
    layer: str
    start: int
    size: int
    arms: tuple[Arm, ...]

    def __post_init__(self) -> None:
        if not 0 <= self.start < BUCKETS or not 1 <= self.size <= BUCKETS - self.start:
            raise InvalidInput("buckets", f"must lie within 0..{BUCKETS - 1}")
        if len(self.arms) < 2:
            raise InvalidInput("arms", "an experiment needs at least two arms")
        if any(a.weight <= 0 for a in self.arms):
            raise InvalidInput("arms", "arm weights must be positive")
        if len({a.name for a in self.arms}) != len(self.arms):
            raise InvalidInput("arms", "arm names must be distinct")

    def arm_of(self, user_id: str) -> str | None:
        """The user's arm, or None when their bucket is outside the experiment."""
        b = bucket(self.layer, user_id) - self.start
        if not 0 <= b < self.size:
            return None
        total = sum(a.weight for a in self.arms)
        edge = 0.0
        for arm in self.arms:
            edge += arm.weight / total * self.size
            if b < edge:
                return arm.name
        return self.arms[-1].name

    def expected_shares(self) -> dict[str, float]:
        total = sum(a.weight for a in self.arms)
        return {a.name: a.weight / total for a in self.arms}
