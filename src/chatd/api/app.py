"""The FastAPI application."""

from __future__ import annotations

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse

from chatd import __version__, metrics
from chatd.api import errors, internal, openapi, push, routes, streaming, workspaces
from chatd.api.deps import AppState, metrics_reader
from chatd.api.limits import BodyLimit
from chatd.api.schemas import HealthOut
from chatd.domain.chat import ChatStatus
from chatd.service import ChatService


def create_app(state: AppState) -> FastAPI:
    """`state` is the composed application (`bootstrap.App`)."""
    app = FastAPI(
        title="chatd",
        version=__version__,
        description="A self-hostable agent chat daemon. Every endpoint but /healthz needs `Authorization: Bearer <token>`.",
    )
    app.state.chatd = state
    errors.install(app)
    app.openapi = lambda: openapi.contract(app)  # type: ignore[method-assign]
    # The watch route must come before /chats/{chat_id}.
    app.include_router(streaming.router)
    app.include_router(routes.router)
    app.include_router(internal.router)
    app.include_router(workspaces.router)
    app.include_router(push.router)

    @app.get(
        "/healthz",
        tags=["operations"],
        response_model=HealthOut,
        responses={503: {"model": HealthOut, "description": "The database is not reachable."}},
    )
    async def healthz() -> JSONResponse:
        db_ok = "ok" if await state.service.database_reachable() else "unreachable"
        body = HealthOut(status="ok" if db_ok == "ok" else "degraded", database=db_ok, replica_id=state.settings.replica_id)
        return JSONResponse(body.model_dump(mode="json"), status_code=200 if db_ok == "ok" else 503)

    @app.get(
        "/metrics",
        tags=["operations"],
        response_class=PlainTextResponse,
        dependencies=[Depends(metrics_reader)],
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format."}, **openapi.errors(403)},
    )
    async def metrics() -> PlainTextResponse:
        """Prometheus metrics of this replica (docs/metrics.md). Needs an admin's token unless
        `CHATD_METRICS_PUBLIC=true`."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        await observe_database(state.service)
        return PlainTextResponse(generate_latest().decode(), media_type=CONTENT_TYPE_LATEST)

    settings = state.settings
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes, max_upload_bytes=settings.max_upload_bytes)

    try:
        from chatd.web import mount

        mount(app)
    except ImportError:
        pass
    return app


async def observe_database(service: ChatService) -> None:
    """The gauges that are facts of the database, read at scrape time (docs/metrics.md)."""
    stats = await service.database_stats()
    if stats is None:
        # The database is away: /healthz says so; the process metrics are still worth serving.
        return
    for status in ChatStatus:
        metrics.CHATS.labels(status.value).set(stats.chats_by_status.get(status.value, 0))
    metrics.QUEUE_DEPTH.set(stats.queued_messages)
    metrics.DB_POOL_IN_USE.set(stats.pool_in_use)
    metrics.DB_POOL_SIZE.set(stats.pool_size)


def create_internal_app(state: AppState) -> FastAPI:
    """A worker-only replica (`--no-api`) still serves /healthz and the replica relay."""
    app = FastAPI(title="chatd (worker replica)", version=__version__, openapi_url=None, docs_url=None, redoc_url=None)
    app.state.chatd = state
    errors.install(app)
    app.include_router(internal.router)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "replica_id": str(state.settings.replica_id)}

    return app
