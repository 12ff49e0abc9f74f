"""Following one user's chats (`/chats/watch`): the owner channel's hints, each re-read from the
database (and checked to belong to the user) before it is reported.

Notifications are hints: when some may have been lost (the pubsub reconnected, or the watch fell
`QUEUE` behind) the watch re-reads the user's chats changed since its last sync and reports each
difference from what it last reported, like a chat stream's resync. Duplicates are possible, a
lost change is not."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from chatd.domain.chat import Chat
from chatd.domain.clock import Clock
from chatd.pubsub.base import PubSub, owner_channel
from chatd.store import chats as chat_store
from chatd.store.database import Database
from chatd.streams.outbox import read_owner_hint

# A watch re-reads chats changed since its last sync point minus this margin: replicas' clocks
# differ a little, and an event sent twice costs a client one re-render, a lost one a stale list.
RESYNC_MARGIN = timedelta(seconds=5)
QUEUE = 256
# Chats a re-sync reads at a time; it reads pages until a short one (a busy owner may have more
# changed chats than one page, and the newest changes are the ones a client lacks).
RESYNC_PAGE = 500


@dataclass(frozen=True, slots=True)
class ChatChange:
    kind: str  # one of outbox.WATCH_KINDS
    chat: Chat


@dataclass(frozen=True, slots=True)
class _Seen:
    status: str
    title: str
    archived: bool
    queued_count: int
    steering_count: int

    @classmethod
    def of(cls, chat: Chat) -> _Seen:
        return cls(chat.status.value, chat.title, chat.archived, chat.queued_count, chat.steering_count)


def resync_kind(chat: Chat, seen: _Seen | None, since: datetime) -> str | None:
    """The event a re-read chat is reported as; None when the client already has this state."""
    now = _Seen.of(chat)
    if seen is None:
        if chat.archived:
            return "deleted"
        return "created" if chat.created_at >= since else "status_change"
    if now == seen:
        return None
    if now.archived != seen.archived:
        return "deleted" if now.archived else "created"
    if now.status != seen.status:
        return "status_change"
    return "title_change" if now.title != seen.title else "queue_change"


@contextlib.asynccontextmanager
async def watch_owner(db: Database, pubsub: PubSub, clock: Clock, owner_id: uuid.UUID) -> AsyncIterator[AsyncIterator[ChatChange]]:
    """Subscribed when entered: every change to the owner's chats after that is reported."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE)
    lost = False

    def on_note(payload: dict[str, Any]) -> None:
        nonlocal lost
        try:
            queue.put_nowait(payload)
        except asyncio.QueueFull:
            lost = True  # the consumer has a full queue to work through and resyncs after it

    unsubscribe = await pubsub.subscribe(owner_channel(owner_id), on_note)
    since = clock.now() - RESYNC_MARGIN
    seen: dict[uuid.UUID, _Seen] = {}

    def report(kind: str, chat: Chat) -> ChatChange:
        seen[chat.id] = _Seen.of(chat)
        return ChatChange(kind, chat)

    async def changes() -> AsyncIterator[ChatChange]:
        nonlocal lost, since
        while True:
            # Every payload that waits is handled now: their hints are re-read together, in one
            # database read instead of one per hint (a busy user's chats change many at a time).
            payloads = [await queue.get()]
            while not queue.empty():
                payloads.append(queue.get_nowait())
            hints: list[tuple[str, uuid.UUID]] = []
            for payload in payloads:
                if payload.get("reconnected") or lost:
                    # The hints before it were read before the resync, as one at a time.
                    async for change in read(hints):
                        yield change
                    hints = []
                    lost = False
                    mark = clock.now()
                    after: Chat | None = None
                    while True:
                        page = await chat_store.chats_updated_since(db, owner_id, since, after=after, limit=RESYNC_PAGE)
                        for chat in page:
                            kind = resync_kind(chat, seen.get(chat.id), since)
                            if kind is not None:
                                yield report(kind, chat)
                        if len(page) < RESYNC_PAGE:
                            break
                        after = page[-1]
                    since = mark - RESYNC_MARGIN
                hint = read_owner_hint(payload)
                if hint is not None:  # else the reconnect notice, or a payload of some other kind
                    hints.append(hint)
            async for change in read(hints):
                yield change

    async def read(hints: list[tuple[str, uuid.UUID]]) -> AsyncIterator[ChatChange]:
        """Each hint in its order, with its chat as one read finds it (a chat hinted twice is
        reported twice, as its reads one after the other would); gone or not the owner's: none."""
        if not hints:
            return
        found = await chat_store.get_chats(db, (chat_id for _, chat_id in hints))
        for kind, chat_id in hints:
            chat = found.get(chat_id)
            if chat is not None and chat.owner_id == owner_id:
                yield report(kind, chat)

    try:
        yield changes()
    finally:
        await unsubscribe()
