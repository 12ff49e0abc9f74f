"""The client half of the official MCP conformance suite (`chatd mcp conformance-client URL`).

The suite starts a scripted server per scenario and runs this client against it, naming the
scenario in MCP_CONFORMANCE_SCENARIO and, for auth scenarios, handing credentials over in
MCP_CONFORMANCE_CONTEXT (JSON). Everything here goes through chatd's own client code: OAuth
discovery, registration and token requests from `chatd.mcp.oauth`, the connection (initialize,
paginated tools/list, tools/call) from `ServerConnection`. What a browser would do in the
authorization-code flow (follow the authorization endpoint's redirect back to us) is done by
hand: the suite's authorization server approves at once.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2

from chatd.domain.actions import ActionRequest, Answer, Decision
from chatd.domain.mcp import McpAuthType, McpServerConfig, OAuth2Settings
from chatd.mcp import oauth
from chatd.mcp.config import OAuthToken, connection_headers
from chatd.mcp.connection import ServerConnection
from chatd.mcp.errors import McpAuthError, McpError
from chatd.mcp.oauth import merge_scopes

log = logging.getLogger(__name__)

# A loopback redirect nobody listens on: the code is read from the Location header.
REDIRECT_URI = "http://127.0.0.1:3000/callback"
# The client's metadata document (SEP-991) as the suite knows it: its authorization server
# expects this id and does not fetch it. chatd itself serves its document under CHATD_PUBLIC_URL.
CLIENT_METADATA_URL = "https://conformance-test.local/client-metadata.json"
CONNECT_TIMEOUT = 10.0
CALL_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    context: dict[str, Any]

    @classmethod
    def parse(cls, name: str | None, context: str | None) -> Scenario:
        data: Any = json.loads(context) if context else {}
        return cls(name or "", data if isinstance(data, dict) else {})

    def text(self, key: str) -> str | None:
        value = self.context.get(key)
        return value if isinstance(value, str) and value else None


async def run_scenario(url: str, scenario: Scenario) -> None:
    """Connect, list tools and (for tools_call) call one; authorize first for auth scenarios.

    Raises McpError when the server cannot be used; the CLI maps that to exit status 1.
    """
    token: OAuthToken | None = None
    granted: str | None = None
    if scenario.name.startswith("auth/"):
        token, granted = await _authorize(url, scenario)
    try:
        await _use(url, scenario, token)
    except McpAuthError as exc:
        if not scenario.name.startswith("auth/"):
            raise
        # Step-up: the server wants a token for more scopes. A 403 insufficient_scope names them
        # (ask for those plus what was granted); without one, discovery reads the new challenge.
        # One retry only: a server that keeps refusing must not make the client loop
        # (auth/scope-retry-limit).
        wanted = merge_scopes(granted, exc.required_scope) if exc.required_scope else None
        token, _ = await _authorize(url, scenario, wanted)
        await _use(url, scenario, token)


async def _use(url: str, scenario: Scenario, token: OAuthToken | None) -> None:
    config = McpServerConfig(
        id=uuid.uuid4(),
        slug="conformance",
        url=url,
        auth_type=McpAuthType.OAUTH2 if token is not None else McpAuthType.NONE,
    )
    conn = ServerConnection(config, connection_headers(config, token, None), connect_timeout=CONNECT_TIMEOUT)
    conn.start()
    try:
        await conn.wait_ready()
        names = [t.name for t in conn.listing.tools]
        log.info("connected (%s); tools: %s", conn.protocol_version, names)
        if scenario.name == "tools_call" and "add_numbers" in names:
            result = await conn.call("add_numbers", {"a": 5, "b": 3}, call_timeout=CALL_TIMEOUT)
            log.info("add_numbers -> %s", result.content)
        elif scenario.name.startswith("elicitation") and "test_client_elicitation_defaults" in names:
            # No person here: accept the form as it comes, pre-filled (the client applies the
            # schema's defaults to what the answer leaves out).
            async def accept(_request: ActionRequest) -> Answer:
                return Answer(Decision.ACCEPT, content={})

            result = await conn.call("test_client_elicitation_defaults", {}, call_timeout=CALL_TIMEOUT, elicit=accept)
            log.info("test_client_elicitation_defaults -> %s", result.content)
        elif scenario.name == "sse-retry" and names:
            # The server ends the call's SSE stream after a priming event; the result only comes
            # after a reconnect that waits `retry` and sends Last-Event-ID (the SDK's transport).
            result = await conn.call(names[0], {}, call_timeout=CALL_TIMEOUT)
            log.info("%s -> %s", names[0], result.content)
        elif scenario.name.startswith("auth/") and names:
            # Auth scenarios check that the token is also used after initialize.
            try:
                await conn.call(names[0], {}, call_timeout=CALL_TIMEOUT)
            except McpError as exc:
                # A 403 on a call (insufficient_scope) surfaces as a call error; the hook kept the status.
                if conn.http_error_status in (401, 403):
                    raise McpAuthError("the server refused the token", conn.http_error_status, conn.scope_challenge) from exc
                raise
        if conn.http_error_status in (401, 403):
            raise McpAuthError("the server refused the token", conn.http_error_status, conn.scope_challenge)
    finally:
        await conn.aclose()


async def _authorize(url: str, scenario: Scenario, scopes: str | None = None) -> tuple[OAuthToken, str | None]:
    """A token, and the scopes asked for (`scopes`, else what discovery suggests)."""
    settings = OAuth2Settings(
        client_id=scenario.text("client_id"), client_secret=scenario.text("client_secret")
    )
    now = datetime.now(UTC)
    async with oauth.new_http_client() as http:
        server = await oauth.discover(http, url, settings, legacy_fallback=True)
        scopes = scopes or server.default_scopes
        if scenario.name.startswith("auth/client-credentials"):
            return await _client_credentials(http, server, scenario, scopes, now), scopes
        if (id_token := scenario.text("idp_id_token")) is not None:
            return await _cross_app_access(http, server, url, scenario, id_token, scopes, now), scopes
        client = (
            oauth.configured_client(settings, server)
            or oauth.metadata_document_client(server, CLIENT_METADATA_URL)
            or await oauth.register_client(http, server, REDIRECT_URI, scopes)
        )
        pkce = oauth.Pkce.generate()
        state = uuid.uuid4().hex
        location = oauth.authorization_url(
            server, client, redirect_uri=REDIRECT_URI, state=state, pkce=pkce, scopes=scopes
        )
        code = await _follow_authorization(http, location, state)
        grant = await oauth.exchange_code(
            http,
            server.token_endpoint,
            client,
            code=code,
            code_verifier=pkce.verifier,
            redirect_uri=REDIRECT_URI,
            resource=server.resource,
        )
        return grant.to_token(now), scopes


async def _client_credentials(
    http: httpx2.AsyncClient,
    server: oauth.AuthServer,
    scenario: Scenario,
    scopes: str | None,
    now: datetime,
) -> OAuthToken:
    client_id = scenario.text("client_id")
    if client_id is None:
        raise McpError("client-credentials scenario without a client_id in MCP_CONFORMANCE_CONTEXT")
    key = scenario.text("private_key_pem")
    if key is not None:
        audience = server.issuer or server.token_endpoint
        assertion = oauth.jwt_client_assertion(client_id, key, audience, now)
        client = oauth.ClientRegistration(client_id, None, "private_key_jwt")
        grant = await oauth.client_credentials(
            http, server.token_endpoint, client, scopes=scopes, resource=server.resource, client_assertion=assertion
        )
    else:
        client = oauth.configured_client(
            OAuth2Settings(client_id=client_id, client_secret=scenario.text("client_secret")), server
        ) or oauth.ClientRegistration(client_id)
        grant = await oauth.client_credentials(
            http, server.token_endpoint, client, scopes=scopes, resource=server.resource
        )
    return grant.to_token(now)


async def _cross_app_access(
    http: httpx2.AsyncClient,
    server: oauth.AuthServer,
    url: str,
    scenario: Scenario,
    id_token: str,
    scopes: str | None,
    now: datetime,
) -> OAuthToken:
    """SEP-990: the ID token the user got from their identity provider, exchanged there for an
    ID-JAG, then at the MCP server's authorization server for an access token."""
    idp_endpoint = scenario.text("idp_token_endpoint")
    if idp_endpoint is None:
        raise McpError("cross-app access scenario without idp_token_endpoint in MCP_CONFORMANCE_CONTEXT")
    idp_client = oauth.ClientRegistration(scenario.text("idp_client_id") or "chatd")
    jag = await oauth.identity_assertion_grant(
        http, idp_endpoint, idp_client, id_token=id_token, audience=server.issuer or server.token_endpoint,
        resource=server.resource or url, scopes=scopes,
    )
    client = oauth.configured_client(
        OAuth2Settings(client_id=scenario.text("client_id"), client_secret=scenario.text("client_secret")), server
    ) or oauth.ClientRegistration(scenario.text("client_id") or "chatd")
    grant = await oauth.jwt_bearer(http, server.token_endpoint, client, assertion=jag, scopes=scopes)
    return grant.to_token(now)


async def _follow_authorization(http: httpx2.AsyncClient, location: str, state: str) -> str:
    """Play the browser: GET the authorization URL and read the code from its redirect."""
    for _ in range(5):
        try:
            response = await http.get(location)
        except httpx2.HTTPError as exc:
            raise McpError(f"authorization request failed: {type(exc).__name__}") from exc
        target = response.headers.get("location")
        if response.status_code not in (301, 302, 303, 307, 308) or not target:
            raise McpError(f"authorization endpoint answered HTTP {response.status_code} without a redirect")
        location = str(response.url.join(target))
        if location.startswith(REDIRECT_URI):
            query = parse_qs(urlsplit(location).query)
            if query.get("state", [None])[0] != state:
                raise McpError("authorization redirect carried a wrong state")
            code = query.get("code", [None])[0]
            if not code:
                raise McpError(f"authorization was refused: {query.get('error', ['?'])[0]}")
            return code
    raise McpError("too many redirects from the authorization endpoint")
