"""A chat's message parts on this replica: numbered, buffered while its turn runs here (so a late
subscriber and other replicas get what was already streamed), text deltas merged, and served to
the replicas that relay the chat (`follow`).

Parts are transient and per token: they never touch the database. Every published part gets
the next sequence number of its chat; the buffer holds the numbers `first_seq ..` of the current
step. A chat mirrored from another replica (`streams/mirror.py`) fills the same buffer."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any

from chatd import metrics
from chatd.domain.chat import Role
from chatd.domain.events import MessagePartEvent
from chatd.domain.parts import Part, ReasoningPart, TextPart
from chatd.streams.relay import RelayItem

log = logging.getLogger(__name__)


class RateLimitedWarning:
    """One warning per `every` seconds, with the count of those it held back (a slow subscriber
    warns per part otherwise)."""

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
class _Follower:
    """A replica relaying this chat (one `GET /internal/v1/chats/{id}/parts`)."""

    queue: asyncio.Queue[RelayItem]
    overflowed: bool = False


def _mergeable(a: Part, b: Part) -> bool:
    if isinstance(a, TextPart) and isinstance(b, TextPart):
        return True
    # Reasoning deltas carry no signature until the end; one that does starts a new part.
    return (
        isinstance(a, ReasoningPart) and isinstance(b, ReasoningPart)
        and a.signature is None and b.signature is None and a.provider == b.provider
    )


@dataclass(frozen=True, slots=True)
class PartOptions:
    # The most parts a chat's buffer holds (the oldest is dropped past it).
    capacity: int = 10000
    # Seconds a text delta may wait to be merged with the next ones (0 = publish each delta),
    # and the most deltas merged into one part.
    coalesce_window: float = 0.0
    coalesce_parts: int = 32


@dataclass(eq=False)
class PartLog:
    chat_id: uuid.UUID
    options: PartOptions
    # Local fan-out of every published part (the chat's subscribers on this replica).
    fanout: Callable[[MessagePartEvent], None]
    buffer_warning: RateLimitedWarning
    slow_warning: RateLimitedWarning
    # True while this replica runs the chat's turn.
    buffering: bool = False
    parts: deque[MessagePartEvent] = field(default_factory=deque)
    # Sequence number of parts[0]; every published part gets the next number.
    first_seq: int = 1
    next_seq: int = 1
    # Grows whenever the buffer is emptied (a step persisted, a retry, a turn's start or end): a
    # snapshot taken before a change of it holds parts that are no longer in flight.
    generation: int = 0
    followers: set[_Follower] = field(default_factory=set)
    # Text (or reasoning) deltas not yet published, to be merged into one part: the first delta
    # (its role and kind), and the texts of all of them.
    pending: tuple[Role, TextPart | ReasoningPart] | None = None
    pending_texts: list[str] = field(default_factory=list)
    flush_timer: asyncio.TimerHandle | None = None

    # --- the turn running here -----------------------------------------------------------------

    def start(self) -> None:
        self.buffering = True
        self.parts.clear()
        self.first_seq = self.next_seq
        self.generation += 1

    def stop(self) -> None:
        self.flush()
        self.buffering = False
        self.parts.clear()
        self.first_seq = self.next_seq
        self.generation += 1
        self._to_followers(RelayItem("end", 0))

    def clear(self) -> None:
        """After a step is persisted (its parts are now a message) and before a retry."""
        self.flush()
        self.parts.clear()
        self.first_seq = self.next_seq
        self.generation += 1
        self._to_followers(RelayItem("clear", self.next_seq - 1))

    def publish(self, role: Role, part: Part) -> None:
        """With a coalescing window, consecutive text (or reasoning) deltas are merged and
        published as one part when the window ends, after `coalesce_parts` deltas, or before
        anything else about the chat (another part, a clear, a message, a notification, the end
        of the turn), so order is kept. A merged part is still a `message_part` whose text is the
        deltas joined: fan-out costs per window, not per token. Snapshots stay exact: a
        subscriber who arrives while deltas wait gets them live when they are published, and the
        buffer never holds them twice."""
        if self.options.coalesce_window > 0 and isinstance(part, (TextPart, ReasoningPart)):
            self._coalesce(role, part)
            return
        self.flush()
        self._publish(MessagePartEvent(chat_id=self.chat_id, role=role, part=part))

    def flush(self) -> None:
        """Publish the deltas waiting to be merged now (before something that must follow them)."""
        if self.flush_timer is not None:
            self.flush_timer.cancel()
            self.flush_timer = None
        if self.pending is None:
            return
        (role, first), texts = self.pending, self.pending_texts
        self.pending, self.pending_texts = None, []
        part = first if len(texts) == 1 else first.model_copy(update={"text": "".join(texts)})
        self._publish(MessagePartEvent(chat_id=self.chat_id, role=role, part=part))

    def snapshot(self) -> list[MessagePartEvent]:
        return list(self.parts)

    def drop_buffered(self) -> None:
        """A mirrored turn's step was persisted, or the turn ended, on the replica running it."""
        self.parts.clear()
        self.generation += 1

    def _coalesce(self, role: Role, part: TextPart | ReasoningPart) -> None:
        pending = self.pending
        if pending is None or pending[0] is not role or not _mergeable(pending[1], part):
            self.flush()
            self.pending = (role, part)
            self.flush_timer = asyncio.get_running_loop().call_later(self.options.coalesce_window, self.flush)
        self.pending_texts.append(part.text)
        if len(self.pending_texts) >= self.options.coalesce_parts:
            self.flush()

    def _publish(self, ev: MessagePartEvent) -> None:
        seq = self.next_seq
        self.next_seq += 1
        if self.buffering:
            self.keep(ev)
        else:
            self.first_seq = self.next_seq
        self.fanout(ev)
        self._to_followers(RelayItem("part", seq, ev))

    # --- the buffer (also filled by a mirror of another replica) ---------------------------------

    def keep(self, ev: MessagePartEvent) -> None:
        if len(self.parts) >= self.options.capacity:
            self.parts.popleft()
            self.first_seq += 1
            self.buffer_warning.warn("chat %s: part buffer full, dropping the oldest part", self.chat_id)
        self.parts.append(ev)

    # --- serving other replicas ------------------------------------------------------------------

    def _to_followers(self, item: RelayItem) -> None:
        for f in list(self.followers):
            try:
                f.queue.put_nowait(item)
            except asyncio.QueueFull:
                # The relaying replica reconnects and resumes from its last sequence number.
                f.overflowed = True
                self.followers.discard(f)
                self.slow_warning.warn("a relaying replica is too slow; disconnecting it")

    async def follow(self) -> AsyncGenerator[RelayItem, None]:
        """The buffered parts (with their sequence numbers), then live parts, clears and the end.
        Ends at once when the turn does not run here."""
        if not self.buffering:
            yield RelayItem("end", 0)
            return
        f = _Follower(asyncio.Queue(self.options.capacity + 64))
        self.followers.add(f)
        relays_out = metrics.RELAY_CONNECTIONS.labels("out")
        relays_out.inc()
        try:
            yield RelayItem("clear", self.first_seq - 1)
            for i, ev in enumerate(list(self.parts)):
                yield RelayItem("part", self.first_seq + i, ev)
            while True:
                if f.overflowed and f.queue.empty():
                    return
                item = await f.queue.get()
                yield item
                if item.kind == "end":
                    return
        finally:
            relays_out.dec()
            self.followers.discard(f)
