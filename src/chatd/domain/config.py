"""Admin-managed configuration records: users, providers, model configs, files, limits (MCP servers:
`domain.mcp`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from chatd.domain.chat import UserRole


@dataclass(frozen=True, slots=True)
class User:
    id: uuid.UUID
    username: str
    role: UserRole
    created_at: datetime
    custom_prompt: str = ""
    # When an admin disabled the user (their tokens are refused), or None.
    disabled_at: datetime | None = None

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
    # Unique, the admin's choice ("ollama", "vllm-gpu1"); model configs may name a provider by it.
    name: str
    # The kind (`providers.registry`); several providers may share one.
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
    # The model accepts images (user attachments, images tools return); false: tool images reach
    # it as a note.
    images: bool = True


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
    provider_id: uuid.UUID
    # The provider's kind, name and display name, as read with the config.
    provider: str
    provider_name: str
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
    provider_display_name: str = ""


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
