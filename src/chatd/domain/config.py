"""Admin-managed configuration records: users, providers, model configs, MCP servers, limits."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from chatd.domain.chat import UserRole

PROVIDER_KINDS = ("anthropic", "openai", "openai-compatible", "google")


@dataclass(frozen=True, slots=True)
class User:
    id: uuid.UUID
    username: str
    role: UserRole
    created_at: datetime
    custom_prompt: str = ""

    @property
    def is_admin(self) -> bool:
        return self.role is UserRole.ADMIN


@dataclass(frozen=True, slots=True)
class ApiToken:
    """An API token as listed: never the token itself (only its hash is stored)."""

    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    created_at: datetime
    last_used_at: datetime | None


@dataclass(frozen=True, slots=True)
class ProviderRecord:
    id: uuid.UUID
    provider: str
    display_name: str
    api_key: str | None  # decrypted; never leaves the server
    base_url: str | None
    enabled: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ModelOptions:
    max_output_tokens: int | None = None
    temperature: float | None = None
    reasoning_effort: str | None = None
    web_search: bool = False


@dataclass(frozen=True, slots=True)
class Pricing:
    """Micro-dollars per million tokens; None = not priced."""

    input: int | None = None
    output: int | None = None
    cache_read: int | None = None
    cache_write: int | None = None
    reasoning: int | None = None


@dataclass(frozen=True, slots=True)
class ModelConfigRecord:
    id: uuid.UUID
    provider: str
    model: str
    display_name: str
    context_limit: int
    compression_threshold: int
    is_default: bool
    enabled: bool
    options: ModelOptions
    pricing: Pricing
    created_at: datetime
    updated_at: datetime


class McpTransport(enum.StrEnum):
    STREAMABLE_HTTP = "streamable_http"
    SSE = "sse"
    STDIO = "stdio"


class McpAuthType(enum.StrEnum):
    NONE = "none"
    OAUTH2 = "oauth2"
    API_KEY = "api_key"
    CUSTOM_HEADERS = "custom_headers"


class McpAvailability(enum.StrEnum):
    FORCE_ON = "force_on"
    DEFAULT_ON = "default_on"
    DEFAULT_OFF = "default_off"


OAUTH2_GRANT_TYPES = ("authorization_code", "client_credentials")


@dataclass(frozen=True, slots=True)
class OAuth2Settings:
    client_id: str | None = None
    client_secret: str | None = None  # decrypted; never leaves the server
    authorize_url: str | None = None
    token_url: str | None = None
    scopes: str | None = None
    # "authorization_code": each user connects in a browser; "client_credentials": chatd itself
    # holds one server-to-server token (no user involved).
    grant_type: str = "authorization_code"


@dataclass(frozen=True, slots=True)
class McpServerRecord:
    id: uuid.UUID
    slug: str
    display_name: str
    description: str
    url: str
    transport: McpTransport
    command: str | None
    args: list[str]
    auth_type: McpAuthType
    api_key_header: str
    api_key_value: str | None  # decrypted; never leaves the server
    custom_headers: dict[str, str]  # decrypted; never leaves the server
    oauth2: OAuth2Settings
    tool_allow_list: list[str]
    tool_deny_list: list[str]
    enabled: bool
    availability: McpAvailability
    created_at: datetime
    updated_at: datetime
    forward_identity: bool = False
    # stdio only: extra environment variables (decrypted; values never leave the server).
    env: dict[str, str] = field(default_factory=dict)
    # Seconds; None = the deployment's default for the transport.
    connect_timeout_s: float | None = None
    call_timeout_s: float | None = None


@dataclass(frozen=True, slots=True)
class McpUserToken:
    server_id: uuid.UUID
    user_id: uuid.UUID
    access_token: str
    refresh_token: str | None
    token_type: str
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class StoredFile:
    id: uuid.UUID
    owner_id: uuid.UUID
    name: str
    media_type: str
    size: int
    created_at: datetime
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class UsageLimit:
    scope: str  # "global" | "user"
    user_id: uuid.UUID | None
    period: str  # "day" | "week" | "month"
    limit_micros: int


@dataclass(frozen=True, slots=True)
class UsageStatus:
    period: str | None
    period_start: datetime | None
    period_end: datetime | None
    spent_micros: int
    limit_micros: int | None
    extra: dict[str, Any] = field(default_factory=dict)
