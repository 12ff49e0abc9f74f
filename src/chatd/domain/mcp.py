"""An MCP server as an admin configured it, and the allowed values of its fields: one record,
used by the store, the service, the API and the MCP client alike."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from chatd.domain.actions import ApprovalPolicy


class McpTransport(enum.StrEnum):
    STREAMABLE_HTTP = "streamable_http"
    SSE = "sse"
    STDIO = "stdio"


class McpAuthType(enum.StrEnum):
    """How a connection authenticates (the headers are `mcp.config.auth_headers`)."""

    NONE = "none"
    OAUTH2 = "oauth2"
    API_KEY = "api_key"
    CUSTOM_HEADERS = "custom_headers"


class McpAvailability(enum.StrEnum):
    FORCE_ON = "force_on"
    DEFAULT_ON = "default_on"
    DEFAULT_OFF = "default_off"


class OAuth2GrantType(enum.StrEnum):
    # Each user connects in a browser.
    AUTHORIZATION_CODE = "authorization_code"
    # chatd itself holds one server-to-server token (no user involved).
    CLIENT_CREDENTIALS = "client_credentials"


@dataclass(frozen=True, slots=True)
class OAuth2Settings:
    """The OAuth2 client registration an admin configured for a server (also used to refresh)."""

    client_id: str | None = None
    client_secret: str | None = None  # decrypted; never leaves the server
    authorize_url: str | None = None
    token_url: str | None = None
    scopes: str | None = None
    grant_type: OAuth2GrantType = OAuth2GrantType.AUTHORIZATION_CODE


# A config built in code (tests, the conformance client) was never stored.
_NEVER = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class McpServerConfig:
    """One configured MCP server, secrets decrypted (they never leave the server)."""

    id: uuid.UUID
    slug: str
    display_name: str = ""
    description: str = ""
    url: str = ""
    transport: McpTransport = McpTransport.STREAMABLE_HTTP
    # stdio only: the admin-installed command, its arguments and extra environment variables.
    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    auth_type: McpAuthType = McpAuthType.NONE
    api_key_header: str = ""
    api_key_value: str | None = None
    custom_headers: dict[str, str] = field(default_factory=dict)
    oauth2: OAuth2Settings = field(default_factory=OAuth2Settings)
    tool_allow_list: tuple[str, ...] = ()
    tool_deny_list: tuple[str, ...] = ()
    enabled: bool = True
    availability: McpAvailability = McpAvailability.DEFAULT_OFF
    # Send X-Chatd-User-Id / X-Chatd-Chat-Id (an auth header of the same name wins).
    forward_identity: bool = False
    # Seconds; None = the deployment's default for the transport (see connect_timeout_for).
    connect_timeout_s: float | None = None
    call_timeout_s: float | None = None
    # Which calls wait for the chat owner's approval (human in the loop), and per-tool overrides
    # keyed by the tool's name on the server.
    approval: ApprovalPolicy = ApprovalPolicy.NEVER
    approval_overrides: dict[str, ApprovalPolicy] = field(default_factory=dict)
    created_at: datetime = _NEVER
    updated_at: datetime = _NEVER

    @property
    def label(self) -> str:
        return self.display_name or self.slug

    def connect_timeout_for(self, default: float, stdio_default: float) -> float:
        """The connect budget: the server's own setting, else the default for its transport.
        A stdio server starts a process (`npx -y …` can take half a minute), so it gets more."""
        if self.connect_timeout_s:
            return self.connect_timeout_s
        return max(default, stdio_default) if self.transport == McpTransport.STDIO else default

    def call_timeout_for(self, default: float) -> float:
        return self.call_timeout_s or default

    def approval_for(self, tool: str) -> ApprovalPolicy:
        return self.approval_overrides.get(tool, self.approval)


@dataclass(frozen=True, slots=True)
class McpUserToken:
    server_id: uuid.UUID
    user_id: uuid.UUID
    access_token: str
    refresh_token: str | None
    token_type: str
    expires_at: datetime | None


class McpHealth(enum.StrEnum):
    """What the last attempt to reach a server said (any replica, any user but OAuth ones)."""

    CONNECTED = "connected"
    FAILING = "failing"  # unreachable, timed out, refused, a bad answer
    UNAUTHORIZED = "unauthorized"  # 401/403 to the server's own credentials (not a user's token)


@dataclass(frozen=True, slots=True)
class McpServerStatus:
    server_id: uuid.UUID
    state: McpHealth
    reason: str | None
    last_error_at: datetime | None
    last_connected_at: datetime | None
    updated_at: datetime
    # Tools the last successful connect listed (after the allow/deny lists); None: not known.
    tool_count: int | None = None


@dataclass(frozen=True, slots=True)
class McpStatusView:
    """A server's status as one caller sees it."""

    health: McpServerStatus | None  # None: no attempt recorded yet
    # An OAuth2 (authorization code) server the caller has not connected in the browser.
    needs_authorization: bool
