"""The outbox: the one module that publishes what changed (`domain/changes.py`), after the commit.
It owns the channels (a chat's, its owner's lists, the workers' wake-up, configuration) and their
payloads: the chat channel's `Notification`, the owner channel's `{k, c}` hint.

A batch is what one use case changed, in order. Consecutive changes of one chat travel as one
notification when that keeps their order for a subscriber (the hub reads a notification's parts
in `_RANK` order); the owner's lists get one hint per chat (the re-read chat shows every change),
and the workers one wake-up."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, assert_never

from chatd.domain.changes import (
    ActionsRequested,
    ActionsResolved,
    Change,
    ChatArchived,
    ChatCreated,
    ConfigChanged,
    HistoryReplaced,
    MessagesAdded,
    QueueChanged,
    RetryScheduled,
    StatusChanged,
    TitleChanged,
    TurnFailed,
    WorkAvailable,
)
from chatd.pubsub.base import CONFIG_CHANNEL, PENDING_CHANNEL, PubSub, owner_channel
from chatd.streams.hub import StreamHub
from chatd.streams.notes import Notification

# The kinds of the owner channel's hints (`/chats/watch` events), most telling first: a chat's
# lists get one hint per batch, of the first kind here that the batch has.
WATCH_KINDS = ("created", "deleted", "status_change", "title_change", "queue_change")

# The order in which a subscriber reads the parts of one notification (`StreamHub._events`):
# changes of one chat join one notification only while their ranks rise.
_RANK: dict[type[Any], int] = {
    MessagesAdded: 0,
    HistoryReplaced: 0,
    StatusChanged: 1,
    ActionsResolved: 2,
    ActionsRequested: 3,
    QueueChanged: 4,
    RetryScheduled: 5,
    TurnFailed: 6,
}


# The changes a chat's subscribers hear of (on the chat channel).
_STREAM = (MessagesAdded, HistoryReplaced, StatusChanged, ActionsResolved, ActionsRequested, QueueChanged, RetryScheduled, TurnFailed)
StreamChange = (
    MessagesAdded | HistoryReplaced | StatusChanged | ActionsResolved | ActionsRequested | QueueChanged | RetryScheduled | TurnFailed
)


def owner_hint(kind: str, chat_id: uuid.UUID) -> dict[str, Any]:
    return {"k": kind, "c": str(chat_id)}


def read_owner_hint(payload: dict[str, Any]) -> tuple[str, uuid.UUID] | None:
    """The (kind, chat id) of an owner-channel payload; None for anything else (a reconnect)."""
    kind = payload.get("k")
    if kind not in WATCH_KINDS:
        return None
    try:
        return str(kind), uuid.UUID(str(payload.get("c")))
    except ValueError:
        return None


@dataclass
class _Open:
    """The notification being assembled for one chat."""

    chat_id: uuid.UUID
    note: Notification = field(default_factory=Notification)
    rank: int = -1


def _add(note: Notification, change: StreamChange) -> Notification:
    match change:
        case MessagesAdded(after_id=after_id):
            return replace(note, after_message_id=after_id)
        case HistoryReplaced():
            return replace(note, full_refresh=True)
        case StatusChanged(status=status, generation=generation, worker_id=worker_id):
            return replace(note, status=status.value, generation=generation, worker_id=str(worker_id) if worker_id else None)
        case ActionsResolved(resolved=resolved):
            return replace(note, resolved=list(resolved))
        case ActionsRequested():
            return replace(note, actions=True)
        case QueueChanged():
            return replace(note, queue_update=True)
        case RetryScheduled(attempt=attempt, delay_ms=delay_ms, error=error, retrying_at=at):
            return replace(note, retry={"attempt": attempt, "delay_ms": delay_ms, "error": error[:1000], "retrying_at": at.isoformat()})
        case TurnFailed(message=message):
            return replace(note, error=message)
        case other:
            assert_never(other)


def _owner_kind(change: Change) -> tuple[uuid.UUID, uuid.UUID, str] | None:
    """(owner, chat, hint kind) when the owner's chat lists must hear of `change`."""
    match change:
        case ChatCreated(chat_id=chat_id, owner_id=owner_id):
            return owner_id, chat_id, "created"
        case ChatArchived(chat_id=chat_id, owner_id=owner_id, archived=archived):
            return owner_id, chat_id, "deleted" if archived else "created"
        case StatusChanged(chat_id=chat_id, owner_id=owner_id):
            return owner_id, chat_id, "status_change"
        case TitleChanged(chat_id=chat_id, owner_id=owner_id):
            return owner_id, chat_id, "title_change"
        case QueueChanged(chat_id=chat_id, owner_id=owner_id):
            return owner_id, chat_id, "queue_change"
        case (
            MessagesAdded() | HistoryReplaced() | ActionsRequested() | ActionsResolved() | RetryScheduled() | TurnFailed()
            | WorkAvailable() | ConfigChanged()
        ):
            return None
        case other:
            assert_never(other)


class Outbox:
    def __init__(self, hub: StreamHub, pubsub: PubSub) -> None:
        self.hub = hub
        self.pubsub = pubsub

    async def publish(self, changes: Iterable[Change]) -> None:
        """Announce one use case's changes, after its commit (never before: a listener re-reads
        the database and must find them)."""
        open_: _Open | None = None
        hints: dict[tuple[uuid.UUID, uuid.UUID], str] = {}
        wake = config = False
        for change in changes:
            if isinstance(change, _STREAM):
                rank = _RANK[type(change)]
                if open_ is None or open_.chat_id != change.chat_id or rank <= open_.rank:
                    if open_ is not None:
                        await self.hub.notify(open_.chat_id, open_.note)
                    open_ = _Open(change.chat_id)
                open_.note, open_.rank = _add(open_.note, change), rank
            hint = _owner_kind(change)
            if hint is not None:
                owner_id, chat_id, kind = hint
                seen = hints.get((owner_id, chat_id))
                if seen is None or WATCH_KINDS.index(kind) < WATCH_KINDS.index(seen):
                    hints[(owner_id, chat_id)] = kind
            wake = wake or isinstance(change, WorkAvailable)
            config = config or isinstance(change, ConfigChanged)
        if open_ is not None:
            await self.hub.notify(open_.chat_id, open_.note)
        for (owner_id, chat_id), kind in hints.items():
            await self.pubsub.publish(owner_channel(owner_id), owner_hint(kind, chat_id))
        if wake:
            await self.pubsub.publish(PENDING_CHANNEL, {})
        if config:
            await self.pubsub.publish(CONFIG_CHANNEL, {})
