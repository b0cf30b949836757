"""The demo feed and the dashboard: static pages that call the public API from the browser.

The pages hold no data, so they are served without a key; every API call they make
carries the key the person gave them (kept in the browser's localStorage), and the API
checks it as for any client. `reelrank demo` prints links whose fragment (`#key=...`,
never sent to the server) hands the page its key.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"
NO_CACHE = {"Cache-Control": "no-cache"}  # revalidate: a new release is seen at once


def register_pages(app: FastAPI) -> None:
    """Serve `/demo`, `/dashboard` and `/static/...`; none of them is in the OpenAPI schema."""
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/demo", include_in_schema=False)
    def demo_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "demo.html", headers=NO_CACHE)

    @app.get("/dashboard", include_in_schema=False)
    def dashboard_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "dashboard.html", headers=NO_CACHE)
