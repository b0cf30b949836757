"""Experiments: their definitions, who is in which arm, and what each arm changes.

An experiment lives in a layer and owns a share of that layer's buckets (`traffic`,
starting at `offset`), split among its arms by weight; the first arm is the control.
Each arm may override fusion weights, heuristic score weights, recall quotas, the
exploration fraction or the ranker. A user in experiments of several layers gets the
overrides of every arm they are in (layers should change different knobs; where two do
change the same one, the experiment with the later id wins, the same on every process).

Experiments come from the `experiments` setting or from the admin API; the API's are
kept in the store's controls table, so they survive restarts, and so does stopping one.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from ..errors import Conflict, InvalidInput, NotFound
from ..schema import Id
from ..types import NO_ASSIGNMENT, Assignment
from .bucketing import BUCKETS, Allocation, Arm

CONTROL_KIND = "experiment"  # controls-table kind of API-defined experiments
_STRICT = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)


class Overrides(BaseModel):
    """What an arm changes; anything unset keeps the server's setting."""

    model_config = _STRICT

    fusion_weights: dict[str, float] | None = None
    score_weights: dict[str, float] | None = None
    recall_quotas: dict[str, int] | None = None
    exploration_fraction: float | None = Field(default=None, ge=0.0, le=1.0)
    ranker: Literal["heuristic", "learned"] | None = None


class ArmSpec(BaseModel):
    model_config = _STRICT

    name: Id
    weight: float = Field(default=1.0, gt=0.0)
    overrides: Overrides = Field(default_factory=Overrides)


class ExperimentSpec(BaseModel):
    """An experiment as defined in settings or sent to POST /v1/admin/experiments."""

    model_config = _STRICT

    id: Id
    description: str = Field(default="", max_length=1000)
    layer: Id = "default"
    offset: float = Field(default=0.0, ge=0.0, lt=1.0)  # where its share of buckets starts
    traffic: float = Field(default=1.0, gt=0.0, le=1.0)  # share of the layer's buckets
    arms: list[ArmSpec] = Field(min_length=2, max_length=20)

    @field_validator("traffic")
    @classmethod
    def _fits(cls, traffic: float, info: ValidationInfo) -> float:
        if info.data.get("offset", 0.0) + traffic > 1.0 + 1e-9:
            raise ValueError("offset + traffic must not exceed 1")
        return traffic

    @field_validator("arms")
    @classmethod
    def _distinct(cls, arms: list[ArmSpec]) -> list[ArmSpec]:
        names = [a.name for a in arms]
        if len(set(names)) != len(names):
            raise ValueError("arm names must be distinct")
        return arms

    @property
    def buckets(self) -> tuple[int, int]:
        """[start, start + size) of the layer's buckets."""
        start = round(self.offset * BUCKETS)
        size = max(1, min(round(self.traffic * BUCKETS), BUCKETS - start))
        return start, size

    @property
    def control(self) -> str:
        return self.arms[0].name


@dataclass
class Experiment:
    spec: ExperimentSpec
    allocation: Allocation
    source: str  # "settings" or "api"
    started_at: float
    stopped_at: float | None = None

    @property
    def running(self) -> bool:
        return self.stopped_at is None

    def describe(self) -> dict[str, Any]:
        start, size = self.spec.buckets
        return {
            **self.spec.model_dump(mode="json"),
            "control": self.spec.control,
            "source": self.source,
            "status": "running" if self.running else "stopped",
            "started_at": self.started_at,
            "stopped_at": self.stopped_at,
            "buckets": {"start": start, "size": size, "of": BUCKETS},
        }


def parse_spec(raw: Any, field_name: str = "experiment") -> ExperimentSpec:
    """An ExperimentSpec, or InvalidInput naming the first bad field."""
    try:
        return ExperimentSpec.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise InvalidInput(where or field_name, err["msg"]) from None


class ExperimentBook:
    """The experiments a server knows, validated against its settings."""

    def __init__(
        self,
        known: Mapping[str, Iterable[str]],
        specs: Iterable[ExperimentSpec] = (),
        started_at: float = 0.0,
    ) -> None:
        # known: override name -> the keys it may set (heads, score terms, channels)
        self.known = {k: frozenset(v) for k, v in known.items()}
        self.lock = threading.Lock()
        self.experiments: dict[str, Experiment] = {}
        # What feeds read: replaced whole under the lock on every change, so a request
        # never iterates a dict another thread is changing, nor sorts per request.
        self.running: tuple[Experiment, ...] = ()
        for spec in specs:
            self._add(spec, "settings", started_at)

    def _changed(self) -> None:
        self.running = tuple(
            sorted((e for e in self.experiments.values() if e.running), key=lambda e: e.spec.id)
        )

    # -- definitions -----------------------------------------------------------------
    def _check(self, spec: ExperimentSpec) -> None:
        for i, arm in enumerate(spec.arms):
            o = arm.overrides
            for name in ("fusion_weights", "score_weights", "recall_quotas"):
                values = getattr(o, name)
                if values is None:
                    continue
                unknown = set(values) - self.known.get(name, frozenset())
                if unknown:
                    raise InvalidInput(
                        f"arms.{i}.overrides.{name}",
                        f"unknown names {sorted(unknown)}; known: "
                        f"{sorted(self.known.get(name, ()))}",
                    )
                if not all(math.isfinite(v) for v in values.values()):
                    raise InvalidInput(f"arms.{i}.overrides.{name}", "values must be finite")
                if name == "recall_quotas" and any(v < 0 for v in values.values()):
                    raise InvalidInput(f"arms.{i}.overrides.{name}", "must not be negative")
        start, size = spec.buckets
        for other in self.experiments.values():
            if other.spec.layer != spec.layer or not other.running:
                continue
            o_start, o_size = other.spec.buckets
            if start < o_start + o_size and o_start < start + size:
                raise Conflict(
                    f"experiment {spec.id!r} overlaps running experiment {other.spec.id!r} "
                    f"in layer {spec.layer!r} (buckets {o_start}..{o_start + o_size - 1}); "
                    "choose another layer, or an offset and traffic that do not overlap"
                )

    def _add(self, spec: ExperimentSpec, source: str, started_at: float) -> Experiment:
        if spec.id in self.experiments:
            raise Conflict(f"experiment {spec.id!r} already exists")
        self._check(spec)
        start, size = spec.buckets
        allocation = Allocation(
            spec.id, spec.layer, start, size, tuple(Arm(a.name, a.weight) for a in spec.arms)
        )
        exp = Experiment(spec, allocation, source, started_at)
        self.experiments[spec.id] = exp
        self._changed()
        return exp

    def create(self, spec: ExperimentSpec, now: float) -> Experiment:
        with self.lock:
            return self._add(spec, "api", now)

    def restore(self, body: Mapping[str, Any]) -> None:
        """Apply a stored control: an API-defined experiment, or a stop of any."""
        with self.lock:
            exp = self.experiments.get(str(body.get("id")))
            if body.get("spec") is not None and exp is None:
                exp = self._add(
                    ExperimentSpec.model_validate(body["spec"]), "api", float(body["started_at"])
                )
            if exp is not None and body.get("stopped_at") is not None:
                exp.stopped_at = float(body["stopped_at"])
                self._changed()

    def stop(self, experiment_id: str, now: float) -> Experiment:
        with self.lock:
            exp = self.get(experiment_id)
            if exp.stopped_at is None:
                exp.stopped_at = now
                self._changed()
            return exp

    def get(self, experiment_id: str) -> Experiment:
        exp = self.experiments.get(experiment_id)
        if exp is None:
            raise NotFound(f"unknown experiment {experiment_id!r}")
        return exp

    def control_body(self, exp: Experiment) -> dict[str, Any]:
        """What the controls table keeps of an experiment."""
        return {
            "id": exp.spec.id,
            "spec": exp.spec.model_dump(mode="json") if exp.source == "api" else None,
            "started_at": exp.started_at,
            "stopped_at": exp.stopped_at,
        }

    # -- assignment ------------------------------------------------------------------
    def assign(self, user_id: str) -> Assignment:
        running = self.running
        if not running:
            return NO_ASSIGNMENT
        arms: dict[str, str] = {}
        merged: dict[str, Any] = {}
        for exp in running:
            arm = exp.allocation.arm_of(user_id)
            if arm is None:
                continue
            arms[exp.spec.id] = arm
            spec = next(a for a in exp.spec.arms if a.name == arm)
            for key, value in spec.overrides.model_dump(exclude_none=True).items():
                if isinstance(value, dict):
                    merged[key] = {**merged.get(key, {}), **value}
                else:
                    merged[key] = value
        if not arms:
            return NO_ASSIGNMENT
        return Assignment(arms=arms, **merged)
