"""Executes the chat state machine's plans (`domain/chat.py`): the one place that changes a chat's
status, lease and turn generation, and the one place that promotes a queued message.

Every function here runs inside a caller's write transaction with the chat row locked.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Final

from sqlalchemy import and_, bindparam, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import ReturningUpdate
from sqlalchemy.sql.elements import ClauseElement

from chatd.domain.actions import (
    CANCELLED_AFTER_ANSWER_TEXT,
    CANCELLED_BY_USER_TEXT,
    ActionState,
    Decision,
    PendingAction,
)
from chatd.domain.chat import (
    ActionsFate,
    Chat,
    Message,
    NewMessage,
    QueuedMessage,
    Role,
    Transition,
)
from chatd.domain.parts import ToolResultPart, parts_from_json, parts_to_json
from chatd.errors import NotFound
from chatd.store.database import Database
from chatd.store.rows import (
    CHAT_COLUMNS,
    action_from_row,
    chat_from_row,
    message_from_row,
    queued_from_row,
)
from chatd.store.tables import chats, messages, pending_actions, queued_messages

# Leaving `running` (or being made pending again) always clears the worker's lease.
RELEASE: dict[str, Any] = {"worker_id": None, "started_at": None, "heartbeat_at": None}


def transition_values(t: Transition) -> dict[str, Any]:
    """The column changes of a transition (the promotion and queue clearing are separate)."""
    values: dict[str, Any] = {}
    if t.status is not None:
        values["status"] = t.status.value
    if t.release:
        values.update(RELEASE)
    if t.clear_error:
        values["last_error"] = None
    if t.advance:
        values["generation"] = chats.c.generation + 1
    return values


async def lock_chat(db: Database, conn: AsyncConnection, chat_id: uuid.UUID) -> Chat:
    row = await db.lock_row(conn, chats, chat_id)
    if row is None:
        raise NotFound("Chat not found.")
    return chat_from_row(row)


async def set_chat(conn: AsyncConnection, chat_id: uuid.UUID, now: datetime | None, **values: Any) -> Chat:
    """Update the chat (recounting its queue: any change may follow one) and return it as it is
    now; `now` None keeps `updated_at`."""
    if now is not None:
        values["updated_at"] = now
    if any(isinstance(v, ClauseElement) for v in values.values()):
        count = select(func.count()).select_from(queued_messages).where(queued_messages.c.chat_id == chat_id).scalar_subquery()
        built = update(chats).where(chats.c.id == chat_id).values(queued_count=count, **values).returning(*CHAT_COLUMNS)
        return chat_from_row((await conn.execute(built)).one())
    # Plain values (a turn's end, most transitions): a statement built once per set of columns.
    keys = tuple(sorted(values))
    query = _SET_CHAT.get(keys)
    if query is None:
        query = _SET_CHAT[keys] = (
            update(chats)
            .where(chats.c.id == bindparam("p_chat_id"))
            .values(queued_count=_QUEUE_LENGTH.scalar_subquery(), **{k: bindparam(f"p_{k}", type_=chats.c[k].type) for k in keys})
            .returning(*CHAT_COLUMNS)
        )
    params = {f"p_{k}": v for k, v in values.items()}
    params["p_chat_id"] = chat_id
    return chat_from_row((await conn.execute(query, params)).one())


async def queue_changed(conn: AsyncConnection, chat: Chat) -> Chat:
    """After adding to or taking from the queue without a transition: the chat's count follows.
    `updated_at` does not move: acquire serves pending chats oldest update first, and a message
    queued to a waiting-to-run chat must not send it to the back of the line."""
    return await set_chat(conn, chat.id, None)


@dataclass(frozen=True, slots=True)
class Applied:
    chat: Chat
    # The queued message promoted into the history, if any.
    promoted: Message | None = None
    # Pending actions the transition cancelled, and the "cancelled" tool results it wrote.
    cancelled: list[PendingAction] = field(default_factory=list)
    results: list[Message] = field(default_factory=list)

    @property
    def inserted(self) -> list[Message]:
        """Messages that went into the history, in id order."""
        return [*self.results, *([self.promoted] if self.promoted is not None else [])]


async def execute(conn: AsyncConnection, chat: Chat, t: Transition, now: datetime, **extra: Any) -> Applied:
    """Execute a transition on a locked chat (plus `extra` column changes). The pending actions'
    fate comes first: their calls' "cancelled" results precede a promoted message."""
    cancelled, results = await settle_actions(conn, chat, t.actions, now)
    promoted: Message | None = None
    if t.promote:
        promoted = await promote_oldest(conn, chat, now)
    if t.clear_queue:
        await conn.execute(delete(queued_messages).where(queued_messages.c.chat_id == chat.id))
    values = {**transition_values(t), **extra}
    if values or t.promote or t.clear_queue:
        chat = await set_chat(conn, chat.id, now, **values)
    return Applied(chat, promoted, cancelled, results)


async def apply(
    conn: AsyncConnection, chat: Chat, t: Transition, now: datetime, **extra: Any
) -> tuple[Chat, Message | None]:
    """`execute`, for callers that publish only the chat and the promoted message."""
    applied = await execute(conn, chat, t, now, **extra)
    return applied.chat, applied.promoted


# --- pending actions (human in the loop) ---------------------------------------------------------

# Actions whose call has no result in the history yet.
OPEN_STATES = (ActionState.PENDING.value, ActionState.ANSWERED.value)


# Statements every turn or step runs, built once: a statement memoizes its cache key, and
# building and keying one each time cost about as much CPU as running it (issue 15).
_OPEN_ACTIONS: Final = (
    select(pending_actions)
    .where(and_(pending_actions.c.chat_id == bindparam("p_chat_id"), pending_actions.c.state.in_(bindparam("p_states", expanding=True))))
    .order_by(pending_actions.c.created_at, pending_actions.c.tool_call_id)
)
_INSERT_MESSAGE: Final = insert(messages).returning(*messages.c)
_INSERT_MESSAGES_IN_ORDER: Final = insert(messages).returning(*messages.c, sort_by_parameter_order=True)
_QUEUE_LENGTH: Final = select(func.count()).select_from(queued_messages).where(queued_messages.c.chat_id == bindparam("p_chat_id"))
# `set_chat`'s UPDATE for each set of columns it was given plain values for.
_SET_CHAT: dict[tuple[str, ...], ReturningUpdate[Any]] = {}
_HAS_STEERED: Final = (
    select(queued_messages.c.id).where(and_(queued_messages.c.chat_id == bindparam("p_chat_id"), queued_messages.c.steer)).limit(1)
)


async def open_actions(conn: AsyncConnection, chat_id: uuid.UUID, *states: ActionState) -> list[PendingAction]:
    wanted = [s.value for s in states] if states else list(OPEN_STATES)
    rows = (await conn.execute(_OPEN_ACTIONS, {"p_chat_id": chat_id, "p_states": wanted})).all()
    return [action_from_row(r) for r in rows]


async def settle_actions(
    conn: AsyncConnection, chat: Chat, fate: ActionsFate, now: datetime
) -> tuple[list[PendingAction], list[Message]]:
    """Cancel the chat's open actions (`ActionsFate`): with a "cancelled" result for each call
    (CANCEL), or without (DROP: the edit removed the calls from the history)."""
    if fate is ActionsFate.KEEP:
        return [], []
    found = await open_actions(conn, chat.id)
    if not found:
        return [], []
    await conn.execute(
        update(pending_actions)
        .where(pending_actions.c.id.in_([a.id for a in found]))
        .values(state=ActionState.CANCELLED.value, decision=Decision.CANCEL.value, resolved_at=now, resume=None)
    )
    cancelled = [replace(a, state=ActionState.CANCELLED, decision=Decision.CANCEL, resolved_at=now) for a in found]
    # An elicitation asked inside a running call: the call's own result (or the fence) answers it.
    found = [a for a in found if not a.in_call]
    if fate is ActionsFate.DROP or not found:
        return cancelled, []
    new = [
        NewMessage(
            Role.TOOL,
            [
                ToolResultPart(
                    tool_call_id=a.tool_call_id,
                    tool_name=a.tool_name,
                    result={"error": CANCELLED_BY_USER_TEXT if a.state is ActionState.PENDING else CANCELLED_AFTER_ANSWER_TEXT},
                    is_error=True,
                )
            ],
            model_config_id=chat.last_model_config_id,
        )
        for a in found
    ]
    return cancelled, await insert_messages(conn, chat.id, new, now)


async def insert_messages(
    conn: AsyncConnection, chat_id: uuid.UUID, new: Sequence[NewMessage], now: datetime
) -> list[Message]:
    """Insert `new` in order (ids ascending) and return them as stored. Several rows (a step's
    answer and its tool results) go in one multi-row `INSERT … RETURNING` (SQLAlchemy's
    insertmanyvalues): one statement per step, not one per row."""
    if not new:
        return []
    params = [_message_values(chat_id, m, now) for m in new]
    if len(params) == 1:
        return [message_from_row((await conn.execute(_INSERT_MESSAGE, params[0])).one())]
    if conn.dialect.name == "postgresql":
        # SQLAlchemy's ordered form (`INSERT … SELECT … ORDER BY` a sentinel): rows and ids in
        # parameter order.
        rows = (await conn.execute(_INSERT_MESSAGES_IN_ORDER, params)).all()
    else:
        # SQLAlchemy does not promise SQLite's RETURNING order (asked to, it sends one row per
        # statement). The rows of one `VALUES` list go in in its order under the write lock, each
        # taking the next id, so the parameter order is the id order.
        rows = sorted((await conn.execute(_INSERT_MESSAGE, params)).all(), key=lambda r: r.id)
    return [message_from_row(r) for r in rows]


def _message_values(chat_id: uuid.UUID, m: NewMessage, now: datetime) -> dict[str, Any]:
    u = m.usage
    return {
        "chat_id": chat_id,
        "role": m.role.value,
        "content": parts_to_json(m.content),
        "visibility": m.visibility.value,
        "created_by": m.created_by,
        "model_config_id": m.model_config_id,
        "input_tokens": u.input_tokens if u else None,
        "output_tokens": u.output_tokens if u else None,
        "total_tokens": u.total_tokens if u else None,
        "reasoning_tokens": u.reasoning_tokens if u else None,
        "cache_creation_tokens": u.cache_creation_tokens if u else None,
        "cache_read_tokens": u.cache_read_tokens if u else None,
        "context_limit": m.context_limit,
        "total_cost_micros": m.total_cost_micros,
        "runtime_ms": m.runtime_ms,
        "compressed": m.compressed,
        "created_at": now,
    }


# --- the queue ---------------------------------------------------------------------------------


async def queue_of(conn: AsyncConnection, chat_id: uuid.UUID) -> list[QueuedMessage]:
    rows = (
        await conn.execute(
            select(queued_messages).where(queued_messages.c.chat_id == chat_id).order_by(queued_messages.c.id)
        )
    ).all()
    return [queued_from_row(r) for r in rows]


async def queue_length(conn: AsyncConnection, chat_id: uuid.UUID) -> int:
    return int((await conn.execute(_QUEUE_LENGTH, {"p_chat_id": chat_id})).scalar_one())


async def has_steered(conn: AsyncConnection, chat_id: uuid.UUID) -> bool:
    return (await conn.execute(_HAS_STEERED, {"p_chat_id": chat_id})).first() is not None


async def pop_queued(
    conn: AsyncConnection, chat_id: uuid.UUID, queued_id: int | None = None, *, steer_only: bool = False
) -> Any:
    """Delete and return the oldest (or a given) queued message; None when there is none."""
    cond = queued_messages.c.chat_id == chat_id
    if queued_id is not None:
        cond = and_(cond, queued_messages.c.id == queued_id)
    else:
        mine = queued_messages.c.chat_id == chat_id
        oldest = select(func.min(queued_messages.c.id)).where(and_(mine, queued_messages.c.steer) if steer_only else mine)
        cond = and_(cond, queued_messages.c.id == oldest.scalar_subquery())
    return (await conn.execute(delete(queued_messages).where(cond).returning(*queued_messages.c))).first()


async def move_into_history(conn: AsyncConnection, chat: Chat, row: Any, now: datetime) -> Message:
    """A popped queued row becomes a user message, answered with the chat's current model."""
    new = NewMessage(Role.USER, parts_from_json(row.content), created_by=row.created_by, model_config_id=chat.last_model_config_id)
    return (await insert_messages(conn, chat.id, [new], now))[0]


async def promote_oldest(conn: AsyncConnection, chat: Chat, now: datetime) -> Message | None:
    """Promote the oldest queued message (FIFO): the only place a backlog head enters the history."""
    row = await pop_queued(conn, chat.id)
    return None if row is None else await move_into_history(conn, chat, row, now)
