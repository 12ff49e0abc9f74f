"""What a committed use case changed that others must hear of: the chat's subscribers, the owner's
chat lists, the workers, every replica's configuration cache. Typed here; turned into channels
and payloads in one place only, `streams/outbox.py`, after the commit.

Changes are hints: the database is the truth, and every listener re-reads it.

Each change says where it goes by its class: `OnStream` changes reach the chat's subscribers (by
`tag` on the wire, in `rank` order within one notification), `Announced` ones carry their stream
events whole (no database read), and `_Watched` ones name the owner's chat-list hint by their
`watch` kind (`owner_hint`). So a
new stream event is an event in `domain/events.py`, an `Announced` change here (and in `Change`),
and the use case that names it: the outbox, the wire codec (`streams/notes.py`), the hub and the
API's JSON need no entry."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar

from chatd.domain.actions import Decision, PendingAction
from chatd.domain.chat import Chat, ChatStatus, Message
from chatd.domain.events import ActionResolvedEvent, ErrorEvent, RetryEvent, StreamEvent


class _Change:
    __slots__ = ()

    def owner_hint(self) -> tuple[uuid.UUID, uuid.UUID, str] | None:
        """(owner, chat, `/chats/watch` kind) when the owner's chat lists must hear of this."""
        return None


class _Watched(_Change):
    """A change of one chat that the owner's chat lists hear of, as the `/chats/watch` kind `watch`."""

    __slots__ = ()
    watch: ClassVar[str]
    chat_id: uuid.UUID
    owner_id: uuid.UUID

    def owner_hint(self) -> tuple[uuid.UUID, uuid.UUID, str] | None:
        return self.owner_id, self.chat_id, self.watch


class OnStream(_Change):
    """A change the chat's subscribers hear of, on the chat channel."""

    __slots__ = ()
    # The wire name (`streams/notes.py`), unique among stream changes.
    tag: ClassVar[str]
    # The order in which a subscriber reads the changes of one notification: changes of one chat
    # join one notification only while their ranks rise.
    rank: ClassVar[int]
    # Fields that stay on this replica (never in a notification's payload, `streams/notes.py`).
    local: ClassVar[frozenset[str]] = frozenset()
    chat_id: uuid.UUID


class Announced(OnStream):
    """A stream change that carries its events whole: subscribers get `events()`, no database read."""

    __slots__ = ()

    def events(self) -> list[StreamEvent]:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class MessagesAdded(OnStream):
    """Messages with ids above `after_id` are new in the chat's history.

    `written`, when given, is what the committing transaction wrote, under the chat's lock: the
    messages a stream shows above `shown_before` as of that commit are its visible ones. The
    replica that wrote them answers its own subscribers with them instead of reading them back
    (`StreamHub.notify`); neither field leaves the replica (`local`)."""

    tag = "a"
    rank = 0
    local = frozenset({"written", "shown_before"})

    chat_id: uuid.UUID
    after_id: int
    written: tuple[Message, ...] = field(default=(), compare=False, repr=False)
    shown_before: int = field(default=0, compare=False)

    @classmethod
    def of(cls, chat_id: uuid.UUID, messages: Iterable[Message], *, shown_before: int | None = None) -> list[MessagesAdded]:
        """None (an empty list) when there are no messages: nothing to announce. `shown_before`:
        `messages` are all the transaction wrote, and the newest message a stream shows below
        them is this one (`StepWritten.shown_before`)."""
        msgs = tuple(messages)
        if not msgs:
            return []
        after_id = min(m.id for m in msgs) - 1
        if shown_before is None:
            return [cls(chat_id, after_id)]
        return [cls(chat_id, after_id, msgs, shown_before)]


@dataclass(frozen=True, slots=True)
class HistoryReplaced(OnStream):
    """An edit replaced the history from some message on: re-read it all."""

    tag = "f"
    rank = 0

    chat_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class StatusChanged(OnStream, _Watched):
    watch = "status_change"
    tag = "s"
    rank = 1
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
class QueueChanged(OnStream, _Watched):
    watch = "queue_change"
    tag = "q"
    rank = 4
    chat_id: uuid.UUID
    owner_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class ActionsRequested(OnStream):
    """The chat's pending actions changed: new ones wait for an answer."""

    tag = "x"
    rank = 3

    chat_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class ActionsResolved(Announced):
    """These actions no longer wait: (action id, decision) each."""

    tag = "xr"
    rank = 2
    chat_id: uuid.UUID
    resolved: tuple[tuple[str, str], ...]

    def __post_init__(self) -> None:
        # Bounded by the calls of one step; ~60 bytes each, far below NOTIFY's 8000.
        object.__setattr__(self, "resolved", self.resolved[:100])

    def events(self) -> list[StreamEvent]:
        return [ActionResolvedEvent(self.chat_id, uuid.UUID(a), d) for a, d in self.resolved]

    @classmethod
    def of(cls, chat_id: uuid.UUID, actions: Sequence[PendingAction], decision: Decision | None = None) -> list[ActionsResolved]:
        """The actions as resolved with `decision`, else their own (cancelled when they have none)."""
        resolved = tuple((str(a.id), (decision or a.decision or Decision.CANCEL).value) for a in actions)
        return [cls(chat_id, resolved)] if resolved else []


@dataclass(frozen=True, slots=True)
class RetryScheduled(Announced):
    """A model call failed and is retried at `retrying_at` (nothing was written)."""

    tag = "r"
    rank = 5
    chat_id: uuid.UUID
    attempt: int
    delay_ms: int
    error: str
    retrying_at: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "error", self.error[:1000])

    def events(self) -> list[StreamEvent]:
        return [RetryEvent(self.chat_id, self.attempt, self.delay_ms, self.error, self.retrying_at)]


@dataclass(frozen=True, slots=True)
class TurnFailed(Announced):
    """A readable reason for the chat's user (the turn raised, or a limit held the queue)."""

    tag = "e"
    rank = 6
    chat_id: uuid.UUID
    message: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "message", self.message[:2000])

    def events(self) -> list[StreamEvent]:
        return [ErrorEvent(self.chat_id, self.message)]


@dataclass(frozen=True, slots=True)
class ChatCreated(_Watched):
    watch = "created"
    chat_id: uuid.UUID
    owner_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class ChatArchived(_Watched):
    watch = "deleted"
    chat_id: uuid.UUID
    owner_id: uuid.UUID
    # False: restored from the archive.
    archived: bool = True

    def owner_hint(self) -> tuple[uuid.UUID, uuid.UUID, str] | None:
        # Restored from the archive, the chat is back in the owner's lists as if created.
        return self.owner_id, self.chat_id, self.watch if self.archived else ChatCreated.watch


@dataclass(frozen=True, slots=True)
class TitleChanged(_Watched):
    watch = "title_change"
    chat_id: uuid.UUID
    owner_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class WaitChanged(_Watched):
    """A running call's question to the chat's user was asked or ended. The chat stays `running`,
    but its lists show from its `pending_actions` whether it waits for its user."""

    watch = "status_change"
    chat_id: uuid.UUID
    owner_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class WorkAvailable(_Change):
    """A chat became pending: wake the workers of every replica."""


@dataclass(frozen=True, slots=True)
class ConfigChanged(_Change):
    """A provider, model config, MCP server or user changed: replicas drop their cached copies."""


@dataclass(frozen=True, slots=True)
class McpServerReachable(_Change):
    """An MCP server answered a check: replicas that remember it failing try it again at once."""

    server_id: uuid.UUID


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
    | WaitChanged
    | WorkAvailable
    | ConfigChanged
    | McpServerReachable
)


def status_changes(chat: Chat) -> list[Change]:
    """The status change of `chat`, and the workers' wake-up when it is now pending."""
    return [StatusChanged.of(chat), *([WorkAvailable()] if chat.status is ChatStatus.PENDING else [])]
