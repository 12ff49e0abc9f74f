"""OAuth2 for MCP servers, orchestrated: the browser flow a user starts from the API, and tokens
that are fresh when a turn (or a connection check) needs them.

- `start` / `finish`: authorization code with PKCE. The state is 32 random bytes, stored only as
  its sha256 with the user, the server, the PKCE verifier and a 10-minute expiry, and taken
  (deleted) by the callback, so it works once. Discovery (RFC 9728, RFC 8414) runs at start;
  explicit authorize/token URLs and client_id from the config win; without a client_id chatd
  registers itself (RFC 7591) once per server and redirect URI.
- `fresh_token` / `tokens_for`: refresh proactively, `REFRESH_SKEW` plus up to `REFRESH_JITTER`
  seconds before expiry (the jitter spreads the refreshes of many turns and replicas), and
  single-flight per (user, server): an in-process lock, then the vault's row lock (PostgreSQL
  `FOR UPDATE`) so a second replica waits and reads the rotated token instead of spending the
  same refresh token again — servers that rotate refresh tokens revoke the grant on reuse.
- `refresh_after_unauthorized`: the same, forced, when a server answered 401 to a token.
- Client credentials (server-to-server configs): one token per server, cached in process; it
  has no refresh token to race, so each replica may hold its own.

Storage goes through `OAuthVault` (implemented in `chatd.store.mcp_oauth`); only HTTP lives in
`chatd.mcp.oauth`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import secrets
import uuid
import weakref
from collections.abc import Callable, Hashable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import httpx2

from chatd.domain.clock import Clock
from chatd.domain.mcp import McpAuthType, McpServerConfig, McpUserToken, OAuth2GrantType
from chatd.domain.oauth import OAuthClientRecord, PendingAuthorization
from chatd.errors import InvalidInput, NotFound
from chatd.mcp import oauth
from chatd.mcp.config import OAuthToken
from chatd.mcp.oauth import AuthServer, ClientRegistration, OAuthError, OAuthGrantRevoked

log = logging.getLogger(__name__)

STATE_TTL = timedelta(minutes=10)
REFRESH_SKEW = 60.0
REFRESH_JITTER = 30.0


class TokenHolder(Protocol):
    """A user's token row, held (locked) for the duration of a refresh."""

    token: McpUserToken | None

    async def save(self, token: McpUserToken) -> None: ...

    async def delete(self) -> None: ...


class OAuthVault(Protocol):
    async def server(self, server_id: uuid.UUID) -> McpServerConfig: ...

    async def client(self, server_id: uuid.UUID) -> OAuthClientRecord | None: ...

    async def save_client(self, record: OAuthClientRecord) -> None: ...

    async def save_pending(self, pending: PendingAuthorization) -> None: ...

    async def take_pending(self, state_hash: str, now: datetime) -> PendingAuthorization | None: ...

    async def token(self, server_id: uuid.UUID, user_id: uuid.UUID) -> McpUserToken | None: ...

    async def save_token(self, token: McpUserToken, now: datetime) -> None: ...

    def token_for_refresh(
        self, server_id: uuid.UUID, user_id: uuid.UUID, now: datetime
    ) -> AbstractAsyncContextManager[TokenHolder]: ...


@dataclass(frozen=True, slots=True)
class Connected:
    """The outcome of a completed browser authorization."""

    server_id: uuid.UUID
    user_id: uuid.UUID
    expires_at: datetime | None


def state_hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


class McpAuthorization:
    def __init__(
        self,
        vault: OAuthVault,
        clock: Clock,
        *,
        http_client: Callable[[], httpx2.AsyncClient] = oauth.new_http_client,
        refresh_skew: float = REFRESH_SKEW,
        refresh_jitter: float = REFRESH_JITTER,
        rng: random.Random | None = None,
    ) -> None:
        self.vault = vault
        self.clock = clock
        self._http = http_client
        self._skew = refresh_skew
        self._jitter = refresh_jitter
        self._rng = rng or random.Random()
        # One lock per (user, server) while anyone holds it; gone when nobody does.
        self._locks: weakref.WeakValueDictionary[Hashable, asyncio.Lock] = weakref.WeakValueDictionary()
        self._server_tokens: dict[uuid.UUID, tuple[Hashable, OAuthToken]] = {}

    # --- the browser flow ---------------------------------------------------------------------

    async def start(
        self, config: McpServerConfig, user_id: uuid.UUID, redirect_uri: str, *, client_metadata_url: str | None = None
    ) -> str:
        """Prepare a browser authorization for `user_id`; returns the URL to open.

        Without a configured client_id, chatd is identified by `client_metadata_url` (its Client
        ID Metadata Document, when chatd has a public https URL) where the authorization server
        accepts those, else it registers itself (RFC 7591) once per server and redirect URI."""
        _check_user_flow(config)
        now = self.clock.now()
        async with self._http() as http:
            server = await oauth.discover(http, config.url, config.oauth2)
            scopes = config.oauth2.scopes or server.default_scopes
            client = oauth.configured_client(config.oauth2, server)
            dynamic = client is None
            if client is None:
                known = await self.vault.client(config.id)
                if (
                    known is not None
                    and known.dynamic
                    and known.server_url == config.url
                    and known.redirect_uri == redirect_uri
                    and known.issuer == server.issuer
                    # A metadata-document id stays valid only while the server accepts those.
                    and (known.client_id != client_metadata_url or server.client_id_metadata_documents)
                ):
                    client = ClientRegistration(known.client_id, known.client_secret, known.auth_method)
                elif (document := oauth.metadata_document_client(server, client_metadata_url)) is not None:
                    # Kept like a registered client (refresh and the callback find it the same way).
                    client = document
                    log.info("MCP server %s: identified by the client metadata document %s", config.slug, client.client_id)
                else:
                    client = await oauth.register_client(http, server, redirect_uri, scopes)
                    log.info("MCP server %s: registered OAuth client %s", config.slug, client.client_id)
        await self.vault.save_client(
            OAuthClientRecord(
                server_id=config.id,
                server_url=config.url,
                redirect_uri=redirect_uri,
                issuer=server.issuer,
                authorization_endpoint=server.authorization_endpoint,
                token_endpoint=server.token_endpoint,
                resource=server.resource,
                client_id=client.client_id,
                client_secret=client.client_secret if dynamic else None,
                auth_method=client.auth_method,
                dynamic=dynamic,
                created_at=now,
            )
        )
        state = secrets.token_urlsafe(32)
        pkce = oauth.Pkce.generate()
        url = oauth.authorization_url(
            server, client, redirect_uri=redirect_uri, state=state, pkce=pkce, scopes=scopes
        )
        await self.vault.save_pending(
            PendingAuthorization(
                state_hash=state_hash(state),
                server_id=config.id,
                user_id=user_id,
                code_verifier=pkce.verifier,
                redirect_uri=redirect_uri,
                client_id=client.client_id,
                auth_method=client.auth_method,
                token_endpoint=server.token_endpoint,
                resource=server.resource,
                created_at=now,
                expires_at=now + STATE_TTL,
            )
        )
        return url

    async def finish(self, state: str, code: str | None, error: str | None = None) -> Connected:
        """The callback: take the state (once), exchange the code, store the user's token."""
        if not state:
            raise InvalidInput("The callback has no state parameter.")
        pending = await self.vault.take_pending(state_hash(state), self.clock.now())
        if pending is None:
            raise InvalidInput(
                "This authorization is unknown, was already used or has expired; start it again."
            )
        if error:
            raise InvalidInput(f"The authorization server did not authorize chatd: {error[:200]}.")
        if not code:
            raise InvalidInput("The callback has no code parameter.")
        try:
            config = await self.vault.server(pending.server_id)
        except NotFound as exc:
            raise InvalidInput("The MCP server of this authorization no longer exists.") from exc
        client = await self._pending_client(config, pending)
        async with self._http() as http:
            grant = await oauth.exchange_code(
                http,
                pending.token_endpoint,
                client,
                code=code,
                code_verifier=pending.code_verifier,
                redirect_uri=pending.redirect_uri,
                resource=pending.resource,
            )
        now = self.clock.now()
        token = grant.to_token(now)
        await self.vault.save_token(_record(config.id, pending.user_id, token), now)
        log.info("MCP server %s: user %s connected via OAuth", config.slug, pending.user_id)
        return Connected(config.id, pending.user_id, token.expires_at)

    async def _pending_client(
        self, config: McpServerConfig, pending: PendingAuthorization
    ) -> ClientRegistration:
        if config.oauth2.client_id == pending.client_id:
            secret = config.oauth2.client_secret
            return ClientRegistration(pending.client_id, secret, pending.auth_method if secret else "none")
        known = await self.vault.client(config.id)
        if known is not None and known.dynamic and known.client_id == pending.client_id:
            return ClientRegistration(known.client_id, known.client_secret, known.auth_method)
        raise InvalidInput("The OAuth client of this MCP server changed meanwhile; start again.")

    # --- fresh tokens ---------------------------------------------------------------------------

    async def fresh_token(self, user_id: uuid.UUID, server_id: uuid.UUID) -> OAuthToken | None:
        """The user's token for the server, refreshed first when it is due; None when there is no
        usable one (never connected, grant revoked, expired and not refreshable)."""
        try:
            config = await self.vault.server(server_id)
        except NotFound:
            return None
        return await self.token_for(config, user_id)

    async def tokens_for(
        self, user_id: uuid.UUID, servers: Sequence[McpServerConfig]
    ) -> dict[uuid.UUID, OAuthToken]:
        """Fresh tokens for every OAuth2 server among `servers`, concurrently (a turn's
        `TokenSource`). A server whose token cannot be had is left out and logged."""
        configs = [c for c in servers if c.auth_type == McpAuthType.OAUTH2]
        out: dict[uuid.UUID, OAuthToken] = {}

        async def one(config: McpServerConfig) -> None:
            try:
                token = await self.token_for(config, user_id)
            except Exception:  # one server's token must not cost the turn the others
                log.warning("MCP server %s: loading the OAuth token failed", config.slug, exc_info=True)
                return
            if token is not None:
                out[config.id] = token

        async with asyncio.TaskGroup() as tg:
            for config in configs:
                tg.create_task(one(config), name=f"mcp-token-{config.slug}")
        return out

    async def refresh_after_unauthorized(
        self, user_id: uuid.UUID, config: McpServerConfig, rejected: OAuthToken
    ) -> OAuthToken | None:
        """The server answered 401 to `rejected`: refresh it (once, however many callers saw the
        401) and return the new token, or None when there is nothing better to offer."""
        token = await self.token_for(config, user_id, rejected=rejected.access_token)
        if token is None or token.access_token == rejected.access_token:
            return None
        return token

    async def token_for(
        self, config: McpServerConfig, user_id: uuid.UUID, *, rejected: str | None = None
    ) -> OAuthToken | None:
        if config.auth_type != McpAuthType.OAUTH2:
            return None
        if config.oauth2.grant_type == OAuth2GrantType.CLIENT_CREDENTIALS:
            return await self._server_token(config, rejected)
        stored = await self.vault.token(config.id, user_id)
        if stored is None:
            return None
        margin = self._margin()
        if not self._due(OAuthToken.from_record(stored), margin, rejected):
            return OAuthToken.from_record(stored)
        # In-process first (cheap; the other tasks of this replica queue here), then the row lock
        # (other replicas). The row lock is entered after the in-process one (nested semantics).
        async with (
            self._lock(("user", user_id, config.id)),
            self.vault.token_for_refresh(config.id, user_id, self.clock.now()) as held,
        ):
            if held.token is None:
                return None
            current = OAuthToken.from_record(held.token)
            # Another task or replica may have refreshed while this one waited.
            if not self._due(current, margin, rejected):
                return current
            expired = rejected is not None or current.expires_within(self.clock.now(), timedelta(0))
            if not current.refresh_token:
                log.info("MCP server %s: the OAuth token is due and has no refresh token", config.slug)
                return None if expired else current
            try:
                grant = await self._refresh(config, current.refresh_token)
            except OAuthGrantRevoked as exc:
                log.warning(
                    "MCP server %s: the refresh token was rejected (%s); the user must connect again",
                    config.slug,
                    exc.message,
                )
                await held.delete()
                return None
            except OAuthError as exc:
                log.warning("MCP server %s: refreshing the OAuth token failed: %s", config.slug, exc.message)
                return None if expired else current
            now = self.clock.now()
            fresh = grant.to_token(now, previous_refresh_token=current.refresh_token)
            await held.save(_record(config.id, user_id, fresh))
            log.info("MCP server %s: refreshed the OAuth token of user %s", config.slug, user_id)
            return fresh

    async def _refresh(self, config: McpServerConfig, refresh_token: str) -> oauth.TokenGrant:
        known = await self.vault.client(config.id)
        if known is not None and known.server_url != config.url:
            known = None
        async with self._http() as http:
            server: AuthServer | None = None
            token_endpoint = config.oauth2.token_url or (known.token_endpoint if known else None)
            if token_endpoint is None:
                server = await oauth.discover(http, config.url, config.oauth2)
                token_endpoint = server.token_endpoint
            client = _client(config, known, server)
            if client is None:
                raise OAuthError("No OAuth client is known for this server; the user must connect again.")
            resource = known.resource if known else (server.resource if server else None)
            return await oauth.refresh(
                http, token_endpoint, client, refresh_token=refresh_token, resource=resource
            )

    async def _server_token(self, config: McpServerConfig, rejected: str | None) -> OAuthToken | None:
        """Client credentials: chatd's own token for the server, shared by every user."""
        o = config.oauth2
        fingerprint = (config.url, o.client_id, o.token_url, o.scopes)
        margin = self._margin()

        def cached() -> OAuthToken | None:
            entry = self._server_tokens.get(config.id)
            if entry is None or entry[0] != fingerprint or self._due(entry[1], margin, rejected):
                return None
            return entry[1]

        if (token := cached()) is not None:
            return token
        async with self._lock(("server", config.id)):
            if (token := cached()) is not None:
                return token
            if not o.client_id:
                log.warning("MCP server %s: client credentials need a client_id", config.slug)
                return None
            try:
                async with self._http() as http:
                    if o.token_url:
                        server = AuthServer(issuer=None, authorization_endpoint=None, token_endpoint=o.token_url)
                    else:
                        server = await oauth.discover(http, config.url, o)
                    client = oauth.configured_client(o, server)
                    assert client is not None
                    grant = await oauth.client_credentials(
                        http,
                        server.token_endpoint,
                        client,
                        scopes=o.scopes or server.default_scopes,
                        resource=server.resource,
                    )
            except OAuthError as exc:
                log.warning("MCP server %s: the client-credentials grant failed: %s", config.slug, exc.message)
                self._server_tokens.pop(config.id, None)
                return None
            token = grant.to_token(self.clock.now())
            self._server_tokens[config.id] = (fingerprint, token)
            return token

    # --- helpers ----------------------------------------------------------------------------------

    def _lock(self, key: Hashable) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[key] = lock
        return lock

    def _margin(self) -> timedelta:
        return timedelta(seconds=self._skew + self._rng.uniform(0, self._jitter))

    def _due(self, token: OAuthToken, margin: timedelta, rejected: str | None) -> bool:
        if rejected is not None and token.access_token == rejected:
            return True
        return token.expires_within(self.clock.now(), margin)


def _check_user_flow(config: McpServerConfig) -> None:
    if config.auth_type != McpAuthType.OAUTH2:
        raise InvalidInput("This MCP server does not use OAuth2.")
    if config.oauth2.grant_type == OAuth2GrantType.CLIENT_CREDENTIALS:
        raise InvalidInput(
            "This MCP server uses client credentials: chatd authorizes itself, no user sign-in is needed."
        )
    if config.transport == "stdio" or not config.url:
        raise InvalidInput("OAuth2 needs an HTTP MCP server (streamable_http or sse) with a URL.")


def _client(
    config: McpServerConfig, known: OAuthClientRecord | None, server: AuthServer | None
) -> ClientRegistration | None:
    o = config.oauth2
    if o.client_id:
        if not o.client_secret:
            return ClientRegistration(o.client_id, None, "none")
        if known is not None and not known.dynamic and known.client_id == o.client_id:
            return ClientRegistration(o.client_id, o.client_secret, known.auth_method)
        return oauth.configured_client(o, server)
    if known is not None and known.dynamic:
        return ClientRegistration(known.client_id, known.client_secret, known.auth_method)
    return None


def _record(server_id: uuid.UUID, user_id: uuid.UUID, token: OAuthToken) -> McpUserToken:
    return McpUserToken(
        server_id=server_id,
        user_id=user_id,
        access_token=token.access_token,
        refresh_token=token.refresh_token,
        token_type=token.token_type,
        expires_at=token.expires_at,
    )
