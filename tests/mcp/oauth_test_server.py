"""A real OAuth 2.1 authorization server and a bearer-protected MCP server, for the OAuth tests.

The authorization server implements what MCP clients meet in the wild: RFC 8414 metadata, RFC
7591 dynamic client registration, an authorize endpoint that approves at once and redirects with
a code, and a token endpoint with authorization_code (PKCE S256 checked), refresh_token with
rotation — presenting a refresh token that was already rotated away revokes the whole grant, as
real servers do — and client_credentials. The MCP server publishes RFC 9728 metadata and answers
401 with `WWW-Authenticate: Bearer resource_metadata=...` unless the access token is live.

Both run with uvicorn on 127.0.0.1 in their own threads (see `mcp_test_servers.serve`); the
counters are read by the tests from another thread, hence the lock.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlencode

from mcp_test_servers import RunningServer, build_server, serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

SCOPE = "mcp:tools"


@dataclass
class Client:
    client_id: str
    client_secret: str | None
    redirect_uris: list[str]
    auth_method: str


@dataclass
class Grant:
    """One authorization (code exchange or client credentials) and the tokens issued under it."""

    id: str
    client_id: str
    resource: str | None
    refresh_token: str | None = None  # the current one; older ones are in `spent`
    spent: set[str] = field(default_factory=set)
    access_tokens: set[str] = field(default_factory=set)
    revoked: bool = False


@dataclass
class AuthState:
    issuer: str = ""
    access_ttl: int = 3600
    # Makes a refresh slow enough that racing refreshes would overlap.
    refresh_delay: float = 0.2
    clients: dict[str, Client] = field(default_factory=dict)
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    grants: dict[str, Grant] = field(default_factory=dict)
    registrations: int = 0
    code_exchanges: int = 0
    refreshes: int = 0
    client_credentials_grants: int = 0
    refresh_reuse: int = 0
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    # Client ID Metadata Documents (SEP-991): advertised when set; an https client_id is looked up
    # here (what fetching it would return), since the tests' chatd has no reachable public URL.
    metadata_documents: dict[str, dict[str, Any]] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self, client_id: str) -> Client | None:
        known = self.clients.get(client_id)
        if known is None and self.metadata_documents is not None and client_id.startswith("https://"):
            doc = self.metadata_documents.get(client_id)
            if doc is not None and doc.get("client_id") == client_id:
                return Client(client_id, None, list(doc.get("redirect_uris") or []), "none")
        return known

    def live(self, access_token: str) -> bool:
        with self.lock:
            return any(access_token in g.access_tokens and not g.revoked for g in self.grants.values())

    def invalidate_access_tokens(self) -> None:
        """Forget every access token (the server restarted, or they expired on its clock)."""
        with self.lock:
            for g in self.grants.values():
                g.access_tokens.clear()

    def _issue(self, grant: Grant, *, with_refresh: bool) -> dict[str, Any]:
        access = "at-" + secrets.token_urlsafe(16)
        grant.access_tokens.add(access)
        body: dict[str, Any] = {"access_token": access, "token_type": "bearer", "expires_in": self.access_ttl, "scope": SCOPE}
        if with_refresh:
            if grant.refresh_token is not None:
                grant.spent.add(grant.refresh_token)
            grant.refresh_token = "rt-" + secrets.token_urlsafe(16)
            body["refresh_token"] = grant.refresh_token
        return body


def _error(code: str, description: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": code, "error_description": description}, status_code=status)


def build_auth_server(state: AuthState) -> Starlette:
    async def metadata(request: Request) -> JSONResponse:
        base = str(request.base_url).rstrip("/")
        state.issuer = base
        return JSONResponse(
            {
                "issuer": base,
                "authorization_endpoint": f"{base}/authorize",
                "token_endpoint": f"{base}/token",
                "registration_endpoint": f"{base}/register",
                "scopes_supported": [SCOPE],
                "response_types_supported": ["code"],
                "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
                "code_challenge_methods_supported": ["S256"],
                **({"client_id_metadata_document_supported": True} if state.metadata_documents is not None else {}),
            }
        )

    async def register(request: Request) -> JSONResponse:
        body = await request.json()
        uris = body.get("redirect_uris") or []
        if not uris:
            return _error("invalid_redirect_uri", "redirect_uris is required")
        method = body.get("token_endpoint_auth_method") or "client_secret_basic"
        client = Client(
            client_id="dyn-" + secrets.token_urlsafe(8),
            client_secret=None if method == "none" else "dyn-secret-" + secrets.token_urlsafe(16),
            redirect_uris=list(uris),
            auth_method=method,
        )
        with state.lock:
            state.clients[client.client_id] = client
            state.registrations += 1
        out = {**body, "client_id": client.client_id, "token_endpoint_auth_method": method}
        if client.client_secret:
            out["client_secret"] = client.client_secret
        return JSONResponse(out, status_code=201)

    async def authorize(request: Request) -> Response:
        q = dict(request.query_params)
        with state.lock:
            state.authorize_requests.append(q)
            client = state.client(q.get("client_id", ""))
        if client is None or q.get("redirect_uri") not in client.redirect_uris:
            return _error("invalid_request", "unknown client or redirect_uri")
        if q.get("response_type") != "code" or q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return _error("invalid_request", "PKCE S256 is required")
        code = "code-" + secrets.token_urlsafe(16)
        with state.lock:
            state.codes[code] = {
                "client_id": client.client_id,
                "redirect_uri": q["redirect_uri"],
                "challenge": q["code_challenge"],
                "resource": q.get("resource"),
            }
        # Approves at once, like a user clicking "Allow".
        return RedirectResponse(f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q.get('state', '')})}", status_code=302)

    def authenticate(request: Request, form: dict[str, str]) -> Client | None:
        client_id, secret = form.get("client_id"), form.get("client_secret")
        header = request.headers.get("authorization", "")
        if header.lower().startswith("basic "):
            raw = base64.b64decode(header[6:]).decode()
            cid, _, sec = raw.partition(":")
            client_id, secret = unquote(cid), unquote(sec)
        client = state.client(client_id or "")
        if client is None:
            return None
        if client.client_secret is not None and secret != client.client_secret:
            return None
        return client

    async def token(request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        grant_type = form.get("grant_type")
        with state.lock:
            client = authenticate(request, form)
        if client is None:
            return _error("invalid_client", "client authentication failed", 401)
        if grant_type == "authorization_code":
            with state.lock:
                data = state.codes.pop(form.get("code", ""), None)  # single use
                if data is None or data["client_id"] != client.client_id:
                    return _error("invalid_grant", "unknown or used code")
                if data["redirect_uri"] != form.get("redirect_uri"):
                    return _error("invalid_grant", "redirect_uri mismatch")
                verifier = form.get("code_verifier", "")
                challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
                if challenge != data["challenge"]:
                    return _error("invalid_grant", "PKCE verification failed")
                if data["resource"] and form.get("resource") != data["resource"]:
                    return _error("invalid_target", "resource mismatch")
                grant = Grant(id=secrets.token_hex(4), client_id=client.client_id, resource=data["resource"])
                state.grants[grant.id] = grant
                state.code_exchanges += 1
                return JSONResponse(state._issue(grant, with_refresh=True))
        if grant_type == "refresh_token":
            presented = form.get("refresh_token", "")
            await asyncio.sleep(state.refresh_delay)
            with state.lock:
                for grant in state.grants.values():
                    if presented in grant.spent:
                        # Reuse of a rotated refresh token: somebody raced or stole it. Revoke it all.
                        grant.revoked = True
                        state.refresh_reuse += 1
                        return _error("invalid_grant", "refresh token reuse; grant revoked")
                    if presented == grant.refresh_token and grant.client_id == client.client_id:
                        if grant.revoked:
                            return _error("invalid_grant", "grant revoked")
                        state.refreshes += 1
                        return JSONResponse(state._issue(grant, with_refresh=True))
            return _error("invalid_grant", "unknown refresh token")
        if grant_type == "client_credentials":
            if client.client_secret is None:
                return _error("unauthorized_client", "public clients cannot use client_credentials")
            with state.lock:
                grant = Grant(id=secrets.token_hex(4), client_id=client.client_id, resource=form.get("resource"))
                state.grants[grant.id] = grant
                state.client_credentials_grants += 1
                return JSONResponse(state._issue(grant, with_refresh=False))
        return _error("unsupported_grant_type", f"{grant_type!r}")

    return Starlette(
        routes=[
            Route("/.well-known/oauth-authorization-server", metadata),
            Route("/register", register, methods=["POST"]),
            Route("/authorize", authorize),
            Route("/token", token, methods=["POST"]),
        ]
    )


class ProtectedMcp:
    """An MCP app behind bearer auth, with RFC 9728 metadata naming the authorization server."""

    def __init__(self, app: ASGIApp, auth: AuthState, auth_server_url: str) -> None:
        self.app = app
        self.auth = auth
        self.auth_server_url = auth_server_url
        self.rejected = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        base = str(request.base_url).rstrip("/")
        if scope["path"].startswith("/.well-known/oauth-protected-resource"):
            body = {"resource": f"{base}/mcp", "authorization_servers": [self.auth_server_url], "scopes_supported": [SCOPE]}
            await JSONResponse(body)(scope, receive, send)
            return
        header = request.headers.get("authorization", "")
        if not (header.startswith("Bearer ") and self.auth.live(header[7:])):
            self.rejected += 1
            challenge = f'Bearer resource_metadata="{base}/.well-known/oauth-protected-resource/mcp", scope="{SCOPE}"'
            response = JSONResponse({"error": "invalid_token"}, status_code=401, headers={"WWW-Authenticate": challenge})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


@dataclass
class OAuthWorld:
    auth: AuthState
    auth_url: str
    mcp: ProtectedMcp
    mcp_url: str

    def add_client(self, client_id: str, secret: str | None, redirect_uris: list[str] | None = None) -> None:
        with self.auth.lock:
            self.auth.clients[client_id] = Client(client_id, secret, redirect_uris or [], "client_secret_basic" if secret else "none")

    def allow_redirect(self, client_id: str, redirect_uri: str) -> None:
        with self.auth.lock:
            self.auth.clients[client_id].redirect_uris.append(redirect_uri)


@contextmanager
def oauth_world() -> Iterator[OAuthWorld]:
    auth = AuthState()
    with serve(build_auth_server(auth), path="") as as_running:
        auth_url = as_running.url
        protected = ProtectedMcp(build_server().streamable_http_app(), auth, auth_url)
        with serve(protected) as mcp_running:
            yield OAuthWorld(auth, auth_url, protected, mcp_running.url)


__all__ = ["AuthState", "OAuthWorld", "RunningServer", "oauth_world"]
