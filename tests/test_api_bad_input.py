"""Bad input is a 400 with a message, never a 500 (issue 9, item 4): what fuzzing found, each case
on SQLite and PostgreSQL, through a real HTTP server."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx

from chatd.bootstrap import App
from tests.conftest import People

BIG = 2**63  # one past PostgreSQL's bigint and SQLite's integer


def assert_400(r: httpx.Response) -> None:
    assert r.status_code == 400, (r.status_code, r.text)
    body = r.json()
    assert isinstance(body["message"], str) and body["message"]
    assert "SQL" not in r.text and "INSERT" not in r.text and "sqlalchemy" not in r.text.lower()


async def raw_json(client: httpx.AsyncClient, method: str, path: str, text: str, headers: dict[str, str]) -> httpx.Response:
    """Send JSON text as written: `\\ud800` must reach the server as the escape, which json.dumps
    of a Python string cannot produce for a lone surrogate."""
    return await client.request(method, path, content=text.encode(), headers={**headers, "content-type": "application/json"})


async def make_provider_and_model(client: httpx.AsyncClient, people: People) -> tuple[str, str]:
    h = people.admin.headers
    r = await client.post("/api/v1/providers", headers=h, json={"provider": "anthropic", "api_key": "k"})
    assert r.status_code == 201, r.text
    m = await client.post("/api/v1/model-configs", headers=h, json={"provider": "anthropic", "model": "m", "context_limit": 1000})
    assert m.status_code == 201, m.text
    return r.json()["id"], m.json()["id"]


async def test_a_nul_character_in_message_content_is_refused_not_a_server_error(client: httpx.AsyncClient, people: People) -> None:
    h = people.alice.headers
    assert_400(await raw_json(client, "POST", "/api/v1/chats", '{"content":"a\\u0000b"}', h))
    assert_400(await raw_json(client, "POST", "/api/v1/chats", '{"content":"hi","title":"t\\u0000"}', h))
    chat = (await client.post("/api/v1/chats", headers=h, json={"content": "hi"})).json()
    assert_400(await raw_json(client, "POST", f"/api/v1/chats/{chat['id']}/messages", '{"content":[{"type":"text","text":"\\u0000"}]}', h))
    assert_400(await raw_json(client, "PUT", "/api/v1/me/custom-prompt", '{"custom_prompt":"x\\u0000"}', h))
    # Nothing was written by the refused requests.
    assert [c["id"] for c in (await client.get("/api/v1/chats", headers=h)).json()] == [chat["id"]]


async def test_a_lone_surrogate_in_any_string_is_refused_not_a_server_error(client: httpx.AsyncClient, people: People) -> None:
    h = people.alice.headers
    assert_400(await raw_json(client, "POST", "/api/v1/chats", '{"content":"\\ud800"}', h))
    assert_400(await raw_json(client, "POST", "/api/v1/chats", '{"content":"ok","system_prompt":"x\\udfff"}', h))
    assert_400(await raw_json(client, "POST", "/api/v1/users/" + str(people.alice.user.id) + "/tokens", '{"name":"\\ud800"}', h))
    assert_400(await raw_json(client, "POST", "/api/v1/users", '{"username":"\\ud800"}', people.admin.headers))
    # A valid pair is an ordinary character and is stored faithfully.
    r = await raw_json(client, "POST", "/api/v1/chats", '{"content":"smile \\ud83d\\ude00"}', h)
    assert r.status_code == 201, r.text
    msgs = (await client.get(f"/api/v1/chats/{r.json()['id']}/messages", headers=h)).json()["messages"]
    assert msgs[0]["content"] == [{"type": "text", "text": "smile \U0001f600"}]


async def test_integers_past_64_bits_in_ids_and_cursors_are_refused(client: httpx.AsyncClient, people: People) -> None:
    h = people.alice.headers
    cid = (await client.post("/api/v1/chats", headers=h, json={"content": "hi"})).json()["id"]
    for path in (
        f"/api/v1/chats/{cid}/messages?after_id={BIG}",
        f"/api/v1/chats/{cid}/stream?after_id={BIG}",
    ):
        assert_400(await client.get(path, headers=h))
    assert_400(await client.get(f"/api/v1/chats/{cid}/stream", headers={**h, "Last-Event-ID": str(BIG)}))
    assert_400(await client.patch(f"/api/v1/chats/{cid}/messages/{BIG}", headers=h, json={"content": "x"}))
    assert_400(await client.delete(f"/api/v1/chats/{cid}/queue/{BIG}", headers=h))
    assert_400(await client.post(f"/api/v1/chats/{cid}/queue/{BIG}/promote", headers=h))
    assert_400(await client.put("/api/v1/usage-limits", headers=people.admin.headers, json={"scope": "global", "limit_micros": BIG}))
    # The largest 64-bit id is a valid id that names nothing.
    r = await client.delete(f"/api/v1/chats/{cid}/queue/{BIG - 1}", headers=h)
    assert r.status_code == 404, r.text


async def test_null_in_a_patch_body_is_refused_for_fields_that_cannot_be_empty(client: httpx.AsyncClient, people: People) -> None:
    h = people.admin.headers
    pid, mid = await make_provider_and_model(client, people)
    sid = (
        await client.post("/api/v1/mcp-servers", headers=h, json={"slug": "s1", "display_name": "S", "url": "https://mcp.example.com/mcp"})
    ).json()["id"]
    for path, body in (
        (f"/api/v1/providers/{pid}", {"enabled": None}),
        (f"/api/v1/providers/{pid}", {"display_name": None}),
        (f"/api/v1/model-configs/{mid}", {"model": None}),
        (f"/api/v1/model-configs/{mid}", {"context_limit": None}),
        (f"/api/v1/model-configs/{mid}", {"options": None}),
        (f"/api/v1/mcp-servers/{sid}", {"enabled": None}),
        (f"/api/v1/mcp-servers/{sid}", {"slug": None}),
        (f"/api/v1/mcp-servers/{sid}", {"args": None}),
        (f"/api/v1/mcp-servers/{sid}", {"availability": None}),
    ):
        r = await client.patch(path, headers=h, json=body)
        assert_400(r)
        assert "already exists" not in r.json()["message"], (path, body, r.text)
    # null still clears what may be empty: the provider's key and base URL.
    r = await client.patch(f"/api/v1/providers/{pid}", headers=h, json={"api_key": None})
    assert r.status_code == 200 and r.json()["api_key_set"] is False, r.text


async def test_a_file_with_a_non_latin1_name_uploads_and_downloads(client: httpx.AsyncClient, people: People) -> None:
    h = people.alice.headers
    r = await client.post("/api/v1/files", headers=h, files={"file": ("файл ü.txt", b"hello", "text/plain")})
    assert r.status_code == 201, r.text
    got = await client.get(f"/api/v1/files/{r.json()['id']}", headers=h)
    assert got.status_code == 200 and got.content == b"hello"
    disposition = got.headers["content-disposition"]
    # RFC 6266/5987: an ASCII fallback and the exact name in UTF-8.
    assert disposition.startswith("inline; ")
    assert "filename*=UTF-8''%D1%84%D0%B0%D0%B9%D0%BB%20%C3%BC.txt" in disposition
    assert 'filename="???? ?.txt"' in disposition


async def test_absurd_model_pricing_is_refused(client: httpx.AsyncClient, people: People) -> None:
    h = people.admin.headers
    _, mid = await make_provider_and_model(client, people)
    for pricing in ({"input": 1e30}, {"output": 10**30}, {"cache_read": -1}, {"reasoning": 1.5}):
        body = {"provider": "anthropic", "model": "m2", "context_limit": 1000, "pricing": pricing}
        assert_400(await client.post("/api/v1/model-configs", headers=h, json=body))
        assert_400(await client.patch(f"/api/v1/model-configs/{mid}", headers=h, json={"pricing": pricing}))
    # A dear but real price is fine: $1,000 per million tokens.
    r = await client.patch(f"/api/v1/model-configs/{mid}", headers=h, json={"pricing": {"input": 1_000_000_000}})
    assert r.status_code == 200 and r.json()["pricing"]["input"] == 1_000_000_000, r.text


async def test_booleans_and_integers_are_not_coerced_from_other_types(client: httpx.AsyncClient, people: People) -> None:
    h = people.admin.headers
    pid, mid = await make_provider_and_model(client, people)
    for path, body in (
        (f"/api/v1/providers/{pid}", {"enabled": 0}),
        (f"/api/v1/providers/{pid}", {"enabled": "true"}),
        (f"/api/v1/model-configs/{mid}", {"is_default": 1}),
        (f"/api/v1/model-configs/{mid}", {"context_limit": "1000"}),
        (f"/api/v1/model-configs/{mid}", {"context_limit": True}),
    ):
        assert_400(await client.patch(path, headers=h, json=body))
    for limit in (False, "5", 5.0):
        assert_400(await client.put("/api/v1/usage-limits", headers=h, json={"scope": "global", "limit_micros": limit}))
    assert_400(await client.post("/api/v1/mcp-servers", headers=h, json={"slug": "x", "display_name": "X", "url": "https://e.example/m", "enabled": 1}))


async def test_a_chunked_body_over_the_limit_is_a_413(client: httpx.AsyncClient, people: People, chatd: App) -> None:
    limit = chatd.settings.max_request_bytes
    payload = json.dumps({"content": "x" * (limit + 10)}).encode()

    async def chunks() -> Any:
        for i in range(0, len(payload), 65536):
            yield payload[i : i + 65536]

    r = await client.post("/api/v1/chats", headers={**people.alice.headers, "content-type": "application/json"}, content=chunks())
    assert r.status_code == 413, r.text
    assert r.json()["message"]
    assert (await client.get("/api/v1/chats", headers=people.alice.headers)).json() == []


async def test_validation_failures_are_400_with_message_and_detail(client: httpx.AsyncClient, people: People) -> None:
    r = await client.post("/api/v1/chats", headers=people.alice.headers, json={"content": 5})
    assert r.status_code == 400
    body = r.json()
    assert set(body) >= {"message", "detail"} and body["detail"][0]["field"].startswith("content")


async def test_a_nul_in_a_query_string_is_not_a_server_error(client: httpx.AsyncClient, people: People) -> None:
    r = await client.get("/api/v1/mcp-servers/oauth/callback?state=a%00b&code=c")
    assert r.status_code == 400, r.text
    assert "SQL" not in r.text


async def test_an_unknown_uuid_path_is_a_404_and_a_malformed_one_a_400(client: httpx.AsyncClient, people: People) -> None:
    h = people.alice.headers
    assert (await client.get(f"/api/v1/chats/{uuid.uuid4()}", headers=h)).status_code == 404
    assert_400(await client.get("/api/v1/chats/not-a-uuid", headers=h))


async def test_a_token_expiry_given_as_a_number_is_refused(client: httpx.AsyncClient, people: People) -> None:
    # The schema says an RFC 3339 string; a number was read as Unix seconds and stored (fuzzing).
    r = await client.post(
        "/api/v1/mcp-servers", headers=people.admin.headers,
        json={"slug": "own", "display_name": "Own", "url": "https://mcp.example/mcp", "auth_type": "oauth2"},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    path = f"/api/v1/mcp-servers/{r.json()['id']}/token"
    assert_400(await client.put(path, headers=people.alice.headers, json={"access_token": "t", "expires_at": 0}))
    assert_400(await client.put(path, headers=people.alice.headers, json={"access_token": "t", "expires_at": "1700000000"}))
    ok = await client.put(path, headers=people.alice.headers, json={"access_token": "t", "expires_at": "2030-01-01T00:00:00Z"})
    assert ok.status_code == 200 and ok.json()["expires_at"].startswith("2030-01-01"), ok.text
