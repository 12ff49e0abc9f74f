"""Issue 5's end-to-end case: a chat created over the HTTP API with a scripted model calls tools
of three real MCP servers — streamable HTTP, legacy SSE, and one behind a bearer token — and gets
their results, while a broken and a hung server are skipped within the connect budget."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from chatd.domain.chat import ChatStatus, Role
from chatd.domain.parts import ToolResultPart
from tests.fakes.llm_server import Reply, ToolCall
from tests.mcp.mcp_test_servers import ServerState, build_server, free_port, serve, silent_listener
from tests.worker.conftest import Rig

SECRET = "Bearer mcp-secret-token"


@dataclass
class BearerOnly:
    app: ASGIApp
    rejected: int = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization", b"").decode() != SECRET:
            self.rejected += 1
            await JSONResponse({"error": "invalid_token"}, status_code=401)(scope, receive, send)
            return
        await self.app(scope, receive, send)


@pytest.fixture
def three() -> Iterator[dict[str, Any]]:
    http_state, sse_state, secure_state = ServerState(), ServerState(), ServerState()
    guard = BearerOnly(build_server(secure_state).streamable_http_app())
    with (
        serve(build_server(http_state).streamable_http_app()) as http_srv,
        serve(build_server(sse_state).sse_app(), path="/sse") as sse_srv,
        serve(guard) as secure_srv,
        silent_listener() as hung,
    ):
        yield {
            "http": (http_srv.url, http_state), "sse": (sse_srv.url, sse_state), "secure": (secure_srv.url, secure_state),
            "guard": guard, "hung": hung.port,
        }


async def test_a_chat_uses_three_mcp_servers_and_skips_a_broken_and_a_hung_one(rig: Rig, client: httpx.AsyncClient, three: dict[str, Any]) -> None:
    rig.app.settings.mcp_connect_timeout = 3
    admin, alice = rig.people.admin.headers, rig.people.alice.headers

    async def server(body: dict[str, Any]) -> str:
        r = await client.post("/api/v1/mcp-servers", headers=admin, json={"enabled": True, **body})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    ids = [
        await server({"slug": "web", "display_name": "Web", "url": three["http"][0]}),
        await server({"slug": "legacy", "display_name": "Legacy", "url": three["sse"][0], "transport": "sse"}),
        await server({"slug": "vault", "display_name": "Vault", "url": three["secure"][0], "auth_type": "api_key",
                      "api_key_header": "Authorization", "api_key_value": SECRET}),
        await server({"slug": "broken", "display_name": "Broken", "url": f"http://127.0.0.1:{free_port()}/mcp"}),
        await server({"slug": "hung", "display_name": "Hung", "url": f"http://127.0.0.1:{three['hung']}/mcp"}),
    ]
    rig.llm.script(
        Reply(tool_calls=[
            ToolCall("c1", "web__add", {"a": 2, "b": 3}),
            ToolCall("c2", "legacy__echo", {"text": "via sse"}),
            ToolCall("c3", "vault__add", {"a": 40, "b": 2}),
        ]),
        Reply(text="5, via sse, 42"),
    )
    r = await client.post("/api/v1/chats", headers=alice, json={"content": "use the tools", "mcp_server_ids": ids})
    assert r.status_code == 201, r.text
    chat_id = r.json()["id"]
    started = time.monotonic()
    await rig.run()
    elapsed = time.monotonic() - started

    chat = (await client.get(f"/api/v1/chats/{chat_id}", headers=alice)).json()
    assert chat["status"] == ChatStatus.WAITING.value, chat
    offered = {t["function"]["name"] for t in rig.llm.requests[0].body["tools"]}
    assert {"web__add", "legacy__echo", "vault__add"} <= offered
    assert not any(name.startswith(("broken__", "hung__")) for name in offered)
    messages = (await client.get(f"/api/v1/chats/{chat_id}/messages", headers=alice)).json()["messages"]
    results = {
        p["tool_call_id"]: p for m in messages if m["role"] == Role.TOOL.value for p in m["content"] if p["type"] == ToolResultPart.model_fields["type"].default
    }
    assert "5" in json.dumps(results["c1"]["result"]) and not results["c1"].get("is_error")
    assert "via sse" in json.dumps(results["c2"]["result"])
    assert "42" in json.dumps(results["c3"]["result"]) and not results["c3"].get("is_error")
    assert three["http"][1].calls == ["add"] and three["sse"][1].calls == ["echo"] and three["secure"][1].calls == ["add"]
    # The hung server cost at most the connect budget (servers connect concurrently), not more.
    assert elapsed < rig.app.settings.mcp_connect_timeout + 20
