"""The bundled web UI: a single-page app built from `ui/` (TypeScript, Preact, Vite) into
`static/`, which talks to the public API with the user's token. Serving it needs no Node."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

STATIC = Path(__file__).parent / "static"
# The bundle has fixed file names (so a rebuild can be compared with the commit): browsers must
# revalidate (ETag) on every load, or an upgraded server would run yesterday's script.
NO_CACHE = {"Cache-Control": "no-cache"}
# The page shows untrusted text (models, tools): even if some of it got past the sanitiser, nothing
# may load from or send to another origin. An image address in an answer would otherwise be
# fetched without a click, carrying whatever a model put into it. Styles may be inline (the
# syntax highlighter's); scripts, frames and forms only from this origin.
CSP = "; ".join(
    (
        "default-src 'self'",
        "img-src 'self' data: blob:",
        "media-src 'self' data: blob:",
        "style-src 'self' 'unsafe-inline'",
        "script-src 'self'",
        "connect-src 'self'",
        "worker-src 'self'",
        # MCP App views only, from this origin and sandboxed (api: /mcp-apps/frame, mcp/apps.py).
        "frame-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
PAGE_HEADERS = {**NO_CACHE, "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


class _Revalidated(StaticFiles):
    def file_response(self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope, status_code: int = 200) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(NO_CACHE)
        return response


def mount(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=PAGE_HEADERS)

    app.mount("/static", _Revalidated(directory=STATIC), name="static")
