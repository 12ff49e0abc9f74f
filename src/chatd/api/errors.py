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


def _routes(routes: list[Any]) -> list[Any]:
    out: list[Any] = []
    for r in routes:
        inner = getattr(r, "original_router", None)  # FastAPI's wrapper of an included router
        out += _routes(inner.routes) if inner is not None else [r]
    return out


def _route_path(request: Request) -> str:
    path: str = request.scope["path"]
    root = request.scope.get("root_path", "")
    if root and path.startswith(root + "/"):
        path = path[len(root) :]
    return path


def _literal_methods(request: Request) -> set[str]:
    """Methods of the routes written exactly as this path (no parameters)."""
    path = _route_path(request)
    methods: set[str] = set()
    for route in _routes(request.app.router.routes):
        if getattr(route, "path", None) == path:
            methods |= getattr(route, "methods", None) or set()
    return methods


def allowed_methods(request: Request) -> list[str]:
    # A path written out (`/providers/test`) is that route's alone, though `/providers/{id}`
    # matches it too: an id is a UUID, and "test" names no provider.
    literal = _literal_methods(request)
    if literal:
        return sorted(literal)
    path = _route_path(request)
    methods: set[str] = set()
    for route in _routes(request.app.router.routes):
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path):
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


def _method_not_allowed(request: Request) -> JSONResponse:
    return JSONResponse(body("Method Not Allowed"), status_code=405, headers={"Allow": ", ".join(allowed_methods(request))})


def install(app: FastAPI) -> None:
    @app.exception_handler(errors.ChatdError)
    async def _chatd(_: Request, exc: errors.ChatdError) -> JSONResponse:
        code = status_of(exc)
        headers = {"WWW-Authenticate": "Bearer"} if code == 401 else None
        return JSONResponse(body(exc.message, exc.detail, exc.code), status_code=code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        if request.method not in _literal_methods(request) and _literal_methods(request):
            # PATCH /providers/test reached PATCH /providers/{id} and failed on the id; the path
            # is POST /providers/test's, which does not take PATCH.
            return _method_not_allowed(request)
        problems = []
        for e in exc.errors():
            where = _location(tuple(e.get("loc", ())))
            # A model's own checks (NUL in a string, null in a PATCH) name the field in the message.
            msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
            if e.get("type") == "json_invalid":
                msg, where = "The request body is not valid JSON", "body"
            problems.append({"field": where, "message": msg})
        summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems[:5])
        return JSONResponse(body(f"Invalid request: {summary}.", problems, "invalid_input"), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        msg = exc.detail if isinstance(exc.detail, str) else "HTTP error"
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            # Starlette answers for the first route whose path matched, so `Allow` named only that
            # route's methods (PUT /chats said "GET"); a path served by several routes allows all.
            headers["Allow"] = ", ".join(allowed_methods(request))
        return JSONResponse(body(msg), status_code=exc.status_code, headers=headers or None)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(body("Internal server error."), status_code=500)
