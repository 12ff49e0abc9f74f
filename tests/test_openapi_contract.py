"""The OpenAPI document tells the truth about errors (issue 9): no 422 anywhere, the error body on
every error response, and a 405 that names every method of its path."""

from __future__ import annotations

import httpx

from tests.conftest import People


async def test_the_document_lists_real_errors_with_the_error_body_and_never_422(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert "422" not in str(spec) and "HTTPValidationError" not in spec["components"]["schemas"]
    assert spec["components"]["schemas"]["Error"]["required"] == ["message"]
    for path, item in spec["paths"].items():
        for method, op in item.items():
            codes = set(op["responses"])
            params = op.get("parameters", [])
            where = (method, path)
            if op.get("security"):
                assert "401" in codes, where
            if params or "requestBody" in op:
                assert "400" in codes, where
            if any(p["in"] == "path" for p in params):
                assert "404" in codes, where
            if "requestBody" in op:
                assert "413" in codes, where
            for code, response in op["responses"].items():
                # /healthz's 503 is its own body (what is unhealthy), not an error.
                if int(code) >= 400 and "application/json" in response.get("content", {}) and path != "/healthz":
                    assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}, (where, code)
    admin_only = spec["paths"]["/api/v1/providers"]["post"]["responses"]
    assert {"403", "409"} <= set(admin_only)
    assert "409" in spec["paths"]["/api/v1/chats/{chat_id}/messages"]["post"]["responses"]


async def test_a_wrong_method_is_a_405_that_allows_every_method_of_the_path(client: httpx.AsyncClient, people: People) -> None:
    for method, path, allowed in (
        ("PUT", "/api/v1/chats", "GET, POST"),
        ("PUT", "/api/v1/mcp-servers/00000000-0000-0000-0000-000000000000", "DELETE, GET, PATCH"),
        ("PUT", "/api/v1/push/subscriptions", "DELETE, POST"),
        # A path written out belongs to its own route, though /providers/{provider_id} matches it.
        ("PUT", "/api/v1/providers/test", "POST"),
        ("PATCH", "/api/v1/providers/test", "POST"),
        ("DELETE", "/api/v1/providers/test", "POST"),
    ):
        r = await client.request(method, path, headers=people.admin.headers, json={})
        assert r.status_code == 405, (path, r.text)
        assert r.headers["allow"] == allowed, path
        assert r.json()["message"]
