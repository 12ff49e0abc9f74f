"""The worker's `TurnSink`: streamed parts go to the stream hub; steps, steered messages and
compaction rows go to the store under the ownership check, and are announced after commit."""

from __future__ import annotations

import uuid
from datetime import timedelta

from chatd.domain.actions import NewAction
from chatd.domain.changes import ActionsRequested, MessagesAdded, QueueChanged, RetryScheduled
from chatd.domain.chat import Chat, NewMessage, Role, Visibility
from chatd.domain.clock import Clock
from chatd.domain.parts import Part
from chatd.loop import Compaction, Interrupted, PromptMessage, Step
from chatd.providers import RetryDecision
from chatd.store import turns
from chatd.store.database import Database
from chatd.store.turns import LostOwnership
from chatd.streams.hub import StreamHub
from chatd.streams.outbox import Outbox


class StoreSink:
    def __init__(
        self,
        db: Database,
        hub: StreamHub,
        outbox: Outbox,
        clock: Clock,
        chat: Chat,
        worker_id: uuid.UUID,
        model_config_id: uuid.UUID,
    ) -> None:
        self.db = db
        self.hub = hub
        self.outbox = outbox
        self.clock = clock
        self.chat_id = chat.id
        self.owner_id = chat.owner_id
        self.worker_id = worker_id
        self.model_config_id = model_config_id
        # The turn generation this turn acquired the chat with: every write is fenced by it.
        self.generation = chat.generation
        # False when the last step's own transaction found no steered message waiting: the next
        # `take_steered` then returns at once instead of opening a write transaction.
        self._steered_waiting = True

    async def publish_part(self, role: Role, part: Part) -> None:
        self.hub.publish_part(self.chat_id, role, part)

    async def _write(
        self, new: list[NewMessage], *, ends_tool_calls: bool = True, actions: list[NewAction] | None = None,
        resolves: list[uuid.UUID] | None = None, peek_steered: bool = False,
    ) -> None:
        try:
            written = await turns.persist_step(
                self.db, self.clock.now(), self.chat_id, self.worker_id, self.generation, new, ends_tool_calls=ends_tool_calls,
                actions=actions or (), resolves=resolves or (), peek_steered=peek_steered,
                # Streams of this chat here are answered with the step's messages, not a read.
                shown_before=self.hub.has_subscribers(self.chat_id),
                # The parts of this step are a message now; a late subscriber must not get both.
                # Dropped before the commit: a snapshot whose read finds the message then cannot
                # find the parts still there (a `chatd chat` connecting then printed an answer twice).
                before_commit=lambda: self.hub.clear_parts(self.chat_id),
            )
        except LostOwnership as exc:
            raise Interrupted(str(exc)) from exc
        self._steered_waiting = written.steered
        # With actions, the status (`requires_action`) follows when the turn settles.
        await self.outbox.publish(
            [
                *MessagesAdded.of(self.chat_id, written.messages, shown_before=written.shown_before),
                *([ActionsRequested(self.chat_id)] if written.actions else []),
            ]
        )

    async def persist_step(self, step: Step) -> None:
        new: list[NewMessage] = []
        if not step.resolves:
            new.append(
                NewMessage(
                    Role.ASSISTANT,
                    list(step.assistant_parts),
                    model_config_id=self.model_config_id,
                    usage=step.usage,
                    context_limit=step.context_limit,
                    total_cost_micros=step.cost_micros,
                    runtime_ms=step.runtime_ms,
                )
            )
        new += [NewMessage(Role.TOOL, [r], model_config_id=self.model_config_id) for r in step.tool_results]
        await self._write(new, actions=step.actions, resolves=step.resolves, peek_steered=step.steer_next)

    async def on_retry(self, attempt: int, delay_s: float, error: RetryDecision) -> None:
        from chatd.loop import describe

        self.hub.clear_parts(self.chat_id)
        at = self.clock.now() + timedelta(seconds=delay_s)
        await self.outbox.publish([RetryScheduled(self.chat_id, attempt, int(delay_s * 1000), describe(error), at)])

    async def take_steered(self) -> list[PromptMessage]:
        if not self._steered_waiting:
            # The step's transaction just found none: nothing to move. (A steer committed since
            # is picked up at the next boundary, as one arriving a moment later would be.)
            self._steered_waiting = True
            return []
        msgs, _queue = await turns.take_steered(self.db, self.clock.now(), self.chat_id, self.worker_id, self.generation)
        if not msgs:
            return []
        await self.outbox.publish([*MessagesAdded.of(self.chat_id, msgs), QueueChanged(self.chat_id, self.owner_id)])
        return [PromptMessage(m.role, list(m.content)) for m in msgs]

    async def persist_compaction(self, compaction: Compaction) -> None:
        from chatd.domain.parts import TextPart

        await self._write(
            [
                NewMessage(Role.USER, [TextPart(text=compaction.summary_prompt_text)], Visibility.MODEL, compressed=True),
                NewMessage(
                    Role.ASSISTANT, [compaction.call], Visibility.USER, model_config_id=self.model_config_id,
                    usage=compaction.usage, total_cost_micros=compaction.cost_micros, context_limit=compaction.context_limit,
                    compressed=True,
                ),
                NewMessage(Role.TOOL, [compaction.result], Visibility.USER, compressed=True),
            ],
            # A re-run that compacts before re-issuing a crashed call must still meet its record.
            ends_tool_calls=False,
        )
