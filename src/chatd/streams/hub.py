"""The stream hub: one per process, the state of every chat with a turn or a subscriber here.

Its parts: `parts.PartLog` (a chat's numbered part buffer, coalescing, serving other replicas),
`mirror.RelayMirror` (following a chat that runs on another replica), `subscribers` (a
subscriber's typed queue, the snapshot, the shared message read) and `notes.Notification` (the
durable changes that cross replicas). The hub wires them per chat and to the pubsub channel."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any

from chatd import metrics
from chatd.domain.changes import (
    ActionsRequested,
    Announced,
    HistoryReplaced,
    MessagesAdded,
    QueueChanged,
    StatusChanged,
)
from chatd.domain.chat import ChatStatus, Message, Role, Visibility, status_version
from chatd.domain.events import (
    ActionRequiredEvent,
    MessageEvent,
    MessagePartEvent,
    QueueUpdateEvent,
    StatusEvent,
    StreamEvent,
)
from chatd.domain.parts import Part
from chatd.pubsub.base import PubSub, Unsubscribe, chat_channel
from chatd.store import chats as chat_store
from chatd.store.database import Database
from chatd.streams.mirror import RelayMirror
from chatd.streams.notes import Notification
from chatd.streams.parts import PartLog, PartOptions, RateLimitedWarning
from chatd.streams.relay import RelayClient, RelayItem
from chatd.streams.subscribers import (
    MessageCache,
    NoteArrival,
    PartArrival,
    Snapshot,
    Subscriber,
    read_snapshot,
)

log = logging.getLogger(__name__)

# What a stream shows of the history (`chat_store.visible_messages`).
_VISIBLE = frozenset({Visibility.USER, Visibility.BOTH})
# Announced writes kept for their notifications' arrival (`StreamHub._remember`).
_WRITTEN_KEPT = 1024


@dataclass(eq=False)
class _ChatState:
    parts: PartLog
    cache: MessageCache
    subscribers: set[Subscriber] = field(default_factory=set)
    # Notifications that reached this replica for the chat (numbers their arrivals).
    notes_seen: int = 0
    unsubscribe: Unsubscribe | None = None
    # Set when this replica can follow other replicas (PostgreSQL).
    mirror: RelayMirror | None = None

    @property
    def relaying(self) -> bool:
        return self.mirror is not None and self.mirror.task is not None


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
        self.subscriber_queue = subscriber_queue
        self.message_cache = message_cache
        self.replica_id = replica_id
        self.relay_client = relay_client
        self._parts = PartOptions(capacity=part_buffer, coalesce_window=coalesce_window, coalesce_parts=coalesce_parts)
        self._chats: dict[uuid.UUID, _ChatState] = {}
        self._buffer_warning = RateLimitedWarning()
        self._slow_warning = RateLimitedWarning()
        self._pubsub_lock = asyncio.Lock()
        # Database checks behind relay decisions (see `_check_relay`); each ends on its own.
        self._checks: set[asyncio.Task[None]] = set()
        # Messages this replica wrote and announced, until their notification comes back here
        # (`notify`, `_on_note`): by (chat, `MessagesAdded.after_id`), oldest first.
        self._written: dict[tuple[uuid.UUID, int], tuple[int, list[Message]]] = {}

    def _state(self, chat_id: uuid.UUID) -> _ChatState:
        st = self._chats.get(chat_id)
        if st is not None:
            return st

        def fanout(ev: MessagePartEvent) -> None:
            self._fanout(chat_id, state, ev)

        parts = PartLog(chat_id, self._parts, fanout, self._buffer_warning, self._slow_warning)
        state = self._chats[chat_id] = _ChatState(parts, MessageCache(self.message_cache))
        if self.relay_client is not None:
            state.mirror = RelayMirror(
                chat_id, self.relay_client, parts, fanout, wanted=lambda: bool(state.subscribers) and not parts.buffering
            )
        return state

    # --- worker side ---------------------------------------------------------------------

    def start_buffering(self, chat_id: uuid.UUID) -> None:
        """Called before `running` is published, so a subscriber who sees it never misses parts."""
        st = self._state(chat_id)
        self._stop_relay(st)
        st.parts.start()

    def stop_buffering(self, chat_id: uuid.UUID) -> None:
        st = self._chats.get(chat_id)
        if st is None:
            return
        st.parts.stop()
        self._maybe_forget(chat_id, st)

    def clear_parts(self, chat_id: uuid.UUID) -> None:
        """After a step is persisted (its parts are now a message) and before a retry."""
        st = self._chats.get(chat_id)
        if st is not None:
            st.parts.clear()

    def publish_part(self, chat_id: uuid.UUID, role: Role, part: Part) -> None:
        """Publish a streamed part (text deltas may be merged first: `PartLog.publish`)."""
        st = self._chats.get(chat_id)
        if st is not None:
            st.parts.publish(role, part)

    def flush_parts(self, chat_id: uuid.UUID) -> None:
        """Publish the deltas waiting to be merged now (before something that must follow them)."""
        st = self._chats.get(chat_id)
        if st is not None:
            st.parts.flush()

    def _fanout(self, chat_id: uuid.UUID, st: _ChatState, ev: MessagePartEvent) -> None:
        arrival = PartArrival(st.parts.generation, ev)
        for sub in st.subscribers:
            if not sub.put(arrival):
                metrics.STREAM_DROPPED.inc()
                self._slow_warning.warn("chat %s: slow subscriber, dropping a message part", chat_id)

    # --- the internal relay: serving this replica's parts to other replicas -----------------

    async def follow(self, chat_id: uuid.UUID) -> AsyncGenerator[RelayItem, None]:
        """The buffered parts of a chat running here (with sequence numbers), then live parts,
        clears and the end. Ends at once when the chat is not running on this replica."""
        st = self._chats.get(chat_id)
        if st is None or not st.parts.buffering:
            yield RelayItem("end", 0)
            return
        try:
            async for item in st.parts.follow():
                yield item
        finally:
            self._maybe_forget(chat_id, st)

    # --- mirroring a chat that runs on another replica ---------------------------------------

    def _want_relay(self, chat_id: uuid.UUID, st: _ChatState, owner: uuid.UUID | None) -> None:
        mirror = st.mirror
        if mirror is None or owner is None or owner == self.replica_id or st.parts.buffering or not st.subscribers:
            return
        if not mirror.follows(owner):
            mirror.start(owner)

    def _check_relay(self, chat_id: uuid.UUID, st: _ChatState) -> None:
        """Relay what the database says: stop only once the chat stopped running there. Status
        notifications are published after commit from different connections, so their order is
        not the commit order: the `pending` of a recovery (or a send) can arrive after the
        `running` of the worker that acquired the chat next, and must not cut that turn's parts."""
        relay = st.mirror.task if st.mirror is not None else None

        async def check() -> None:
            try:
                chat = await chat_store.get_chat(self.db, chat_id)
            except Exception:
                log.warning("could not re-read chat %s; keeping its relay", chat_id, exc_info=True)
                return
            current = st.mirror.task if st.mirror is not None else None
            if st.parts.buffering or current is not relay:
                return  # decided meanwhile: a later `running` started another relay
            if chat.status is ChatStatus.RUNNING and chat.worker_id is not None:
                self._want_relay(chat_id, st, chat.worker_id)
            else:
                self._stop_relay(st)

        task = asyncio.create_task(check(), name=f"relay-check-{chat_id}")
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    def _stop_relay(self, st: _ChatState) -> None:
        if st.mirror is not None:
            st.mirror.stop()

    # --- publishing durable changes (after commit) ----------------------------------------

    async def notify(self, chat_id: uuid.UUID, note: Notification) -> None:
        """The chat channel's transport; only `streams/outbox.py` publishes (tests inject notes)."""
        # Parts waiting to be merged were streamed before this change: they go first.
        self.flush_parts(chat_id)
        st = self._chats.get(chat_id)
        if st is not None and st.subscribers:
            for change in note.changes:
                if isinstance(change, MessagesAdded) and change.written:
                    self._remember(chat_id, change)
        await self.pubsub.publish(chat_channel(chat_id), note.to_payload())

    def has_subscribers(self, chat_id: uuid.UUID) -> bool:
        st = self._chats.get(chat_id)
        return st is not None and bool(st.subscribers)

    def _remember(self, chat_id: uuid.UUID, change: MessagesAdded) -> None:
        """Keep what a transaction of this replica wrote for the arrival of its notification:
        this replica's subscribers then get the messages without reading them back. Only the
        visible ones, as a stream's read has them. Bounded: a notification that never comes back
        (the pubsub was down) costs its subscribers a database read, as any would."""
        shown = sorted((m for m in change.written if m.visibility in _VISIBLE), key=lambda m: m.id)
        self._written[(chat_id, change.after_id)] = (change.shown_before, shown)
        while len(self._written) > _WRITTEN_KEPT:
            del self._written[next(iter(self._written))]

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
            if not st.parts.buffering and st.subscribers:
                self._check_relay(chat_id, st)
            for sub in st.subscribers:
                sub.lost()
            return
        note = Notification.from_payload(payload)
        if self._written:
            for change in note.changes:
                if isinstance(change, MessagesAdded):
                    written = self._written.pop((chat_id, change.after_id), None)
                    if written is not None:
                        st.cache.prime(st.notes_seen, *written)
        status = note.status
        if status is not None and status.status is ChatStatus.RUNNING and status.worker_id is not None:
            self._want_relay(chat_id, st, status.worker_id)
        elif status is not None and not st.parts.buffering and st.relaying:
            self._check_relay(chat_id, st)
        arrival = NoteArrival(st.notes_seen, note)
        for sub in st.subscribers:
            if not sub.put(arrival):
                # Never lose a durable change: re-sync from the database on the next read.
                sub.lost()

    def _maybe_forget(self, chat_id: uuid.UUID, st: _ChatState) -> None:
        if not st.subscribers and st.relaying:
            self._stop_relay(st)
        if not st.parts.buffering and not st.subscribers and st.unsubscribe is None and not st.parts.followers:
            self._chats.pop(chat_id, None)

    @contextlib.asynccontextmanager
    async def subscribe(self, chat_id: uuid.UUID, after_id: int = 0) -> AsyncIterator[ChatEvents]:
        """Subscribe first, then snapshot: status, buffered parts, messages after `after_id`, queue.

        Nothing published after this call starts is missed, and no message is sent twice.
        """
        st = self._state(chat_id)
        sub = Subscriber(self.subscriber_queue)
        st.subscribers.add(sub)
        metrics.STREAM_SUBSCRIBERS.inc()
        try:
            await self._ensure_channel(chat_id, st)
            # Captured after registering: later parts reach the subscriber, earlier ones are here.
            parts = st.parts.snapshot()
            yield ChatEvents(self._events(chat_id, st, sub, after_id, parts, st.parts.generation), sub)
        finally:
            metrics.STREAM_SUBSCRIBERS.dec()
            st.subscribers.discard(sub)
            if not st.subscribers and st.unsubscribe is not None:
                unsub, st.unsubscribe = st.unsubscribe, None
                with contextlib.suppress(Exception):
                    await unsub()
            self._maybe_forget(chat_id, st)

    async def _events(
        self,
        chat_id: uuid.UUID,
        st: _ChatState,
        sub: Subscriber,
        after_id: int,
        parts: list[MessagePartEvent],
        parts_generation: int,
    ) -> AsyncGenerator[StreamEvent, None]:
        snap = await read_snapshot(self.db, chat_id, after_id)
        # Parts of an earlier generation than the one the read ended in belong to a step that is
        # persisted (it is among the messages read, or its message event is in the queue) or was
        # retried: sent after those messages they would show the step twice. That holds for the
        # parts captured and for those that reached the queue before the read ended (a step's
        # last deltas, merged, are published when its parts are dropped). The worker drops a
        # step's parts before its commit, so a read that finds the message finds them gone.
        current = st.parts.generation
        if current != parts_generation:
            parts = []
        if snap.chat.status is ChatStatus.RUNNING:
            self._want_relay(chat_id, st, snap.chat.worker_id)
        last_id, last_status, last_version = _position(after_id, snap)
        # Actions this subscriber was told about: each is announced once.
        shown = {a.id for a in snap.actions}
        for ev in snap.events(parts, queue_if_empty=False):
            yield ev

        while True:
            if sub.stopped:
                return
            if sub.resync:
                sub.resync = False
                metrics.STREAM_RESYNCS.inc()
                snap = await read_snapshot(self.db, chat_id, last_id)
                current = st.parts.generation
                last_id, last_status, last_version = _position(last_id, snap)
                for ev in snap.events([], queue_if_empty=True):
                    if isinstance(ev, ActionRequiredEvent):
                        if ev.action.id in shown:
                            continue
                        shown.add(ev.action.id)
                    yield ev
            item = await sub.next()
            if item is None:
                continue  # stopped, or a re-sync is due
            if isinstance(item, PartArrival):
                if item.generation >= current:
                    yield item.event
                continue
            # In `rank` order (the outbox's): messages, status, resolved and requested actions,
            # the queue, then what `Announced` changes carry.
            actions_due = False
            for change in item.note.changes:
                if actions_due and change.rank > ActionsRequested.rank:
                    actions_due = False
                    async for ev in self._new_actions(chat_id, shown):
                        yield ev
                match change:
                    case MessagesAdded() | HistoryReplaced():
                        if isinstance(change, HistoryReplaced):
                            last_id = 0
                        msgs = await st.cache.messages_after(self.db, chat_id, last_id, item.seq, lambda: st.notes_seen)
                        for m in msgs:
                            if m.id > last_id:
                                last_id = m.id
                                yield MessageEvent(chat_id=chat_id, message=m)
                    case StatusChanged(status=status, generation=generation, worker_id=worker_id):
                        version = status_version(status, generation)
                        if version < last_version:
                            # Published before a change this subscriber has already shown: stale.
                            status = last_status
                        else:
                            last_version = version
                        if status != last_status:
                            last_status = status
                            yield StatusEvent(chat_id=chat_id, status=status, worker_id=worker_id)
                        waits = change.status is ChatStatus.REQUIRES_ACTION and last_status is ChatStatus.REQUIRES_ACTION
                        actions_due = actions_due or waits
                    case ActionsRequested():
                        actions_due = True
                    case QueueChanged():
                        yield QueueUpdateEvent(chat_id=chat_id, queued_messages=await chat_store.list_queue(self.db, chat_id))
                    case Announced():
                        for ev in change.events():
                            yield ev
            if actions_due:
                async for ev in self._new_actions(chat_id, shown):
                    yield ev

    async def _new_actions(self, chat_id: uuid.UUID, shown: set[uuid.UUID]) -> AsyncIterator[StreamEvent]:
        """The chat's waiting actions this subscriber was not shown yet (each is shown once)."""
        for a in await chat_store.waiting_actions(self.db, chat_id):
            if a.id not in shown:
                shown.add(a.id)
                yield ActionRequiredEvent(chat_id=chat_id, action=a)


class ChatEvents:
    """A subscriber's events (`StreamHub.subscribe`). `stop()`, from any task, ends them at their
    next read: a reader that must also end on a clock (a token re-checked, shutdown) needs no
    task per event to wait for both."""

    __slots__ = ("_events", "_sub")

    def __init__(self, events: AsyncGenerator[StreamEvent, None], sub: Subscriber) -> None:
        self._events = events
        self._sub = sub

    def __aiter__(self) -> ChatEvents:
        return self

    def __anext__(self) -> Awaitable[StreamEvent]:
        return self._events.__anext__()

    def stop(self) -> None:
        self._sub.stop()

    async def aclose(self) -> None:
        await self._events.aclose()


def _position(last_id: int, snap: Snapshot) -> tuple[int, ChatStatus, tuple[int, int]]:
    """Where a subscriber stands once it has a snapshot: the newest message it has, the status
    it showed and that status's version (to drop older status notifications)."""
    newest = max((m.id for m in snap.messages), default=last_id)
    return max(last_id, newest), snap.chat.status, status_version(snap.chat.status, snap.chat.generation)


__all__ = ["ChatEvents", "Notification", "StreamHub"]
