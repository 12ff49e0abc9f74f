"""Real-world MCP server settings through the API (issue 12): stdio `env` sealed at rest and never
returned, per-server connect and call timeouts (a longer default for stdio start-up, errors that
name the setting), `enabled` on by default, and the connection check of a disabled server."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
from mcp_test_servers import silent_listener
from sqlalchemy import select
from tests.conftest import People

from chatd.bootstrap import App
from chatd.domain.mcp import McpServerConfig
from chatd.mcp import connect_all
from chatd.store import mcp_servers as mcp_store
from chatd.store.tables import mcp_servers
from conftest import PyServer, make_config, make_ctx

SECRET = "sk-env-value-that-must-stay-sealed"


def stdio_body(command: tuple[str, list[str]], **extra: Any) -> dict[str, Any]:
    cmd, args = command
    return {"slug": "local", "display_name": "Local", "transport": "stdio", "command": cmd, "args": args, **extra}


async def record(chatd: App, server_id: str) -> McpServerConfig:
    return await mcp_store.get_server(chatd.db, chatd.box, uuid.UUID(server_id))


async def getenv(config: McpServerConfig, name: str) -> str:
    tools, close = await connect_all([config], {})
    try:
        result = await {t.name: t for t in tools}["local__getenv"].call({"name": name}, make_ctx())
    finally:
        await close()
    assert not result.is_error, result.result
    return str(result.result)


async def test_stdio_env_reaches_the_server_process_and_is_never_returned(
    client: httpx.AsyncClient, people: People, chatd: App, stdio_python_command: tuple[str, list[str]]
) -> None:
    a = people.admin.headers
    r = await client.post("/api/v1/mcp-servers", headers=a, json=stdio_body(stdio_python_command, env={"SERVICE_TOKEN": SECRET}))
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["env_names"] == ["SERVICE_TOKEN"] and SECRET not in r.text
    for url, who in ((f"/api/v1/mcp-servers/{created['id']}", a), ("/api/v1/mcp-servers", a), (f"/api/v1/mcp-servers/{created['id']}", people.alice.headers)):
        got = await client.get(url, headers=who)
        assert got.status_code == 200 and SECRET not in got.text
    member = (await client.get(f"/api/v1/mcp-servers/{created['id']}", headers=people.alice.headers)).json()
    assert member["env_names"] is None and member["command"] is None
    # Sealed at rest: the column holds ciphertext only.
    async with chatd.db.read() as conn:
        stored = (await conn.execute(select(mcp_servers.c.env_enc).where(mcp_servers.c.id == uuid.UUID(created["id"])))).scalar_one()
    assert stored and SECRET not in stored
    assert await getenv(await record(chatd, created["id"]), "SERVICE_TOKEN") == SECRET


async def test_patching_env_sets_and_removes_named_variables_and_keeps_the_others(
    client: httpx.AsyncClient, people: People, chatd: App, stdio_python_command: tuple[str, list[str]]
) -> None:
    a = people.admin.headers
    body = stdio_body(stdio_python_command, env={"KEEP": "kept-value", "DROP": "dropped", "CHANGE": "old"})
    sid = (await client.post("/api/v1/mcp-servers", headers=a, json=body)).json()["id"]
    r = await client.patch(f"/api/v1/mcp-servers/{sid}", headers=a, json={"env": {"DROP": None, "CHANGE": "new", "ADDED": "added"}})
    assert r.status_code == 200, r.text
    assert r.json()["env_names"] == ["ADDED", "CHANGE", "KEEP"]
    assert (await record(chatd, sid)).env == {"KEEP": "kept-value", "CHANGE": "new", "ADDED": "added"}
    # A patch that does not mention env leaves it alone.
    await client.patch(f"/api/v1/mcp-servers/{sid}", headers=a, json={"display_name": "Renamed"})
    assert (await record(chatd, sid)).env == {"KEEP": "kept-value", "CHANGE": "new", "ADDED": "added"}


async def test_env_is_refused_on_http_servers_and_with_bad_names(
    client: httpx.AsyncClient, people: People, stdio_python_command: tuple[str, list[str]]
) -> None:
    a = people.admin.headers
    http = {"slug": "web", "display_name": "Web", "url": "https://mcp.example.com/mcp", "env": {"TOKEN": "x"}}
    for bad in (http, stdio_body(stdio_python_command, env={"1BAD": "x"}), stdio_body(stdio_python_command, env={"A=B": "x"})):
        r = await client.post("/api/v1/mcp-servers", headers=a, json=bad)
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["message"]


async def test_a_new_server_is_enabled_unless_created_disabled(client: httpx.AsyncClient, people: People) -> None:
    a = people.admin.headers
    on = await client.post("/api/v1/mcp-servers", headers=a, json={"slug": "on", "display_name": "On", "url": "https://a.example/mcp"})
    off = await client.post("/api/v1/mcp-servers", headers=a, json={"slug": "off", "display_name": "Off", "url": "https://b.example/mcp", "enabled": False})
    assert on.json()["enabled"] is True and off.json()["enabled"] is False
    # Members see the enabled one only.
    slugs = [s["slug"] for s in (await client.get("/api/v1/mcp-servers", headers=people.alice.headers)).json()]
    assert slugs == ["on"]


async def test_checking_a_disabled_server_says_it_is_disabled_and_still_lists_its_tools(
    client: httpx.AsyncClient, people: People, py_server: PyServer
) -> None:
    a = people.admin.headers
    body = {"slug": "py", "display_name": "Py", "url": py_server.url, "enabled": False}
    sid = (await client.post("/api/v1/mcp-servers", headers=a, json=body)).json()["id"]
    check = (await client.get(f"/api/v1/mcp-servers/{sid}/tools", headers=a)).json()
    assert check["ok"] is False and check["error"]["code"] == "mcp_server_disabled"
    assert "disabled" in check["error"]["message"]
    assert "py__echo" in {t["name"] for t in check["tools"]}
    assert (await client.get(f"/api/v1/mcp-servers/{sid}/tools", headers=people.alice.headers)).status_code == 404
    await client.patch(f"/api/v1/mcp-servers/{sid}", headers=a, json={"enabled": True})
    check = (await client.get(f"/api/v1/mcp-servers/{sid}/tools", headers=a)).json()
    assert check["ok"] is True and check["error"] is None


async def test_a_servers_connect_timeout_bounds_the_check_and_the_error_names_the_setting(
    client: httpx.AsyncClient, people: People
) -> None:
    a = people.admin.headers
    with silent_listener() as listener:
        body = {"slug": "hang", "display_name": "Hang", "url": f"http://127.0.0.1:{listener.port}/mcp", "connect_timeout_s": 0.5}
        created = (await client.post("/api/v1/mcp-servers", headers=a, json=body)).json()
        assert created["connect_timeout_s"] == 0.5 and created["call_timeout_s"] is None
        started = time.monotonic()
        check = (await client.get(f"/api/v1/mcp-servers/{created['id']}/tools", headers=a)).json()
        elapsed = time.monotonic() - started
    assert check["ok"] is False and check["error"]["code"] == "mcp_connect_failed"
    assert check["error"]["message"] == "timed out after 0.5s (the server's connect_timeout_s setting)"
    # The deployment default is 10 s; the server's own 0.5 s won.
    assert elapsed < 5
    # null puts the default back; out-of-range values are refused.
    r = await client.patch(f"/api/v1/mcp-servers/{created['id']}", headers=a, json={"connect_timeout_s": None})
    assert r.status_code == 200 and r.json()["connect_timeout_s"] is None
    for bad in (0, -1, 100_000):
        assert (await client.patch(f"/api/v1/mcp-servers/{created['id']}", headers=a, json={"call_timeout_s": bad})).status_code == 400


async def test_a_servers_call_timeout_overrides_the_default_and_the_error_names_it(py_server: PyServer) -> None:
    config = make_config(py_server.url, slug="py", call_timeout_s=0.3)
    tools, close = await connect_all([config], {}, call_timeout=60)
    try:
        result = await {t.name: t for t in tools}["py__slow"].call({"seconds": 30}, make_ctx())
    finally:
        await close()
    assert result.is_error
    assert result.result == "The MCP tool call failed: timed out after 0.3s without a result or progress (the server's call_timeout_s setting)"


def test_stdio_servers_get_the_longer_start_up_default_unless_they_set_their_own() -> None:
    assert make_config(transport="stdio", command="x").connect_timeout_for(10, 60) == 60
    assert make_config("https://a.example/mcp").connect_timeout_for(10, 60) == 10
    assert make_config(transport="stdio", command="x", connect_timeout_s=5).connect_timeout_for(10, 60) == 5
    assert make_config("https://a.example/mcp", call_timeout_s=2).call_timeout_for(60) == 2
    assert make_config("https://a.example/mcp").call_timeout_for(60) == 60
