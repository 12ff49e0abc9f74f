"""A server's status through the API (issue 12): what the last attempt said, on any replica —
connected, failing with a reason (admins only), unauthorized for the server's own credentials —
and, per caller, whether they still have to sign in to an OAuth2 server."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from mcp_test_servers import RequireHeader, build_server, free_port, serve
from tests.conftest import People

from chatd.bootstrap import App
from chatd.domain.mcp import McpHealth
from chatd.store import mcp_servers as mcp_store
from conftest import PyServer

SECRET = "sk-status-key-never-shown"


async def create(client: httpx.AsyncClient, people: People, **body: Any) -> dict[str, Any]:
    r = await client.post("/api/v1/mcp-servers", headers=people.admin.headers, json={"display_name": "S", **body})
    assert r.status_code == 201, r.text
    return dict(r.json())


async def status(client: httpx.AsyncClient, who: dict[str, str], sid: str) -> dict[str, Any]:
    r = await client.get(f"/api/v1/mcp-servers/{sid}", headers=who)
    assert r.status_code == 200, r.text
    listed = {s["id"]: s for s in (await client.get("/api/v1/mcp-servers", headers=who)).json()}
    assert listed[sid]["status"] == r.json()["status"]
    return dict(r.json()["status"])


async def test_a_new_server_is_unknown_and_a_check_records_connected(client: httpx.AsyncClient, people: People, py_server: PyServer) -> None:
    created = await create(client, people, slug="py", url=py_server.url)
    assert created["status"] == {
        "state": "unknown", "reason": None, "last_error_at": None, "last_connected_at": None, "checked_at": None,
        "tool_count": None, "needs_authorization": False,
    }
    check = (await client.get(f"/api/v1/mcp-servers/{created['id']}/tools", headers=people.admin.headers)).json()
    assert check["ok"] and len(check["tools"]) > 1
    seen = await status(client, people.admin.headers, created["id"])
    assert seen["state"] == "connected" and seen["last_connected_at"] is not None and seen["last_error_at"] is None
    # What the check found stays readable after it (a reloaded page): the number of tools too.
    assert seen["tool_count"] == len(check["tools"])
    assert (await status(client, people.alice.headers, created["id"]))["tool_count"] == len(check["tools"])


async def test_the_tool_count_follows_the_allow_list_and_outlives_a_failure(
    chatd: App, client: httpx.AsyncClient, people: People, py_server: PyServer
) -> None:
    created = await create(client, people, slug="few", url=py_server.url)
    sid = created["id"]
    r = await client.get(f"/api/v1/mcp-servers/{sid}/tools", headers=people.admin.headers)
    first = r.json()["tools"][0]["name"].split("__")[-1]
    await client.patch(f"/api/v1/mcp-servers/{sid}", headers=people.admin.headers, json={"tool_allow_list": [first]})
    await client.get(f"/api/v1/mcp-servers/{sid}/tools", headers=people.admin.headers)
    assert (await status(client, people.admin.headers, sid))["tool_count"] == 1
    # A failure keeps the count of the last success, as it keeps the time of it.
    await mcp_store.record_status(chatd.db, chatd.clock.now(), uuid.UUID(sid), McpHealth.FAILING, "down")
    failing = await status(client, people.admin.headers, sid)
    assert (failing["state"], failing["tool_count"]) == ("failing", 1)


async def test_a_failing_server_shows_why_to_admins_and_only_that_it_fails_to_members(client: httpx.AsyncClient, people: People) -> None:
    created = await create(client, people, slug="down", url=f"http://127.0.0.1:{free_port()}/mcp?key={SECRET}")
    check = (await client.get(f"/api/v1/mcp-servers/{created['id']}/tools", headers=people.admin.headers)).json()
    assert check["ok"] is False
    admin = await status(client, people.admin.headers, created["id"])
    assert admin["state"] == "failing" and admin["reason"] == check["error"]["message"] and admin["last_error_at"]
    assert SECRET not in admin["reason"]
    member = await status(client, people.alice.headers, created["id"])
    assert member == {**admin, "reason": None}


async def test_a_refused_api_key_is_unauthorized_and_recovery_keeps_the_last_error_time(
    client: httpx.AsyncClient, people: People
) -> None:
    with serve(RequireHeader(build_server().streamable_http_app(), "X-Key", "right")) as running:
        created = await create(
            client, people, slug="keyed", url=running.url, auth_type="api_key", api_key_header="X-Key", api_key_value="wrong"
        )
        sid = created["id"]
        await client.get(f"/api/v1/mcp-servers/{sid}/tools", headers=people.admin.headers)
        refused = await status(client, people.admin.headers, sid)
        assert refused["state"] == "unauthorized" and "401" in refused["reason"]
        await client.patch(f"/api/v1/mcp-servers/{sid}", headers=people.admin.headers, json={"api_key_value": "right"})
        await client.get(f"/api/v1/mcp-servers/{sid}/tools", headers=people.admin.headers)
        fine = await status(client, people.admin.headers, sid)
        assert fine["state"] == "connected" and fine["reason"] is None
        assert fine["last_error_at"] == refused["last_error_at"] and fine["last_connected_at"]


async def test_an_oauth_server_needs_authorization_per_user_and_a_users_refusal_is_not_the_servers(
    client: httpx.AsyncClient, people: People, chatd: App
) -> None:
    with serve(RequireHeader(build_server().streamable_http_app(), "Authorization", "Bearer good")) as running:
        created = await create(client, people, slug="oauth", url=running.url, auth_type="oauth2")
        sid = created["id"]
        assert (await status(client, people.alice.headers, sid))["needs_authorization"] is True
        await client.put(f"/api/v1/mcp-servers/{sid}/token", headers=people.alice.headers, json={"access_token": "good"})
        assert (await status(client, people.alice.headers, sid))["needs_authorization"] is False
        assert (await status(client, people.admin.headers, sid))["needs_authorization"] is True
        # The admin (no token) is refused: that is the admin's sign-in, not the server's health.
        await client.get(f"/api/v1/mcp-servers/{sid}/tools", headers=people.admin.headers)
        assert (await status(client, people.admin.headers, sid))["state"] == "unknown"
        await client.get(f"/api/v1/mcp-servers/{sid}/tools", headers=people.alice.headers)
        assert (await status(client, people.alice.headers, sid))["state"] == "connected"


async def test_a_status_for_a_deleted_server_is_dropped_quietly(chatd: App, client: httpx.AsyncClient, people: People) -> None:
    created = await create(client, people, slug="gone", url="http://127.0.0.1:1/mcp")
    await client.delete(f"/api/v1/mcp-servers/{created['id']}", headers=people.admin.headers)
    await mcp_store.record_status(chatd.db, chatd.clock.now(), uuid.UUID(created["id"]), McpHealth.FAILING, "late")
    assert await mcp_store.statuses(chatd.db) == {}
