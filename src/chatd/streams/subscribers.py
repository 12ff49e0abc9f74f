"""A chat stream's subscriber on this replica: what reaches its queue (parts and notification
arrivals, typed), the one snapshot read that starts a stream and re-syncs it, and the read of
new messages that one notification costs the replica, shared by all its subscribers."""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from chatd.domain.actions import PendingAction
from chatd.domain.chat import Chat, Message, QueuedMessage
from chatd.domain.events import (
    ActionRequiredEvent,
    MessageEvent,
    MessagePartEvent,
    QueueUpdateEvent,
    StatusEvent,
    StreamEvent,
)
from chatd.store import chats as chat_store
from chatd.store.database import Database
from chatd.streams.notes import Notification


@dataclass(frozen=True, slots=True)
class NoteArrival:
    """A notification as it reached this replica; `seq` numbers the chat's arrivals, so one
    database read answers every subscriber the same arrival reached (`MessageCache`)."""

    seq: int
    note: Notification


@dataclass(frozen=True, slots=True)
class PartArrival:
    """A part as published, with the generation of the chat's part buffer then (`PartLog`): a
    snapshot read after that generation ended has the part's step as a message, or never will."""

    generation: int
    event: MessagePartEvent


Delivery = PartArrival | NoteArrival


@dataclass(eq=False)
class Subscriber:
    """A subscriber's deliveries, at most `capacity` waiting, and its reader's one wake-up: a
    delivery, a re-sync due or the end of the stream wakes it (no task or future per delivery)."""

    capacity: int
    items: deque[Delivery] = field(default_factory=deque)
    # Set when a notification could not be queued: the next read re-syncs from the database.
    resync: bool = False
    # Set when the stream is to end (`stop`): its reader returns at its next read.
    stopped: bool = False
    _waiter: asyncio.Future[None] | None = None

    def put(self, item: Delivery) -> bool:
        """Queue a delivery; False (and nothing queued) when `capacity` are waiting."""
        if len(self.items) >= self.capacity:
            return False
        self.items.append(item)
        self._wake()
        return True

    def lost(self) -> None:
        """Something durable may have been missed: re-read the chat before anything else."""
        self.resync = True
        self._wake()

    def stop(self) -> None:
        self.stopped = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next(self) -> Delivery | None:
        """The next delivery, waiting for one; None, without waiting, once the stream is stopped,
        or when a re-sync is due and nothing waits."""
        while not self.items or self.stopped:
            if self.resync or self.stopped:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self.items.popleft()


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The chat as the database has it: its row, the visible messages after a cursor, its queue,
    the actions it waits for."""

    chat: Chat
    messages: list[Message]
    queue: list[QueuedMessage]
    actions: list[PendingAction] = field(default_factory=list)

    def events(self, parts: list[MessagePartEvent], *, queue_if_empty: bool) -> list[StreamEvent]:
        """Status, the messages, the parts in flight, the queue, the waiting actions: the order a
        stream starts in. The parts come after the messages because they continue them (the step
        under way follows every persisted message): a client that lets a persisted assistant
        message replace the parts streamed before it would otherwise drop the beginning of the
        answer when the history holds an earlier answer. A new subscriber assumes an empty
        queue; a re-synced one must hear that it emptied."""
        chat_id = self.chat.id
        out: list[StreamEvent] = [StatusEvent(chat_id=chat_id, status=self.chat.status, worker_id=self.chat.worker_id)]
        out += [MessageEvent(chat_id=chat_id, message=m) for m in self.messages]
        out += parts
        if self.queue or queue_if_empty:
            out.append(QueueUpdateEvent(chat_id=chat_id, queued_messages=self.queue))
        out += [ActionRequiredEvent(chat_id=chat_id, action=a) for a in self.actions]
        return out


async def read_snapshot(db: Database, chat_id: uuid.UUID, after_id: int) -> Snapshot:
    async with db.read() as conn:
        chat = await chat_store.get_chat_in(conn, chat_id)
        msgs = await chat_store.visible_messages(conn, chat_id, after_id)
        queue = await chat_store.queue_in(conn, chat_id)
        actions = await chat_store.waiting_actions_in(conn, chat_id)
    return Snapshot(chat, msgs, queue, actions)


@dataclass(eq=False)
class MessageCache:
    """The messages last read for a chat's notifications, shared by this replica's subscribers:
    one database read per notification per replica, however many subscribers."""

    size: int
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The arrival the cache answers (a later one needs a new read), and its cursor.
    seq: int = -1
    after_id: int = 0
    messages: list[Message] = field(default_factory=list)

    def prime(self, seq: int, after_id: int, messages: list[Message]) -> None:
        """Answer arrival `seq` with `messages`: every visible message of the chat above
        `after_id` as of the commit that arrival announces (the replica wrote them itself; see
        `MessagesAdded.written`). A message committed later comes with a later arrival, which
        reads. Never replaces an answer to a later arrival; a read under way that answers an
        earlier one replaces this when it ends, and arrival `seq` then reads again."""
        if seq > self.seq and len(messages) <= self.size:
            self.messages, self.after_id, self.seq = messages, after_id, seq

    async def messages_after(
        self, db: Database, chat_id: uuid.UUID, last_id: int, seq: int, arrivals: Callable[[], int]
    ) -> list[Message]:
        """Visible messages after `last_id`, for a subscriber handling arrival `seq`. A read
        answers every arrival counted (`arrivals()`) when it starts."""
        async with self.lock:
            if self.seq < seq or self.after_id > last_id:
                answers = arrivals()
                async with db.read() as conn:
                    msgs = await chat_store.visible_messages(conn, chat_id, last_id)
                self.messages, self.after_id, self.seq = msgs[-self.size :], last_id, answers
                if len(msgs) > self.size:
                    # Too many to cache: serve this caller directly, keep the tail for others.
                    self.after_id = msgs[-self.size - 1].id
                    return msgs
            return [m for m in self.messages if m.id > last_id]
