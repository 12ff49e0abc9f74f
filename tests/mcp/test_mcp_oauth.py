"""OAuth2 for MCP servers against a real authorization server and a bearer-protected MCP server on
127.0.0.1: the browser flow through the API, the tools check, refresh (proactive, after a 401,
single-flight in one process and across replicas) and client credentials. On both databases.

Every test ends by asserting that the authorization server never saw a refresh token presented
twice: it revokes the grant on reuse, as real servers do, so a race would be caught.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from cryptography.fernet import Fernet
from mcp_test_servers import free_port
from oauth_test_server import OAuthWorld, oauth_world
from sqlalchemy import text
from tests.conftest import People

from chatd.bootstrap import App
from chatd.domain.chat import UserRole
from chatd.domain.clock import ManualClock
from chatd.domain.mcp import McpServerConfig, OAuth2Settings
from chatd.mcp import OAuthToken, oauth
from chatd.mcp.authorization import McpAuthorization
from chatd.mcp.oauth import OAuthGrantRevoked
from chatd.store import mcp_servers as mcp_store
from chatd.store import users as user_store
from chatd.store.database import Database
from chatd.store.mcp_oauth import SqlOAuthVault
from chatd.store.secrets import SecretBox
from conftest import make_ctx

CALLBACK = "/api/v1/mcp-servers/oauth/callback"


@pytest.fixture
def world() -> Iterator[OAuthWorld]:
    with oauth_world() as w:
        yield w
        # A refresh token presented twice means two refreshes raced: the server revoked the grant.
        assert w.auth.refresh_reuse == 0, "a refresh token was used twice"


async def create_server(client: httpx.AsyncClient, people: People, url: str, **extra: Any) -> str:
    body = {"slug": "secure", "display_name": "Secure", "url": url, "auth_type": "oauth2", "enabled": True, **extra}
    r = await client.post("/api/v1/mcp-servers", headers=people.admin.headers, json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def connect(client: httpx.AsyncClient, who: dict[str, str], server_id: str) -> httpx.Response:
    """Start, follow the authorization server's redirect like a browser, land on the callback."""
    r = await client.post(f"/api/v1/mcp-servers/{server_id}/oauth/start", headers=who)
    assert r.status_code == 200, r.text
    authorize_url = r.json()["authorize_url"]
    async with httpx.AsyncClient(timeout=10) as browser:
        approved = await browser.get(authorize_url)
        assert approved.status_code == 302, approved.text
        location = approved.headers["location"]
        assert location.startswith(str(client.base_url) + CALLBACK)
        # The browser carries no chatd credentials: the state alone identifies the user.
        return await browser.get(location)


@pytest.fixture
async def connected(client: httpx.AsyncClient, people: People, world: OAuthWorld) -> AsyncIterator[str]:
    server_id = await create_server(client, people, world.mcp_url)
    page = await connect(client, people.alice.headers, server_id)
    assert page.status_code == 200, page.text
    yield server_id


def tool_names(body: dict[str, Any]) -> list[str]:
    return [t["name"] for t in body["tools"]]


async def test_browser_flow_connects_the_user_and_the_tools_check_lists_the_tools(
    client: httpx.AsyncClient, people: People, world: OAuthWorld, chatd: App
) -> None:
    server_id = await create_server(client, people, world.mcp_url)
    before = (await client.get(f"/api/v1/mcp-servers/{server_id}/tools", headers=people.alice.headers)).json()
    assert before["ok"] is False and before["tools"] == []
    assert before["error"]["code"] == "mcp_oauth_required" and before["error"]["status"] == 401

    page = await connect(client, people.alice.headers, server_id)
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert "Connected to Secure" in page.text and "close this tab" in page.text

    # Discovered through the 401's resource_metadata / RFC 9728 and RFC 8414, registered by RFC 7591,
    # authorized with PKCE S256 and an RFC 8707 resource indicator naming the MCP server.
    assert world.auth.registrations == 1 and world.auth.code_exchanges == 1
    authorize = world.auth.authorize_requests[-1]
    assert authorize["code_challenge_method"] == "S256"
    assert authorize["resource"] == world.mcp_url and authorize["scope"] == "mcp:tools"
    assert authorize["redirect_uri"] == str(client.base_url) + CALLBACK

    token = (await client.get(f"/api/v1/mcp-servers/{server_id}/token", headers=people.alice.headers)).json()
    assert token["connected"] is True and token["expires_at"] is not None
    body = (await client.get(f"/api/v1/mcp-servers/{server_id}/tools", headers=people.alice.headers)).json()
    assert body["ok"] is True and body["error"] is None
    assert {"secure__echo", "secure__add"} <= set(tool_names(body))
    echo = next(t for t in body["tools"] if t["name"] == "secure__echo")
    assert echo["original_name"] == "echo" and echo["description"] == "Echo the text back."
    assert echo["input_schema"]["required"] == ["text"]

    # Only alice connected: bob is still asked to authorize.
    bob = (await client.get(f"/api/v1/mcp-servers/{server_id}/tools", headers=people.bob.headers)).json()
    assert bob["ok"] is False and bob["error"]["code"] == "mcp_oauth_required"

    # Tokens are encrypted at rest, and no API answer carries one.
    stored = await mcp_store.get_token(chatd.db, chatd.box, uuid.UUID(server_id), people.alice.user.id)
    assert stored is not None and stored.refresh_token
    async with chatd.db.read() as conn:
        raw = " ".join(str(v) for r in (await conn.execute(text("SELECT * FROM mcp_user_tokens"))).all() for v in r)
        raw += " ".join(str(v) for r in (await conn.execute(text("SELECT * FROM mcp_oauth_clients"))).all() for v in r)
    assert stored.access_token not in raw and stored.refresh_token not in raw
    client_row = await chatd.service.mcp_auth.vault.client(uuid.UUID(server_id))
    assert client_row is not None and client_row.client_secret and client_row.client_secret not in raw
    for r in (
        await client.get(f"/api/v1/mcp-servers/{server_id}", headers=people.admin.headers),
        await client.get(f"/api/v1/mcp-servers/{server_id}/token", headers=people.alice.headers),
    ):
        assert stored.access_token not in r.text and stored.refresh_token not in r.text


async def test_second_connection_reuses_the_registered_client(
    client: httpx.AsyncClient, people: People, world: OAuthWorld, connected: str
) -> None:
    page = await connect(client, people.bob.headers, connected)
    assert page.status_code == 200
    assert world.auth.registrations == 1 and world.auth.code_exchanges == 2
    body = (await client.get(f"/api/v1/mcp-servers/{connected}/tools", headers=people.bob.headers)).json()
    assert body["ok"] is True


async def test_a_state_works_once_and_not_after_it_expires(
    client: httpx.AsyncClient, people: People, world: OAuthWorld, clock: ManualClock
) -> None:
    server_id = await create_server(client, people, world.mcp_url)
    r = await client.post(f"/api/v1/mcp-servers/{server_id}/oauth/start", headers=people.alice.headers)
    async with httpx.AsyncClient(timeout=10) as browser:
        location = (await browser.get(r.json()["authorize_url"])).headers["location"]
        assert (await browser.get(location)).status_code == 200
        replay = await browser.get(location)
        assert replay.status_code == 400 and "already used or has expired" in replay.text
        assert world.auth.code_exchanges == 1

        r = await client.post(f"/api/v1/mcp-servers/{server_id}/oauth/start", headers=people.bob.headers)
        location = (await browser.get(r.json()["authorize_url"])).headers["location"]
        clock.advance(11 * 60)
        late = await browser.get(location)
        assert late.status_code == 400 and world.auth.code_exchanges == 1

        forged = await browser.get(str(client.base_url) + CALLBACK, params={"code": "x", "state": "guessed"})
        assert forged.status_code == 400
        empty = await browser.get(str(client.base_url) + CALLBACK)
        assert empty.status_code == 400
    assert (await client.get(f"/api/v1/mcp-servers/{server_id}/token", headers=people.bob.headers)).json()["connected"] is False


async def test_a_denied_authorization_consumes_the_state_and_stores_nothing(
    client: httpx.AsyncClient, people: People, world: OAuthWorld
) -> None:
    server_id = await create_server(client, people, world.mcp_url)
    r = await client.post(f"/api/v1/mcp-servers/{server_id}/oauth/start", headers=people.alice.headers)
    state = parse_qs(urlsplit(r.json()["authorize_url"]).query)["state"][0]
    async with httpx.AsyncClient(timeout=10) as browser:
        denied = await browser.get(str(client.base_url) + CALLBACK, params={"error": "access_denied", "state": state})
        assert denied.status_code == 400 and "access_denied" in denied.text
        again = await browser.get(str(client.base_url) + CALLBACK, params={"code": "c", "state": state})
        assert again.status_code == 400
    assert (await client.get(f"/api/v1/mcp-servers/{server_id}/token", headers=people.alice.headers)).json()["connected"] is False


async def test_start_refuses_servers_that_have_no_user_flow(
    client: httpx.AsyncClient, people: People, world: OAuthWorld
) -> None:
    plain = await create_server(client, people, world.mcp_url, slug="plain", auth_type="none")
    r = await client.post(f"/api/v1/mcp-servers/{plain}/oauth/start", headers=people.alice.headers)
    assert r.status_code == 400 and r.json()["code"] == "invalid_input"
    svc = await create_server(
        client, people, world.mcp_url, slug="svc",
        oauth2={"grant_type": "client_credentials", "client_id": "svc", "client_secret": "svc-secret"},
    )
    r = await client.post(f"/api/v1/mcp-servers/{svc}/oauth/start", headers=people.alice.headers)
    assert r.status_code == 400 and "client credentials" in r.json()["message"]
    r = await client.post(f"/api/v1/mcp-servers/{uuid.uuid4()}/oauth/start", headers=people.alice.headers)
    assert r.status_code == 404
    r = await client.post(f"/api/v1/mcp-servers/{plain}/oauth/start")
    assert r.status_code == 401
    # client_credentials without a secret is refused at create, not at the first turn.
    bad = {"slug": "bad", "display_name": "Bad", "url": world.mcp_url, "auth_type": "oauth2", "oauth2": {"grant_type": "client_credentials", "client_id": "x"}}
    r = await client.post("/api/v1/mcp-servers", headers=people.admin.headers, json=bad)
    assert r.status_code == 400


async def test_undiscoverable_authorization_server_is_a_502_with_a_reason(
    client: httpx.AsyncClient, people: People
) -> None:
    server_id = await create_server(client, people, f"http://127.0.0.1:{free_port()}/mcp")
    r = await client.post(f"/api/v1/mcp-servers/{server_id}/oauth/start", headers=people.alice.headers)
    assert r.status_code == 502 and r.json()["code"] == "mcp_oauth_failed"
    assert "authorize_url and token_url" in r.json()["message"]


async def test_configured_client_and_endpoints_win_over_discovery(
    client: httpx.AsyncClient, people: People, world: OAuthWorld
) -> None:
    world.add_client("configured", "configured-secret", [str(client.base_url) + CALLBACK])
    server_id = await create_server(
        client, people, world.mcp_url,
        oauth2={
            "client_id": "configured", "client_secret": "configured-secret",
            "authorize_url": world.auth_url + "/authorize?tenant=t1", "token_url": world.auth_url + "/token",
            "scopes": "mcp:tools extra",
        },
    )
    r = await client.post(f"/api/v1/mcp-servers/{server_id}/oauth/start", headers=people.alice.headers)
    url = r.json()["authorize_url"]
    assert url.startswith(world.auth_url + "/authorize?tenant=t1&")
    query = parse_qs(urlsplit(url).query)
    assert query["client_id"] == ["configured"] and query["scope"] == ["mcp:tools extra"]
    async with httpx.AsyncClient(timeout=10) as browser:
        page = await browser.get((await browser.get(url)).headers["location"])
    assert page.status_code == 200
    assert world.auth.registrations == 0 and world.auth.code_exchanges == 1
    body = (await client.get(f"/api/v1/mcp-servers/{server_id}/tools", headers=people.alice.headers)).json()
    assert body["ok"] is True
    assert "configured-secret" not in (await client.get(f"/api/v1/mcp-servers/{server_id}", headers=people.admin.headers)).text


async def test_an_expired_token_is_refreshed_before_connecting_and_the_rotation_stored(
    client: httpx.AsyncClient, people: People, world: OAuthWorld, connected: str, chatd: App, clock: ManualClock
) -> None:
    sid = uuid.UUID(connected)
    before = await mcp_store.get_token(chatd.db, chatd.box, sid, people.alice.user.id)
    assert before is not None
    # Valid for an hour: nothing to do yet.
    assert (await chatd.service.mcp_auth.fresh_token(people.alice.user.id, sid)) is not None
    assert world.auth.refreshes == 0
    clock.advance(3600)
    world.auth.invalidate_access_tokens()  # the server's clock agrees: the old token is dead
    body = (await client.get(f"/api/v1/mcp-servers/{connected}/tools", headers=people.alice.headers)).json()
    assert body["ok"] is True, body
    assert world.auth.refreshes == 1
    after = await mcp_store.get_token(chatd.db, chatd.box, sid, people.alice.user.id)
    assert after is not None and before.expires_at is not None and after.expires_at is not None
    assert after.access_token != before.access_token and after.refresh_token != before.refresh_token
    assert after.expires_at == clock.now() + timedelta(seconds=3600)
    # The rotated refresh token is the one used next time (the old one would revoke the grant).
    clock.advance(3600)
    token = await chatd.service.mcp_auth.fresh_token(people.alice.user.id, sid)
    assert token is not None and world.auth.refreshes == 2 and world.auth.live(token.access_token)


async def test_refresh_is_proactive_within_the_skew_before_expiry(
    people: People, world: OAuthWorld, connected: str, chatd: App, clock: ManualClock
) -> None:
    sid = uuid.UUID(connected)
    auth = chatd.service.mcp_auth
    clock.advance(3600 - 120)  # two minutes left: outside skew (60 s) + jitter (<= 30 s)
    await auth.fresh_token(people.alice.user.id, sid)
    assert world.auth.refreshes == 0
    clock.advance(60)  # one minute left: inside the skew
    await auth.fresh_token(people.alice.user.id, sid)
    assert world.auth.refreshes == 1


async def test_ten_concurrent_turns_share_one_refresh(
    people: People, world: OAuthWorld, connected: str, chatd: App, clock: ManualClock
) -> None:
    sid = uuid.UUID(connected)
    clock.advance(3600)
    tokens = await asyncio.gather(*(chatd.service.mcp_auth.fresh_token(people.alice.user.id, sid) for _ in range(10)))
    assert world.auth.refreshes == 1
    assert len({t.access_token for t in tokens if t is not None}) == 1 and None not in tokens
    assert world.auth.live(tokens[0].access_token)  # type: ignore[union-attr]


async def test_a_401_refreshes_once_and_the_check_retries(
    client: httpx.AsyncClient, people: People, world: OAuthWorld, connected: str
) -> None:
    # The server forgot the access token though chatd believes it valid for another hour.
    world.auth.invalidate_access_tokens()
    results = await asyncio.gather(
        *(client.get(f"/api/v1/mcp-servers/{connected}/tools", headers=people.alice.headers) for _ in range(3))
    )
    assert all(r.json()["ok"] for r in results), [r.json() for r in results]
    assert world.auth.refreshes == 1


async def test_a_revoked_grant_disconnects_the_user(
    client: httpx.AsyncClient, people: People, world: OAuthWorld, connected: str, chatd: App, clock: ManualClock
) -> None:
    sid = uuid.UUID(connected)
    with world.auth.lock:
        for grant in world.auth.grants.values():
            grant.revoked = True
    clock.advance(3600)
    assert await chatd.service.mcp_auth.fresh_token(people.alice.user.id, sid) is None
    assert (await client.get(f"/api/v1/mcp-servers/{connected}/token", headers=people.alice.headers)).json()["connected"] is False
    body = (await client.get(f"/api/v1/mcp-servers/{connected}/tools", headers=people.alice.headers)).json()
    assert body["ok"] is False and body["error"]["code"] == "mcp_oauth_required"


async def test_the_fake_server_revokes_the_grant_on_refresh_token_reuse(world: OAuthWorld) -> None:
    """Sanity of the fake: what the single-flight refresh protects against really bites."""
    world.add_client("raw", None)
    async with oauth.new_http_client() as http:
        server = await oauth.discover(http, world.mcp_url, OAuth2Settings())
        client = oauth.ClientRegistration("raw", None, "none")
        world.allow_redirect("raw", "http://127.0.0.1/cb")
        pkce = oauth.Pkce.generate()
        url = oauth.authorization_url(server, client, redirect_uri="http://127.0.0.1/cb", state="s", pkce=pkce, scopes=None)
        code = parse_qs(urlsplit((await http.get(url)).headers["location"]).query)["code"][0]
        first = await oauth.exchange_code(
            http, server.token_endpoint, client, code=code, code_verifier=pkce.verifier,
            redirect_uri="http://127.0.0.1/cb", resource=server.resource,
        )
        assert first.refresh_token
        second = await oauth.refresh(http, server.token_endpoint, client, refresh_token=first.refresh_token, resource=server.resource)
        with pytest.raises(OAuthGrantRevoked):
            await oauth.refresh(http, server.token_endpoint, client, refresh_token=first.refresh_token, resource=server.resource)
    assert not world.auth.live(second.access_token)
    world.auth.refresh_reuse = 0  # expected here; the fixture's check is for chatd's own refreshes


async def test_client_credentials_need_no_user_and_are_fetched_once(
    client: httpx.AsyncClient, people: People, world: OAuthWorld
) -> None:
    world.add_client("svc", "svc-secret")
    server_id = await create_server(
        client, people, world.mcp_url, slug="svc",
        oauth2={"grant_type": "client_credentials", "client_id": "svc", "client_secret": "svc-secret"},
    )
    for who in (people.alice, people.bob, people.alice):
        body = (await client.get(f"/api/v1/mcp-servers/{server_id}/tools", headers=who.headers)).json()
        assert body["ok"] is True, body
        assert "svc__echo" in tool_names(body)
    assert world.auth.client_credentials_grants == 1 and world.auth.registrations == 0
    # A 401 (server-side revocation) fetches a new token once.
    world.auth.invalidate_access_tokens()
    body = (await client.get(f"/api/v1/mcp-servers/{server_id}/tools", headers=people.bob.headers)).json()
    assert body["ok"] is True and world.auth.client_credentials_grants == 2


async def test_unreachable_server_check_is_a_200_with_the_error(
    client: httpx.AsyncClient, people: People
) -> None:
    # Userinfo in an MCP URL is refused outright (issue 9 item 3); a query credential is kept.
    refused = await client.post(
        "/api/v1/mcp-servers", headers=people.admin.headers,
        json={"slug": "gone", "display_name": "Gone", "url": f"http://u:p@127.0.0.1:{free_port()}/mcp", "enabled": True},
    )
    assert refused.status_code == 400 and "u:p" not in refused.text
    r = await client.post(
        "/api/v1/mcp-servers", headers=people.admin.headers,
        json={"slug": "gone", "display_name": "Gone", "url": f"http://127.0.0.1:{free_port()}/mcp?key=s3cret", "enabled": True},
    )
    assert r.status_code == 201, r.text
    server_id = r.json()["id"]
    r = await client.get(f"/api/v1/mcp-servers/{server_id}/tools", headers=people.alice.headers)
    assert r.status_code == 200
    body = r.json()
    assert body["ok"] is False and body["tools"] == [] and body["error"]["code"] == "mcp_connect_failed"
    assert "s3cret" not in r.text and "u:p" not in r.text
    assert (await client.get(f"/api/v1/mcp-servers/{uuid.uuid4()}/tools", headers=people.alice.headers)).status_code == 404


async def test_tokens_for_a_turn_cover_only_oauth_servers(
    client: httpx.AsyncClient, people: People, world: OAuthWorld, connected: str, chatd: App
) -> None:
    plain = await create_server(client, people, world.mcp_url, slug="plain", auth_type="none")
    records = await mcp_store.get_servers(chatd.db, chatd.box, [uuid.UUID(connected), uuid.UUID(plain)])
    tokens = await chatd.service.mcp_auth.tokens_for(people.alice.user.id, records)
    assert set(tokens) == {uuid.UUID(connected)}
    assert world.auth.live(tokens[uuid.UUID(connected)].access_token)
    assert await chatd.service.mcp_auth.tokens_for(people.bob.user.id, records) == {}


# --- two replicas on one PostgreSQL ------------------------------------------------------------


async def test_two_replicas_on_postgres_share_one_refresh(pg_url: str, world: OAuthWorld) -> None:
    """Each replica has its own in-process locks; the token row lock makes them take turns."""
    clock = ManualClock()
    box = SecretBox(Fernet.generate_key())
    dbs = [Database(pg_url), Database(pg_url)]
    try:
        user = await user_store.create_user(dbs[0], clock.now(), "carol", UserRole.MEMBER)
        server = await mcp_store.create_server(
            dbs[0], box, clock.now(),
            {"slug": "secure", "display_name": "Secure", "url": world.mcp_url, "auth_type": "oauth2", "enabled": True},
        )
        replicas = [McpAuthorization(SqlOAuthVault(db, box), clock) for db in dbs]
        # Connect through replica 0 (the browser flow without the HTTP API around it).
        url = await replicas[0].start(server, user.id, "http://127.0.0.1/cb")
        async with httpx.AsyncClient(timeout=10) as browser:
            query = parse_qs(urlsplit((await browser.get(url)).headers["location"]).query)
        done = await replicas[1].finish(query["state"][0], query["code"][0])
        assert done.user_id == user.id
        clock.advance(3600)
        tokens = await asyncio.gather(
            *(replicas[i % 2].fresh_token(user.id, server.id) for i in range(10))
        )
        assert world.auth.refreshes == 1
        assert len({t.access_token for t in tokens if t is not None}) == 1 and None not in tokens
    finally:
        for db in dbs:
            await db.dispose()


def test_a_refresh_response_without_refresh_token_keeps_the_old_one() -> None:
    grant = oauth.TokenGrant(access_token="a", token_type="bearer", refresh_token=None, expires_in=60)
    now = ManualClock().now()
    token = grant.to_token(now, previous_refresh_token="kept")
    assert token == OAuthToken(access_token="a", refresh_token="kept", token_type="Bearer", expires_at=now + timedelta(seconds=60))


async def test_a_token_revoked_mid_turn_is_refreshed_and_the_call_retried(
    people: People, world: OAuthWorld, connected: str, chatd: App
) -> None:
    """The server forgets the access token between two tool calls of one turn: the client
    refreshes once (single-flight), reconnects and the call succeeds; the turn never sees a 401."""
    from chatd.mcp import connect_all

    sid = uuid.UUID(connected)
    alice = people.alice.user.id
    auth = chatd.service.mcp_auth
    record = await mcp_store.get_server(chatd.db, chatd.box, sid)
    config = record
    token = await auth.fresh_token(alice, sid)
    assert token is not None

    async def reauthorize(cfg: McpServerConfig, rejected: Any) -> Any:
        return await auth.refresh_after_unauthorized(alice, cfg, rejected)

    tools, conns = await connect_all([config], {sid: token}, reauthorize=reauthorize)
    try:
        echo = next(t for t in tools if t.name == "secure__echo")
        first = await echo.call({"text": "one"}, make_ctx())
        assert not first.is_error, first.result
        world.auth.invalidate_access_tokens()
        results = await asyncio.gather(*(echo.call({"text": f"after {i}"}, make_ctx()) for i in range(3)))
        assert all(not r.is_error for r in results), [r.result for r in results]
        assert "after 0" in str(results[0].result)
        assert world.auth.refreshes == 1
        stored = await mcp_store.get_token(chatd.db, chatd.box, sid, alice)
        assert stored is not None and world.auth.live(stored.access_token)
    finally:
        await conns.close()


async def test_with_a_public_https_url_chatd_is_identified_by_its_client_metadata_document(
    client: httpx.AsyncClient, people: People, world: OAuthWorld, chatd: App
) -> None:
    """SEP-991: where the authorization server accepts them, chatd's client_id is the URL of the
    document it serves, and it registers nothing."""
    missing = await client.get("/api/v1/mcp-servers/oauth/client-metadata.json")
    assert missing.status_code == 404  # no public https URL, no document
    chatd.settings.public_url = "https://chat.example.org/"
    document_url = "https://chat.example.org/api/v1/mcp-servers/oauth/client-metadata.json"
    served = await client.get("/api/v1/mcp-servers/oauth/client-metadata.json")
    assert served.status_code == 200
    document = served.json()
    assert document["client_id"] == document_url
    assert document["redirect_uris"] == ["https://chat.example.org" + CALLBACK]
    assert document["token_endpoint_auth_method"] == "none" and "client_secret" not in document
    world.auth.metadata_documents = {document_url: document}

    server_id = await create_server(client, people, world.mcp_url)
    r = await client.post(f"/api/v1/mcp-servers/{server_id}/oauth/start", headers=people.alice.headers)
    assert r.status_code == 200, r.text
    async with httpx.AsyncClient(timeout=10) as browser:
        approved = await browser.get(r.json()["authorize_url"])
    assert approved.status_code == 302, approved.text
    back = urlsplit(approved.headers["location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == "https://chat.example.org" + CALLBACK
    # The proxy in front of chatd would forward the browser here.
    page = await client.get(CALLBACK + "?" + back.query)
    assert page.status_code == 200, page.text
    assert world.auth.registrations == 0 and world.auth.authorize_requests[-1]["client_id"] == document_url
    body = (await client.get(f"/api/v1/mcp-servers/{server_id}/tools", headers=people.alice.headers)).json()
    assert body["ok"] is True

    # The refresh presents the same client id.
    stored = await mcp_store.get_token(chatd.db, chatd.box, uuid.UUID(server_id), people.alice.user.id)
    assert stored is not None
    rejected = OAuthToken.from_record(stored)
    config = await mcp_store.get_server(chatd.db, chatd.box, uuid.UUID(server_id))
    fresh = await chatd.service.mcp_auth.refresh_after_unauthorized(people.alice.user.id, config, rejected)
    assert fresh is not None and fresh.access_token != rejected.access_token and world.auth.refreshes == 1
