"""Mirroring a chat whose turn runs on another replica: follow that replica's part relay, keep a
copy of its buffer (so this replica's later subscribers get the same snapshot) and fan its live
parts out to the subscribers here. One relay connection per (chat, replica), however many
subscribers; it stops when the last local subscriber leaves or the turn ends."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from chatd import metrics
from chatd.domain.events import MessagePartEvent
from chatd.streams.parts import PartLog
from chatd.streams.relay import RelayClient

log = logging.getLogger(__name__)


@dataclass(eq=False)
class RelayMirror:
    chat_id: uuid.UUID
    client: RelayClient
    parts: PartLog
    fanout: Callable[[MessagePartEvent], None]
    # Whether mirroring is still wanted (local subscribers, and the turn does not run here).
    wanted: Callable[[], bool]
    task: asyncio.Task[None] | None = None
    owner: uuid.UUID | None = None

    def follows(self, owner: uuid.UUID) -> bool:
        return self.task is not None and not self.task.done() and self.owner == owner

    def start(self, owner: uuid.UUID) -> None:
        self.stop()
        self.owner = owner
        self.task = asyncio.create_task(self._run(owner), name=f"relay-{self.chat_id}")

    def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.task, self.owner = None, None

    async def _run(self, owner: uuid.UUID) -> None:
        """Reconnects resume by sequence number: a part is delivered once, never twice."""
        last, failures = 0, 0
        while self.wanted():
            relays_in = metrics.RELAY_CONNECTIONS.labels("in")
            relays_in.inc()
            try:
                async for item in self.client.follow(owner, self.chat_id):
                    failures = 0
                    if item.kind == "clear":
                        self.parts.drop_buffered()
                    elif item.kind == "part" and item.event is not None:
                        self.parts.keep(item.event)
                        if item.seq > last:
                            last = item.seq
                            self.fanout(item.event)
                    elif item.kind == "end":
                        self.parts.drop_buffered()
                        return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("relay of chat %s from replica %s interrupted: %s", self.chat_id, owner, exc)
            finally:
                relays_in.dec()
            failures += 1
            if failures > 5:
                log.warning("giving up relaying chat %s from replica %s", self.chat_id, owner)
                return
            await asyncio.sleep(min(0.1 * 2**failures, 3.0))
