"""Pending actions (human in the loop): stored with the step that asked, answered under the chat's
row lock, expired by the deadline sweep, finished by the turn that turns the answers into results.
The status changes go through `store/machine.py` like every other (`domain.chat`'s rules)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from chatd.domain.actions import (
    ActionKind,
    ActionState,
    Answer,
    Decision,
    NewAction,
    PendingAction,
    check_answer,
)
from chatd.domain.chat import Chat, ChatStatus, WriteKind, plan_answer_action, worker_owns
from chatd.errors import Conflict, NotFound
from chatd.store import machine
from chatd.store.database import Database
from chatd.store.machine import lock_chat
from chatd.store.rows import action_from_row
from chatd.store.tables import pending_actions


class ActionResolved(Conflict):
    """The action was answered (or cancelled, or timed out) before: nothing is done twice."""

    code = "action_resolved"


@dataclass(frozen=True, slots=True)
class AnswerResult:
    chat: Chat
    action: PendingAction
    # The chat left `requires_action` (the last open action was answered): it is pending now.
    status_changed: bool = False


@dataclass(frozen=True, slots=True)
class Expired:
    chat: Chat
    actions: list[PendingAction] = field(default_factory=list)
    status_changed: bool = False


async def insert_actions(conn: AsyncConnection, chat: Chat, new: Sequence[NewAction], now: datetime) -> list[PendingAction]:
    out: list[PendingAction] = []
    for a in new:
        r = a.request
        deadline = now + timedelta(seconds=r.timeout_s) if r.timeout_s is not None else None
        row = (
            await conn.execute(
                insert(pending_actions)
                .values(
                    id=uuid.uuid4(), chat_id=chat.id, kind=r.kind.value, state=ActionState.PENDING.value,
                    tool_call_id=a.tool_call_id, tool_name=a.tool_name, server=r.server, args=a.args,
                    message=r.message, schema=r.schema, url=r.url, options=r.options, deadline=deadline,
                    created_at=now, resume=r.resume,
                )
                .returning(*pending_actions.c)
            )
        ).one()
        out.append(action_from_row(row))
    return out


async def finish_actions(conn: AsyncConnection, chat_id: uuid.UUID, ids: Sequence[uuid.UUID], now: datetime) -> None:
    """The answered actions' results are in the history (same transaction as the results)."""
    await conn.execute(
        update(pending_actions)
        .where(
            and_(
                pending_actions.c.chat_id == chat_id,
                pending_actions.c.id.in_(list(ids)),
                pending_actions.c.state == ActionState.ANSWERED.value,
            )
        )
        # A server's requestState is kept only while it may still be sent back.
        .values(state=ActionState.DONE.value, resume=None)
    )


async def resumable_actions(db: Database, now: datetime, found: Sequence[PendingAction]) -> list[PendingAction]:
    """Of a chat's open actions (read as a turn starts), the answered ones the resumed turn turns
    into results before it calls the model. An elicitation asked inside a running call
    (`PendingAction.in_call`) still open when a turn starts was left by a turn that died, and is
    cancelled here (its call is the journal's to answer; the user's late answer gets a conflict)."""
    stale = [a.id for a in found if a.in_call]
    if stale:
        async with db.write() as conn:
            await conn.execute(
                update(pending_actions)
                .where(and_(pending_actions.c.id.in_(stale), pending_actions.c.state.in_(machine.OPEN_STATES)))
                .values(state=ActionState.CANCELLED.value, decision=Decision.CANCEL.value, resolved_at=now)
            )
    return [a for a in found if a.state is ActionState.ANSWERED and not a.in_call]


async def ask_in_flight(
    db: Database, now: datetime, chat_id: uuid.UUID, worker_id: uuid.UUID, generation: int, new: NewAction
) -> PendingAction | None:
    """A running call asks the user (an MCP server's elicitation): the action is stored while the
    turn holds the chat (None when it no longer does); the chat stays `running`."""
    async with db.write() as conn:
        chat = await lock_chat(db, conn, chat_id)
        if not worker_owns(chat.status, chat.generation, chat.worker_id, mine=generation, me=worker_id, kind=WriteKind.LEASE):
            return None
        return (await insert_actions(conn, chat, [new], now))[0]


async def get_action(db: Database, action_id: uuid.UUID) -> PendingAction:
    async with db.read() as conn:
        row = (await conn.execute(select(pending_actions).where(pending_actions.c.id == action_id))).first()
    if row is None:
        raise NotFound("Action not found.")
    return action_from_row(row)


async def list_actions(db: Database, chat_id: uuid.UUID) -> list[PendingAction]:
    """Every action of the chat, whatever became of it, oldest first: how each call that asked
    was answered (denied, edited, nobody answered in time) stays readable after the wait."""
    async with db.read() as conn:
        rows = (
            await conn.execute(
                select(pending_actions)
                .where(pending_actions.c.chat_id == chat_id)
                .order_by(pending_actions.c.created_at, pending_actions.c.id)
            )
        ).all()
    return [action_from_row(r) for r in rows]


async def end_in_flight(db: Database, now: datetime, action_id: uuid.UUID, unanswered: Decision = Decision.CANCEL) -> PendingAction:
    """The call that asked is done with the answer (done), or stopped waiting for it (cancelled,
    recorded with `unanswered`: `timeout` when nobody answered in time)."""
    async with db.write() as conn:
        row = (await conn.execute(select(pending_actions).where(pending_actions.c.id == action_id))).one()
        action = action_from_row(row)
        if action.state is ActionState.ANSWERED:
            action = replace(action, state=ActionState.DONE)
        elif action.state is ActionState.PENDING:
            action = replace(action, state=ActionState.CANCELLED, decision=unanswered, resolved_at=now)
        else:
            return action
        await conn.execute(
            update(pending_actions)
            .where(pending_actions.c.id == action_id)
            .values(state=action.state.value, decision=action.decision.value if action.decision else None, resolved_at=action.resolved_at)
        )
        return action


async def answer_action(
    db: Database, now: datetime, chat_id: uuid.UUID, action_id: uuid.UUID, answer: Answer, answered_by: uuid.UUID
) -> AnswerResult:
    """Record one answer under the chat's row lock. The first answer wins; any later one is an
    `ActionResolved` conflict and changes nothing. The last open action's answer makes the chat
    pending under a new generation (`plan_answer_action`)."""
    async with db.write() as conn:
        chat = await lock_chat(db, conn, chat_id)
        row = (
            await conn.execute(
                select(pending_actions).where(and_(pending_actions.c.id == action_id, pending_actions.c.chat_id == chat_id))
            )
        ).first()
        if row is None:
            raise NotFound("Action not found.")
        action = action_from_row(row)
        # An elicitation asked inside a call is answered into that call, while the chat runs.
        waits = ChatStatus.RUNNING if action.in_call else ChatStatus.REQUIRES_ACTION
        if action.state is not ActionState.PENDING or chat.status is not waits:
            raise ActionResolved(
                "This action was already resolved.",
                {"state": action.state.value, "decision": action.decision.value if action.decision else None},
            )
        check_answer(action, answer)
        stored: dict[str, Any] = {}
        if answer.args is not None:
            stored["args"] = answer.args
        if answer.content is not None:
            stored["content"] = answer.content
        if answer.result is not None or (action.kind is ActionKind.CLIENT_TOOL and answer.decision is Decision.ACCEPT):
            stored["result"] = answer.result
        await conn.execute(
            update(pending_actions)
            .where(pending_actions.c.id == action_id)
            .values(state=ActionState.ANSWERED.value, decision=answer.decision.value, answer=stored, answered_by=answered_by, resolved_at=now)
        )
        action = replace(action, state=ActionState.ANSWERED, decision=answer.decision, answer=stored, resolved_at=now)
        extra: dict[str, Any] = {}
        if answer.always_allow and action.tool_name not in chat.allowed_tools:
            extra["allowed_tools"] = [*chat.allowed_tools, action.tool_name]
        t = plan_answer_action(chat.status, await _unanswered(conn, chat_id))
        changed = t.changes_status_from(chat.status)
        chat = (await machine.execute(conn, chat, t, now, **extra)).chat
        return AnswerResult(chat, action, status_changed=changed)


async def _unanswered(conn: AsyncConnection, chat_id: uuid.UUID) -> int:
    q = select(func.count()).select_from(pending_actions).where(
        and_(pending_actions.c.chat_id == chat_id, pending_actions.c.state == ActionState.PENDING.value)
    )
    return int((await conn.execute(q)).scalar_one())


async def expire_due(db: Database, now: datetime, limit: int = 100) -> list[Expired]:
    """The deadline sweep: actions past their deadline are answered `timeout` (the model reads a
    timeout result). Every replica may run it: candidates come from a read and each chat is
    re-checked under its row lock, so an answer that came first wins and nothing expires twice."""
    async with db.read() as conn:
        ids = [
            r.chat_id
            for r in (
                await conn.execute(
                    select(pending_actions.c.chat_id)
                    .where(and_(pending_actions.c.state == ActionState.PENDING.value, pending_actions.c.deadline <= now))
                    .distinct()
                    .limit(limit)
                )
            ).all()
        ]
    out: list[Expired] = []
    for chat_id in ids:
        async with db.write() as conn:
            chat = await lock_chat(db, conn, chat_id)
            if chat.status is not ChatStatus.REQUIRES_ACTION:
                continue
            due = [
                a
                for a in await machine.open_actions(conn, chat_id, ActionState.PENDING)
                if a.deadline is not None and a.deadline <= now
            ]
            if not due:
                continue
            await conn.execute(
                update(pending_actions)
                .where(pending_actions.c.id.in_([a.id for a in due]))
                .values(state=ActionState.ANSWERED.value, decision=Decision.TIMEOUT.value, answer={}, resolved_at=now)
            )
            t = plan_answer_action(chat.status, await _unanswered(conn, chat_id))
            changed = t.changes_status_from(chat.status)
            chat = (await machine.execute(conn, chat, t, now)).chat
            expired = [replace(a, state=ActionState.ANSWERED, decision=Decision.TIMEOUT, resolved_at=now) for a in due]
            out.append(Expired(chat, expired, changed))
    return out


async def with_actions(conn: AsyncConnection, found: list[Chat]) -> list[Chat]:
    """The chats with their pending actions (one read, only for chats that wait for answers or
    run a call that asks)."""
    waiting = [c.id for c in found if c.status in (ChatStatus.REQUIRES_ACTION, ChatStatus.RUNNING)]
    if not waiting:
        return found
    q = (
        select(pending_actions)
        .where(and_(pending_actions.c.chat_id.in_(waiting), pending_actions.c.state == ActionState.PENDING.value))
        .order_by(pending_actions.c.created_at, pending_actions.c.tool_call_id)
    )
    by_chat: dict[uuid.UUID, list[PendingAction]] = {}
    for r in (await conn.execute(q)).all():
        by_chat.setdefault(r.chat_id, []).append(action_from_row(r))
    return [replace(c, pending_actions=by_chat.get(c.id, [])) if c.id in by_chat else c for c in found]


async def chat_with_actions(db: Database, chat: Chat) -> Chat:
    if chat.status not in (ChatStatus.REQUIRES_ACTION, ChatStatus.RUNNING):
        return chat
    async with db.read() as conn:
        return (await with_actions(conn, [chat]))[0]


__all__ = [
    "ActionResolved",
    "AnswerResult",
    "Expired",
    "answer_action",
    "chat_with_actions",
    "expire_due",
    "finish_actions",
    "insert_actions",
    "resumable_actions",
    "with_actions",
]
