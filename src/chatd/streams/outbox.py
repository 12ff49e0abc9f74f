"""The outbox: the one module that publishes what changed (`domain/changes.py`), after the commit.
It owns the channels (a chat's, its owner's lists, the workers' wake-up, configuration) and their
payloads: the chat channel's `Notification`, the owner channel's `{k, c}` hint.

A batch is what one use case changed, in order. Consecutive changes of one chat travel as one
notification while their `rank`s rise (the order a subscriber reads them in); the owner's lists
get one hint per chat (the re-read chat shows every change), and the workers one wake-up. Where a
change goes is said by its class (`domain/changes.py`): this module has no entry per change."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from chatd.domain.changes import Change, ConfigChanged, McpServerReachable, OnStream, WorkAvailable
from chatd.pubsub.base import CONFIG_CHANNEL, MCP_CHANNEL, PENDING_CHANNEL, PubSub, owner_channel
from chatd.streams.hub import StreamHub
from chatd.streams.notes import Notification

# The kinds of the owner channel's hints (`/chats/watch` events), most telling first: a chat's
# lists get one hint per batch, of the first kind here that the batch has.
WATCH_KINDS = ("created", "deleted", "status_change", "title_change", "queue_change")


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
    changes: list[OnStream] = field(default_factory=list)
    rank: int = -1


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
        reachable: list[uuid.UUID] = []
        for change in changes:
            if isinstance(change, OnStream):
                if open_ is None or open_.chat_id != change.chat_id or change.rank <= open_.rank:
                    if open_ is not None:
                        await self.hub.notify(open_.chat_id, Notification(tuple(open_.changes)))
                    open_ = _Open(change.chat_id)
                open_.changes.append(change)
                open_.rank = change.rank
            hint = change.owner_hint()
            if hint is not None:
                owner_id, chat_id, kind = hint
                seen = hints.get((owner_id, chat_id))
                if seen is None or WATCH_KINDS.index(kind) < WATCH_KINDS.index(seen):
                    hints[(owner_id, chat_id)] = kind
            wake = wake or isinstance(change, WorkAvailable)
            config = config or isinstance(change, ConfigChanged)
            if isinstance(change, McpServerReachable):
                reachable.append(change.server_id)
        if open_ is not None:
            await self.hub.notify(open_.chat_id, Notification(tuple(open_.changes)))
        for (owner_id, chat_id), kind in hints.items():
            await self.pubsub.publish(owner_channel(owner_id), owner_hint(kind, chat_id))
        if wake:
            await self.pubsub.publish(PENDING_CHANNEL, {})
        if config:
            await self.pubsub.publish(CONFIG_CHANNEL, {})
        for server_id in reachable:
            await self.pubsub.publish(MCP_CHANNEL, {"reachable": str(server_id)})
