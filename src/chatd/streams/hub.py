"""The stream hub: one per process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from chatd import metrics
from chatd.domain.chat import ChatStatus, Message, Role, status_version
from chatd.domain.events import (
    ErrorEvent,
    MessageEvent,
    MessagePartEvent,
    QueueUpdateEvent,
    RetryEvent,
    StatusEvent,
    StreamEvent,
)
from chatd.domain.parts import Part, ReasoningPart, TextPart
from chatd.pubsub.base import PubSub, chat_channel
from chatd.store import chats as chat_store
from chatd.store.database import Database
from chatd.streams.relay import FollowItem, RelayClient

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Notification:
    """What crosses replicas about one chat: ids and flags only (NOTIFY payload < 8000 bytes)."""

    after_message_id: int = 0
    full_refresh: bool = False
    status: str | None = None
    # The chat's generation when `status` was committed: orders status notifications that
    # arrive out of order (`domain.chat.status_version`); None from a sender that does not know.
    generation: int | None = None
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
        if self.generation is not None:
            d["g"] = self.generation
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
            generation=int(d["g"]) if d.get("g") is not None else None,
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


# What a local follower (another replica relaying this chat) receives: ("part", seq, event),
# ("clear", seq) after a step persisted or before a retry, ("end", 0) when the turn is over.


@dataclass(eq=False)
class _Follower:
    queue: asyncio.Queue[FollowItem]
    overflowed: bool = False


@dataclass(eq=False)
class _ChatState:
    buffering: bool = False
    parts: deque[MessagePartEvent] = field(default_factory=deque)
    # Sequence number of parts[0]; every published part gets the next number.
    first_seq: int = 1
    next_seq: int = 1
    followers: set[_Follower] = field(default_factory=set)
    # Mirror of a chat running on another replica: parts relayed from it.
    relay: asyncio.Task[None] | None = None
    relay_owner: uuid.UUID | None = None
    subscribers: set[_Subscriber] = field(default_factory=set)
    # Persisted messages fetched for notifications, shared by this replica's subscribers.
    fetch_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    notes_seen: int = 0
    cache_seq: int = -1
    cache_from: int = 0
    cache: list[Message] = field(default_factory=list)
    unsubscribe: Any = None
    # Text (or reasoning) deltas not yet published, to be merged into one part (`publish_part`):
    # the first delta (its role and kind), and the texts of all of them.
    pending: tuple[Role, TextPart | ReasoningPart] | None = None
    pending_texts: list[str] = field(default_factory=list)
    flush_timer: asyncio.TimerHandle | None = None


def _mergeable(a: Part, b: Part) -> bool:
    if isinstance(a, TextPart) and isinstance(b, TextPart):
        return True
    # Reasoning deltas carry no signature until the end; one that does starts a new part.
    return (
        isinstance(a, ReasoningPart) and isinstance(b, ReasoningPart)
        and a.signature is None and b.signature is None and a.provider == b.provider
    )


class StreamHub:
    def __init__(
        self,
        db: Database,
        pubsub: PubSub,
        *,
        part_buffer: int = 10000,
        subscriber_queue: int = 128,
        message_cache: int = 256,
        replica_id: uuid.UUID | None = None,
        relay_client: RelayClient | None = None,
        coalesce_window: float = 0.0,
        coalesce_parts: int = 32,
    ) -> None:
        self.db = db
        self.pubsub = pubsub
        self.part_buffer = part_buffer
        self.subscriber_queue = subscriber_queue
        self.message_cache = message_cache
        self._chats: dict[uuid.UUID, _ChatState] = {}
        self.replica_id = replica_id
        self.relay_client = relay_client
        self._buffer_warning = _RateLimitedWarning()
        self._slow_warning = _RateLimitedWarning()
        self._pubsub_lock = asyncio.Lock()
        # Seconds a text delta may wait to be merged with the next ones (0 = publish each delta),
        # and the most deltas merged into one part.
        self.coalesce_window = coalesce_window
        self.coalesce_parts = coalesce_parts
        # Database checks behind relay decisions (see `_check_relay`); each ends on its own.
        self._checks: set[asyncio.Task[None]] = set()

    # --- worker side ---------------------------------------------------------------------

    def start_buffering(self, chat_id: uuid.UUID) -> None:
        """Called before `running` is published, so a subscriber who sees it never misses parts."""
        st = self._chats.setdefault(chat_id, _ChatState())
        self._stop_relay(st)
        st.buffering = True
        st.parts.clear()
        st.first_seq = st.next_seq

    def stop_buffering(self, chat_id: uuid.UUID) -> None:
        st = self._chats.get(chat_id)
        if st is None:
            return
        self._flush(chat_id, st)
        st.buffering = False
        st.parts.clear()
        st.first_seq = st.next_seq
        self._to_followers(st, ("end", 0, None))
        self._maybe_forget(chat_id, st)

    def clear_parts(self, chat_id: uuid.UUID) -> None:
        """After a step is persisted (its parts are now a message) and before a retry."""
        st = self._chats.get(chat_id)
        if st is not None:
            self._flush(chat_id, st)
            st.parts.clear()
            st.first_seq = st.next_seq
            self._to_followers(st, ("clear", st.next_seq - 1, None))

    def publish_part(self, chat_id: uuid.UUID, role: Role, part: Part) -> None:
        """Publish a streamed part. With a coalescing window, consecutive text (or reasoning)
        deltas are merged and published as one part when the window ends, after
        `coalesce_parts` deltas, or before anything else about the chat (another part, a clear,
        a message, a notification, the end of the turn), so order is kept. A merged part is
        still a `message_part` whose text is the deltas joined: fan-out costs per window, not
        per token. Snapshots stay exact: a subscriber who arrives while deltas wait gets them
        live when they are published, and the buffer never holds them twice."""
        st = self._chats.get(chat_id)
        if st is None:
            return
        if self.coalesce_window > 0 and isinstance(part, (TextPart, ReasoningPart)):
            self._coalesce(chat_id, st, role, part)
            return
        self._flush(chat_id, st)
        self._publish(chat_id, st, MessagePartEvent(chat_id=chat_id, role=role, part=part))

    def _coalesce(self, chat_id: uuid.UUID, st: _ChatState, role: Role, part: TextPart | ReasoningPart) -> None:
        pending = st.pending
        if pending is None or pending[0] is not role or not _mergeable(pending[1], part):
            self._flush(chat_id, st)
            st.pending = (role, part)
            st.flush_timer = asyncio.get_running_loop().call_later(self.coalesce_window, self._flush, chat_id, st)
        st.pending_texts.append(part.text)
        if len(st.pending_texts) >= self.coalesce_parts:
            self._flush(chat_id, st)

    def _flush(self, chat_id: uuid.UUID, st: _ChatState) -> None:
        if st.flush_timer is not None:
            st.flush_timer.cancel()
            st.flush_timer = None
        if st.pending is None:
            return
        (role, first), texts = st.pending, st.pending_texts
        st.pending, st.pending_texts = None, []
        part = first if len(texts) == 1 else first.model_copy(update={"text": "".join(texts)})
        self._publish(chat_id, st, MessagePartEvent(chat_id=chat_id, role=role, part=part))

    def flush_parts(self, chat_id: uuid.UUID) -> None:
        """Publish the deltas waiting to be merged now (before something that must follow them)."""
        st = self._chats.get(chat_id)
        if st is not None:
            self._flush(chat_id, st)

    def _publish(self, chat_id: uuid.UUID, st: _ChatState, ev: MessagePartEvent) -> None:
        seq = st.next_seq
        st.next_seq += 1
        if st.buffering:
            self._buffer(chat_id, st, ev)
        else:
            st.first_seq = st.next_seq
        self._fanout(chat_id, st, ev)
        self._to_followers(st, ("part", seq, ev))

    def _buffer(self, chat_id: uuid.UUID, st: _ChatState, ev: MessagePartEvent) -> None:
        if len(st.parts) >= self.part_buffer:
            st.parts.popleft()
            st.first_seq += 1
            self._buffer_warning.warn("chat %s: part buffer full, dropping the oldest part", chat_id)
        st.parts.append(ev)

    def _fanout(self, chat_id: uuid.UUID, st: _ChatState, ev: MessagePartEvent) -> None:
        for sub in st.subscribers:
            try:
                sub.queue.put_nowait(ev)
            except asyncio.QueueFull:
                metrics.STREAM_DROPPED.inc()
                self._slow_warning.warn("chat %s: slow subscriber, dropping a message part", chat_id)

    def _to_followers(self, st: _ChatState, item: FollowItem) -> None:
        for f in list(st.followers):
            try:
                f.queue.put_nowait(item)
            except asyncio.QueueFull:
                # The relaying replica reconnects and resumes from its last sequence number.
                f.overflowed = True
                st.followers.discard(f)
                self._slow_warning.warn("a relaying replica is too slow; disconnecting it")

    # --- the internal relay: serving this replica's parts to other replicas -----------------

    async def follow(self, chat_id: uuid.UUID) -> AsyncGenerator[FollowItem, None]:
        """The buffered parts of a chat running here (with sequence numbers), then live parts,
        clears and the end. Ends at once when the chat is not running on this replica."""
        st = self._chats.get(chat_id)
        if st is None or not st.buffering:
            yield ("end", 0, None)
            return
        f = _Follower(asyncio.Queue(self.part_buffer + 64))
        st.followers.add(f)
        relays_out = metrics.RELAY_CONNECTIONS.labels("out")
        relays_out.inc()
        try:
            yield ("clear", st.first_seq - 1, None)
            for i, ev in enumerate(list(st.parts)):
                yield ("part", st.first_seq + i, ev)
            while True:
                if f.overflowed and f.queue.empty():
                    return
                item = await f.queue.get()
                yield item
                if item[0] == "end":
                    return
        finally:
            relays_out.dec()
            st.followers.discard(f)
            self._maybe_forget(chat_id, st)

    # --- mirroring a chat that runs on another replica ---------------------------------------

    def _want_relay(self, chat_id: uuid.UUID, st: _ChatState, owner: uuid.UUID | None) -> None:
        if self.relay_client is None or owner is None or owner == self.replica_id or st.buffering or not st.subscribers:
            return
        if st.relay is not None and not st.relay.done() and st.relay_owner == owner:
            return
        self._stop_relay(st)
        st.relay_owner = owner
        st.relay = asyncio.create_task(self._relay(chat_id, st, owner), name=f"relay-{chat_id}")

    def _check_relay(self, chat_id: uuid.UUID, st: _ChatState) -> None:
        """Relay what the database says: stop only once the chat stopped running there. Status
        notifications are published after commit from different connections, so their order is
        not the commit order: the `pending` of a recovery (or a send) can arrive after the
        `running` of the worker that acquired the chat next, and must not cut that turn's parts."""

        relay = st.relay

        async def check() -> None:
            try:
                chat = await chat_store.get_chat(self.db, chat_id)
            except Exception:
                log.warning("could not re-read chat %s; keeping its relay", chat_id, exc_info=True)
                return
            if st.buffering or st.relay is not relay:
                return  # decided meanwhile: a later `running` started another relay
            if chat.status is ChatStatus.RUNNING and chat.worker_id is not None:
                self._want_relay(chat_id, st, chat.worker_id)
            else:
                self._stop_relay(st)

        task = asyncio.create_task(check(), name=f"relay-check-{chat_id}")
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    def _stop_relay(self, st: _ChatState) -> None:
        if st.relay is not None and not st.relay.done():
            st.relay.cancel()
        st.relay, st.relay_owner = None, None

    async def _relay(self, chat_id: uuid.UUID, st: _ChatState, owner: uuid.UUID) -> None:
        """Mirror the owner's part buffer and fan its live parts out to local subscribers.
        Reconnects resume by sequence number: a part is delivered once, never twice."""
        assert self.relay_client is not None
        last, failures = 0, 0
        while st.subscribers and not st.buffering:
            relays_in = metrics.RELAY_CONNECTIONS.labels("in")
            relays_in.inc()
            try:
                async for kind, seq, ev in self.relay_client.follow(owner, chat_id):
                    failures = 0
                    if kind == "clear":
                        st.parts.clear()
                    elif kind == "part" and ev is not None:
                        self._buffer(chat_id, st, ev)
                        if seq > last:
                            last = seq
                            self._fanout(chat_id, st, ev)
                    elif kind == "end":
                        st.parts.clear()
                        return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("relay of chat %s from replica %s interrupted: %s", chat_id, owner, exc)
            finally:
                relays_in.dec()
            failures += 1
            if failures > 5:
                log.warning("giving up relaying chat %s from replica %s", chat_id, owner)
                return
            await asyncio.sleep(min(0.1 * 2**failures, 3.0))

    def buffered_parts(self, chat_id: uuid.UUID) -> list[MessagePartEvent]:
        st = self._chats.get(chat_id)
        if st is None:
            return []
        self._flush(chat_id, st)
        return list(st.parts)

    # --- publishing durable changes (after commit) ----------------------------------------

    async def notify(self, chat_id: uuid.UUID, note: Notification) -> None:
        # Parts waiting to be merged were streamed before this change: they go first.
        self.flush_parts(chat_id)
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
            # Notifications may have been lost while the connection was down (a `running` among
            # them would have started the relay).
            if not st.buffering and st.subscribers:
                self._check_relay(chat_id, st)
            for sub in st.subscribers:
                sub.resync = True
                sub.wake.set()
            return
        note = Notification.from_payload(payload)
        if note.status == ChatStatus.RUNNING.value and note.worker_id:
            self._want_relay(chat_id, st, uuid.UUID(note.worker_id))
        elif note.status and not st.buffering and st.relay is not None:
            self._check_relay(chat_id, st)
        for sub in st.subscribers:
            try:
                sub.queue.put_nowait((st.notes_seen, note))
            except asyncio.QueueFull:
                # Never lose a durable change: re-sync from the database on the next read.
                sub.resync = True
                sub.wake.set()

    def _maybe_forget(self, chat_id: uuid.UUID, st: _ChatState) -> None:
        if not st.subscribers and st.relay is not None:
            self._stop_relay(st)
        if not st.buffering and not st.subscribers and st.unsubscribe is None and not st.followers:
            self._chats.pop(chat_id, None)

    @contextlib.asynccontextmanager
    async def subscribe(self, chat_id: uuid.UUID, after_id: int = 0) -> AsyncIterator[AsyncIterator[StreamEvent]]:
        """Subscribe first, then snapshot: status, buffered parts, messages after `after_id`, queue.

        Nothing published after this call starts is missed, and no message is sent twice.
        """
        st = self._chats.setdefault(chat_id, _ChatState())
        sub = _Subscriber(asyncio.Queue(self.subscriber_queue))
        st.subscribers.add(sub)
        metrics.STREAM_SUBSCRIBERS.inc()
        try:
            await self._ensure_channel(chat_id, st)
            # Captured after registering: later parts reach sub.queue, earlier ones are here.
            parts = list(st.parts)
            yield self._events(chat_id, st, sub, after_id, parts)
        finally:
            metrics.STREAM_SUBSCRIBERS.dec()
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
        last_version = status_version(chat.status, chat.generation)
        if chat.status is ChatStatus.RUNNING:
            self._want_relay(chat_id, st, chat.worker_id)
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
                metrics.STREAM_RESYNCS.inc()
                versions: list[tuple[int, int]] = []
                async for ev in self._resync(chat_id, last_id, versions):
                    if isinstance(ev, MessageEvent):
                        last_id = max(last_id, ev.message.id)
                    if isinstance(ev, StatusEvent):
                        last_status, last_version = ev.status, versions[-1]
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
                version = status_version(status, note.generation) if note.generation is not None else None
                if version is not None and version < last_version:
                    # Published before a change this subscriber has already shown: stale.
                    status = last_status
                elif version is not None:
                    last_version = version
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

    async def _resync(self, chat_id: uuid.UUID, last_id: int, versions: list[tuple[int, int]]) -> AsyncIterator[StreamEvent]:
        """The chat as the database has it now; the status's version is appended to `versions`."""
        async with self.db.read() as conn:
            chat = await chat_store.get_chat_in(conn, chat_id)
            msgs = await chat_store.visible_messages(conn, chat_id, last_id)
            queue = await chat_store.queue_in(conn, chat_id)
        versions.append(status_version(chat.status, chat.generation))
        yield StatusEvent(chat_id=chat_id, status=chat.status, worker_id=chat.worker_id)
        for m in msgs:
            yield MessageEvent(chat_id=chat_id, message=m)
        yield QueueUpdateEvent(chat_id=chat_id, queued_messages=queue)
