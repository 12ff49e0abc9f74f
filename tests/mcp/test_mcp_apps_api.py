"""The MCP Apps endpoints against a real stdio server: only the chat's owner, only the chat's
servers, only tools apps may call; the frame is served under the view's own policy."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx
from tests.conftest import People

SERVER = Path(__file__).parent / "apps_test_server.py"
PLAIN_SERVER = Path(__file__).parent / "mcp_test_servers.py"


async def _setup(client: httpx.AsyncClient, people: People) -> tuple[str, str, str]:
    admin, alice = people.admin.headers, people.alice.headers
    server = (await client.post("/api/v1/mcp-servers", headers=admin, json={
        "slug": "dice", "display_name": "Dice", "transport": "stdio", "command": sys.executable,
        "args": [str(SERVER)], "enabled": True, "availability": "default_off",
    })).json()
    other = (await client.post("/api/v1/mcp-servers", headers=admin, json={
        "slug": "other", "display_name": "Other", "url": "http://127.0.0.1:9/mcp", "enabled": True, "availability": "default_off",
    })).json()
    chat = (await client.post("/api/v1/chats", headers=alice, json={"content": "hi", "mcp_server_ids": [server["id"]]})).json()
    return chat["id"], server["id"], other["id"]


async def test_a_view_and_its_tools_are_the_chat_owners_and_only_of_the_chats_servers(client: httpx.AsyncClient, people: People) -> None:
    chat, server, other = await _setup(client, people)
    alice, bob = people.alice.headers, people.bob.headers
    frame: dict[str, Any] = {"server_id": server, "resource_uri": "ui://dice/view"}
    call: dict[str, Any] = {"server_id": server, "name": "tally", "arguments": {"by": 3}}

    # Another user's chat is not found, for the view and for tools/call alike.
    for path, body in (("frames", frame), ("tools-call", call)):
        r = await client.post(f"/api/v1/chats/{chat}/mcp-apps/{path}", headers=bob, json=body)
        assert (r.status_code, r.json()["code"]) == (404, "not_found")
    # A server the chat does not use is not found either.
    r = await client.post(f"/api/v1/chats/{chat}/mcp-apps/tools-call", headers=alice, json={**call, "server_id": other})
    assert r.status_code == 404

    r = await client.post(f"/api/v1/chats/{chat}/mcp-apps/tools-call", headers=alice, json=call)
    assert r.status_code == 200, r.text
    assert (r.json()["content"], r.json()["isError"]) == ([{"type": "text", "text": "total 3"}], False)
    # A model-only tool and a tool the server does not have are refused.
    for name in ("model_note", "no_such_tool"):
        r = await client.post(f"/api/v1/chats/{chat}/mcp-apps/tools-call", headers=alice, json={**call, "name": name})
        assert (r.status_code, r.json()["code"]) == (403, "forbidden"), name

    url = (await client.post(f"/api/v1/chats/{chat}/mcp-apps/frames", headers=alice, json=frame)).json()["url"]
    page = await client.get(url)  # no bearer token: the ticket in the address is the authorisation
    assert page.status_code == 200
    assert "Dice app" in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'none'" in csp and "sandbox allow-scripts" in csp
    assert page.headers["referrer-policy"] == "no-referrer"
    bad = await client.get("/api/v1/mcp-apps/frame?ticket=" + url.rsplit("=", 1)[1][:-4] + "AAAA")
    assert bad.status_code == 404 and "sandbox" in bad.headers["content-security-policy"]


async def test_a_views_resources_read_goes_to_its_own_server_as_the_owner_within_the_size_cap(client: httpx.AsyncClient, people: People) -> None:
    chat, server, other = await _setup(client, people)
    alice, bob = people.alice.headers, people.bob.headers
    path = f"/api/v1/chats/{chat}/mcp-apps/resources-read"
    read: dict[str, Any] = {"server_id": server, "uri": "dice://faces"}

    # Another user's chat, and a server the chat does not use, are not found.
    r = await client.post(path, headers=bob, json=read)
    assert (r.status_code, r.json()["code"]) == (404, "not_found")
    r = await client.post(path, headers=alice, json={**read, "server_id": other})
    assert r.status_code == 404

    r = await client.post(path, headers=alice, json=read)
    assert r.status_code == 200, r.text
    assert r.json() == {"contents": [{"uri": "dice://faces", "mimeType": "text/plain", "text": "six faces"}]}
    # The server's own refusal (no such resource) is the server's: 502, its reason in the message.
    r = await client.post(path, headers=alice, json={**read, "uri": "dice://missing"})
    assert (r.status_code, r.json()["code"]) == (502, "upstream_failed")
    # Over mcp_app_max_bytes: refused whole, naming the setting.
    r = await client.post(path, headers=alice, json={**read, "uri": "dice://huge"})
    assert (r.status_code, r.json()["code"]) == (413, "payload_too_large") and "mcp_app_max_bytes" in r.json()["message"]
    # Not a URI at all.
    r = await client.post(path, headers=alice, json={**read, "uri": "faces"})
    assert r.status_code == 400

    # A server without apps (no tool has a view) keeps its resources to itself.
    plain = (await client.post("/api/v1/mcp-servers", headers=people.admin.headers, json={
        "slug": "plain", "display_name": "Plain", "transport": "stdio", "command": sys.executable,
        "args": [str(PLAIN_SERVER)], "enabled": True, "availability": "default_off",
    })).json()
    chat2 = (await client.post("/api/v1/chats", headers=alice, json={"content": "hi", "mcp_server_ids": [plain["id"]]})).json()
    r = await client.post(f"/api/v1/chats/{chat2['id']}/mcp-apps/resources-read", headers=alice, json={**read, "server_id": plain["id"]})
    assert (r.status_code, r.json()["code"]) == (403, "forbidden")
