"""The authorisation matrix (API.md): every endpoint of the OpenAPI document, every kind of caller.

Each endpoint has one row in `MATRIX`; `test_matrix_covers_every_endpoint` fails when the app
gains (or loses) an endpoint the table does not describe. For each row, on both databases:
no token and bad tokens are 401; a member on an admin endpoint is 403; anyone but the owner on a
member's chat or file is 404, byte-for-byte the answer for an id that does not exist; none of the
refused requests changes anything; then the allowed callers get the row's answer (a success, or
where a row's comment says so, the validation error that shows the request got past authorisation).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import pytest
from fastapi.routing import APIWebSocketRoute
from sqlalchemy import func, select
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from chatd.bootstrap import App
from chatd.domain.actions import ActionKind, ActionRequest, NewAction
from chatd.store import machine
from chatd.store import workspaces as workspace_store
from chatd.store.actions import insert_actions
from chatd.store.tables import api_tokens, users
from tests.conftest import People, Person

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
PROVIDER_KEY = "sk-provider-secret-1"
PROVIDER_URL = "https://llm.internal.example/v1"
# A closed loopback port: the live tool check fails at once, without DNS or a network.
MCP_URL = "http://127.0.0.1:9/mcp"
MCP_KEY = "mcp-api-key-secret-2"
MCP_HEADER_VALUE = "mcp-header-secret-3"
MCP_CLIENT_SECRET = "mcp-oauth-client-secret-4"
MCP_USER_TOKEN = "mcp-user-token-secret-5"
SECRETS = (PROVIDER_KEY, MCP_KEY, MCP_HEADER_VALUE, MCP_CLIENT_SECRET, MCP_USER_TOKEN)
PUSH_ENDPOINT = "https://push.example.net/wpush/v2/browser-1"
# A browser's subscription keys: a P-256 public point and a 16-byte secret, base64url.
PUSH_KEYS = {
    "p256dh": "BD8LrAeMhlmNEl8m45NySLP9ma2cvaxFSBPtj2toGcB7DwoBPKmgoJNKkD6P2jzvnhQR8hLsYeRT1Q5Xi_K73Kc",
    "auth": "r7TcDDJj0FE5bAvUtrR1zA",
}

# Who may call an endpoint:
#   member: any authenticated user (the answer is about the caller only)
#   admin:  admins only; a member gets 403
#   owner:  only the owner of the chat/file in the path; anyone else (admins too) gets 404
#   self:   the user in the path, or an admin; another member gets 403
#   mine:   the owner of the token in the path (admins may too, tested apart: it is then gone);
#           another member gets 404, as for a token that does not exist
Access = Literal["member", "admin", "owner", "self", "mine"]

# Path parameters whose values are integers; `tool_name` is a name; every other one is a UUID.
INT_PARAMS = {"message_id", "queued_id"}


@dataclass(frozen=True)
class World:
    """What the endpoints act on, made through the API: alice's chat, message, queued message and
    file; a provider, a model config and an MCP server made by the admin."""

    ids: dict[str, str]

    def path(self, template: str) -> str:
        return template.format(**self.ids)


Kwargs = Callable[[World], dict[str, Any]]


@dataclass(frozen=True)
class Rule:
    access: Access
    ok: int
    kwargs: Kwargs | None = None
    # Server-Sent Events: a success is read no further than its headers.
    stream: bool = False


def _json(body: dict[str, Any]) -> Kwargs:
    return lambda _w: {"json": body}


def _new_user() -> Kwargs:
    return lambda _w: {"json": {"username": f"u{uuid.uuid4().hex[:10]}", "role": "member"}}


def _upload() -> Kwargs:
    return lambda _w: {"files": {"file": ("a.png", PNG, "image/png")}}


MATRIX: dict[tuple[str, str], Rule] = {
    # identity
    ("GET", "/api/v1/me"): Rule("member", 200),
    ("GET", "/api/v1/me/tokens"): Rule("member", 200),
    ("DELETE", "/api/v1/tokens/{token_id}"): Rule("mine", 204),
    ("GET", "/api/v1/users"): Rule("admin", 200),
    ("GET", "/api/v1/users/{user_id}/tokens"): Rule("admin", 200),
    ("PUT", "/api/v1/me/custom-prompt"): Rule("member", 200, _json({"custom_prompt": "Be brief."})),
    ("POST", "/api/v1/users"): Rule("admin", 201, _new_user()),
    ("POST", "/api/v1/users/{user_id}/tokens"): Rule("self", 201, _json({"name": "laptop"})),
    ("PATCH", "/api/v1/users/{user_id}"): Rule("admin", 200, _json({"disabled": False})),
    # providers and model configs: members read, admins write
    ("GET", "/api/v1/providers"): Rule("member", 200),
    ("POST", "/api/v1/providers"): Rule("admin", 201, _json({"provider": "google", "api_key": "g-key"})),
    ("PATCH", "/api/v1/providers/{provider_id}"): Rule("admin", 200, _json({"enabled": False})),
    ("DELETE", "/api/v1/providers/{provider_id}"): Rule("admin", 204),
    # Connection tests answer 200 with ok=false when the provider cannot be reached (closed port / no DNS).
    ("POST", "/api/v1/providers/test"): Rule("admin", 200, _json({"provider": "openai-compatible", "base_url": "http://127.0.0.1:9/v1"})),
    ("GET", "/api/v1/providers/{provider_id}/models"): Rule("admin", 200),
    ("GET", "/api/v1/model-configs"): Rule("member", 200),
    ("POST", "/api/v1/model-configs"): Rule("admin", 201, _json({"provider": "anthropic", "model": "claude-y", "context_limit": 1000})),
    ("PATCH", "/api/v1/model-configs/{config_id}"): Rule("admin", 200, _json({"display_name": "Renamed"})),
    ("DELETE", "/api/v1/model-configs/{config_id}"): Rule("admin", 204),
    # MCP servers: members read (without secrets), admins write; tokens are per caller
    ("GET", "/api/v1/mcp-servers"): Rule("member", 200),
    ("POST", "/api/v1/mcp-servers"): Rule("admin", 201, _json({"slug": "search", "display_name": "Search", "url": "https://mcp.example.com/mcp"})),
    ("GET", "/api/v1/mcp-servers/{server_id}"): Rule("member", 200),
    ("PATCH", "/api/v1/mcp-servers/{server_id}"): Rule("admin", 200, _json({"availability": "default_on"})),
    ("DELETE", "/api/v1/mcp-servers/{server_id}"): Rule("admin", 204),
    ("PUT", "/api/v1/mcp-servers/{server_id}/token"): Rule("member", 200, _json({"access_token": "caller-own-token"})),
    ("GET", "/api/v1/mcp-servers/{server_id}/token"): Rule("member", 200),
    ("DELETE", "/api/v1/mcp-servers/{server_id}/token"): Rule("member", 204),
    # The live check answers 200 with ok=false for an unreachable server (nothing listens at MCP_URL).
    ("GET", "/api/v1/mcp-servers/{server_id}/tools"): Rule("member", 200),
    # The world's server uses an API key, so an allowed caller is told (400) there is no OAuth2 flow.
    ("POST", "/api/v1/mcp-servers/{server_id}/oauth/start"): Rule("member", 400),
    # chats: the caller's own list; everything under /chats/{id} is the owner's alone
    ("POST", "/api/v1/chats"): Rule("member", 201, _json({"content": "hello"})),
    ("GET", "/api/v1/chats"): Rule("member", 200),
    ("GET", "/api/v1/chats/watch"): Rule("member", 200, stream=True),
    ("GET", "/api/v1/chats/{chat_id}"): Rule("owner", 200),
    ("GET", "/api/v1/chats/{chat_id}/messages"): Rule("owner", 200),
    # The debug view (status, lease, trace id; no content) is for whoever operates the deployment.
    ("GET", "/api/v1/chats/{chat_id}/debug"): Rule("admin", 200),
    ("POST", "/api/v1/chats/{chat_id}/messages"): Rule("owner", 200, _json({"content": "more"})),
    ("PATCH", "/api/v1/chats/{chat_id}/messages/{message_id}"): Rule("owner", 200, _json({"content": "edited"})),
    ("POST", "/api/v1/chats/{chat_id}/interrupt"): Rule("owner", 200),
    # MCP Apps: alice's chat does not use the world's MCP server, so her request gets past
    # authorisation to the server check (404, "does not use that MCP server"; tests/mcp/test_mcp_apps_api.py
    # covers the successes against a real server).
    ("POST", "/api/v1/chats/{chat_id}/mcp-apps/frames"): Rule("owner", 404, lambda w: {"json": {"server_id": w.ids["server_id"], "resource_uri": "ui://x/view"}}),
    ("POST", "/api/v1/chats/{chat_id}/mcp-apps/tools-call"): Rule("owner", 404, lambda w: {"json": {"server_id": w.ids["server_id"], "name": "echo"}}),
    ("POST", "/api/v1/chats/{chat_id}/mcp-apps/resources-read"): Rule("owner", 404, lambda w: {"json": {"server_id": w.ids["server_id"], "uri": "ui://x/view"}}),
    ("POST", "/api/v1/chats/{chat_id}/archive"): Rule("owner", 204),
    ("POST", "/api/v1/chats/{chat_id}/unarchive"): Rule("owner", 204),
    ("DELETE", "/api/v1/chats/{chat_id}/queue/{queued_id}"): Rule("owner", 204),
    ("POST", "/api/v1/chats/{chat_id}/queue/{queued_id}/promote"): Rule("owner", 200),
    # The world's chat has a question action but is pending (other rows need it so): the owner is
    # told the action no longer waits (409), which shows the request got past authorisation.
    ("POST", "/api/v1/chats/{chat_id}/actions/{action_id}"): Rule("owner", 409, _json({"decision": "accept", "content": "yes"})),
    ("GET", "/api/v1/chats/{chat_id}/stream"): Rule("owner", 200, stream=True),
    ("GET", "/api/v1/chats/{chat_id}/actions"): Rule("owner", 200),
    # The world's chat allows `docs__search` (an approval with always_allow; the row is enough).
    ("DELETE", "/api/v1/chats/{chat_id}/allowed-tools/{tool_name}"): Rule("owner", 200),
    # files and usage
    ("POST", "/api/v1/files"): Rule("member", 201, _upload()),
    ("GET", "/api/v1/files/{file_id}"): Rule("owner", 200),
    ("GET", "/api/v1/usage"): Rule("member", 200),
    # templates: members read, admins write; workspaces: the owner's alone
    ("GET", "/api/v1/templates"): Rule("member", 200),
    ("POST", "/api/v1/templates"): Rule("admin", 201, _json({"name": "empty"})),
    ("GET", "/api/v1/templates/{template_id}"): Rule("member", 200),
    ("PATCH", "/api/v1/templates/{template_id}"): Rule("admin", 200, _json({"description": "changed"})),
    ("DELETE", "/api/v1/templates/{template_id}"): Rule("admin", 204),
    ("GET", "/api/v1/workspaces"): Rule("member", 200),
    ("GET", "/api/v1/workspaces/{workspace_id}"): Rule("owner", 200),
    ("GET", "/metrics"): Rule("admin", 200),
    ("PUT", "/api/v1/usage-limits"): Rule("admin", 204, _json({"scope": "global", "period": "month", "limit_micros": 10**9})),
    ("DELETE", "/api/v1/usage-limits"): Rule("admin", 204, lambda _w: {"params": {"scope": "global"}}),
    ("GET", "/api/v1/usage/users"): Rule("admin", 200),
    # web push: the caller's own browser subscriptions
    ("GET", "/api/v1/push/vapid-public-key"): Rule("member", 200),
    ("POST", "/api/v1/push/subscriptions"): Rule("member", 201, _json({"endpoint": PUSH_ENDPOINT, "keys": PUSH_KEYS})),
    ("DELETE", "/api/v1/push/subscriptions"): Rule("member", 204, _json({"endpoint": PUSH_ENDPOINT})),
}

# Not part of the matrix: /healthz and / need no token; the OAuth callback is reached by the
# browser from the authorization server, authenticated by its single-use state, and the client
# metadata document is fetched by authorization servers and holds no secret
# (tests/mcp/test_mcp_oauth.py). /metrics needs an admin unless CHATD_METRICS_PUBLIC.
# The MCP App frame is authorised by the ticket in its address (an iframe sends no bearer token).
UNGUARDED = {
    "/healthz", "/", "/api/v1/mcp-servers/oauth/callback", "/api/v1/mcp-apps/frame",
    "/api/v1/mcp-servers/oauth/client-metadata.json",
}

BAD_AUTH = (
    "Bearer chatd_not-a-real-token",
    "Bearer",
    "Basic YWRtaW46YWRtaW4=",
    "chatd_token-without-a-scheme",
)


@dataclass(frozen=True)
class Reply:
    status: int
    headers: httpx.Headers
    body: Any


async def call(client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str], rule: Rule, world: World) -> Reply:
    kwargs = rule.kwargs(world) if rule.kwargs else {}
    if rule.stream:
        async with client.stream(method, path, headers=headers, **kwargs) as r:
            if r.status_code < 400:
                # An event stream never ends: its status and headers are the answer.
                return Reply(r.status_code, r.headers, None)
            await r.aread()
            return Reply(r.status_code, r.headers, r.json())
    r = await client.request(method, path, headers=headers, **kwargs)
    is_json = r.headers.get("content-type", "").startswith("application/json")
    return Reply(r.status_code, r.headers, r.json() if is_json else r.content)


_APP: App | None = None


@pytest.fixture(autouse=True)
def _remember_app(chatd: App) -> None:
    global _APP
    _APP = chatd


async def make_world(client: httpx.AsyncClient, people: People) -> World:
    admin, alice = people.admin.headers, people.alice.headers

    async def post(path: str, headers: dict[str, str], **kwargs: Any) -> dict[str, Any]:
        r = await client.post(path, headers=headers, **kwargs)
        assert r.status_code in (200, 201), (path, r.status_code, r.text)
        body: dict[str, Any] = r.json()
        return body

    # The model config uses the anthropic provider; the other one is unused, so it may be deleted.
    await post("/api/v1/providers", admin, json={"provider": "anthropic", "api_key": "sk-ant-test"})
    provider = await post("/api/v1/providers", admin, json={"provider": "openai-compatible", "api_key": PROVIDER_KEY, "base_url": PROVIDER_URL})
    config = await post("/api/v1/model-configs", admin, json={"provider": "anthropic", "model": "claude-x", "context_limit": 200000})
    server = await post(
        "/api/v1/mcp-servers", admin,
        json={
            "slug": "docs", "display_name": "Docs", "url": MCP_URL, "auth_type": "api_key", "api_key_header": "X-Key",
            "api_key_value": MCP_KEY, "custom_headers": {"X-Other": MCP_HEADER_VALUE},
            "oauth2": {"client_id": "client", "client_secret": MCP_CLIENT_SECRET}, "enabled": True,
        },
    )
    r = await client.put(f"/api/v1/mcp-servers/{server['id']}/token", headers=alice, json={"access_token": MCP_USER_TOKEN})
    assert r.status_code == 200, r.text
    chat = await post("/api/v1/chats", alice, json={"content": "hello"})
    r = await client.get(f"/api/v1/chats/{chat['id']}/messages", headers=alice)
    (message,) = r.json()["messages"]
    sent = await post(f"/api/v1/chats/{chat['id']}/messages", alice, json={"content": "queued while pending"})
    assert sent["queued"] is True
    file = await post("/api/v1/files", alice, files={"file": ("a.png", PNG, "image/png")})
    template = await post("/api/v1/templates", admin, json={"name": "world", "description": "as made"})
    await post(f"/api/v1/users/{people.alice.user.id}/tokens", alice, json={"name": "spare"})
    (spare,) = [t for t in (await client.get("/api/v1/me/tokens", headers=alice)).json() if t["name"] == "spare"]
    # Workspaces are made by the create_workspace tool (an agent process); a row is enough here.
    assert _APP is not None
    # A question of the chat (a turn would store it; the row is enough here).
    async with _APP.db.write() as conn:
        owner_chat = await machine.lock_chat(_APP.db, conn, uuid.UUID(chat["id"]))
        request = ActionRequest(ActionKind.QUESTION, message="Go on?", options=["yes", "no"])
        (action,) = await insert_actions(conn, owner_chat, [NewAction("q1", "ask_user_question", {}, request)], _APP.clock.now())
        await machine.set_chat(conn, owner_chat.id, None, allowed_tools=["docs__search"])
    workspace = await workspace_store.create_workspace(
        _APP.db, _APP.clock.now(), owner_id=people.alice.user.id, name="ws", provisioner="local", directory="/nonexistent"
    )
    return World(
        {
            "user_id": str(people.alice.user.id),
            "provider_id": provider["id"],
            "config_id": config["id"],
            "server_id": server["id"],
            "chat_id": chat["id"],
            "message_id": str(message["id"]),
            "queued_id": str(sent["queued_message"]["id"]),
            "file_id": file["id"],
            "workspace_id": str(workspace.id),
            "token_id": spare["id"],
            "template_id": template["id"],
            "action_id": str(action.id),
            "tool_name": "docs__search",
        }
    )


def nowhere(world: World) -> World:
    """The same kinds of ids, none of which exists."""
    return World({k: ("987654321" if k in INT_PARAMS else str(uuid.uuid4())) for k in world.ids})


async def snapshot(client: httpx.AsyncClient, people: People, world: World, chatd: App) -> dict[str, Any]:
    """Everything a refused request could have changed, as its owners see it."""
    admin, alice, bob = people.admin.headers, people.alice.headers, people.bob.headers
    chat, server = world.ids["chat_id"], world.ids["server_id"]
    reads = {
        "providers": ("/api/v1/providers", admin),
        "model_configs": ("/api/v1/model-configs", admin),
        "mcp_servers": ("/api/v1/mcp-servers", admin),
        "alice_chats": ("/api/v1/chats?archived=false", alice),
        "alice_archived": ("/api/v1/chats?archived=true", alice),
        "bob_chats": ("/api/v1/chats?archived=false", bob),
        "admin_chats": ("/api/v1/chats?archived=false", admin),
        "chat": (f"/api/v1/chats/{chat}", alice),
        "messages": (f"/api/v1/chats/{chat}/messages", alice),
        "alice_mcp_token": (f"/api/v1/mcp-servers/{server}/token", alice),
        "bob_mcp_token": (f"/api/v1/mcp-servers/{server}/token", bob),
        "admin_mcp_token": (f"/api/v1/mcp-servers/{server}/token", admin),
        "usage": ("/api/v1/usage", alice),
        "templates": ("/api/v1/templates", admin),
    }
    out: dict[str, Any] = {}
    for name, (path, headers) in reads.items():
        r = await client.get(path, headers=headers)
        assert r.status_code == 200, (path, r.text)
        out[name] = r.json()
    r = await client.get(f"/api/v1/files/{world.ids['file_id']}", headers=alice)
    out["file"] = (r.status_code, r.content)
    async with chatd.db.read() as conn:
        out["users"] = (await conn.execute(select(func.count()).select_from(users))).scalar_one()
        out["tokens"] = (await conn.execute(select(func.count()).select_from(api_tokens))).scalar_one()
    return out


def assert_unauthenticated(reply: Reply, what: str) -> None:
    assert reply.status == 401, (what, reply.status, reply.body)
    assert reply.headers.get("www-authenticate") == "Bearer", what
    assert isinstance(reply.body, dict) and reply.body["message"], what


async def test_matrix_covers_every_endpoint(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    documented = {
        (method.upper(), path)
        for path, ops in spec["paths"].items()
        if path not in UNGUARDED
        for method in ops
        if method in ("get", "put", "post", "patch", "delete")
    }
    assert documented - MATRIX.keys() == set(), "endpoints without an authorisation rule in MATRIX"
    assert MATRIX.keys() - documented == set(), "MATRIX rows for endpoints the app does not serve"
    # The document says what the code enforces: every guarded operation asks for a bearer token.
    schemes = spec["components"]["securitySchemes"]
    assert schemes["HTTPBearer"] == {"type": "http", "scheme": "bearer", "description": schemes["HTTPBearer"].get("description")}
    for method, path in sorted(documented):
        assert spec["paths"][path][method.lower()].get("security") == [{"HTTPBearer": []}], (method, path)
    assert "security" not in spec["paths"]["/healthz"]["get"]


@pytest.mark.parametrize(("method", "path"), sorted(MATRIX), ids=[f"{m} {p}" for m, p in sorted(MATRIX)])
async def test_endpoint_authorisation(method: str, path: str, client: httpx.AsyncClient, people: People, chatd: App) -> None:
    rule = MATRIX[(method, path)]
    world = await make_world(client, people)
    target = world.path(path)
    before = await snapshot(client, people, world, chatd)

    # 1. No token, or one that is not valid: 401, whatever the path names.
    for where in (target, nowhere(world).path(path)):
        assert_unauthenticated(await call(client, method, where, {}, rule, world), f"{method} {where} without a token")
        for auth in BAD_AUTH:
            reply = await call(client, method, where, {"Authorization": auth}, rule, world)
            assert_unauthenticated(reply, f"{method} {where} with {auth!r}")

    # 2. Authenticated but not allowed.
    refused: list[tuple[Person, int]] = []
    if rule.access == "admin":
        refused = [(people.alice, 403), (people.bob, 403)]
    elif rule.access == "self":
        refused = [(people.bob, 403)]
    elif rule.access == "mine":
        refused = [(people.bob, 404)]
    elif rule.access == "owner":
        # Another member's chat or file is "not found", for admins too: existence is never revealed.
        refused = [(people.bob, 404), (people.admin, 404)]
    for person, status in refused:
        reply = await call(client, method, target, person.headers, rule, world)
        assert reply.status == status, (person.user.username, reply.status, reply.body)
        assert isinstance(reply.body, dict) and reply.body["message"]
        # The same answer as for ids that do not exist: no oracle for what exists.
        absent = await call(client, method, nowhere(world).path(path), person.headers, rule, world)
        assert (absent.status, absent.body) == (reply.status, reply.body), person.user.username

    # 3. None of the refused requests changed anything.
    assert await snapshot(client, people, world, chatd) == before

    # 4. The allowed callers get through.
    allowed = {
        "member": [people.alice, people.bob, people.admin],
        "admin": [people.admin],
        "self": [people.alice, people.admin],
        "owner": [people.alice],
        "mine": [people.alice],
    }[rule.access]
    for person in allowed:
        reply = await call(client, method, target, person.headers, rule, world)
        assert reply.status == rule.ok, (person.user.username, reply.status, reply.body)
        if rule.access == "self":
            # A token made for alice is alice's, whoever asked for it.
            me = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {reply.body['token']}"})
            assert me.json()["username"] == "alice"


async def test_members_read_configuration_without_secrets(client: httpx.AsyncClient, people: People) -> None:
    world = await make_world(client, people)
    alice, bob, admin = people.alice.headers, people.bob.headers, people.admin.headers
    sid = world.ids["server_id"]

    member_reads = {
        path: (await client.get(path, headers=bob))
        for path in ("/api/v1/providers", "/api/v1/model-configs", "/api/v1/mcp-servers", f"/api/v1/mcp-servers/{sid}", f"/api/v1/mcp-servers/{sid}/token")
    }
    for path, r in member_reads.items():
        assert r.status_code == 200, (path, r.text)
        for secret in (*SECRETS, PROVIDER_URL, MCP_URL):
            assert secret not in r.text, (path, secret)
    providers = {p["provider"]: p for p in member_reads["/api/v1/providers"].json()}
    assert providers["openai-compatible"]["api_key_set"] is True and providers["openai-compatible"]["base_url"] is None
    (config,) = member_reads["/api/v1/model-configs"].json()
    assert config["id"] == world.ids["config_id"]
    server = member_reads[f"/api/v1/mcp-servers/{sid}"].json()
    assert server["api_key_set"] is True and server["url"] is None and server["oauth2"] is None and server["custom_header_names"] is None
    # Alice's MCP token is hers: bob is not connected, and nobody reads the token back.
    assert member_reads[f"/api/v1/mcp-servers/{sid}/token"].json() == {"connected": False, "expires_at": None}
    assert (await client.get(f"/api/v1/mcp-servers/{sid}/token", headers=alice)).json() == {"connected": True, "expires_at": None}

    # Admins see the configuration, still without a secret.
    for path in ("/api/v1/providers", "/api/v1/mcp-servers", f"/api/v1/mcp-servers/{sid}"):
        r = await client.get(path, headers=admin)
        for secret in SECRETS:
            assert secret not in r.text, (path, secret)
    admin_providers = {p["provider"]: p for p in (await client.get("/api/v1/providers", headers=admin)).json()}
    assert admin_providers["openai-compatible"]["base_url"] == PROVIDER_URL
    assert (await client.get(f"/api/v1/mcp-servers/{sid}", headers=admin)).json()["url"] == MCP_URL

    # Lists of chats are the caller's own.
    assert [c["id"] for c in (await client.get("/api/v1/chats", headers=alice)).json()] == [world.ids["chat_id"]]
    for other in (bob, admin):
        for archived in ("false", "true"):
            assert (await client.get(f"/api/v1/chats?archived={archived}", headers=other)).json() == []


async def test_a_disabled_mcp_server_is_hidden_from_members(client: httpx.AsyncClient, people: People) -> None:
    world = await make_world(client, people)
    sid = world.ids["server_id"]
    r = await client.patch(f"/api/v1/mcp-servers/{sid}", headers=people.admin.headers, json={"enabled": False})
    assert r.status_code == 200, r.text
    assert (await client.get("/api/v1/mcp-servers", headers=people.bob.headers)).json() == []
    for method, path in (("GET", ""), ("GET", "/token"), ("PUT", "/token"), ("DELETE", "/token")):
        kwargs: dict[str, Any] = {"json": {"access_token": "t"}} if method == "PUT" else {}
        hidden = await client.request(method, f"/api/v1/mcp-servers/{sid}{path}", headers=people.bob.headers, **kwargs)
        absent = await client.request(method, f"/api/v1/mcp-servers/{uuid.uuid4()}{path}", headers=people.bob.headers, **kwargs)
        assert hidden.status_code == 404 and (hidden.status_code, hidden.json()) == (absent.status_code, absent.json()), (method, path)
    assert (await client.get(f"/api/v1/mcp-servers/{sid}", headers=people.admin.headers)).status_code == 200


async def test_nested_ids_must_belong_to_the_chat_in_the_path(client: httpx.AsyncClient, people: People) -> None:
    """Bob names his own chat but alice's message or queued message: not found, and alice's chat is
    untouched."""
    world = await make_world(client, people)
    alice, bob = people.alice.headers, people.bob.headers
    own = (await client.post("/api/v1/chats", headers=bob, json={"content": "mine"})).json()["id"]
    before = (await client.get(f"/api/v1/chats/{world.ids['chat_id']}/messages", headers=alice)).json()
    attempts = [
        ("PATCH", f"/api/v1/chats/{own}/messages/{world.ids['message_id']}", {"json": {"content": "hijack"}}),
        ("DELETE", f"/api/v1/chats/{own}/queue/{world.ids['queued_id']}", {}),
        ("POST", f"/api/v1/chats/{own}/queue/{world.ids['queued_id']}/promote", {}),
    ]
    for method, path, kwargs in attempts:
        r = await client.request(method, path, headers=bob, **kwargs)
        assert r.status_code == 404, (method, path, r.status_code, r.text)
    assert (await client.get(f"/api/v1/chats/{world.ids['chat_id']}/messages", headers=alice)).json() == before
    bob_messages = (await client.get(f"/api/v1/chats/{own}/messages", headers=bob)).json()
    assert [m["content"] for m in bob_messages["messages"]] == [[{"type": "text", "text": "mine"}]]
    assert bob_messages["queued_messages"] == []


async def test_a_message_cannot_attach_another_members_file(client: httpx.AsyncClient, people: People) -> None:
    """A file part must name one of the sender's own files; someone else's is as unknown as a
    file that does not exist."""
    world = await make_world(client, people)
    bob = people.bob.headers
    own_chat = (await client.post("/api/v1/chats", headers=bob, json={"content": "mine"})).json()
    first = (await client.get(f"/api/v1/chats/{own_chat['id']}/messages", headers=bob)).json()["messages"][0]["id"]

    def content(file_id: str) -> list[dict[str, Any]]:
        return [{"type": "text", "text": "what is in this?"}, {"type": "file", "file_id": file_id, "media_type": "image/png"}]

    requests = [
        ("POST", "/api/v1/chats"),
        ("POST", f"/api/v1/chats/{own_chat['id']}/messages"),
        ("PATCH", f"/api/v1/chats/{own_chat['id']}/messages/{first}"),
    ]
    for method, path in requests:
        foreign = await client.request(method, path, headers=bob, json={"content": content(world.ids["file_id"])})
        absent = await client.request(method, path, headers=bob, json={"content": content(str(uuid.uuid4()))})
        assert foreign.status_code == 400, (method, path, foreign.status_code, foreign.text)
        assert (absent.status_code, absent.json()) == (400, foreign.json())
        assert foreign.json()["code"] == "invalid_input"
    assert [c["id"] for c in (await client.get("/api/v1/chats", headers=bob)).json()] == [own_chat["id"]]
    after = (await client.get(f"/api/v1/chats/{own_chat['id']}/messages", headers=bob)).json()
    assert [m["id"] for m in after["messages"]] == [first] and after["queued_messages"] == []

    # Her own file, alice may attach.
    r = await client.post("/api/v1/chats", headers=people.alice.headers, json={"content": content(world.ids["file_id"])})
    assert r.status_code == 201, r.text


async def test_stream_websocket_admits_only_the_owner(client: httpx.AsyncClient, people: People, chatd: App) -> None:
    """The WebSocket flavour of /chats/{id}/stream is not in the OpenAPI document; same rules."""
    world = await make_world(client, people)
    base = str(client.base_url).replace("http://", "ws://")
    chat = world.ids["chat_id"]

    async def refused(path: str, headers: dict[str, str], **kw: Any) -> int:
        # Refusals come after the handshake as close codes a client can tell apart (issue 9).
        async with ws_connect(f"{base}{path}", additional_headers=headers, open_timeout=10, **kw) as ws:
            with pytest.raises(ConnectionClosed) as exc:
                await asyncio.wait_for(ws.recv(), 10)
        assert exc.value.rcvd is not None
        return exc.value.rcvd.code

    stream = f"/api/v1/chats/{chat}/stream"
    elsewhere = f"/api/v1/chats/{uuid.uuid4()}/stream"
    assert await refused(stream, {}) == await refused(elsewhere, {}) == 4401
    assert await refused(stream, {"Authorization": "Bearer chatd_not-a-real-token"}) == 4401
    for other in (people.bob, people.admin):
        assert await refused(stream, other.headers) == await refused(elsewhere, other.headers) == 4404
    assert await refused(f"{stream}?after_id={2**63}", people.alice.headers) == 4400
    assert await refused(f"{stream}?after_id=abc", people.alice.headers) == 4400
    # A malformed id is refused like an unknown one (it used to be a bare HTTP 403 at the handshake).
    assert await refused("/api/v1/chats/not-a-uuid/stream", people.alice.headers) == 4404

    async with ws_connect(f"{base}{stream}", additional_headers=people.alice.headers, open_timeout=10) as ws:
        first = json.loads(await ws.recv())
        assert first["event"] == {"type": "status", "chat_id": chat, "status": "pending"}
    # Browsers cannot set headers: they offer the token as a subprotocol, and a browser drops the
    # connection unless the server selects the protocol it offered.
    offered = f"bearer.{people.alice.token}"
    async with ws_connect(f"{base}{stream}", subprotocols=[Subprotocol(offered)], open_timeout=10) as ws:
        assert ws.subprotocol == offered
        assert json.loads(await ws.recv())["event"]["type"] == "status"
    bobs = [Subprotocol(f"bearer.{people.bob.token}")]
    assert await refused(stream, {}, subprotocols=bobs) == await refused(elsewhere, people.bob.headers) == 4404

    # A client that goes away is noticed while the chat is quiet: its subscription ends with it.
    # (The hub has no public view of its subscribers, and no event to wait on: poll, bounded.)
    hub_state = chatd.hub._chats.get(uuid.UUID(chat))
    async with asyncio.timeout(10):
        while hub_state is not None and hub_state.subscribers:  # noqa: ASYNC110 - no event to wait on
            await asyncio.sleep(0.02)


# Routes the OpenAPI document leaves out, each with the test that holds it to the rules.
HIDDEN_ROUTES = {
    "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc",  # FastAPI's documents: public
    "/", "/static",  # the web UI: public assets, the token stays in the browser
    "/api/v1/chats/{chat_id}/stream",  # the WebSocket flavour: test_stream_websocket_admits_only_the_owner
    "/internal/v1/chats/{chat_id}/parts",  # replica relay: test_internal_relay_refuses_api_tokens
}


def _flatten(routes: list[Any]) -> list[Any]:
    out: list[Any] = []
    for r in routes:
        inner = getattr(r, "original_router", None)  # FastAPI's wrapper of an included router
        out += _flatten(inner.routes) if inner is not None else [r]
    return out


async def test_routes_outside_the_openapi_document_are_known(chatd: App) -> None:
    """A route hidden from the OpenAPI document escapes the matrix: each one must be listed."""
    from chatd.api.app import create_app

    api = create_app(chatd)
    documented = set(api.openapi()["paths"])
    hidden = {r.path for r in _flatten(api.routes) if r.path not in documented or isinstance(r, APIWebSocketRoute)}
    assert hidden == HIDDEN_ROUTES


async def test_internal_relay_refuses_api_tokens(client: httpx.AsyncClient, people: People, chatd: App) -> None:
    """Replicas authenticate to each other with a token derived from the shared secret key; no
    user's API token, not even an admin's, opens the relay."""
    world = await make_world(client, people)
    path = f"/internal/v1/chats/{world.ids['chat_id']}/parts"
    for headers in ({}, people.admin.headers, people.alice.headers, {"Authorization": "Bearer chatd_not-a-real-token"}):
        r = await client.get(path, headers=headers)
        assert r.status_code == 401, (headers, r.status_code, r.text)
    async with client.stream("GET", path, headers={"Authorization": f"Bearer {chatd.internal_token}"}) as r:
        assert r.status_code == 200
