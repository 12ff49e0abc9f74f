"""What a committed use case changed that others must hear of: the chat's subscribers, the owner's
chat lists, the workers, every replica's configuration cache. Typed here; turned into channels
and payloads in one place only, `streams/outbox.py`, after the commit.

Changes are hints: the database is the truth, and every listener re-reads it."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from chatd.domain.actions import Decision, PendingAction
from chatd.domain.chat import Chat, ChatStatus, Message


@dataclass(frozen=True, slots=True)
class MessagesAdded:
    """Messages with ids above `after_id` are new in the chat's history."""

    chat_id: uuid.UUID
    after_id: int

    @classmethod
    def of(cls, chat_id: uuid.UUID, messages: Iterable[Message]) -> list[MessagesAdded]:
        """None (an empty list) when there are no messages: nothing to announce."""
        ids = [m.id for m in messages]
        return [cls(chat_id, min(ids) - 1)] if ids else []


@dataclass(frozen=True, slots=True)
class HistoryReplaced:
    """An edit replaced the history from some message on: re-read it all."""

    chat_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class StatusChanged:
    chat_id: uuid.UUID
    owner_id: uuid.UUID
    status: ChatStatus
    # Orders status changes that arrive out of order (`domain.chat.status_version`).
    generation: int
    # The replica running the chat (`running`): others relay its parts from there.
    worker_id: uuid.UUID | None = None

    @classmethod
    def of(cls, chat: Chat) -> StatusChanged:
        return cls(chat.id, chat.owner_id, chat.status, chat.generation, chat.worker_id)


@dataclass(frozen=True, slots=True)
class QueueChanged:
    chat_id: uuid.UUID
    owner_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class ActionsRequested:
    """The chat's pending actions changed: new ones wait for an answer."""

    chat_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class ActionsResolved:
    """These actions no longer wait: (action id, decision) each."""

    chat_id: uuid.UUID
    resolved: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, chat_id: uuid.UUID, actions: Sequence[PendingAction], decision: Decision | None = None) -> list[ActionsResolved]:
        """The actions as resolved with `decision`, else their own (cancelled when they have none)."""
        resolved = tuple((str(a.id), (decision or a.decision or Decision.CANCEL).value) for a in actions)
        return [cls(chat_id, resolved)] if resolved else []


@dataclass(frozen=True, slots=True)
class RetryScheduled:
    """A model call failed and is retried at `retrying_at` (nothing was written)."""

    chat_id: uuid.UUID
    attempt: int
    delay_ms: int
    error: str
    retrying_at: datetime


@dataclass(frozen=True, slots=True)
class TurnFailed:
    """A readable reason for the chat's user (the turn raised, or a limit held the queue)."""

    chat_id: uuid.UUID
    message: str


@dataclass(frozen=True, slots=True)
class ChatCreated:
    chat_id: uuid.UUID
    owner_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class ChatArchived:
    chat_id: uuid.UUID
    owner_id: uuid.UUID
    # False: restored from the archive.
    archived: bool = True


@dataclass(frozen=True, slots=True)
class TitleChanged:
    chat_id: uuid.UUID
    owner_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class WorkAvailable:
    """A chat became pending: wake the workers of every replica."""


@dataclass(frozen=True, slots=True)
class ConfigChanged:
    """A provider, model config, MCP server or user changed: replicas drop their cached copies."""


Change = (
    MessagesAdded
    | HistoryReplaced
    | StatusChanged
    | QueueChanged
    | ActionsRequested
    | ActionsResolved
    | RetryScheduled
    | TurnFailed
    | ChatCreated
    | ChatArchived
    | TitleChanged
    | WorkAvailable
    | ConfigChanged
)


def status_changes(chat: Chat) -> list[Change]:
    """The status change of `chat`, and the workers' wake-up when it is now pending."""
    return [StatusChanged.of(chat), *([WorkAvailable()] if chat.status is ChatStatus.PENDING else [])]
