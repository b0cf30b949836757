"""Load shedding: refuse work the server cannot start soon instead of queueing it.

Every request (but the health check and the metrics) counts as in flight from the moment
the server reads it until its response is sent. Once `limit` are in flight, a new one is
answered at once with 503 and a `Retry-After` header: under overload a client learns to
back off in a millisecond instead of waiting in a queue that grows without bound while
every queued request's latency grows with it.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI
from prometheus_client import Counter, Gauge
from starlette.types import ASGIApp, Receive, Scope, Send

EXEMPT = ("/healthz", "/metrics")  # cheap, and what operators need most under overload


class LoadShedder:
    """Pure ASGI middleware; counts live on the event loop's thread (no lock needed)."""

    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        retry_after_s: int,
        in_flight: Gauge,
        shed: Counter,
    ) -> None:
        self.app = app
        self.limit = limit  # 0: no limit
        self.retry_after_s = retry_after_s
        self.in_flight = 0
        self._gauge = in_flight
        self._shed = shed
        self._body = orjson.dumps(
            {
                "detail": f"the server is at its limit of {limit} requests in flight; "
                f"retry after {retry_after_s} s"
            }
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.limit <= 0 or scope["path"] in EXEMPT:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            self._shed.inc()
            await self._refuse(send)
            return
        self.in_flight += 1
        self._gauge.set(self.in_flight)
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            self._gauge.set(self.in_flight)

    async def _refuse(self, send: Send) -> None:
        headers: list[Any] = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self._body)).encode()),
            (b"retry-after", str(self.retry_after_s).encode()),
        ]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": self._body})


def document(app: FastAPI, limit: int) -> None:
    """List the 503 a shed request gets on every operation it can happen to, in the app's
    OpenAPI schema (built once, on first request, as FastAPI does)."""
    if limit <= 0:
        return
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        refused = {
            "description": f"Over the limit of {limit} requests in flight: retry later",
            "headers": {
                "Retry-After": {
                    "description": "Seconds to wait before retrying",
                    "schema": {"type": "integer"},
                }
            },
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {"detail": {"type": "string"}},
                        "required": ["detail"],
                    }
                }
            },
        }
        for path, operations in schema.get("paths", {}).items():
            if path in EXEMPT:
                continue
            for operation in operations.values():
                operation.setdefault("responses", {}).setdefault("503", refused)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
