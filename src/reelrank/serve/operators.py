"""Operator routes: the content lifecycle (pools, review, hides, boosts, creators' strikes,
the audit log) and A/B experiments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from ..engine import Engine
from ..experiments.registry import ExperimentSpec
from ..schema import MAX_ID_LEN
from .ids import CreatorId, ExperimentId, VideoId


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReviewDecision(_Body):
    """A person's review decision."""

    decision: Literal["approve", "reject"]
    reason: str = Field(min_length=1, max_length=2000)
    reviewer: str = Field(min_length=1, max_length=128, description="Who decides")


class OperatorAction(_Body):
    """An operator's action on a video or creator."""

    reason: str = Field(min_length=1, max_length=2000)
    operator: str = Field(min_length=1, max_length=128, description="Who acts")


class Boost(OperatorAction):
    impressions: int = Field(ge=1, description="Extra impressions through exploration slots")


def add_operator_routes(
    app: FastAPI, engine: Engine, scoped: Callable[[str], Callable[[Request], None]]
) -> None:
    # -- content lifecycle -------------------------------------------------------------------
    lifecycle = engine.lifecycle

    @app.get(
        "/v1/pools",
        tags=["lifecycle"],
        summary="The traffic-pool funnel: videos per tier and stage, promotions, stops",
        dependencies=[Depends(scoped("feed"))],
    )
    def get_pools(request: Request) -> Any:
        return lifecycle.pools_summary()

    @app.get(
        "/v1/admin/review",
        tags=["admin"],
        summary="The human review queue, oldest hold first (admin)",
        dependencies=[Depends(scoped("admin"))],
    )
    def get_review_queue(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> Any:
        return lifecycle.review_queue(limit, offset)

    @app.post(
        "/v1/admin/review/{video_id}",
        tags=["admin"],
        summary="Approve or reject a video, with a reason (admin; audited)",
        dependencies=[Depends(scoped("admin"))],
    )
    def post_review(request: Request, video_id: VideoId, body: ReviewDecision) -> Any:
        return lifecycle.decide(video_id, body.decision, body.reason, body.reviewer)

    @app.get(
        "/v1/admin/audit",
        tags=["admin"],
        summary="The audit log, newest first (admin)",
        dependencies=[Depends(scoped("admin"))],
    )
    def get_audit(
        request: Request,
        target_kind: Annotated[Literal["video", "creator"] | None, Query()] = None,
        target_id: Annotated[str | None, Query(min_length=1, max_length=MAX_ID_LEN)] = None,
        before: Annotated[int | None, Query(ge=1, description="Entries with seq < before")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> Any:
        return lifecycle.audit(target_kind, target_id, before, limit)

    @app.post(
        "/v1/admin/videos/{video_id}/hide",
        tags=["admin"],
        summary="Take a video down (admin; audited)",
        dependencies=[Depends(scoped("admin"))],
    )
    def post_hide(request: Request, video_id: VideoId, body: OperatorAction) -> Any:
        return lifecycle.hide(video_id, True, body.reason, body.operator)

    @app.post(
        "/v1/admin/videos/{video_id}/unhide",
        tags=["admin"],
        summary="Put a taken-down video back (admin; audited)",
        dependencies=[Depends(scoped("admin"))],
    )
    def post_unhide(request: Request, video_id: VideoId, body: OperatorAction) -> Any:
        return lifecycle.hide(video_id, False, body.reason, body.operator)

    @app.post(
        "/v1/admin/videos/{video_id}/boost",
        tags=["admin"],
        summary="Heat a video: extra impressions within the boost budget (admin; audited)",
        dependencies=[Depends(scoped("admin"))],
    )
    def post_boost(request: Request, video_id: VideoId, body: Boost) -> Any:
        return lifecycle.boost(video_id, body.impressions, body.reason, body.operator)

    @app.get(
        "/v1/admin/creators/{creator_id}",
        tags=["admin"],
        summary="A creator's standing",
        dependencies=[Depends(scoped("admin"))],
    )
    def get_creator(request: Request, creator_id: CreatorId) -> Any:
        return lifecycle.creator_state(creator_id)

    @app.post(
        "/v1/admin/creators/{creator_id}/strikes",
        tags=["admin"],
        summary="Add a strike; at strikes_to_suspend the creator is suspended (admin; audited)",
        dependencies=[Depends(scoped("admin"))],
    )
    def post_strike(request: Request, creator_id: CreatorId, body: OperatorAction) -> Any:
        return lifecycle.strike(creator_id, True, body.reason, body.operator)

    @app.post(
        "/v1/admin/creators/{creator_id}/reinstate",
        tags=["admin"],
        summary="Clear a creator's strikes and lift a suspension (admin; audited)",
        dependencies=[Depends(scoped("admin"))],
    )
    def post_reinstate(request: Request, creator_id: CreatorId, body: OperatorAction) -> Any:
        return lifecycle.strike(creator_id, False, body.reason, body.operator)

    @app.get(
        "/v1/experiments",
        tags=["experiments"],
        summary="Every experiment: definition, status and buckets (admin)",
        dependencies=[Depends(scoped("admin"))],
    )
    def get_experiments(request: Request) -> Any:
        return {"experiments": engine.list_experiments()}

    @app.get(
        "/v1/experiments/{experiment_id}",
        tags=["experiments"],
        summary="Per-arm results with confidence intervals and the sample-ratio check (admin)",
        dependencies=[Depends(scoped("admin"))],
    )
    def get_experiment(
        request: Request,
        experiment_id: ExperimentId,
        level: Annotated[float, Query(ge=0.5, lt=1.0, description="Confidence level")] = 0.95,
    ) -> Any:
        return engine.experiment_report(experiment_id, level)

    @app.post(
        "/v1/admin/experiments",
        tags=["experiments"],
        summary="Start an experiment: layer, traffic share and arms with overrides (admin)",
        dependencies=[Depends(scoped("admin"))],
        status_code=201,
    )
    def post_experiment(request: Request, body: ExperimentSpec) -> Any:
        return engine.create_experiment(body)

    @app.post(
        "/v1/admin/experiments/{experiment_id}/stop",
        tags=["experiments"],
        summary="Stop an experiment: its users get the default feed again (admin)",
        dependencies=[Depends(scoped("admin"))],
    )
    def post_stop_experiment(request: Request, experiment_id: ExperimentId) -> Any:
        return engine.stop_experiment(experiment_id)
