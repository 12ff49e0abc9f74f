"""The OpenAPI document as a contract: every operation lists the errors it returns, with the one
error body, and none it does not (FastAPI documents a 422 that chatd never sends: validation
failures are 400).

What follows from an operation's shape is added here: 400 for any input (parameters or a body),
401 for a bearer token, 404 for an id in the path, 413 for a body. What depends on the use case is
declared on the route with `errors(...)`: 403 (admins only, or the user in the path), 409
(conflicts), and a 404 for an id named in the body. A route that adds an endpoint declares its
403 and 409 the same way; schemathesis in the test suite fails on any status the document does
not list."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["message"],
    "properties": {
        "message": {"type": "string", "description": "What went wrong, for a person."},
        "code": {
            "type": "string",
            "description": "A stable machine-readable code: invalid_input, unauthenticated, forbidden, not_found, "
            "conflict, queue_full, chat_busy, duplicate, usage_limit_exceeded, payload_too_large, ...",
        },
        "detail": {"description": "More about the error: the invalid fields, the spend figures, ..."},
    },
}

DESCRIPTIONS = {
    400: "Invalid input: a malformed or out-of-range value, or a rule the request breaks.",
    401: "No bearer token, or one that is not valid.",
    403: "Authenticated but not allowed (an admin's endpoint, or another user's resource by user id).",
    404: "Not found (another user's chat or file is not found either).",
    409: "Conflict: queue full, chat busy, spend limit reached, or a duplicate name.",
    413: "The request body is too large.",
    503: "A service chatd depends on (an MCP server, the database) cannot be reached now.",
}

_REF = {"$ref": "#/components/schemas/Error"}


def _error(code: int) -> dict[str, Any]:
    return {"description": DESCRIPTIONS[code], "content": {"application/json": {"schema": _REF}}}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Error responses a route declares beyond those its shape implies."""
    return {code: _error(code) for code in codes}


def contract(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components["Error"] = ERROR_SCHEMA
    for item in schema.get("paths", {}).values():
        for op in item.values():
            _complete(op)
    app.openapi_schema = schema
    return schema


def _complete(op: dict[str, Any]) -> None:
    responses: dict[str, Any] = op.setdefault("responses", {})
    responses.pop("422", None)
    params = op.get("parameters", [])
    implied: list[int] = []
    if params or "requestBody" in op:
        implied.append(400)
    if op.get("security"):
        implied.append(401)
    if any(p.get("in") == "path" for p in params):
        implied.append(404)
    if "requestBody" in op:
        implied.append(413)
    for code in implied:
        responses.setdefault(str(code), _error(code))
    for status, response in responses.items():
        if status.isdigit() and int(status) >= 400 and "content" not in response:
            response["content"] = {"application/json": {"schema": _REF}}
    op["responses"] = dict(sorted(responses.items()))
