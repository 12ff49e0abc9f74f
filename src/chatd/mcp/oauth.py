"""OAuth 2.1 for MCP servers, on the wire: discovery (RFC 9728 protected-resource metadata, then
RFC 8414 authorization-server metadata), dynamic client registration (RFC 7591), PKCE (RFC 7636)
and the token endpoint's grants (authorization_code, refresh_token, client_credentials).

Only HTTP lives here, no storage: `chatd.mcp.authorization` decides when to call what and keeps
the results through a vault. The SDK's `OAuthClientProvider` runs the whole flow inside one
client process (it waits for the browser's redirect itself); chatd's flow is split across two
API requests, possibly on two replicas, so it uses the SDK's metadata models and discovery-URL
rules but drives the requests itself. httpx2 errors are converted here, once.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import httpx2
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from mcp.client.auth.utils import (
    build_oauth_authorization_server_metadata_discovery_urls,
    build_protected_resource_metadata_discovery_urls,
    extract_resource_metadata_from_www_auth,
    extract_scope_from_www_auth,
)
from mcp.shared.auth import (
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthMetadata,
    ProtectedResourceMetadata,
)
from mcp.shared.auth_utils import check_resource_allowed, resource_url_from_server_url
from pydantic import AnyUrl, ValidationError

from chatd.domain.mcp import OAuth2Settings
from chatd.errors import Upstream
from chatd.mcp.config import OAuthToken, redact_url
from chatd.mcp.errors import McpError

log = logging.getLogger(__name__)

# Metadata, registration and token requests are small; a slow authorization server must not
# hold an API request (or, for a refresh, a row lock) for long.
HTTP_TIMEOUT = httpx2.Timeout(10.0)
CLIENT_NAME = "chatd"
# An error description from a server is shown to the user; cap it.
_MAX_DESCRIPTION = 300


class OAuthError(McpError, Upstream):
    """The authorization server could not be discovered or refused a request."""

    code = "mcp_oauth_failed"


class OAuthGrantRevoked(OAuthError):
    """The token endpoint answered `invalid_grant`: the refresh token (or code) is dead for good."""

    code = "mcp_oauth_invalid_grant"


@dataclass(frozen=True, slots=True)
class AuthServer:
    """Where and how to authorize for one MCP server (discovered, then overridden by config)."""

    issuer: str | None
    authorization_endpoint: str | None
    token_endpoint: str
    registration_endpoint: str | None = None
    token_auth_methods: tuple[str, ...] = ()
    # RFC 8707 resource indicator, sent when the server published protected-resource metadata.
    resource: str | None = None
    # The scopes to ask for when the config names none (PRM, then WWW-Authenticate).
    default_scopes: str | None = None
    # The server accepts an https URL naming the client's metadata document as client_id (SEP-991).
    client_id_metadata_documents: bool = False


@dataclass(frozen=True, slots=True)
class ClientRegistration:
    """chatd's identity at one authorization server: configured, or registered dynamically."""

    client_id: str
    client_secret: str | None = None
    # client_secret_basic | client_secret_post | none
    auth_method: str = "none"


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """A successful token-endpoint response."""

    access_token: str
    token_type: str = "Bearer"
    refresh_token: str | None = None
    expires_in: int | None = None
    scope: str | None = None

    def to_token(self, now: datetime, *, previous_refresh_token: str | None = None) -> OAuthToken:
        # RFC 6749 §6: a refresh response may omit refresh_token when the server does not rotate.
        return OAuthToken(
            access_token=self.access_token,
            refresh_token=self.refresh_token or previous_refresh_token,
            token_type="Bearer" if self.token_type.lower() == "bearer" else self.token_type,
            expires_at=now + timedelta(seconds=self.expires_in) if self.expires_in else None,
        )


@dataclass(frozen=True, slots=True)
class Pkce:
    verifier: str
    challenge: str

    @classmethod
    def generate(cls) -> Pkce:
        verifier = secrets.token_urlsafe(64)[:96]  # 43..128 unreserved characters (RFC 7636 §4.1)
        digest = hashlib.sha256(verifier.encode("ascii")).digest()
        return cls(verifier, base64.urlsafe_b64encode(digest).decode("ascii").rstrip("="))


def new_http_client() -> httpx2.AsyncClient:
    # No redirects: metadata and token endpoints answer directly; following a redirect with a
    # client secret in the body would leak it to wherever the redirect points.
    return httpx2.AsyncClient(timeout=HTTP_TIMEOUT, follow_redirects=False, trust_env=False)


# --- discovery ------------------------------------------------------------------------------


async def discover(
    http: httpx2.AsyncClient,
    server_url: str,
    settings: OAuth2Settings,
    *,
    legacy_fallback: bool = False,
) -> AuthServer:
    """The authorization server for `server_url`; explicit authorize/token URLs from the config win.

    Order (MCP authorization spec): the `resource_metadata` of a 401 from the server, then the
    RFC 9728 well-known URLs, then RFC 8414 metadata of the advertised authorization server (or
    the legacy 2025-03-26 rule: the MCP server's origin).
    """
    www_auth_url, www_scope = await _probe(http, server_url)
    prm = await _protected_resource_metadata(http, www_auth_url, server_url)
    auth_server_url = str(prm.authorization_servers[0]) if prm is not None else None
    asm = await _authorization_server_metadata(http, auth_server_url, server_url)

    resource: str | None = None
    if prm is not None:
        canonical = resource_url_from_server_url(server_url)
        advertised = str(prm.resource)
        if not check_resource_allowed(requested_resource=canonical, configured_resource=advertised):
            raise OAuthError(
                f"The server's protected-resource metadata names another resource ({redact_url(advertised)})."
            )
        resource = advertised
    default_scopes = www_scope or (" ".join(prm.scopes_supported) if prm and prm.scopes_supported else None)

    authorize = settings.authorize_url or (str(asm.authorization_endpoint) if asm else None)
    token = settings.token_url or (str(asm.token_endpoint) if asm else None)
    registration = str(asm.registration_endpoint) if asm and asm.registration_endpoint else None
    if legacy_fallback and prm is None and asm is None:
        # 2025-03-26 fallback (opt-in: for a configured server a clear "configure the URLs"
        # beats guessing): no metadata at all means the default endpoints at the MCP
        # server's origin (/authorize, /token, /register).
        parts = urlsplit(server_url)
        origin = f"{parts.scheme}://{parts.netloc}"
        authorize = authorize or f"{origin}/authorize"
        token = token or f"{origin}/token"
        registration = f"{origin}/register"
    if token is None:
        raise OAuthError(
            f"No OAuth authorization server was found for {redact_url(server_url)}; "
            "configure authorize_url and token_url."
        )
    return AuthServer(
        issuer=str(asm.issuer) if asm else None,
        authorization_endpoint=authorize,
        token_endpoint=token,
        registration_endpoint=registration,
        token_auth_methods=tuple(asm.token_endpoint_auth_methods_supported or ()) if asm else (),
        client_id_metadata_documents=bool(asm and asm.client_id_metadata_document_supported),
        resource=resource,
        default_scopes=default_scopes,
    )


async def _probe(http: httpx2.AsyncClient, server_url: str) -> tuple[str | None, str | None]:
    """An unauthenticated initialize: a protected server answers 401 naming its metadata."""
    body = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": CLIENT_NAME, "version": "0"},
        },
    }
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    try:
        async with http.stream("POST", server_url, json=body, headers=headers) as response:
            # Read nothing: only the status and headers matter, and an unprotected server may
            # answer with a stream that never ends.
            if response.status_code in (401, 403):
                return (
                    extract_resource_metadata_from_www_auth(response),
                    extract_scope_from_www_auth(response),
                )
    except httpx2.HTTPError as exc:
        log.info("OAuth discovery: probing %s failed: %s", redact_url(server_url), type(exc).__name__)
    return None, None


async def _get_json(http: httpx2.AsyncClient, url: str) -> Any | None:
    try:
        response = await http.get(url, headers={"Accept": "application/json"})
    except httpx2.HTTPError as exc:
        log.info("OAuth discovery: GET %s failed: %s", redact_url(url), type(exc).__name__)
        return None
    if response.status_code != 200:
        return None
    try:
        return response.json()
    except ValueError:
        return None


async def _protected_resource_metadata(
    http: httpx2.AsyncClient, www_auth_url: str | None, server_url: str
) -> ProtectedResourceMetadata | None:
    for url in build_protected_resource_metadata_discovery_urls(www_auth_url, server_url):
        data = await _get_json(http, url)
        if data is None:
            continue
        try:
            return ProtectedResourceMetadata.model_validate(data)
        except ValidationError:
            log.info("OAuth discovery: invalid protected-resource metadata at %s", redact_url(url))
    return None


async def _authorization_server_metadata(
    http: httpx2.AsyncClient, auth_server_url: str | None, server_url: str
) -> OAuthMetadata | None:
    for url in build_oauth_authorization_server_metadata_discovery_urls(auth_server_url, server_url):
        data = await _get_json(http, url)
        if data is None:
            continue
        try:
            return OAuthMetadata.model_validate(data)
        except ValidationError:
            log.info("OAuth discovery: invalid authorization-server metadata at %s", redact_url(url))
    return None


# --- dynamic client registration -------------------------------------------------------------


def _preferred_auth_method(supported: tuple[str, ...]) -> str:
    # chatd is a server-side (confidential) client: prefer a secret when the server offers one.
    for method in ("client_secret_basic", "client_secret_post"):
        if method in supported:
            return method
    return "none"


async def register_client(
    http: httpx2.AsyncClient, server: AuthServer, redirect_uri: str, scopes: str | None
) -> ClientRegistration:
    """RFC 7591 registration at the server's registration endpoint."""
    if server.registration_endpoint is None:
        raise OAuthError(
            "The authorization server does not offer dynamic client registration; "
            "configure a client_id for this MCP server."
        )
    metadata = OAuthClientMetadata(
        redirect_uris=[AnyUrl(redirect_uri)],
        token_endpoint_auth_method=_preferred_auth_method(server.token_auth_methods),
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        client_name=CLIENT_NAME,
        scope=scopes,
        application_type="web",
    )
    payload = metadata.model_dump(by_alias=True, mode="json", exclude_none=True)
    try:
        response = await http.post(server.registration_endpoint, json=payload)
    except httpx2.HTTPError as exc:
        raise OAuthError(f"Client registration failed: {_transport_reason(exc)}.") from exc
    if response.status_code not in (200, 201):
        raise OAuthError(f"Client registration was refused: {_error_reason(response)}.")
    try:
        info = OAuthClientInformationFull.model_validate(response.json())
    except (ValueError, ValidationError) as exc:
        raise OAuthError("Client registration returned an invalid response.") from exc
    method = info.token_endpoint_auth_method or ("client_secret_basic" if info.client_secret else "none")
    if method not in ("none", "client_secret_basic", "client_secret_post"):
        raise OAuthError(f"The authorization server assigned an unsupported client auth method {method!r}.")
    return ClientRegistration(info.client_id, info.client_secret, method)


def metadata_document_client(server: AuthServer, document_url: str | None) -> ClientRegistration | None:
    """Client ID Metadata Documents (SEP-991): when the authorization server accepts them, the
    client's id is the https URL of its metadata document (`client_metadata_document`) and no
    registration is needed. A public client: no secret, PKCE only."""
    if not server.client_id_metadata_documents or not document_url or not document_url.startswith("https://"):
        return None
    return ClientRegistration(document_url, None, "none")


def client_metadata_document(document_url: str, redirect_uri: str) -> dict[str, Any]:
    """The document served at `document_url`: its own URL as client_id, what registration sends."""
    return {
        "client_id": document_url,
        "client_name": CLIENT_NAME,
        "redirect_uris": [redirect_uri],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "application_type": "web",
    }


def configured_client(settings: OAuth2Settings, server: AuthServer | None) -> ClientRegistration | None:
    """The client the admin configured, if any (it wins over dynamic registration)."""
    if not settings.client_id:
        return None
    if not settings.client_secret:
        return ClientRegistration(settings.client_id, None, "none")
    methods = server.token_auth_methods if server else ()
    # RFC 6749 §2.3.1: servers MUST support basic; use post only when it is all they list.
    method = "client_secret_post" if methods and "client_secret_basic" not in methods and "client_secret_post" in methods else "client_secret_basic"
    return ClientRegistration(settings.client_id, settings.client_secret, method)


# --- authorization request and token endpoint -------------------------------------------------


def authorization_url(
    server: AuthServer,
    client: ClientRegistration,
    *,
    redirect_uri: str,
    state: str,
    pkce: Pkce,
    scopes: str | None,
) -> str:
    if not server.authorization_endpoint:
        raise OAuthError("The authorization server has no authorization endpoint; configure authorize_url.")
    params = {
        "response_type": "code",
        "client_id": client.client_id,
        "redirect_uri": redirect_uri,
        "state": state,
        "code_challenge": pkce.challenge,
        "code_challenge_method": "S256",
    }
    if scopes:
        params["scope"] = scopes
    if server.resource:
        params["resource"] = server.resource
    separator = "&" if urlsplit(server.authorization_endpoint).query else "?"
    return f"{server.authorization_endpoint}{separator}{urlencode(params)}"


async def exchange_code(
    http: httpx2.AsyncClient,
    token_endpoint: str,
    client: ClientRegistration,
    *,
    code: str,
    code_verifier: str,
    redirect_uri: str,
    resource: str | None,
) -> TokenGrant:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": code_verifier,
    }
    return await _token_request(http, token_endpoint, client, data, resource)


async def refresh(
    http: httpx2.AsyncClient,
    token_endpoint: str,
    client: ClientRegistration,
    *,
    refresh_token: str,
    resource: str | None,
) -> TokenGrant:
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    return await _token_request(http, token_endpoint, client, data, resource)


async def client_credentials(
    http: httpx2.AsyncClient,
    token_endpoint: str,
    client: ClientRegistration,
    *,
    scopes: str | None,
    resource: str | None,
    client_assertion: str | None = None,
) -> TokenGrant:
    """The client-credentials grant; `client_assertion` is a signed JWT (RFC 7523, SEP-1046)
    that authenticates the client instead of a secret."""
    data = {"grant_type": "client_credentials"}
    if scopes:
        data["scope"] = scopes
    if client_assertion is not None:
        data["client_assertion_type"] = JWT_BEARER_ASSERTION
        data["client_assertion"] = client_assertion
    return await _token_request(http, token_endpoint, client, data, resource)


# Cross-app access (SEP-990, "Enterprise-managed authorization"): the user's identity provider
# turns their ID token into an identity assertion grant for one resource (RFC 8693 token
# exchange), which the MCP server's authorization server takes as a JWT bearer grant (RFC 7523).
TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"
ID_JAG_TYPE = "urn:ietf:params:oauth:token-type:id-jag"


async def identity_assertion_grant(
    http: httpx2.AsyncClient,
    idp_token_endpoint: str,
    idp_client: ClientRegistration,
    *,
    id_token: str,
    audience: str,
    resource: str,
    scopes: str | None = None,
) -> str:
    """Exchange the user's ID token at their identity provider for an ID-JAG naming `audience`
    (the MCP server's authorization server) and `resource` (the MCP server)."""
    data = {
        "grant_type": TOKEN_EXCHANGE_GRANT,
        "subject_token": id_token,
        "subject_token_type": ID_TOKEN_TYPE,
        "requested_token_type": ID_JAG_TYPE,
        "audience": audience,
    }
    if scopes:
        data["scope"] = scopes
    # The answer's access_token is the ID-JAG (token_type N_A: it is no access token).
    return (await _token_request(http, idp_token_endpoint, idp_client, data, resource)).access_token


async def jwt_bearer(
    http: httpx2.AsyncClient, token_endpoint: str, client: ClientRegistration, *, assertion: str, scopes: str | None = None
) -> TokenGrant:
    """An access token for an assertion (RFC 7523 §2.1), e.g. an ID-JAG; the client still
    authenticates (its secret, or none for a public client)."""
    data = {"grant_type": JWT_BEARER_GRANT, "assertion": assertion}
    if scopes:
        data["scope"] = scopes
    return await _token_request(http, token_endpoint, client, data, None)


JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# RFC 7523 §3: an assertion is single-use and short-lived.
_ASSERTION_LIFETIME = timedelta(minutes=5)


def jwt_client_assertion(
    client_id: str, private_key_pem: str, audience: str, now: datetime
) -> str:
    """An ES256-signed client assertion (RFC 7523 §2.2): iss = sub = client_id, aud = the
    authorization server's issuer."""
    key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise OAuthError("The client assertion key must be a P-256 EC key (ES256).")
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": int(now.timestamp()),
        "exp": int((now + _ASSERTION_LIFETIME).timestamp()),
        "jti": secrets.token_urlsafe(16),
    }
    signing_input = _b64url(json.dumps({"alg": "ES256", "typ": "JWT"}).encode()) + "." + _b64url(json.dumps(claims).encode())
    r, s = decode_dss_signature(key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256())))
    # JWS (RFC 7518 §3.4) wants the raw r || s, not DER.
    return signing_input + "." + _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


async def _token_request(
    http: httpx2.AsyncClient,
    token_endpoint: str,
    client: ClientRegistration,
    data: dict[str, str],
    resource: str | None,
) -> TokenGrant:
    if resource:
        data["resource"] = resource
    headers = {"Accept": "application/json"}
    if "client_assertion" in data:
        data["client_id"] = client.client_id
    elif client.auth_method == "client_secret_basic" and client.client_secret:
        creds = f"{quote(client.client_id, safe='')}:{quote(client.client_secret, safe='')}"
        headers["Authorization"] = "Basic " + base64.b64encode(creds.encode()).decode()
    else:
        data["client_id"] = client.client_id
        if client.auth_method == "client_secret_post" and client.client_secret:
            data["client_secret"] = client.client_secret
    grant = data["grant_type"]
    try:
        response = await http.post(token_endpoint, data=data, headers=headers)
    except httpx2.HTTPError as exc:
        raise OAuthError(f"The token request ({grant}) failed: {_transport_reason(exc)}.") from exc
    if response.status_code != 200:
        reason = _error_reason(response)
        if _error_code(response) == "invalid_grant":
            raise OAuthGrantRevoked(f"The authorization server rejected the grant ({grant}): {reason}.")
        raise OAuthError(f"The token request ({grant}) was refused: {reason}.")
    try:
        body = response.json()
        access_token = body["access_token"]
        if not isinstance(access_token, str) or not access_token:
            raise ValueError("empty access_token")
        expires_in = body.get("expires_in")
        return TokenGrant(
            access_token=access_token,
            token_type=str(body.get("token_type") or "Bearer"),
            refresh_token=body.get("refresh_token") or None,
            expires_in=int(expires_in) if expires_in is not None else None,
            scope=body.get("scope"),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise OAuthError(f"The token endpoint returned an invalid response ({grant}).") from exc


def _error_code(response: httpx2.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    code = body.get("error") if isinstance(body, dict) else None
    return code if isinstance(code, str) else None


def _error_reason(response: httpx2.Response) -> str:
    """The OAuth error code and description (RFC 6749 §5.2), never the raw body (it may echo secrets)."""
    code = _error_code(response)
    if code is None:
        return f"HTTP {response.status_code}"
    description = ""
    try:
        raw = response.json().get("error_description")
        if isinstance(raw, str) and raw:
            description = ": " + raw[:_MAX_DESCRIPTION]
    except (ValueError, AttributeError):
        pass
    return f"HTTP {response.status_code}, {json.dumps(code)[1:-1][:64]}{description}"


def _transport_reason(exc: httpx2.HTTPError) -> str:
    return type(exc).__name__


def merge_scopes(*scopes: str | None) -> str | None:
    """The union of space-separated scope strings, in first-seen order (a step-up asks for what
    it had plus what the challenge names, RFC 6750 §3.1 `insufficient_scope`)."""
    seen: dict[str, None] = {}
    for value in scopes:
        for scope in (value or "").split():
            seen.setdefault(scope, None)
    return " ".join(seen) or None
