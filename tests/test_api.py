"""The HTTP contract (API.md): happy paths, the error contract and the stream, on both databases."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx

from chatd.bootstrap import App
from tests.conftest import People

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


async def setup_models(client: httpx.AsyncClient, people: People) -> dict[str, Any]:
    r = await client.post("/api/v1/providers", headers=people.admin.headers, json={"provider": "anthropic", "api_key": "sk-ant-secret-123"})
    assert r.status_code == 201, r.text
    provider = r.json()
    r = await client.post(
        "/api/v1/model-configs",
        headers=people.admin.headers,
        json={"provider": "anthropic", "model": "claude-x", "context_limit": 200000, "pricing": {"input": 3_000_000, "output": 15_000_000}},
    )
    assert r.status_code == 201, r.text
    return {"provider": provider, "model": r.json()}


async def test_provider_key_is_never_echoed(client: httpx.AsyncClient, people: People, chatd: App) -> None:
    out = await setup_models(client, people)
    assert "sk-ant-secret-123" not in json.dumps(out)
    assert out["provider"]["api_key_set"] is True
    listed = await client.get("/api/v1/providers", headers=people.admin.headers)
    assert "sk-ant-secret-123" not in listed.text
    # Encrypted at rest too.
    from sqlalchemy import text as sql

    async with chatd.db.read() as conn:
        raw = (await conn.execute(sql("SELECT api_key_enc FROM providers"))).scalar_one()
    assert "sk-ant-secret-123" not in raw
    assert out["model"]["is_default"] is True


async def test_chat_lifecycle_over_http(client: httpx.AsyncClient, people: People) -> None:
    await setup_models(client, people)
    h = people.alice.headers
    r = await client.post("/api/v1/chats", headers=h, json={"content": "Plan a trip to Lisbon"})
    assert r.status_code == 201, r.text
    chat = r.json()
    assert chat["status"] == "pending" and chat["root_chat_id"] == chat["id"] and chat["title"] == "Plan a trip to Lisbon"
    cid = chat["id"]

    r = await client.post(f"/api/v1/chats/{cid}/messages", headers=h, json={"content": [{"type": "text", "text": "and Porto"}]})
    assert r.status_code == 200 and r.json()["queued"] is True and r.json()["queued_message"]["content"] == [{"type": "text", "text": "and Porto"}]

    r = await client.get(f"/api/v1/chats/{cid}/messages", headers=h)
    body = r.json()
    assert [m["role"] for m in body["messages"]] == ["user"] and len(body["queued_messages"]) == 1
    first = body["messages"][0]["id"]

    r = await client.patch(f"/api/v1/chats/{cid}/messages/{first}", headers=h, json={"content": "Plan a trip to Madrid"})
    assert r.status_code == 200, r.text
    assert r.json()["message"]["content"] == [{"type": "text", "text": "Plan a trip to Madrid"}]
    assert (await client.get(f"/api/v1/chats/{cid}/messages", headers=h)).json()["queued_messages"] == []

    assert (await client.post(f"/api/v1/chats/{cid}/archive", headers=h)).status_code == 204
    assert (await client.get("/api/v1/chats", headers=h)).json() == []
    archived = (await client.get("/api/v1/chats?archived=true", headers=h)).json()
    assert [c["id"] for c in archived] == [cid] and archived[0]["status"] == "waiting"
    assert (await client.post(f"/api/v1/chats/{cid}/unarchive", headers=h)).status_code == 204


async def test_bad_input_is_a_400_with_a_message_and_writes_nothing(client: httpx.AsyncClient, people: People) -> None:
    h = people.alice.headers
    cases: list[tuple[str, str, Any]] = [
        ("POST", "/api/v1/chats", {"content": ""}),
        ("POST", "/api/v1/chats", {"content": []}),
        ("POST", "/api/v1/chats", {}),
        ("POST", "/api/v1/chats", {"content": "hi", "model_config_id": "not-a-uuid"}),
        ("POST", "/api/v1/chats", {"content": "hi", "model_config_id": str(uuid.uuid4())}),
        ("POST", "/api/v1/chats", {"content": "hi", "mcp_server_ids": [str(uuid.uuid4())]}),
        ("POST", "/api/v1/chats", {"content": [{"type": "image", "url": "x"}]}),
        ("POST", "/api/v1/chats", {"content": "hi", "unknown_field": 1}),
        ("POST", "/api/v1/chats", "not json"),
    ]
    for method, path, body in cases:
        kwargs: dict[str, Any] = {"content": body, "headers": {**h, "content-type": "application/json"}} if isinstance(body, str) else {"json": body, "headers": h}
        r = await client.request(method, path, **kwargs)
        assert r.status_code == 400, (body, r.status_code, r.text)
        assert isinstance(r.json()["message"], str) and r.json()["message"]
    assert (await client.get("/api/v1/chats", headers=h)).json() == []

    chat = (await client.post("/api/v1/chats", headers=h, json={"content": "hi"})).json()
    for body in ({"content": "x", "busy_behavior": "shout"}, {"content": "   "}, {"content": "x", "mcp_server_ids": ["nope"]}):
        r = await client.post(f"/api/v1/chats/{chat['id']}/messages", headers=h, json=body)
        assert r.status_code == 400, (body, r.text)
    r = await client.get(f"/api/v1/chats/{chat['id']}/messages?after_id=abc", headers=h)
    assert r.status_code == 400
    msgs = (await client.get(f"/api/v1/chats/{chat['id']}/messages", headers=h)).json()
    assert len(msgs["messages"]) == 1 and msgs["queued_messages"] == []


async def test_queue_full_and_reject_are_conflicts(client: httpx.AsyncClient, people: People) -> None:
    h = people.alice.headers
    cid = (await client.post("/api/v1/chats", headers=h, json={"content": "hi"})).json()["id"]
    r = await client.post(f"/api/v1/chats/{cid}/messages", headers=h, json={"content": "x", "busy_behavior": "reject"})
    assert r.status_code == 409 and r.json()["code"] == "chat_busy"
    for i in range(20):
        assert (await client.post(f"/api/v1/chats/{cid}/messages", headers=h, json={"content": f"q{i}"})).status_code == 200
    r = await client.post(f"/api/v1/chats/{cid}/messages", headers=h, json={"content": "one too many"})
    assert r.status_code == 409 and r.json()["code"] == "queue_full" and r.json()["message"]


async def test_usage_limit_is_a_409_with_the_figures(client: httpx.AsyncClient, people: People) -> None:
    r = await client.put("/api/v1/usage-limits", headers=people.admin.headers, json={"scope": "global", "period": "month", "limit_micros": 0})
    assert r.status_code == 204
    r = await client.post("/api/v1/chats", headers=people.alice.headers, json={"content": "hi"})
    assert r.status_code == 409
    body = r.json()
    assert body["code"] == "usage_limit_exceeded"
    assert body["detail"]["limit_micros"] == 0 and body["detail"]["spent_micros"] == 0 and body["detail"]["period_end"]
    usage = (await client.get("/api/v1/usage", headers=people.alice.headers)).json()
    assert usage["limit_micros"] == 0 and usage["period"] == "month"


async def test_request_body_limit_is_a_413(client: httpx.AsyncClient, people: People, chatd: App) -> None:
    big = "x" * (chatd.settings.max_request_bytes + 10)
    r = await client.post("/api/v1/chats", headers=people.alice.headers, json={"content": big})
    assert r.status_code == 413 and r.json()["message"]
    assert (await client.get("/api/v1/chats", headers=people.alice.headers)).json() == []


async def test_files_upload_sniff_and_owner_only(client: httpx.AsyncClient, people: People) -> None:
    r = await client.post("/api/v1/files", headers=people.alice.headers, files={"file": ("a.png", PNG, "image/png")})
    assert r.status_code == 201, r.text
    fid = r.json()["id"]
    assert r.json()["size"] == len(PNG)
    got = await client.get(f"/api/v1/files/{fid}", headers=people.alice.headers)
    assert got.status_code == 200 and got.content == PNG and got.headers["content-type"] == "image/png"
    assert (await client.get(f"/api/v1/files/{fid}", headers=people.bob.headers)).status_code == 404
    r = await client.post("/api/v1/files", headers=people.alice.headers, files={"file": ("a.png", b"GIF89a....", "image/png")})
    assert r.status_code == 400
    r = await client.post("/api/v1/files", headers=people.alice.headers, files={"file": ("a.svg", b"<svg/>", "image/svg+xml")})
    assert r.status_code == 400


async def test_mcp_server_crud_validates_and_hides_secrets(client: httpx.AsyncClient, people: People) -> None:
    a = people.admin.headers
    base = {"slug": "docs", "display_name": "Docs", "url": "https://mcp.example.com/mcp", "auth_type": "api_key", "api_key_header": "X-Key", "api_key_value": "top-secret-key", "enabled": True, "custom_headers": {"X-Other": "also-secret"}}
    r = await client.post("/api/v1/mcp-servers", headers=a, json=base)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert "top-secret-key" not in r.text and "also-secret" not in r.text and r.json()["api_key_set"] is True
    assert (await client.post("/api/v1/mcp-servers", headers=a, json=base)).status_code == 409
    for bad in ({**base, "slug": "a__b"}, {**base, "slug": "Bad Slug"}, {**base, "slug": "ok", "url": ""}, {**base, "slug": "ok2", "transport": "stdio", "url": ""}, {**base, "slug": "x", "availability": "always_on"}):
        r = await client.post("/api/v1/mcp-servers", headers=a, json=bad)
        assert r.status_code == 400, (bad, r.text)
    member_view = (await client.get(f"/api/v1/mcp-servers/{sid}", headers=people.alice.headers)).json()
    assert member_view["url"] is None and member_view["api_key_header"] is None
    r = await client.patch(f"/api/v1/mcp-servers/{sid}", headers=a, json={"availability": "force_on"})
    assert r.status_code == 200 and r.json()["availability"] == "force_on"
    # force_on is enforced on the server: a chat that names no servers still gets it.
    chat = (await client.post("/api/v1/chats", headers=people.alice.headers, json={"content": "hi", "mcp_server_ids": []})).json()
    assert chat["mcp_server_ids"] == [sid]
    r = await client.put(f"/api/v1/mcp-servers/{sid}/token", headers=people.alice.headers, json={"access_token": "user-oauth-token"})
    assert r.status_code == 200 and "user-oauth-token" not in r.text
    assert (await client.get(f"/api/v1/mcp-servers/{sid}/token", headers=people.alice.headers)).json()["connected"] is True
    assert (await client.get(f"/api/v1/mcp-servers/{sid}/token", headers=people.bob.headers)).json()["connected"] is False
    assert (await client.delete(f"/api/v1/mcp-servers/{sid}", headers=a)).status_code == 204
    assert (await client.get(f"/api/v1/chats/{chat['id']}", headers=people.alice.headers)).json()["mcp_server_ids"] == []


async def test_openapi_matches_the_routes(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    paths = spec["paths"]
    for p in ("/api/v1/chats", "/api/v1/chats/{chat_id}/messages", "/api/v1/chats/{chat_id}/stream", "/api/v1/chats/watch", "/healthz", "/api/v1/mcp-servers/{server_id}/token"):
        assert p in paths, p
    busy = spec["components"]["schemas"]["BusyBehavior"]["enum"]
    assert busy == ["queue", "interrupt", "steer", "reject"]


_line_iters: dict[int, Any] = {}


async def read_sse(response: httpx.Response, want: int, timeout: float = 10) -> list[dict[str, Any]]:
    """Read `want` events from an SSE response; call again on the same response to read on."""
    lines = _line_iters.setdefault(id(response), response.aiter_lines())
    events: list[dict[str, Any]] = []

    async def go() -> None:
        data: list[str] = []
        async for line in lines:
            if line.startswith("data:"):
                data.append(line[5:].strip())
            elif line == "" and data:
                events.append(json.loads("\n".join(data)))
                data = []
                if len(events) >= want:
                    return

    await asyncio.wait_for(go(), timeout)
    return events


async def test_stream_snapshot_then_live_queue_update(client: httpx.AsyncClient, people: People) -> None:
    h = people.alice.headers
    chat = (await client.post("/api/v1/chats", headers=h, json={"content": "hello"})).json()
    cid = chat["id"]
    async with client.stream("GET", f"/api/v1/chats/{cid}/stream", headers=h) as resp:
        assert resp.status_code == 200
        snapshot = await read_sse(resp, 2)
        assert [e["type"] for e in snapshot] == ["status", "message"]
        assert snapshot[0]["status"] == "pending" and snapshot[1]["message"]["content"] == [{"type": "text", "text": "hello"}]
        sent = await client.post(f"/api/v1/chats/{cid}/messages", headers=h, json={"content": "queued one"})
        assert sent.json()["queued"] is True
        live = await read_sse(resp, 1)
        assert live[0]["type"] == "queue_update"
        assert [q["content"][0]["text"] for q in live[0]["queued_messages"]] == ["queued one"]
        await client.post(f"/api/v1/chats/{cid}/interrupt", headers=h)


async def test_stream_resumes_after_the_last_event_id(client: httpx.AsyncClient, people: People) -> None:
    h = people.alice.headers
    chat = (await client.post("/api/v1/chats", headers=h, json={"content": "hello"})).json()
    msgs = (await client.get(f"/api/v1/chats/{chat['id']}/messages", headers=h)).json()["messages"]
    async with client.stream("GET", f"/api/v1/chats/{chat['id']}/stream", headers={**h, "Last-Event-ID": str(msgs[-1]["id"])}) as resp:
        events = await read_sse(resp, 1)
        assert [e["type"] for e in events] == ["status"]


async def test_mcp_forward_identity_round_trips(client: httpx.AsyncClient, people: People) -> None:
    a = people.admin.headers
    body = {"slug": "ident", "display_name": "Ident", "url": "http://127.0.0.1:9/mcp", "enabled": True}
    created = (await client.post("/api/v1/mcp-servers", headers=a, json=body)).json()
    assert created["forward_identity"] is False
    patched = await client.patch(f"/api/v1/mcp-servers/{created['id']}", headers=a, json={"forward_identity": True})
    assert patched.status_code == 200 and patched.json()["forward_identity"] is True
    assert (await client.get(f"/api/v1/mcp-servers/{created['id']}", headers=people.alice.headers)).json()["forward_identity"] is True


async def test_chats_carry_their_queue_length_and_the_watch_reports_its_changes(client: httpx.AsyncClient, people: People) -> None:
    """The chat list's "N queued" badge: `queued_count` on every chat read, and a `queue_change`
    on the watch whenever a message joins or leaves the queue without a status change."""
    h = people.alice.headers
    chat = (await client.post("/api/v1/chats", headers=h, json={"content": "hello"})).json()
    cid = chat["id"]
    assert chat["queued_count"] == 0
    async with client.stream("GET", "/api/v1/chats/watch", headers=h) as watch:
        assert watch.status_code == 200
        sent, events = [], []
        for i in range(2):
            # One at a time: the watch re-reads the chat when the hint arrives, and a second send
            # committed by then would already be counted.
            sent.append((await client.post(f"/api/v1/chats/{cid}/messages", headers=h, json={"content": f"q{i}"})).json())
            events += await read_sse(watch, 1)
        assert all(s["queued"] for s in sent)
        assert [(e["kind"], e["chat"]["queued_count"]) for e in events] == [("queue_change", 1), ("queue_change", 2)]
        assert (await client.get(f"/api/v1/chats/{cid}", headers=h)).json()["queued_count"] == 2
        listed = (await client.get("/api/v1/chats", headers=h)).json()
        assert [c["queued_count"] for c in listed if c["id"] == cid] == [2]

        first = sent[0]["queued_message"]["id"]
        assert (await client.delete(f"/api/v1/chats/{cid}/queue/{first}", headers=h)).status_code == 204
        [gone] = await read_sse(watch, 1)
        assert (gone["kind"], gone["chat"]["queued_count"]) == ("queue_change", 1)
        # Promoting the last one empties the queue (and the chat stays pending: a status change).
        second = sent[1]["queued_message"]["id"]
        assert (await client.post(f"/api/v1/chats/{cid}/queue/{second}/promote", headers=h)).status_code == 200
        [promoted] = await read_sse(watch, 1)
        assert promoted["chat"]["queued_count"] == 0
    assert (await client.get(f"/api/v1/chats/{cid}", headers=h)).json()["queued_count"] == 0


async def test_chats_tell_steering_messages_from_queued_ones(client: httpx.AsyncClient, people: People, chatd: App) -> None:
    """The chat list's badge says "1 queued" or "1 steering": `steering_count` counts the queued
    messages sent with `steer` (`queued_count` counts them all), on every read, on the watch, and
    after the running turn takes the steered message."""
    from chatd.store import turns as turn_store

    h = people.alice.headers
    cid = (await client.post("/api/v1/chats", headers=h, json={"content": "hello"})).json()["id"]
    me = uuid.uuid4()
    (held,) = await turn_store.acquire_chats(chatd.db, chatd.clock.now(), me, 1)
    assert str(held.id) == cid

    def counts(chat: dict[str, Any]) -> tuple[int, int]:
        return chat["queued_count"], chat["steering_count"]

    async with client.stream("GET", "/api/v1/chats/watch", headers=h) as watch:
        steered = await client.post(f"/api/v1/chats/{cid}/messages", headers=h, json={"content": "s", "busy_behavior": "steer"})
        assert steered.json()["queued_message"]["steer"] is True and counts(steered.json()["chat"]) == (1, 1)
        [event] = await read_sse(watch, 1)
        assert (event["kind"], counts(event["chat"])) == ("queue_change", (1, 1))
        queued = await client.post(f"/api/v1/chats/{cid}/messages", headers=h, json={"content": "q", "busy_behavior": "queue"})
        assert counts(queued.json()["chat"]) == (2, 1)
        [event] = await read_sse(watch, 1)
        assert (event["kind"], counts(event["chat"])) == ("queue_change", (2, 1))
        assert counts((await client.get(f"/api/v1/chats/{cid}", headers=h)).json()) == (2, 1)
        assert [counts(c) for c in (await client.get("/api/v1/chats", headers=h)).json() if c["id"] == cid] == [(2, 1)]

    # The turn takes the steered message at its next tool boundary; the queued one still waits.
    taken, _ = await turn_store.take_steered(chatd.db, chatd.clock.now(), uuid.UUID(cid), me, held.generation)
    assert len(taken) == 1
    assert counts((await client.get(f"/api/v1/chats/{cid}", headers=h)).json()) == (1, 0)
    assert [counts(c) for c in (await client.get("/api/v1/chats", headers=h)).json() if c["id"] == cid] == [(1, 0)]
