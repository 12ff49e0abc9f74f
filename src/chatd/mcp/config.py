"""The rules on an MCP server's config (`domain.mcp.McpServerConfig`) and a user's token: slugs,
auth headers, redaction."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import assert_never
from urllib.parse import urlsplit, urlunsplit

from chatd.domain.mcp import McpAuthType, McpServerConfig, McpUserToken
from chatd.errors import InvalidInput

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
    """The HTTP headers a connection to `config` carries for its auth type (mypy checks that
    every auth type has its case)."""
    match config.auth_type:
        case McpAuthType.OAUTH2:
            if token is None or not token.access_token:
                return {}
            # Token types come back as "bearer" from many servers; RFC 6750 spells it "Bearer".
            kind = token.token_type if token.token_type and token.token_type.lower() != "bearer" else "Bearer"
            return {"Authorization": f"{kind} {token.access_token}"}
        case McpAuthType.API_KEY:
            if config.api_key_header and config.api_key_value:
                return {config.api_key_header: config.api_key_value}
            return {}
        case McpAuthType.CUSTOM_HEADERS:
            return {str(k): str(v) for k, v in config.custom_headers.items() if k}
        case McpAuthType.NONE:
            return {}
        case other:
            assert_never(other)


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
