"""Map the exception tree to HTTP, in one table."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from chatd import errors

log = logging.getLogger(__name__)

STATUS: list[tuple[type[errors.ChatdError], int]] = [
    (errors.InvalidInput, 400),
    (errors.Unauthenticated, 401),
    (errors.Forbidden, 403),
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.PayloadTooLarge, 413),
    (errors.Upstream, 502),
    (errors.Unavailable, 503),
]


def status_of(exc: errors.ChatdError) -> int:
    for cls, code in STATUS:
        if isinstance(exc, cls):
            return code
    return 500


def body(message: str, detail: Any = None, code: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"message": message}
    if detail is not None:
        out["detail"] = detail
    if code is not None:
        out["code"] = code
    return out


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


def install(app: FastAPI) -> None:
    @app.exception_handler(errors.ChatdError)
    async def _chatd(_: Request, exc: errors.ChatdError) -> JSONResponse:
        code = status_of(exc)
        headers = {"WWW-Authenticate": "Bearer"} if code == 401 else None
        return JSONResponse(body(exc.message, exc.detail, exc.code), status_code=code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors():
            where = _location(tuple(e.get("loc", ())))
            msg = str(e.get("msg", "invalid"))
            if e.get("type") == "json_invalid":
                msg, where = "The request body is not valid JSON", "body"
            problems.append({"field": where, "message": msg})
        summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems[:5])
        return JSONResponse(body(f"Invalid request: {summary}.", problems, "invalid_input"), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        msg = exc.detail if isinstance(exc.detail, str) else "HTTP error"
        return JSONResponse(body(msg), status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(body("Internal server error."), status_code=500)
