"""Asking the chat's user while a tool call runs (an MCP server's elicitation, either era): the
question becomes a pending action of the running chat, the user answers it through the API on
any replica, and the call that asked gets the answer. The wait is bounded
(`mcp_elicitation_timeout`): past it, or when the turn ends, the server gets `cancel`.

Unlike the durable actions of `requires_action`, the call stays open meanwhile (the server holds
its side of it); if this replica dies, the recovered turn drops the question and the journal
answers the call ("interrupted, not re-run")."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from chatd.domain.actions import (
    ActionRequest,
    ActionState,
    Answer,
    Decision,
    NewAction,
    PendingAction,
)
from chatd.domain.changes import ActionsRequested, ActionsResolved, Change, WaitChanged
from chatd.domain.clock import Clock
from chatd.pubsub.base import PubSub, chat_channel
from chatd.store import actions as action_store
from chatd.store.database import Database
from chatd.streams.outbox import Outbox

log = logging.getLogger(__name__)

# A notification can be lost: the database is read again at least this often while waiting.
RECHECK_SECONDS = 5.0


@dataclass
class InFlightAsker:
    db: Database
    outbox: Outbox
    pubsub: PubSub
    clock: Clock
    chat_id: uuid.UUID
    worker_id: uuid.UUID
    generation: int
    timeout: float
    # The chat's owner: their chat lists (`/chats/watch`) hear when the chat starts and stops
    # waiting for them, which its status (`running` throughout) does not tell.
    owner_id: uuid.UUID
    # Told once the question is stored (web push: the chat stays `running`, no turn end says so).
    on_asked: Sequence[Callable[[PendingAction], Awaitable[None]]] = field(default=())

    async def __call__(self, tool_call_id: str, tool_name: str, args: dict[str, Any], request: ActionRequest) -> Answer:
        new = NewAction(tool_call_id, tool_name, args, request)
        action = await action_store.ask_in_flight(self.db, self.clock.now(), self.chat_id, self.worker_id, self.generation, new)
        if action is None:
            return Answer(Decision.CANCEL)  # the chat is no longer this turn's: nobody to ask
        changed = asyncio.Event()
        # Nobody answered in time: the server is told `cancel` (what MCP has), but the action
        # records `timeout`, so a reloaded page says nobody answered rather than "cancelled".
        unanswered = Decision.CANCEL
        # Subscribed before the first read: an answer between the read and the wait is not missed.
        unsubscribe = await self.pubsub.subscribe(chat_channel(self.chat_id), lambda _p: changed.set())
        try:
            await self.outbox.publish([ActionsRequested(self.chat_id), WaitChanged(self.chat_id, self.owner_id)])
            for hook in self.on_asked:
                try:
                    await hook(action)
                except Exception:
                    log.warning("chat %s: a hook on an elicitation failed", self.chat_id, exc_info=True)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.timeout
            while True:
                changed.clear()
                current = await action_store.get_action(self.db, action.id)
                if current.state is ActionState.ANSWERED and current.decision is not None:
                    return Answer(current.decision, content=current.answer.get("content"))
                if current.state is not ActionState.PENDING:
                    return Answer(Decision.CANCEL)
                remaining = deadline - loop.time()
                if remaining <= 0:
                    log.info("chat %s: nobody answered the elicitation of %s in %gs", self.chat_id, tool_name, self.timeout)
                    unanswered = Decision.TIMEOUT
                    return Answer(Decision.CANCEL)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(remaining, RECHECK_SECONDS)):
                        await changed.wait()
        finally:
            # Written even when the turn is being cancelled: a question left pending would wait
            # for an answer nobody reads.
            ended = await asyncio.shield(action_store.end_in_flight(self.db, self.clock.now(), action.id, unanswered))
            ends: list[Change] = [WaitChanged(self.chat_id, self.owner_id)]
            if ended.state is ActionState.CANCELLED:
                ends[:0] = ActionsResolved.of(self.chat_id, [ended])
            with contextlib.suppress(Exception):
                await self.outbox.publish(ends)
            with contextlib.suppress(Exception):
                await unsubscribe()
