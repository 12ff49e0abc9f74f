"""What the MCP client needs to know about a server and a user's token, and the rules on them."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

from chatd.errors import InvalidInput

if TYPE_CHECKING:
    from chatd.domain.config import McpServerRecord, McpUserToken

Transport = Literal["streamable_http", "sse", "stdio"]
AuthType = Literal["none", "oauth2", "api_key", "custom_headers"]
Availability = Literal["force_on", "default_on", "default_off"]
GrantType = Literal["authorization_code", "client_credentials"]

TRANSPORTS: tuple[Transport, ...] = ("streamable_http", "sse", "stdio")
AUTH_TYPES: tuple[AuthType, ...] = ("none", "oauth2", "api_key", "custom_headers")
AVAILABILITIES: tuple[Availability, ...] = ("force_on", "default_on", "default_off")
GRANT_TYPES: tuple[GrantType, ...] = ("authorization_code", "client_credentials")

# Slugs prefix tool names (`slug__tool`), so they must be short, safe for every provider's
# tool-name rule, and free of `__`, which would make the prefix ambiguous to a reader.
_SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$")
SLUG_MAX_LEN = 32


def validate_slug(slug: str) -> str:
    """Return `slug` if it is a valid MCP server slug, else raise InvalidInput saying why."""
    if not slug:
        raise InvalidInput("The MCP server slug must not be empty.")
    if "__" in slug:
        raise InvalidInput(
            "The MCP server slug must not contain '__' (it separates slug and tool name)."
        )
    if len(slug) > SLUG_MAX_LEN:
        raise InvalidInput(f"The MCP server slug must be at most {SLUG_MAX_LEN} characters.")
    if not _SLUG_RE.match(slug):
        raise InvalidInput(
            "The MCP server slug may contain only lowercase letters, digits and '-', "
            "and must start and end with a letter or digit."
        )
    return slug


@dataclass(frozen=True, slots=True)
class OAuth2ClientSettings:
    """The OAuth2 client registration an admin configured for a server (used to refresh tokens)."""

    client_id: str | None = None
    client_secret: str | None = None
    authorize_url: str | None = None
    token_url: str | None = None
    scopes: str | None = None
    grant_type: GrantType = "authorization_code"


@dataclass(frozen=True, slots=True)
class McpServerConfig:
    """One configured MCP server, as the store hands it to the MCP client (secrets decrypted)."""

    id: uuid.UUID
    slug: str
    display_name: str = ""
    url: str = ""
    transport: Transport = "streamable_http"
    # stdio only: the admin-installed command, its arguments and extra environment variables.
    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    auth_type: AuthType = "none"
    api_key_header: str = ""
    api_key_value: str | None = None
    custom_headers: dict[str, str] = field(default_factory=dict)
    oauth2: OAuth2ClientSettings = field(default_factory=OAuth2ClientSettings)
    tool_allow_list: tuple[str, ...] = ()
    tool_deny_list: tuple[str, ...] = ()
    enabled: bool = True
    availability: Availability = "default_off"
    # Send X-Chatd-User-Id / X-Chatd-Chat-Id (an auth header of the same name wins).
    forward_identity: bool = False
    # Seconds; None = the caller's default for the transport (see connect_timeout_for).
    connect_timeout_s: float | None = None
    call_timeout_s: float | None = None

    @property
    def label(self) -> str:
        return self.display_name or self.slug

    @classmethod
    def from_record(cls, record: McpServerRecord) -> McpServerConfig:
        """Map the store's record (chatd.domain.config.McpServerRecord) onto a client config."""
        o = record.oauth2
        return cls(
            id=record.id,
            slug=record.slug,
            display_name=record.display_name,
            url=record.url,
            transport=_literal(str(record.transport), TRANSPORTS, "streamable_http"),
            command=record.command,
            args=tuple(record.args),
            env=dict(record.env),
            auth_type=_literal(str(record.auth_type), AUTH_TYPES, "none"),
            api_key_header=record.api_key_header,
            api_key_value=record.api_key_value,
            custom_headers=dict(record.custom_headers),
            oauth2=OAuth2ClientSettings(
                client_id=o.client_id,
                client_secret=o.client_secret,
                authorize_url=o.authorize_url,
                token_url=o.token_url,
                scopes=o.scopes,
                grant_type=_literal(str(o.grant_type), GRANT_TYPES, "authorization_code"),
            ),
            tool_allow_list=tuple(record.tool_allow_list),
            tool_deny_list=tuple(record.tool_deny_list),
            enabled=record.enabled,
            availability=_literal(str(record.availability), AVAILABILITIES, "default_off"),
            forward_identity=record.forward_identity,
            connect_timeout_s=record.connect_timeout_s,
            call_timeout_s=record.call_timeout_s,
        )

    def connect_timeout_for(self, default: float, stdio_default: float) -> float:
        """The connect budget: the server's own setting, else the default for its transport.
        A stdio server starts a process (`npx -y …` can take half a minute), so it gets more."""
        if self.connect_timeout_s:
            return self.connect_timeout_s
        return max(default, stdio_default) if self.transport == "stdio" else default

    def call_timeout_for(self, default: float) -> float:
        return self.call_timeout_s or default


_T = TypeVar("_T", bound=str)


def _literal(value: str, allowed: tuple[_T, ...], default: _T) -> _T:
    for a in allowed:
        if a == value:
            return a
    return default


@dataclass(frozen=True, slots=True)
class OAuthToken:
    """A user's OAuth2 token for one server."""

    access_token: str
    refresh_token: str | None = None
    token_type: str = "Bearer"
    expires_at: datetime | None = None

    def expires_within(self, now: datetime, margin: timedelta) -> bool:
        return self.expires_at is not None and self.expires_at - margin <= now

    @classmethod
    def from_record(cls, record: McpUserToken) -> OAuthToken:
        return cls(
            access_token=record.access_token,
            refresh_token=record.refresh_token,
            token_type=record.token_type or "Bearer",
            expires_at=record.expires_at,
        )


def connection_headers(
    config: McpServerConfig, token: OAuthToken | None, identity: tuple[uuid.UUID, uuid.UUID] | None
) -> dict[str, str]:
    """Auth headers, plus the caller's identity when the server is configured to receive it;
    on a name collision (case-insensitive) the auth header wins."""
    headers = auth_headers(config, token)
    if config.forward_identity and identity is not None:
        taken = {k.lower() for k in headers}
        user_id, chat_id = identity
        for name, value in (("X-Chatd-User-Id", str(user_id)), ("X-Chatd-Chat-Id", str(chat_id))):
            if name.lower() not in taken:
                headers[name] = value
    return headers


def auth_headers(config: McpServerConfig, token: OAuthToken | None) -> dict[str, str]:
    """The HTTP headers a connection to `config` carries for its auth type."""
    if config.auth_type == "oauth2":
        if token is None or not token.access_token:
            return {}
        # Token types come back as "bearer" from many servers; RFC 6750 spells it "Bearer".
        kind = (
            token.token_type
            if token.token_type and token.token_type.lower() != "bearer"
            else "Bearer"
        )
        return {"Authorization": f"{kind} {token.access_token}"}
    if config.auth_type == "api_key":
        if config.api_key_header and config.api_key_value:
            return {config.api_key_header: config.api_key_value}
        return {}
    if config.auth_type == "custom_headers":
        return {str(k): str(v) for k, v in config.custom_headers.items() if k}
    return {}


def redact_url(url: str) -> str:
    """The URL without user-info, query and fragment, for logs and error messages."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port is not None else host
    except ValueError:
        return "<invalid url>"
    if not parts.scheme and not netloc:
        # Not a URL at all; the whole string may be a secret, so say nothing about it.
        return "<invalid url>" if url else ""
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def redact_text(text: str, config: McpServerConfig) -> str:
    """Scrub the server URL and every configured secret out of an error text."""
    if config.url:
        text = text.replace(config.url, redact_url(config.url))
    # A stdio server's stderr may echo its environment (keys) back in an error.
    secrets = [config.api_key_value or "", *config.custom_headers.values(), *config.env.values()]
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    # URLs inside error strings (redirect locations, endpoint URLs) may carry tokens in queries.
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


_URL_IN_TEXT = re.compile(r"https?://[^\s'\"<>]+")
