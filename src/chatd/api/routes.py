"""The v1 routes (API.md)."""

from __future__ import annotations

import html
import json
import unicodedata
import uuid
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, File, Path, Query, Request, Response, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.responses import Response as RawResponse

from chatd.api.deps import AppSettings, CurrentUser, Service
from chatd.api.errors import status_of
from chatd.api.openapi import errors
from chatd.api.paging import (
    PAGED,
    Before,
    Key,
    Limit,
    decode_cursor,
    fetched,
    page,
    parse_time,
    set_next,
    time_key,
)
from chatd.api.schemas import (
    MAX_INT64,
    ActionAnswerIn,
    ApiTokenOut,
    ChatActionOut,
    ChatDebugOut,
    ChatIn,
    ChatOut,
    CustomPromptIn,
    DiscoveredModelOut,
    EditIn,
    EditOut,
    FileOut,
    McpAppFrameIn,
    McpAppFrameOut,
    McpAppResourceReadIn,
    McpAppToolCallIn,
    McpCheckErrorOut,
    McpOAuthStartOut,
    McpServerIn,
    McpServerOut,
    McpServerPatch,
    McpTokenIn,
    McpTokenOut,
    McpToolOut,
    McpToolsOut,
    MessageIn,
    MessageOut,
    MessagesOut,
    ModelConfigIn,
    ModelConfigOut,
    ModelConfigPatch,
    PromoteOut,
    ProviderCheckErrorOut,
    ProviderCheckOut,
    ProviderIn,
    ProviderOut,
    ProviderPatch,
    ProviderTestIn,
    QueuedMessageOut,
    SendOut,
    SpendOut,
    TokenIn,
    TokenOut,
    UsageLimitIn,
    UsageLimitOut,
    UsageStatusOut,
    UserIn,
    UserOut,
    UserPatch,
    UserSpendOut,
    to_parts,
)
from chatd.domain.actions import Answer, ClientTool, Decision
from chatd.domain.config import ModelOptions, Pricing
from chatd.domain.mcp import McpUserToken
from chatd.errors import ChatdError, InvalidInput, NotFound, PayloadTooLarge
from chatd.service import ProviderCheck
from chatd.settings import Settings

router = APIRouter(prefix="/api/v1")

# Message and queued-message ids are 64-bit; a larger number is a 400 here, not a driver overflow.
MessageId = Annotated[int, Path(ge=1, le=MAX_INT64)]
QueuedId = Annotated[int, Path(ge=1, le=MAX_INT64)]
# A tool as chats name it: `slug__tool` for MCP tools (MCP tool names are at most 128 characters).
ToolName = Annotated[str, Path(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_.\-]+$")]
AfterId = Annotated[int, Query(ge=0, le=MAX_INT64, description="Only messages with a larger id.")]

ALLOWED_UPLOADS = {"image/png", "image/jpeg", "image/gif", "image/webp", "text/plain", "application/pdf"}


# --- identity ---------------------------------------------------------------------------------


@router.get("/me", tags=["identity"])
async def me(user: CurrentUser) -> UserOut:
    return UserOut.of(user)


@router.put("/me/custom-prompt", tags=["identity"])
async def set_custom_prompt(body: CustomPromptIn, user: CurrentUser, svc: Service) -> dict[str, str]:
    u = await svc.set_custom_prompt(user, body.custom_prompt)
    return {"custom_prompt": u.custom_prompt}


@router.get("/me/tokens", tags=["identity"], responses=PAGED)
async def list_my_tokens(
    request: Request, response: Response, user: CurrentUser, svc: Service, limit: Limit = 100, before: Before = None
) -> list[ApiTokenOut]:
    """The caller's API tokens, oldest first (never the tokens themselves)."""
    after = _time_id(decode_cursor(before, (str, str)))
    rows, nxt = fetched(await svc.list_tokens(user, user.id, limit=limit + 1, after=after), _token_key, limit)
    set_next(request, response, nxt)
    return [ApiTokenOut.of(t) for t in rows]


@router.delete("/tokens/{token_id}", status_code=204, tags=["identity"])
async def revoke_token(token_id: uuid.UUID, user: CurrentUser, svc: Service) -> Response:
    """Revoke a token: the caller's own, or anyone's for an admin (another member's token is a
    404, like one that does not exist). A token may revoke itself."""
    await svc.revoke_token(user, token_id)
    return Response(status_code=204)


@router.get("/users", tags=["identity"], responses={**PAGED, **errors(403)})
async def list_users(
    request: Request, response: Response, user: CurrentUser, svc: Service, limit: Limit = 100, before: Before = None
) -> list[UserOut]:
    """Every user, by username (admin)."""
    cursor = decode_cursor(before, (str,))
    users = await svc.list_users(user, limit=limit + 1, after_username=str(cursor[0]) if cursor else None)
    rows, nxt = fetched(users, lambda u: (u.username,), limit)
    set_next(request, response, nxt)
    return [UserOut.of(u) for u in rows]


@router.get("/users/{user_id}/tokens", tags=["identity"], responses={**PAGED, **errors(403)})
async def list_user_tokens(
    user_id: uuid.UUID, request: Request, response: Response, user: CurrentUser, svc: Service, limit: Limit = 100, before: Before = None
) -> list[ApiTokenOut]:
    """A user's API tokens, oldest first (admin)."""
    after = _time_id(decode_cursor(before, (str, str)))
    rows, nxt = fetched(await svc.list_user_tokens(user, user_id, limit=limit + 1, after=after), _token_key, limit)
    set_next(request, response, nxt)
    return [ApiTokenOut.of(t) for t in rows]


def _token_key(t: Any) -> Key:
    return (time_key(t.created_at), str(t.id))


def _time_id(cursor: Key | None) -> tuple[Any, uuid.UUID] | None:
    """A (time, id) cursor back into values the store compares."""
    if cursor is None:
        return None
    try:
        return parse_time(cursor[0]), uuid.UUID(str(cursor[1]))
    except ValueError as exc:
        raise InvalidInput("Invalid cursor: pass the X-Next-Cursor of the previous page.") from exc


@router.post("/users", status_code=201, tags=["identity"], responses=errors(403, 409))
async def create_user(body: UserIn, user: CurrentUser, svc: Service) -> UserOut:
    return UserOut.of(await svc.create_user(user, body.username, body.role))


@router.patch("/users/{user_id}", tags=["identity"], responses=errors(403))
async def update_user(user_id: uuid.UUID, body: UserPatch, user: CurrentUser, svc: Service) -> UserOut:
    """Disable a user (admin): their tokens are refused from the next request on and their open
    streams end at their next token check; their chats and tokens are kept. `disabled: false`
    enables them again. An admin cannot disable themself (400)."""
    return UserOut.of(await svc.set_user_disabled(user, user_id, body.disabled))


@router.post("/users/{user_id}/tokens", status_code=201, tags=["identity"], responses=errors(403))
async def create_token(user_id: uuid.UUID, body: TokenIn, user: CurrentUser, svc: Service) -> TokenOut:
    return TokenOut(token=await svc.create_token(user, user_id, body.name))


# --- providers ----------------------------------------------------------------------------------


@router.get("/providers", tags=["providers"], responses=PAGED)
async def list_providers(
    request: Request, response: Response, user: CurrentUser, svc: Service, limit: Limit = 100, before: Before = None
) -> list[ProviderOut]:
    rows, nxt = page(await svc.list_providers(user), lambda p: (p.name,), limit, decode_cursor(before, (str,)))
    set_next(request, response, nxt)
    return [ProviderOut.of(p, admin=user.is_admin) for p in rows]


@router.post("/providers", status_code=201, tags=["providers"], responses=errors(403, 409))
async def create_provider(body: ProviderIn, user: CurrentUser, svc: Service) -> ProviderOut:
    p = await svc.create_provider(
        user, provider=body.provider, name=body.name, display_name=body.display_name, api_key=body.api_key, base_url=body.base_url,
        enabled=body.enabled,
    )
    return ProviderOut.of(p, admin=True)


@router.post("/providers/test", tags=["providers"], responses=errors(403))
async def test_provider(body: ProviderTestIn, user: CurrentUser, svc: Service) -> ProviderCheckOut:
    """Connection test for provider settings that need not be saved yet: lists the provider's
    models from its own models endpoint, or says in words why it could not (refused key, wrong
    base URL, unreachable). Admins only; the URL may be a loopback one (Ollama on this host)."""
    check = await svc.test_provider(user, provider=body.provider, base_url=body.base_url, api_key=body.api_key, provider_id=body.provider_id)
    return _provider_check(check)


@router.get("/providers/{provider_id}/models", tags=["providers"], responses=errors(403))
async def provider_models(provider_id: uuid.UUID, user: CurrentUser, svc: Service) -> ProviderCheckOut:
    """The models a saved provider offers now (its models endpoint), or why they cannot be listed."""
    return _provider_check(await svc.provider_models(user, provider_id))


def _provider_check(check: ProviderCheck) -> ProviderCheckOut:
    return ProviderCheckOut(
        ok=check.error is None,
        models=[DiscoveredModelOut(id=m.id, display_name=m.display_name, context_limit=m.context_limit) for m in check.models],
        error=ProviderCheckErrorOut(message=check.error.message, status=check.error.status) if check.error else None,
    )


@router.patch("/providers/{provider_id}", tags=["providers"], responses=errors(403, 409))
async def update_provider(provider_id: uuid.UUID, body: ProviderPatch, user: CurrentUser, svc: Service) -> ProviderOut:
    return ProviderOut.of(await svc.update_provider(user, provider_id, body.model_dump(exclude_unset=True)), admin=True)


@router.delete("/providers/{provider_id}", status_code=204, tags=["providers"], responses=errors(403, 409))
async def delete_provider(provider_id: uuid.UUID, user: CurrentUser, svc: Service) -> Response:
    """409 while model configs use the provider."""
    await svc.delete_provider(user, provider_id)
    return Response(status_code=204)


@router.get("/model-configs", tags=["providers"], responses=PAGED)
async def list_model_configs(
    request: Request, response: Response, user: CurrentUser, svc: Service, limit: Limit = 100, before: Before = None
) -> list[ModelConfigOut]:
    key = lambda m: (time_key(m.created_at), str(m.id))  # noqa: E731
    rows, nxt = page(await svc.list_model_configs(user), key, limit, decode_cursor(before, (str, str)))
    set_next(request, response, nxt)
    return [ModelConfigOut.of(m) for m in rows]


@router.post("/model-configs", status_code=201, tags=["providers"], responses=errors(403))
async def create_model_config(body: ModelConfigIn, user: CurrentUser, svc: Service) -> ModelConfigOut:
    m = await svc.create_model_config(
        user, provider_id=body.provider_id, provider=body.provider, model=body.model, display_name=body.display_name, context_limit=body.context_limit,
        compression_threshold=body.compression_threshold, is_default=body.is_default, enabled=body.enabled,
        options=ModelOptions(**body.options.model_dump()), pricing=Pricing(**body.pricing.model_dump()),
    )
    return ModelConfigOut.of(m)


@router.patch("/model-configs/{config_id}", tags=["providers"], responses=errors(403))
async def update_model_config(config_id: uuid.UUID, body: ModelConfigPatch, user: CurrentUser, svc: Service) -> ModelConfigOut:
    changes = body.model_dump(exclude_unset=True)
    if body.options is not None:
        changes["options"] = body.options.model_dump(exclude_unset=True)
    if body.pricing is not None:
        changes["pricing"] = body.pricing.model_dump(exclude_unset=True)
    return ModelConfigOut.of(await svc.update_model_config(user, config_id, changes))


@router.delete("/model-configs/{config_id}", status_code=204, tags=["providers"], responses=errors(403))
async def delete_model_config(config_id: uuid.UUID, user: CurrentUser, svc: Service) -> Response:
    await svc.delete_model_config(user, config_id)
    return Response(status_code=204)


# --- MCP servers ---------------------------------------------------------------------------------


@router.get("/mcp-servers", tags=["mcp"], responses=PAGED)
async def list_mcp_servers(
    request: Request, response: Response, user: CurrentUser, svc: Service, limit: Limit = 100, before: Before = None
) -> list[McpServerOut]:
    """Members see enabled servers only."""
    key = lambda s: (s.display_name, s.slug)  # noqa: E731
    rows, nxt = page(await svc.list_mcp_servers(user), key, limit, decode_cursor(before, (str, str)))
    set_next(request, response, nxt)
    status = await svc.mcp_statuses(user, rows)
    return [McpServerOut.of(s, admin=user.is_admin, status=status[s.id]) for s in rows]


@router.post("/mcp-servers", status_code=201, tags=["mcp"], responses=errors(403, 409))
async def create_mcp_server(body: McpServerIn, user: CurrentUser, svc: Service) -> McpServerOut:
    fields: dict[str, Any] = body.model_dump()
    if body.oauth2 is None:
        fields.pop("oauth2")
    server = await svc.create_mcp_server(user, fields)
    return McpServerOut.of(server, admin=True, status=(await svc.mcp_statuses(user, [server]))[server.id])


@router.get("/mcp-servers/{server_id}", tags=["mcp"])
async def get_mcp_server(server_id: uuid.UUID, user: CurrentUser, svc: Service) -> McpServerOut:
    server = await svc.get_mcp_server(user, server_id)
    return McpServerOut.of(server, admin=user.is_admin, status=(await svc.mcp_statuses(user, [server]))[server.id])


@router.patch("/mcp-servers/{server_id}", tags=["mcp"], responses=errors(403, 409))
async def update_mcp_server(server_id: uuid.UUID, body: McpServerPatch, user: CurrentUser, svc: Service) -> McpServerOut:
    fields = body.model_dump(exclude_unset=True)
    if body.oauth2 is not None:
        fields["oauth2"] = body.oauth2.model_dump(exclude_unset=True)
    server = await svc.update_mcp_server(user, server_id, fields)
    return McpServerOut.of(server, admin=True, status=(await svc.mcp_statuses(user, [server]))[server.id])


@router.delete("/mcp-servers/{server_id}", status_code=204, tags=["mcp"], responses=errors(403))
async def delete_mcp_server(server_id: uuid.UUID, user: CurrentUser, svc: Service) -> Response:
    await svc.delete_mcp_server(user, server_id)
    return Response(status_code=204)


@router.put("/mcp-servers/{server_id}/token", tags=["mcp"])
async def put_mcp_token(server_id: uuid.UUID, body: McpTokenIn, user: CurrentUser, svc: Service) -> McpTokenOut:
    await svc.put_mcp_token(
        user, server_id,
        McpUserToken(server_id, user.id, body.access_token, body.refresh_token, body.token_type, body.expires_at),
    )
    return McpTokenOut(connected=True, expires_at=body.expires_at)


@router.get("/mcp-servers/{server_id}/token", tags=["mcp"])
async def get_mcp_token(server_id: uuid.UUID, user: CurrentUser, svc: Service) -> McpTokenOut:
    t = await svc.get_mcp_token(user, server_id)
    return McpTokenOut(connected=t is not None, expires_at=t.expires_at if t else None)


@router.delete("/mcp-servers/{server_id}/token", status_code=204, tags=["mcp"])
async def delete_mcp_token(server_id: uuid.UUID, user: CurrentUser, svc: Service) -> Response:
    await svc.delete_mcp_token(user, server_id)
    return Response(status_code=204)


@router.get(
    "/mcp-servers/{server_id}/tools",
    tags=["mcp"],
    responses={404: {"description": "No such server (or, for members, a disabled one)."}},
)
async def check_mcp_tools(server_id: uuid.UUID, user: CurrentUser, svc: Service) -> McpToolsOut:
    """Connect to the server now, as the caller (their OAuth2 token, refreshed when due), and list
    its tools after the allow/deny lists, named as the model sees them. A server that cannot be
    reached or refuses the credentials is a 200 with `ok: false` and the reason: the check worked,
    its finding is the error. A disabled server is connected too (to test it before enabling it)
    but answers `ok: false` with `mcp_server_disabled`. 404 for an unknown (or, for members,
    disabled) server."""
    check = await svc.check_mcp_tools(user, server_id)
    error = None
    if check.error is not None:
        status = check.error.detail.get("status") if isinstance(check.error.detail, dict) else None
        code = "mcp_oauth_required" if check.needs_authorization else check.error.code
        message = check.error.message
        if check.disabled:
            message = f"The server is disabled (no chat uses it), and connecting failed: {message}"
        error = McpCheckErrorOut(code=code, message=message, status=status)
    elif check.disabled:
        error = McpCheckErrorOut(
            code="mcp_server_disabled",
            message=f"The server is disabled, so no chat uses it. The connection works ({len(check.tools)} tools); enable it to offer them.",
        )
    return McpToolsOut(
        ok=error is None,
        tools=[McpToolOut(name=t.name, original_name=t.original_name, description=t.description, input_schema=t.input_schema) for t in check.tools],
        error=error,
    )


@router.post(
    "/mcp-servers/{server_id}/oauth/start",
    tags=["mcp"],
    responses={
        400: {"description": "The server does not use OAuth2, uses client credentials, or has no HTTP URL."},
        404: {"description": "No such server (or, for members, a disabled one)."},
        502: {"description": "The authorization server could not be discovered or refused the client registration."},
    },
)
async def start_mcp_oauth(
    server_id: uuid.UUID, request: Request, user: CurrentUser, svc: Service, settings: AppSettings
) -> McpOAuthStartOut:
    """Start the caller's OAuth2 authorization (code flow with PKCE) for an `oauth2` server.
    400 if the server does not use OAuth2 or uses client credentials; 502 if its authorization
    server cannot be discovered or refuses registration."""
    url = await svc.start_mcp_oauth(
        user, server_id, _callback_url(request, settings), client_metadata_url=_client_metadata_url(settings)
    )
    return McpOAuthStartOut(authorize_url=url)


CLIENT_METADATA_PATH = "/mcp-servers/oauth/client-metadata.json"


@router.get(
    CLIENT_METADATA_PATH,
    tags=["mcp"],
    responses={404: {"description": "chatd has no public https URL (`CHATD_PUBLIC_URL`), so it has no such document."}},
)
async def mcp_oauth_client_metadata(svc: Service, settings: AppSettings) -> JSONResponse:
    """chatd's OAuth Client ID Metadata Document (SEP-991). Authorization servers that accept
    these fetch it when chatd uses its URL as client_id, instead of chatd registering itself. No
    bearer token: it is public, and holds no secret."""
    url = _client_metadata_url(settings)
    if url is None:
        raise NotFound("chatd has no public https URL, so it has no client metadata document.")
    callback = settings.public_url.rstrip("/") + "/api/v1/mcp-servers/oauth/callback"
    return JSONResponse(svc.mcp_oauth_client_metadata(url, callback), headers={"Cache-Control": "public, max-age=3600"})


def _client_metadata_url(settings: Settings) -> str | None:
    # An https URL only: a client_id that names a document must be one the server can trust.
    if not settings.public_url.startswith("https://"):
        return None
    return settings.public_url.rstrip("/") + "/api/v1" + CLIENT_METADATA_PATH


@router.get(
    "/mcp-servers/oauth/callback",
    tags=["mcp"],
    response_class=HTMLResponse,
    responses={400: {"description": "Unknown, used or expired state; or the user denied access.", "content": {"text/html": {}}},
               502: {"description": "The token exchange failed.", "content": {"text/html": {}}}},
)
async def mcp_oauth_callback(
    svc: Service,
    state: Annotated[str, Query(max_length=512)] = "",
    code: Annotated[str | None, Query(max_length=4096)] = None,
    error: Annotated[str | None, Query(max_length=512)] = None,
) -> HTMLResponse:
    """Where the authorization server sends the browser back. No bearer token: the single-use,
    short-lived state names the user and the server. Stores the user's token (encrypted) and
    answers a small page that tells the opener and can be closed."""
    try:
        server = await svc.finish_mcp_oauth(state=state, code=code, error=error)
    except ChatdError as exc:
        return HTMLResponse(_oauth_page("Not connected", exc.message, ok=False), status_code=status_of(exc))
    name = server.display_name or server.slug
    return HTMLResponse(_oauth_page(f"Connected to {name}", "You can close this tab.", ok=True, server_id=str(server.id)))


def _callback_url(request: Request, settings: Settings) -> str:
    # The public URL wins (chatd behind a proxy); else the URL this request came in on.
    if settings.public_url:
        return settings.public_url.rstrip("/") + "/api/v1/mcp-servers/oauth/callback"
    return str(request.url_for("mcp_oauth_callback"))


def _oauth_page(title: str, text: str, *, ok: bool, server_id: str | None = None) -> str:
    message = {"type": "mcp-oauth2-complete", "ok": ok, "serverId": server_id}
    # Tell the page that opened this tab (same origin only), then let the user close it.
    script = (
        "<script>if (window.opener) { window.opener.postMessage("
        + json.dumps(message).replace("<", "\\u003c")
        + ", window.location.origin); }</script>"
    )
    return (
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>chatd</title></head>"
        f"<body><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>{script}</body></html>"
    )


# --- chats -----------------------------------------------------------------------------------------


@router.post("/chats", status_code=201, tags=["chats"], responses=errors(409))
async def create_chat(body: ChatIn, user: CurrentUser, svc: Service) -> ChatOut:
    chat = await svc.create_chat(
        user, content=to_parts(body.content), title=body.title, model_config_id=body.model_config_id,
        system_prompt=body.system_prompt, mcp_server_ids=body.mcp_server_ids, workspace_id=body.workspace_id,
        client_tools=[ClientTool(t.name, t.description, t.input_schema) for t in body.client_tools or []],
    )
    return ChatOut.of(chat)


@router.get("/chats", tags=["chats"], responses=PAGED)
async def list_chats(
    request: Request,
    response: Response,
    user: CurrentUser,
    svc: Service,
    archived: bool | None = False,
    parent_chat_id: uuid.UUID | None = None,
    q: Annotated[str | None, Query(max_length=200, description="Only chats whose title contains this (case-insensitive).")] = None,
    limit: Limit = 50,
    before: Before = None,
) -> list[ChatOut]:
    """The caller's chats, most recently updated first. `parent_chat_id` lists that chat's
    sub-agents (the caller's own chats only, like the rest); `q` searches titles."""
    after = _time_id(decode_cursor(before, (str, str)))
    chats = await svc.list_chats(user, archived, parent_chat_id, title_contains=q, limit=limit + 1, before=after)
    rows, nxt = fetched(chats, lambda c: (time_key(c.updated_at), str(c.id)), limit)
    set_next(request, response, nxt)
    return [ChatOut.of(c) for c in rows]


@router.post("/chats/{chat_id}/mcp-apps/frames", tags=["mcp"], responses=errors(400, 404))
async def open_mcp_app_frame(chat_id: uuid.UUID, body: McpAppFrameIn, user: CurrentUser, svc: Service) -> McpAppFrameOut:
    """The address of an MCP App view (a tool result's `app`) for a sandboxed iframe. 404 when the
    chat is not the caller's or does not use that server."""
    ticket = await svc.mcp_app_ticket(user, chat_id, body.server_id, body.resource_uri)
    return McpAppFrameOut(url=f"/api/v1/mcp-apps/frame?ticket={quote(ticket)}")


# Sent with every frame answer, the view and the error page alike: no referrer (the address holds
# the ticket), no sniffing, never cached (a ticket is short-lived and the view is per user).
_FRAME_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
_FRAME_ERROR_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'self'; sandbox"


@router.get(
    "/mcp-apps/frame",
    tags=["mcp"],
    response_class=HTMLResponse,
    responses={404: {"description": "Unknown or expired ticket, or the chat or server is gone.", "content": {"text/html": {}}},
               400: {"description": "The view is not HTML or is over `mcp_app_max_bytes`.", "content": {"text/html": {}}},
               503: {"description": "The MCP server cannot be reached.", "content": {"text/html": {}}}},
)
async def mcp_app_frame(svc: Service, ticket: str = "") -> HTMLResponse:
    # No length limit in the schema: a request validation error would be JSON, and this route
    # answers HTML only (an over-long ticket is an unknown one, 404, in `mcp_app_view`).
    """An MCP App view's document, loaded by the web UI into an iframe with `sandbox="allow-scripts"`
    (no same-origin). No bearer token (an iframe cannot send one): the ticket from
    `POST /chats/{id}/mcp-apps/frames` authorises it. The answer's Content-Security-Policy is the
    view's own (`mcp/apps.py`: the extension's restrictive default widened only by the origins the
    resource declares) and includes `sandbox allow-scripts`, so the document runs in an opaque
    origin even when opened directly."""
    try:
        view = await svc.mcp_app_view(ticket)
    except ChatdError as exc:
        page = f"<!doctype html><meta charset=utf-8><p style='font:14px sans-serif;color:#b00'>{html.escape(exc.message)}</p>"
        return HTMLResponse(page, status_code=status_of(exc), headers={**_FRAME_HEADERS, "Content-Security-Policy": _FRAME_ERROR_CSP})
    return HTMLResponse(view.html, headers={**_FRAME_HEADERS, "Content-Security-Policy": view.csp})


@router.post(
    "/chats/{chat_id}/mcp-apps/resources-read",
    tags=["mcp"],
    responses={
        **errors(403, 503),
        413: {"description": "The request body is too large, or the resource is over `mcp_app_max_bytes`."},
        502: {"description": "The MCP server refused or failed the read (an unknown resource, a timeout)."},
    },
)
async def read_mcp_app_resource(chat_id: uuid.UUID, body: McpAppResourceReadIn, user: CurrentUser, svc: Service) -> dict[str, Any]:
    """An MCP App view's `resources/read`, relayed by the web UI to the view's own server (never
    another, and chatd never fetches the URI itself) as the chat's owner. Answers the MCP
    `ReadResourceResult` (wire JSON: `contents`). 404 when the chat is not the caller's or does not
    use the server; 403 when no tool of the server has a view (it has no app); 413 when the contents are over `mcp_app_max_bytes`; 502 when the server refuses
    or fails the read (an unknown resource, a timeout); 503 when it cannot be reached."""
    return await svc.read_mcp_app_resource(user, chat_id, body.server_id, body.uri)


@router.post("/chats/{chat_id}/mcp-apps/tools-call", tags=["mcp"], responses=errors(403, 404, 503))
async def call_mcp_app_tool(chat_id: uuid.UUID, body: McpAppToolCallIn, user: CurrentUser, svc: Service) -> dict[str, Any]:
    """An MCP App view's `tools/call`, relayed by the web UI: a tool of the view's own server whose
    visibility includes `"app"`, called as the chat's owner. Answers the MCP `CallToolResult`
    (wire JSON; a failed call is `isError: true`). 404 when the chat is not the caller's or does
    not use the server; 403 when the server offers no such tool to apps (absent, filtered, or
    model-only); 503 when the server cannot be reached."""
    return await svc.call_mcp_app_tool(user, chat_id, body.server_id, body.name, body.arguments)


@router.get("/chats/{chat_id}", tags=["chats"])
async def get_chat(chat_id: uuid.UUID, user: CurrentUser, svc: Service) -> ChatOut:
    return ChatOut.of(await svc.get_chat(user, chat_id))


@router.get("/chats/{chat_id}/debug", tags=["chats"], responses=errors(403))
async def chat_debug(chat_id: uuid.UUID, user: CurrentUser, svc: Service) -> ChatDebugOut:
    return ChatDebugOut.of(await svc.chat_debug(user, chat_id))


@router.get("/chats/{chat_id}/messages", tags=["chats"])
async def list_messages(chat_id: uuid.UUID, user: CurrentUser, svc: Service, after_id: AfterId = 0) -> MessagesOut:
    msgs, queue = await svc.list_messages(user, chat_id, after_id)
    return MessagesOut(messages=[MessageOut.of(m) for m in msgs], queued_messages=[QueuedMessageOut.of(q) for q in queue])


@router.post("/chats/{chat_id}/messages", tags=["chats"], responses=errors(409))
async def send_message(chat_id: uuid.UUID, body: MessageIn, user: CurrentUser, svc: Service) -> SendOut:
    out = await svc.send_message(
        user, chat_id, content=to_parts(body.content), busy_behavior=body.busy_behavior,
        model_config_id=body.model_config_id, mcp_server_ids=body.mcp_server_ids,
    )
    return SendOut(
        queued=out.queued,
        message=MessageOut.of(out.message) if out.message else None,
        queued_message=QueuedMessageOut.of(out.queued_message) if out.queued_message else None,
        chat=ChatOut.of(out.chat),
    )


@router.patch("/chats/{chat_id}/messages/{message_id}", tags=["chats"], responses=errors(409))
async def edit_message(chat_id: uuid.UUID, message_id: MessageId, body: EditIn, user: CurrentUser, svc: Service) -> EditOut:
    msg, chat = await svc.edit_message(user, chat_id, message_id, to_parts(body.content))
    return EditOut(message=MessageOut.of(msg), chat=ChatOut.of(chat))


@router.post("/chats/{chat_id}/interrupt", tags=["chats"])
async def interrupt(chat_id: uuid.UUID, user: CurrentUser, svc: Service) -> ChatOut:
    return ChatOut.of(await svc.interrupt(user, chat_id))


@router.post("/chats/{chat_id}/archive", status_code=204, tags=["chats"])
async def archive(chat_id: uuid.UUID, user: CurrentUser, svc: Service) -> Response:
    await svc.set_archived(user, chat_id, True)
    return Response(status_code=204)


@router.post("/chats/{chat_id}/unarchive", status_code=204, tags=["chats"])
async def unarchive(chat_id: uuid.UUID, user: CurrentUser, svc: Service) -> Response:
    await svc.set_archived(user, chat_id, False)
    return Response(status_code=204)


@router.post("/chats/{chat_id}/actions/{action_id}", tags=["chats"], responses=errors(409))
async def answer_action(chat_id: uuid.UUID, action_id: uuid.UUID, body: ActionAnswerIn, user: CurrentUser, svc: Service) -> ChatOut:
    """Answer one of the chat's pending actions (`requires_action`). The first answer wins: an
    action answered, timed out or cancelled before is a 409 `action_resolved`, and nothing runs
    twice. When the last pending action is answered the chat becomes `pending` and resumes."""
    answer = Answer(
        decision=Decision(body.decision), args=body.args, content=body.content, result=body.result, always_allow=body.always_allow
    )
    return ChatOut.of(await svc.answer_action(user, chat_id, action_id, answer))


@router.get("/chats/{chat_id}/actions", tags=["chats"], responses=PAGED)
async def list_actions(
    request: Request, response: Response, chat_id: uuid.UUID, user: CurrentUser, svc: Service, limit: Limit = 100, before: Before = None
) -> list[ChatActionOut]:
    """Every action of the chat, oldest first, with what became of it: how each call that asked
    was answered (`decision`, `edited_args`), also after the wait is over."""
    key = lambda a: (time_key(a.created_at), str(a.id))  # noqa: E731
    rows, nxt = page(await svc.list_actions(user, chat_id), key, limit, decode_cursor(before, (str, str)))
    set_next(request, response, nxt)
    return [ChatActionOut.of_any(a) for a in rows]


@router.delete("/chats/{chat_id}/allowed-tools/{tool_name}", tags=["chats"])
async def revoke_allowed_tool(chat_id: uuid.UUID, tool_name: ToolName, user: CurrentUser, svc: Service) -> ChatOut:
    """Take back "always allow" (an approval's `always_allow`): the tool's calls in this chat ask
    for approval again, from the next turn on. 404 when the tool is not in `allowed_tools`."""
    return ChatOut.of(await svc.revoke_allowed_tool(user, chat_id, tool_name))


@router.delete("/chats/{chat_id}/queue/{queued_id}", status_code=204, tags=["chats"])
async def delete_queued(chat_id: uuid.UUID, queued_id: QueuedId, user: CurrentUser, svc: Service) -> Response:
    await svc.delete_queued(user, chat_id, queued_id)
    return Response(status_code=204)


@router.post("/chats/{chat_id}/queue/{queued_id}/promote", tags=["chats"])
async def promote_queued(chat_id: uuid.UUID, queued_id: QueuedId, user: CurrentUser, svc: Service) -> PromoteOut:
    return PromoteOut(message=MessageOut.of(await svc.promote_queued(user, chat_id, queued_id)))


# --- files and usage ---------------------------------------------------------------------------------


@router.post("/files", status_code=201, tags=["files"])
async def upload_file(user: CurrentUser, svc: Service, settings: AppSettings, file: Annotated[UploadFile, File()]) -> FileOut:
    limit = settings.max_upload_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"Files are limited to {limit} bytes.")
    media_type = (file.content_type or "application/octet-stream").split(";")[0].strip().lower()
    if media_type not in ALLOWED_UPLOADS:
        raise InvalidInput(f"Unsupported file type {media_type!r}; allowed: {', '.join(sorted(ALLOWED_UPLOADS))}.")
    sniffed = sniff(data)
    if sniffed is not None and sniffed != media_type:
        raise InvalidInput(f"The file content is {sniffed}, not {media_type}.")
    if media_type == "text/plain":
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput("A text/plain file must be UTF-8 text.") from exc
    if media_type.startswith("image/") and sniffed is None:
        raise InvalidInput(f"The file content is not a {media_type} image.")
    f = await svc.save_file(user, clean_file_name(file.filename), media_type, data)
    return FileOut(id=f.id, media_type=f.media_type, size=f.size)


@router.get("/files/{file_id}", tags=["files"], response_class=RawResponse)
async def get_file(file_id: uuid.UUID, user: CurrentUser, svc: Service) -> RawResponse:
    f = await svc.get_file(user, file_id)
    return RawResponse(
        f.data,
        media_type=f.media_type,
        headers={"Content-Disposition": content_disposition(f.name), "Cache-Control": "private, max-age=31536000, immutable"},
    )


@router.get("/usage", tags=["usage"])
async def usage(user: CurrentUser, svc: Service) -> UsageStatusOut:
    s = await svc.usage(user)
    return UsageStatusOut(period=s.period, period_end=s.period_end, spent_micros=s.spent_micros, limit_micros=s.limit_micros)


@router.get("/usage/users", tags=["usage"], responses=errors(403))
async def spend_by_user(user: CurrentUser, svc: Service) -> SpendOut:
    """Every user's spend in their current period, with the limit that applies (admins)."""
    glob, rows = await svc.spend_by_user(user)
    return SpendOut(
        global_limit=UsageLimitOut(period=glob.period, limit_micros=glob.limit_micros) if glob else None,
        users=[
            UserSpendOut(
                user=UserOut.of(r.user), period=r.status.period or "month", period_start=r.status.period_start,
                period_end=r.status.period_end, spent_micros=r.status.spent_micros, limit_micros=r.status.limit_micros,
                limit_scope=r.limit_scope,
            )
            for r in rows
        ],
    )


@router.delete("/usage-limits", status_code=204, tags=["usage"], responses=errors(403))
async def delete_usage_limit(
    user: CurrentUser, svc: Service, scope: Literal["global", "user"], user_id: uuid.UUID | None = None
) -> Response:
    """Remove the global limit, or a user's own (who then falls back to the global one)."""
    await svc.delete_usage_limit(user, scope=scope, user_id=user_id)
    return Response(status_code=204)


@router.put("/usage-limits", status_code=204, tags=["usage"], responses=errors(403, 404))
async def set_usage_limit(body: UsageLimitIn, user: CurrentUser, svc: Service) -> Response:
    await svc.set_usage_limit(user, scope=body.scope, user_id=body.user_id, period=body.period, limit_micros=body.limit_micros)
    return Response(status_code=204)


def clean_file_name(name: str | None) -> str:
    """The name as uploaded, minus what no file name needs and a database cannot store: control
    characters (NUL among them) and unpaired surrogates."""
    text = (name or "").encode("utf-8", "replace").decode("utf-8")
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cc").strip()
    return text[:255] or "file"


def content_disposition(name: str) -> str:
    """RFC 6266 with RFC 5987's `filename*`: headers are Latin-1 on the wire, so a name such as
    `файл.txt` goes in UTF-8 percent-encoding, with an ASCII fallback for old clients."""
    fallback = name.encode("ascii", "replace").decode("ascii").replace('"', "").replace("\\", "") or "file"
    return f"inline; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def sniff(data: bytes) -> str | None:
    head = data[:512]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    return None
