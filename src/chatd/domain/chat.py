"""Chats, messages and the status machine (SPEC §1–2)."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from chatd.domain.parts import Part


class ChatStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    ERROR = "error"

    @property
    def busy(self) -> bool:
        return self in (ChatStatus.PENDING, ChatStatus.RUNNING)


class Role(enum.StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


class Visibility(enum.StrEnum):
    MODEL = "model"
    USER = "user"
    BOTH = "both"


class BusyBehavior(enum.StrEnum):
    QUEUE = "queue"
    INTERRUPT = "interrupt"
    STEER = "steer"
    REJECT = "reject"


class UserRole(enum.StrEnum):
    ADMIN = "admin"
    MEMBER = "member"


MAX_QUEUED_MESSAGES = 20


def status_after_interrupt(current: ChatStatus) -> ChatStatus:
    """Interrupting goes to waiting, unless a new message already made the chat pending."""
    return ChatStatus.PENDING if current is ChatStatus.PENDING else ChatStatus.WAITING


def should_queue(status: ChatStatus, queue_length: int) -> bool:
    """A sent message is queued while the chat is busy, or behind an existing backlog (FIFO)."""
    return status.busy or queue_length > 0


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    reasoning_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_read_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.total_tokens + other.total_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
            self.cache_creation_tokens + other.cache_creation_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
        )


@dataclass(frozen=True, slots=True)
class Chat:
    id: uuid.UUID
    owner_id: uuid.UUID
    title: str
    status: ChatStatus
    worker_id: uuid.UUID | None
    started_at: datetime | None
    heartbeat_at: datetime | None
    last_error: str | None
    last_model_config_id: uuid.UUID | None
    workspace_id: uuid.UUID | None
    parent_chat_id: uuid.UUID | None
    root_chat_id: uuid.UUID | None
    mode: str | None
    mcp_server_ids: list[uuid.UUID]
    archived: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Message:
    id: int
    chat_id: uuid.UUID
    role: Role
    content: list[Part]
    visibility: Visibility
    created_at: datetime
    created_by: uuid.UUID | None = None
    model_config_id: uuid.UUID | None = None
    usage: Usage | None = None
    context_limit: int | None = None
    total_cost_micros: int | None = None
    runtime_ms: int | None = None
    compressed: bool = False


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    id: int
    chat_id: uuid.UUID
    content: list[Part]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message about to be inserted."""

    role: Role
    content: list[Part]
    visibility: Visibility = Visibility.BOTH
    created_by: uuid.UUID | None = None
    model_config_id: uuid.UUID | None = None
    usage: Usage | None = None
    context_limit: int | None = None
    total_cost_micros: int | None = None
    runtime_ms: int | None = None
    compressed: bool = False
    extra: dict[str, object] = field(default_factory=dict)
