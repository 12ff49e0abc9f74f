"""The stream hub: one per process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from chatd.domain.chat import ChatStatus, Message, Role
from chatd.domain.events import (
    ErrorEvent,
    MessageEvent,
    MessagePartEvent,
    QueueUpdateEvent,
    RetryEvent,
    StatusEvent,
    StreamEvent,
)
from chatd.domain.parts import Part
from chatd.pubsub.base import PubSub, chat_channel
from chatd.store import chats as chat_store
from chatd.store.database import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Notification:
    """What crosses replicas about one chat: ids and flags only (NOTIFY payload < 8000 bytes)."""

    after_message_id: int = 0
    full_refresh: bool = False
    status: str | None = None
    worker_id: str | None = None
    queue_update: bool = False
    retry: dict[str, Any] | None = None
    error: str | None = None

    def to_payload(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.after_message_id:
            d["a"] = self.after_message_id
        if self.full_refresh:
            d["f"] = 1
        if self.status:
            d["s"] = self.status
        if self.worker_id:
            d["w"] = self.worker_id
        if self.queue_update:
            d["q"] = 1
        if self.retry:
            d["r"] = self.retry
        if self.error:
            d["e"] = self.error[:2000]
        return d

    @classmethod
    def from_payload(cls, d: dict[str, Any]) -> Notification:
        return cls(
            after_message_id=int(d.get("a", 0)),
            full_refresh=bool(d.get("f")),
            status=d.get("s"),
            worker_id=d.get("w"),
            queue_update=bool(d.get("q")),
            retry=d.get("r"),
            error=d.get("e"),
        )


class _RateLimitedWarning:
    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self.last = 0.0
        self.suppressed = 0

    def warn(self, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self.last >= self.every:
            log.warning(msg + " (%d similar suppressed)", *args, self.suppressed)
            self.last = now
            self.suppressed = 0
        else:
            self.suppressed += 1


@dataclass(eq=False)
class _Subscriber:
    queue: asyncio.Queue[Any]
    # Set when a notification could not be queued: the next read re-syncs from the database.
    resync: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(eq=False)
class _ChatState:
    buffering: bool = False
    parts: deque[MessagePartEvent] = field(default_factory=deque)
    subscribers: set[_Subscriber] = field(default_factory=set)
    # Persisted messages fetched for notifications, shared by this replica's subscribers.
    fetch_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    notes_seen: int = 0
    cache_seq: int = -1
    cache_from: int = 0
    cache: list[Message] = field(default_factory=list)
    unsubscribe: Any = None


class StreamHub:
    def __init__(
        self,
        db: Database,
        pubsub: PubSub,
        *,
        part_buffer: int = 10000,
        subscriber_queue: int = 128,
        message_cache: int = 256,
    ) -> None:
        self.db = db
        self.pubsub = pubsub
        self.part_buffer = part_buffer
        self.subscriber_queue = subscriber_queue
        self.message_cache = message_cache
        self._chats: dict[uuid.UUID, _ChatState] = {}
        self._buffer_warning = _RateLimitedWarning()
        self._slow_warning = _RateLimitedWarning()
        self._pubsub_lock = asyncio.Lock()

    # --- worker side ---------------------------------------------------------------------

    def start_buffering(self, chat_id: uuid.UUID) -> None:
        """Called before `running` is published, so a subscriber who sees it never misses parts."""
        st = self._chats.setdefault(chat_id, _ChatState())
        st.buffering = True
        st.parts.clear()

    def stop_buffering(self, chat_id: uuid.UUID) -> None:
        st = self._chats.get(chat_id)
        if st is None:
            return
        st.buffering = False
        st.parts.clear()
        self._maybe_forget(chat_id, st)

    def clear_parts(self, chat_id: uuid.UUID) -> None:
        """After a step is persisted (its parts are now a message) and before a retry."""
        st = self._chats.get(chat_id)
        if st is not None:
            st.parts.clear()

    def publish_part(self, chat_id: uuid.UUID, role: Role, part: Part) -> None:
        ev = MessagePartEvent(chat_id=chat_id, role=role, part=part)
        st = self._chats.get(chat_id)
        if st is None:
            return
        if st.buffering:
            if len(st.parts) >= self.part_buffer:
                st.parts.popleft()
                self._buffer_warning.warn("chat %s: part buffer full, dropping the oldest part", chat_id)
            st.parts.append(ev)
        for sub in st.subscribers:
            try:
                sub.queue.put_nowait(ev)
            except asyncio.QueueFull:
                self._slow_warning.warn("chat %s: slow subscriber, dropping a message part", chat_id)

    def buffered_parts(self, chat_id: uuid.UUID) -> list[MessagePartEvent]:
        st = self._chats.get(chat_id)
        return list(st.parts) if st else []

    # --- publishing durable changes (after commit) ----------------------------------------

    async def notify(self, chat_id: uuid.UUID, note: Notification) -> None:
        await self.pubsub.publish(chat_channel(chat_id), note.to_payload())

    async def publish_messages(self, chat_id: uuid.UUID, msgs: list[Message]) -> None:
        if msgs:
            await self.notify(chat_id, Notification(after_message_id=min(m.id for m in msgs) - 1))

    # --- subscriber side -------------------------------------------------------------------

    async def _ensure_channel(self, chat_id: uuid.UUID, st: _ChatState) -> None:
        async with self._pubsub_lock:
            if st.unsubscribe is None:
                st.unsubscribe = await self.pubsub.subscribe(chat_channel(chat_id), lambda p: self._on_note(chat_id, p))

    def _on_note(self, chat_id: uuid.UUID, payload: dict[str, Any]) -> None:
        st = self._chats.get(chat_id)
        if st is None:
            return
        st.notes_seen += 1
        if payload.get("reconnected"):
            # Notifications may have been lost while the connection was down.
            for sub in st.subscribers:
                sub.resync = True
                sub.wake.set()
            return
        note = Notification.from_payload(payload)
        for sub in st.subscribers:
            try:
                sub.queue.put_nowait((st.notes_seen, note))
            except asyncio.QueueFull:
                # Never lose a durable change: re-sync from the database on the next read.
                sub.resync = True
                sub.wake.set()

    def _maybe_forget(self, chat_id: uuid.UUID, st: _ChatState) -> None:
        if not st.buffering and not st.subscribers and st.unsubscribe is None:
            self._chats.pop(chat_id, None)

    @contextlib.asynccontextmanager
    async def subscribe(self, chat_id: uuid.UUID, after_id: int = 0) -> AsyncIterator[AsyncIterator[StreamEvent]]:
        """Subscribe first, then snapshot: status, buffered parts, messages after `after_id`, queue.

        Nothing published after this call starts is missed, and no message is sent twice.
        """
        st = self._chats.setdefault(chat_id, _ChatState())
        sub = _Subscriber(asyncio.Queue(self.subscriber_queue))
        st.subscribers.add(sub)
        try:
            await self._ensure_channel(chat_id, st)
            # Captured after registering: later parts reach sub.queue, earlier ones are here.
            parts = list(st.parts)
            yield self._events(chat_id, st, sub, after_id, parts)
        finally:
            st.subscribers.discard(sub)
            if not st.subscribers and st.unsubscribe is not None:
                unsub, st.unsubscribe = st.unsubscribe, None
                with contextlib.suppress(Exception):
                    await unsub()
            self._maybe_forget(chat_id, st)

    async def _events(
        self, chat_id: uuid.UUID, st: _ChatState, sub: _Subscriber, after_id: int, parts: list[MessagePartEvent]
    ) -> AsyncIterator[StreamEvent]:
        last_id = after_id
        async with self.db.read() as conn:
            chat = (await chat_store.get_chat_in(conn, chat_id))
            msgs = await chat_store.visible_messages(conn, chat_id, after_id)
            queue = await chat_store.queue_in(conn, chat_id)
        last_status = chat.status
        yield StatusEvent(chat_id=chat_id, status=chat.status, worker_id=chat.worker_id)
        for p in parts:
            yield p
        for m in msgs:
            last_id = max(last_id, m.id)
            yield MessageEvent(chat_id=chat_id, message=m)
        if queue:
            yield QueueUpdateEvent(chat_id=chat_id, queued_messages=queue)

        while True:
            if sub.resync:
                sub.resync = False
                async for ev in self._resync(chat_id, last_id):
                    if isinstance(ev, MessageEvent):
                        last_id = max(last_id, ev.message.id)
                    if isinstance(ev, StatusEvent):
                        last_status = ev.status
                    yield ev
            get = asyncio.ensure_future(sub.queue.get())
            wake = asyncio.ensure_future(sub.wake.wait())
            try:
                done, _ = await asyncio.wait({get, wake}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in (get, wake):
                    if not t.done():
                        t.cancel()
            sub.wake.clear()
            if get not in done or get.cancelled():
                continue
            item = get.result()
            if isinstance(item, MessagePartEvent):
                yield item
                continue
            seq, note = item
            if note.after_message_id or note.full_refresh:
                if note.full_refresh:
                    last_id = 0
                for m in await self._messages_after(chat_id, st, last_id, seq):
                    if m.id > last_id:
                        last_id = m.id
                        yield MessageEvent(chat_id=chat_id, message=m)
            if note.status:
                status = ChatStatus(note.status)
                if status != last_status:
                    last_status = status
                    yield StatusEvent(
                        chat_id=chat_id, status=status, worker_id=uuid.UUID(note.worker_id) if note.worker_id else None
                    )
            if note.queue_update:
                yield QueueUpdateEvent(chat_id=chat_id, queued_messages=await chat_store.list_queue(self.db, chat_id))
            if note.retry:
                r = note.retry
                yield RetryEvent(
                    chat_id=chat_id,
                    attempt=int(r["attempt"]),
                    delay_ms=int(r["delay_ms"]),
                    error=str(r["error"]),
                    retrying_at=datetime.fromisoformat(r["retrying_at"]),
                )
            if note.error:
                yield ErrorEvent(chat_id=chat_id, message=note.error)

    async def _messages_after(self, chat_id: uuid.UUID, st: _ChatState, last_id: int, seq: int) -> list[Message]:
        """One database read per notification per replica, shared by every local subscriber."""
        async with st.fetch_lock:
            if st.cache_seq < seq or st.cache_from > last_id:
                fetched_seq = st.notes_seen
                async with self.db.read() as conn:
                    msgs = await chat_store.visible_messages(conn, chat_id, last_id)
                st.cache, st.cache_from, st.cache_seq = msgs[-self.message_cache :], last_id, fetched_seq
                if len(msgs) > self.message_cache:
                    # Too many to cache: serve this caller directly, keep the tail for others.
                    st.cache_from = msgs[-self.message_cache - 1].id
                    return msgs
            return [m for m in st.cache if m.id > last_id]

    async def _resync(self, chat_id: uuid.UUID, last_id: int) -> AsyncIterator[StreamEvent]:
        async with self.db.read() as conn:
            chat = await chat_store.get_chat_in(conn, chat_id)
            msgs = await chat_store.visible_messages(conn, chat_id, last_id)
            queue = await chat_store.queue_in(conn, chat_id)
        yield StatusEvent(chat_id=chat_id, status=chat.status, worker_id=chat.worker_id)
        for m in msgs:
            yield MessageEvent(chat_id=chat_id, message=m)
        yield QueueUpdateEvent(chat_id=chat_id, queued_messages=queue)
