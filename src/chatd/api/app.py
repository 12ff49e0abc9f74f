"""The FastAPI application."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import text

from chatd import __version__
from chatd.api import errors, internal, push, routes, streaming, workspaces
from chatd.api.limits import BodyLimit
from chatd.api.schemas import HealthOut


def create_app(state: Any) -> FastAPI:
    """`state` is the composed application (bootstrap.App): settings, db, service, hub, pubsub."""
    app = FastAPI(
        title="chatd",
        version=__version__,
        description="A self-hostable agent chat daemon. Every endpoint but /healthz needs `Authorization: Bearer <token>`.",
    )
    app.state.chatd = state
    errors.install(app)
    # The watch route must come before /chats/{chat_id}.
    app.include_router(streaming.router)
    app.include_router(routes.router)
    app.include_router(internal.router)
    app.include_router(workspaces.router)
    app.include_router(push.router)

    @app.get("/healthz", tags=["operations"], response_model=HealthOut)
    async def healthz() -> JSONResponse:
        db_ok = "ok"
        try:
            async with state.db.read() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:
            db_ok = "unreachable"
        body = HealthOut(status="ok" if db_ok == "ok" else "degraded", database=db_ok, replica_id=state.settings.replica_id)
        return JSONResponse(body.model_dump(mode="json"), status_code=200 if db_ok == "ok" else 503)

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return PlainTextResponse(generate_latest().decode(), media_type=CONTENT_TYPE_LATEST)

    settings = state.settings
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes, max_upload_bytes=settings.max_upload_bytes)

    try:
        from chatd.web import mount

        mount(app)
    except ImportError:
        pass
    return app


def create_internal_app(state: Any) -> FastAPI:
    """A worker-only replica (`--no-api`) still serves /healthz and the replica relay."""
    app = FastAPI(title="chatd (worker replica)", version=__version__, openapi_url=None, docs_url=None, redoc_url=None)
    app.state.chatd = state
    errors.install(app)
    app.include_router(internal.router)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "replica_id": str(state.settings.replica_id)}

    return app
