"""FastAPI app factory. Routes parse input, call the Engine, and map errors in one place."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..engine import Engine
from ..errors import Conflict, InvalidInput, NotFound, ReelrankError, TooLarge
from ..pipeline.feed import Feed
from ..schema import Event, Follow, User, UserControls, VideoIn
from .auth import KeyRing
from .ids import Code, UserId, VideoId
from .operators import add_operator_routes
from .pages import register_pages
from .shed import LoadShedder, document

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 32 * 1024 * 1024
RETRY_AFTER_S = 1  # what a request refused for overload is told to wait


class FastJSON(JSONResponse):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _error(status: int, message: str, field: str | None = None) -> FastJSON:
    body: dict[str, Any] = {"detail": message}
    if field:
        body["field"] = field
    return FastJSON(body, status_code=status)


def _batch_body(field: str, model: type[BaseModel], summary: str) -> dict[str, Any]:
    """OpenAPI request body for `{field: [items]}`; items are validated one by one."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": [field],
                        "additionalProperties": False,
                        "properties": {
                            field: {"type": "array", "items": model.model_json_schema()}
                        },
                    }
                }
            },
            "description": summary,
        }
    }


async def _read_batch(request: Request, field: str, max_items: int) -> list[Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise TooLarge("body", f"over {MAX_BODY_BYTES} bytes")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput("body", f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInput("body", f'expected a JSON object {{"{field}": [...]}}')
    extra = sorted(set(data) - {field})
    if extra:
        raise InvalidInput(extra[0], "unknown field")
    if field not in data:
        raise InvalidInput(field, "field required")
    items = data[field]
    if not isinstance(items, list):
        raise InvalidInput(field, "expected a list")
    if len(items) > max_items:
        raise TooLarge(
            field, f"at most {max_items} items per request (max_batch), got {len(items)}"
        )
    return items


def _feed_body(feed: Feed) -> dict[str, Any]:
    return {
        "request_id": feed.request_id,
        "model_version": feed.model_version,
        "ranker": feed.ranker,
        **({"ranker_note": feed.ranker_note} if feed.ranker_note else {}),
        "cold_start": feed.cold_start,
        **({"experiments": feed.experiments} if feed.experiments else {}),
        "items": [
            {"video_id": it.video_id, "score": it.score, "source": it.source, "reasons": it.reasons}
            for it in feed.items
        ],
    }


def create_app(engine: Engine, own_engine: bool = False) -> FastAPI:
    """The HTTP API over an engine; with own_engine the app opens and closes it."""
    keys = KeyRing(engine.settings.key_scopes(), engine.settings.feed_requires_key)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if own_engine:
            await run_in_threadpool(engine.open)
        try:
            yield
        finally:
            if own_engine:
                await run_in_threadpool(engine.close)

    app = FastAPI(
        title="reelrank",
        version=__version__,
        description="A real-time For You feed engine for short-video apps.",
        lifespan=lifespan,
        default_response_class=FastJSON,
    )
    app.state.engine = engine
    app.add_middleware(
        LoadShedder,
        limit=engine.settings.max_in_flight,
        retry_after_s=RETRY_AFTER_S,
        in_flight=engine.metrics.in_flight,
        shed=engine.metrics.shed,
    )
    document(app, engine.settings.max_in_flight)

    @app.exception_handler(InvalidInput)
    async def _invalid(request: Request, exc: InvalidInput) -> Response:
        return _error(413 if isinstance(exc, TooLarge) else 422, str(exc), exc.field)

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> Response:
        return _error(404, str(exc))

    @app.exception_handler(Conflict)
    async def _conflict(request: Request, exc: Conflict) -> Response:
        return _error(409, str(exc))

    @app.exception_handler(ReelrankError)
    async def _domain(request: Request, exc: ReelrankError) -> Response:
        return _error(400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        errors = []
        for err in exc.errors():
            loc = [str(p) for p in err["loc"]]
            field = ".".join(loc[1:] if loc and loc[0] in ("query", "path", "body") else loc)
            errors.append({"field": field, "message": err["msg"]})
        message = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        body = {"detail": message, "field": errors[0]["field"] if errors else None}
        return FastJSON({**body, "errors": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        resp = _error(exc.status_code, str(exc.detail))
        for k, v in (exc.headers or {}).items():
            resp.headers[k] = v
        return resp

    def guard(request: Request, scope: str) -> None:
        keys.check(request, scope)

    def scoped(scope: str) -> Callable[[Request], None]:
        """A dependency checking the key before the body is validated (401/403 first)."""

        def check(request: Request) -> None:
            guard(request, scope)

        return check

    async def batch_call(request: Request, field: str, call: Callable[[list[Any]], Any]) -> Any:
        guard(request, "ingest")
        items = await _read_batch(request, field, engine.settings.max_batch)
        return await run_in_threadpool(call, items)

    @app.post(
        "/v1/videos",
        tags=["catalog"],
        summary="Upsert videos (reviewed on ingest)",
        openapi_extra=_batch_body("videos", VideoIn, "Videos to insert or replace."),
    )
    async def post_videos(request: Request) -> Any:
        return {"results": await batch_call(request, "videos", engine.upsert_videos)}

    @app.post(
        "/v1/users",
        tags=["catalog"],
        summary="Upsert users",
        openapi_extra=_batch_body("users", User, "Users to insert or replace."),
    )
    async def post_users(request: Request) -> Any:
        return {"results": await batch_call(request, "users", engine.upsert_users)}

    @app.post(
        "/v1/follows",
        tags=["catalog"],
        summary="Add follow edges (user -> creator)",
        openapi_extra=_batch_body("follows", Follow, "Follow edges to add."),
    )
    async def post_follows(request: Request) -> Any:
        return {"results": await batch_call(request, "follows", engine.add_follows)}

    @app.post(
        "/v1/events",
        tags=["events"],
        summary="Ingest events: valid ones are durably logged and applied",
        openapi_extra=_batch_body(
            "events",
            Event,
            "Events; each is validated alone. Answer: accepted, duplicates (an event_id "
            "seen before: acknowledged, not counted again) and rejected [{index, error}].",
        ),
    )
    async def post_events(request: Request) -> Any:
        result = await batch_call(request, "events", engine.ingest)
        return {
            "accepted": result.accepted,
            "duplicates": result.duplicates,
            "rejected": result.rejected,
        }

    @app.get("/v1/feed/{user_id}", tags=["feed"], summary="A personalised page of videos")
    def get_feed(
        request: Request,
        user_id: UserId,
        n: Annotated[int | None, Query(description="Page size (default: feed_default_n)")] = None,
        region: Code = None,
        device: Code = None,
        language: Code = None,
    ) -> Any:
        guard(request, "feed")
        feed = engine.feed(user_id, n=n, region=region, device=device, language=language)
        return _feed_body(feed)

    @app.get("/v1/videos/{video_id}", tags=["catalog"], summary="A video, status and counters")
    def get_video(request: Request, video_id: VideoId) -> Any:
        guard(request, "feed")
        return engine.video_detail(video_id)

    @app.get(
        "/v1/users/{user_id}",
        tags=["catalog"],
        summary="A user's profile: interests, follows, controls (admin)",
    )
    def get_user(request: Request, user_id: UserId) -> Any:
        guard(request, "admin")
        return engine.user_profile(user_id)

    @app.get(
        "/v1/model",
        tags=["model"],
        summary="The serving model and the trainer's progressive metrics",
    )
    def get_model(request: Request) -> Any:
        guard(request, "feed")
        return engine.model_status()

    @app.get(
        "/v1/channels",
        tags=["model"],
        summary="Per recall channel: candidates, slots won, engagements and their rate",
    )
    def get_channels(request: Request) -> Any:
        guard(request, "feed")
        return {"channels": engine.channel_figures()}

    # -- user controls ---------------------------------------------------------------------
    @app.put(
        "/v1/users/{user_id}/controls",
        tags=["users"],
        summary="Replace a user's muted keywords and hashtags",
        dependencies=[Depends(scoped("ingest"))],
    )
    def put_user_controls(request: Request, user_id: UserId, body: UserControls) -> Any:
        return engine.set_user_controls(user_id, body.model_dump())

    @app.post(
        "/v1/users/{user_id}/reset",
        tags=["users"],
        summary='"Reset my feed": forget the learned profile, keep follows and controls',
        dependencies=[Depends(scoped("ingest"))],
    )
    def post_user_reset(request: Request, user_id: UserId) -> Any:
        return engine.reset_user(user_id)

    add_operator_routes(app, engine, scoped)

    @app.get(
        "/v1/admin/overview",
        tags=["admin"],
        summary="Cumulative feed, event and trainer counters and feed latency (admin)",
        dependencies=[Depends(scoped("admin"))],
    )
    def get_overview(request: Request) -> Any:
        return engine.overview()

    @app.get(
        "/v1/admin/users/{user_id}/preview",
        tags=["admin"],
        summary="The page a user would get now, not served: nothing logged or marked seen (admin)",
        dependencies=[Depends(scoped("admin"))],
    )
    def get_feed_preview(
        request: Request, user_id: UserId, n: Annotated[int | None, Query()] = None
    ) -> Any:
        return _feed_body(engine.feed(user_id, n=n, record=False))

    register_pages(app)

    @app.get("/healthz", tags=["ops"], summary="Liveness and basic figures")
    def healthz() -> Any:
        return engine.health()

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics")
    def metrics() -> Response:
        engine.metrics.users.set(len(engine.state.users))
        return Response(generate_latest(engine.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> Response:  # pragma: no cover
        log.exception("unhandled error on %s", request.url.path)
        return _error(500, "internal error; the server log has the details")

    return app
