"""The worker's side of the chat row: acquire, heartbeat, stale recovery, per-step persistence
and the end of a turn. Every write after acquire is fenced by the turn generation the worker
acquired with (`domain.chat.worker_owns`): a write under a stale generation changes nothing and
says it lost."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import ColumnElement, Select, and_, bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from chatd.domain.actions import NewAction, PendingAction
from chatd.domain.chat import (
    ActionsFate,
    Chat,
    ChatStatus,
    Message,
    NewMessage,
    QueuedMessage,
    Role,
    Transition,
    TurnEnd,
    Visibility,
    WriteKind,
    plan_acquire,
    plan_finish,
    plan_release,
    plan_request_actions,
    worker_owns,
)
from chatd.errors import ChatdError, UsageLimitExceeded
from chatd.store import machine
from chatd.store.actions import finish_actions, insert_actions, resumable_actions
from chatd.store.database import Database
from chatd.store.machine import insert_messages, lock_chat
from chatd.store.rows import CHAT_COLUMNS, chat_from_row, message_from_row
from chatd.store.tables import chats, messages
from chatd.store.tool_calls import forget_started
from chatd.store.usage import check_spend

# What a worker holds for each chat it runs: the generation it acquired it with.
Leases = Mapping[uuid.UUID, int]


class LostOwnership(ChatdError):
    """The chat is no longer this turn's (edited, promoted, re-acquired): write nothing."""


@dataclass(frozen=True, slots=True)
class FinishResult:
    chat: Chat
    # False when the turn was fenced off (another turn holds or held the chat): publish nothing.
    applied: bool
    promoted: Message | None = None
    queue: list[QueuedMessage] = field(default_factory=list)
    queue_changed: bool = False
    # Set when a queued message stayed queued because the owner's spend limit is reached.
    usage_limited: UsageLimitExceeded | None = None


def _leased(leases: Leases, worker_id: uuid.UUID) -> ColumnElement[bool]:
    """Running under this worker at exactly the generation it holds, for each chat."""
    held = or_(*(and_(chats.c.id == cid, chats.c.generation == gen) for cid, gen in leases.items()))
    return and_(held, chats.c.worker_id == worker_id, chats.c.status == ChatStatus.RUNNING.value)


async def acquire_chats(db: Database, now: datetime, worker_id: uuid.UUID, limit: int) -> list[Chat]:
    """Claim up to `limit` pending chats, oldest first, each under a new generation. Safe across
    replicas: SKIP LOCKED on PostgreSQL; on SQLite the IMMEDIATE transaction plus the status guard
    (FOR UPDATE is ignored)."""
    acquire = plan_acquire(ChatStatus.PENDING)
    assert acquire is not None
    async with db.write() as conn:
        pick = (
            select(chats.c.id)
            .where(chats.c.status == ChatStatus.PENDING.value)
            .order_by(chats.c.updated_at, chats.c.id)
            .limit(limit)
        )
        if db.is_postgres:
            pick = pick.with_for_update(skip_locked=True)
        # Materialised, so it runs once: as a plain `IN (subquery)` PostgreSQL may re-run the
        # LIMIT … SKIP LOCKED subquery and claim more than `limit` chats (past the turn cap).
        picked = pick.cte("picked").prefix_with("MATERIALIZED", dialect="postgresql")
        rows = (
            await conn.execute(
                update(chats)
                .where(and_(chats.c.id.in_(select(picked.c.id)), chats.c.status == ChatStatus.PENDING.value))
                .values(
                    **machine.transition_values(acquire), worker_id=worker_id, started_at=now, heartbeat_at=now, updated_at=now
                )
                .returning(*CHAT_COLUMNS)
            )
        ).all()
    return sorted((chat_from_row(r) for r in rows), key=lambda c: (c.started_at or now, str(c.id)))


async def heartbeat_many(db: Database, now: datetime, leases: Leases, worker_id: uuid.UUID) -> set[uuid.UUID]:
    """One round trip for every chat a worker runs; returns the ids still ours (at our generation)."""
    if not leases:
        return set()
    async with db.write() as conn:
        rows = (
            await conn.execute(update(chats).where(_leased(leases, worker_id)).values(heartbeat_at=now).returning(chats.c.id))
        ).all()
    return {r.id for r in rows}


async def recover_stale(db: Database, now: datetime, stale_after: float, *, dead_workers: Sequence[uuid.UUID] = ()) -> list[Chat]:
    """Return running chats whose heartbeat is older than `stale_after` seconds (or whose worker is
    known dead) to `pending` under a new generation. Each is re-checked under its row lock so a
    fresh heartbeat wins."""
    threshold = now - timedelta(seconds=stale_after)
    cond = chats.c.heartbeat_at < threshold
    if dead_workers:
        cond = cond | chats.c.worker_id.in_(list(dead_workers))
    async with db.read() as conn:
        ids = [r.id for r in (await conn.execute(select(chats.c.id).where(and_(chats.c.status == ChatStatus.RUNNING.value, cond)))).all()]
    recovered: list[Chat] = []
    for chat_id in ids:
        async with db.write() as conn:
            chat = await lock_chat(db, conn, chat_id)
            stale = chat.heartbeat_at is None or chat.heartbeat_at < threshold or chat.worker_id in set(dead_workers)
            if chat.status is not ChatStatus.RUNNING or not stale:
                continue
            recovered.append((await machine.apply(conn, chat, plan_release(chat.status), now))[0])
    return recovered


async def release_chats(db: Database, now: datetime, leases: Leases, worker_id: uuid.UUID) -> list[Chat]:
    """Shutdown: give our running chats back (`pending`, no error, a new generation) so another
    replica resumes them. A chat we no longer hold at our generation is left alone."""
    if not leases:
        return []
    values = machine.transition_values(plan_release(ChatStatus.RUNNING))
    async with db.write() as conn:
        rows = (
            await conn.execute(update(chats).where(_leased(leases, worker_id)).values(updated_at=now, **values).returning(*CHAT_COLUMNS))
        ).all()
    return [chat_from_row(r) for r in rows]


@dataclass(frozen=True, slots=True)
class StepWritten:
    messages: list[Message]
    # The step's calls that wait for answers; the chat is `requires_action` when there are any.
    actions: list[PendingAction] = field(default_factory=list)
    chat: Chat | None = None
    # Whether steered messages may wait for `take_steered`: False only when `peek_steered` looked
    # in the step's own transaction and found none (the boundary then needs no second one).
    steered: bool = True
    # With `shown_before`: the id of the chat's newest visible message below the step's (0 when
    # none), read under the step's lock, so the visible messages above it are `messages` (the
    # visible ones) as of this commit: what this replica's streams are answered with
    # (`MessagesAdded.written`).
    shown_before: int | None = None


async def persist_step(
    db: Database,
    now: datetime,
    chat_id: uuid.UUID,
    worker_id: uuid.UUID,
    generation: int,
    new: Sequence[NewMessage],
    *,
    ends_tool_calls: bool = True,
    actions: Sequence[NewAction] = (),
    resolves: Sequence[uuid.UUID] = (),
    peek_steered: bool = False,
    shown_before: bool = False,
    before_commit: Callable[[], None] | None = None,
) -> StepWritten:
    """Write one step's messages in one transaction, only under the turn's generation. A chat
    interrupted to `waiting` still takes its partial answer; an edited, promoted or re-acquired
    one does not (`LostOwnership`). A step ends the journal of started tool calls
    (`ends_tool_calls`); compaction rows, written between steps, do not.

    `actions`: calls of the step that wait for answers. They are stored with the step and the
    chat goes `requires_action`, released (`plan_request_actions`); if the chat was interrupted
    meanwhile they get "cancelled" results instead. `resolves`: answered actions whose results
    are among `new` (a resumed turn); they are done. `peek_steered`: also say whether
    `take_steered` would find anything now (`StepWritten.steered`), under the same lease check.
    `shown_before`: also read `StepWritten.shown_before` (for a chat with subscribers here).
    `before_commit`: called once the step is written, before its commit can be seen (the
    worker drops the step's streamed parts there: a stream's snapshot that reads the messages
    must not also find their parts, which it would between the commit and a later drop)."""
    async with db.write() as conn:
        chat = await lock_chat(db, conn, chat_id)
        if not worker_owns(chat.status, chat.generation, chat.worker_id, mine=generation, me=worker_id, kind=WriteKind.STEP):
            raise LostOwnership("The chat is no longer owned by this turn.")
        written = await _write_step(conn, now, chat, new, ends_tool_calls, actions, resolves, peek_steered, generation, worker_id)
        if shown_before and written.messages:
            # Every message of the chat is written under its row lock, which this transaction
            # holds: none can appear between this one and the step's.
            below = min(m.id for m in written.messages)
            newest = (await conn.execute(_SHOWN_BELOW, {"p_chat_id": chat_id, "p_below": below})).scalar()
            written = replace(written, shown_before=int(newest or 0))
        if before_commit is not None:
            before_commit()
        return written


async def _write_step(
    conn: AsyncConnection, now: datetime, chat: Chat, new: Sequence[NewMessage], ends_tool_calls: bool,
    actions: Sequence[NewAction], resolves: Sequence[uuid.UUID], peek_steered: bool, generation: int, worker_id: uuid.UUID,
) -> StepWritten:
    chat_id = chat.id
    inserted = await insert_messages(conn, chat_id, new, now)
    if ends_tool_calls:
        # The step's tool calls have results now (and earlier orphans are behind this point).
        await forget_started(conn, chat_id)
    if resolves:
        await finish_actions(conn, chat_id, resolves, now)
    if not actions:
        if not peek_steered:
            return StepWritten(inserted)
        leased = worker_owns(chat.status, chat.generation, chat.worker_id, mine=generation, me=worker_id, kind=WriteKind.LEASE)
        # The locked row's queue count is exact (every change to the queue recounts it under the
        # same lock): an empty queue needs no look for steered messages.
        return StepWritten(inserted, steered=leased and chat.queued_count > 0 and await machine.has_steered(conn, chat_id))
    stored = await insert_actions(conn, chat, actions, now)
    t = plan_request_actions(chat.status)
    if t is None:
        applied = await machine.execute(conn, chat, Transition(actions=ActionsFate.CANCEL), now)
        return StepWritten([*inserted, *applied.results], chat=applied.chat)
    chat = (await machine.execute(conn, chat, t, now)).chat
    return StepWritten(inserted, stored, chat)


async def take_steered(
    db: Database, now: datetime, chat_id: uuid.UUID, worker_id: uuid.UUID, generation: int
) -> tuple[list[Message], list[QueuedMessage]]:
    """Move steered queued messages into the history at a tool boundary (only under our lease)."""
    async with db.write() as conn:
        chat = await lock_chat(db, conn, chat_id)
        if not worker_owns(chat.status, chat.generation, chat.worker_id, mine=generation, me=worker_id, kind=WriteKind.LEASE):
            return [], []
        out: list[Message] = []
        while (row := await machine.pop_queued(conn, chat_id, steer_only=True)) is not None:
            out.append(await machine.move_into_history(conn, chat, row, now))
        if not out:
            return [], []
        await machine.queue_changed(conn, chat)
        return out, await machine.queue_of(conn, chat_id)


async def finish_turn(
    db: Database,
    now: datetime,
    chat_id: uuid.UUID,
    worker_id: uuid.UUID,
    generation: int,
    end: TurnEnd,
    error: str | None = None,
) -> FinishResult:
    """Settle the chat's status after a turn (`domain.chat.plan_finish`)."""
    async with db.write() as conn:
        chat = await lock_chat(db, conn, chat_id)
        # An interrupted (waiting) chat is still this turn's to settle, and so is one waiting for
        # the answers its last step asked for.
        owned = worker_owns(chat.status, chat.generation, chat.worker_id, mine=generation, me=worker_id, kind=WriteKind.SETTLE)
        has_queue = await machine.queue_length(conn, chat_id) > 0
        limited: UsageLimitExceeded | None = None
        if owned and has_queue and not chat.archived and end not in (TurnEnd.SHUTDOWN, TurnEnd.DATABASE_LOST):
            try:
                await check_spend(db, conn, chat.owner_id, now)
            except UsageLimitExceeded as exc:
                limited = exc
        plan = plan_finish(chat.status, owned=owned, end=end, has_queue=has_queue, archived=chat.archived, may_spend=limited is None)
        if not plan.applied:
            return FinishResult(chat, applied=False)
        extra = {"last_error": error or "unknown error"} if plan.transition.status is ChatStatus.ERROR else {}
        chat, promoted = await machine.apply(conn, chat, plan.transition, now, **extra)
        if promoted is not None:
            return FinishResult(chat, applied=True, promoted=promoted, queue=await machine.queue_of(conn, chat_id), queue_changed=True)
        return FinishResult(chat, applied=True, usage_limited=limited if plan.spend_blocked else None)


def _prompt_window() -> Select[Any]:
    # The newest compaction summary, in the same statement (one round trip per turn).
    summary = (
        select(messages.c.id)
        .where(
            and_(
                messages.c.chat_id == bindparam("p_chat_id"),
                messages.c.compressed.is_(True),
                messages.c.visibility == Visibility.MODEL.value,
                messages.c.deleted.is_(False),
            )
        )
        .order_by(messages.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    # Without a summary: everything not compressed (message ids start at 1), and no summary row.
    keep = or_(
        and_(messages.c.role == Role.SYSTEM.value, messages.c.compressed.is_(False)),
        and_(messages.c.compressed.is_(False), messages.c.id > func.coalesce(summary, 0)),
        messages.c.id == func.coalesce(summary, -1),
    )
    return (
        select(messages)
        .where(
            and_(
                messages.c.chat_id == bindparam("p_chat_id"),
                messages.c.deleted.is_(False),
                messages.c.visibility.in_([Visibility.MODEL.value, Visibility.BOTH.value]),
                keep,
            )
        )
        .order_by(messages.c.id)
    )


# Built once: a statement memoizes its cache key (building and keying it each time cost about as
# much CPU as running it).
# The prompt window: model-visible, not deleted; original system rows always; everything after the
# newest compaction summary, and the summary itself.
_PROMPT_WINDOW: Final = _prompt_window()


_CHAT_ROW: Final = select(*CHAT_COLUMNS).where(chats.c.id == bindparam("p_chat_id"))
# The chat's newest message a stream shows (`chats.visible_messages`) below an id.
_SHOWN_BELOW: Final = select(func.max(messages.c.id)).where(
    and_(
        messages.c.chat_id == bindparam("p_chat_id"),
        messages.c.id < bindparam("p_below"),
        messages.c.deleted.is_(False),
        messages.c.visibility.in_([Visibility.USER.value, Visibility.BOTH.value]),
    )
)


@dataclass(frozen=True)
class TurnInputs:
    # The chat's row (without its pending actions) as this read found it, None if it is gone: the
    # worker, subscribed to the chat's changes before it, checks here that its lease still holds.
    chat: Chat | None
    prompt: list[Message]
    answered: list[PendingAction]


async def turn_inputs(db: Database, now: datetime, chat_id: uuid.UUID) -> TurnInputs:
    """What a turn reads of its chat before calling the model, in one read transaction: the chat,
    the prompt window (`_PROMPT_WINDOW`) and the answered actions a resumed turn turns into
    results (`store.actions.resumable_actions`, which writes only to drop a dead turn's question)."""
    async with db.read() as conn:
        row = (await conn.execute(_CHAT_ROW, {"p_chat_id": chat_id})).first()
        rows = [message_from_row(r) for r in (await conn.execute(_PROMPT_WINDOW, {"p_chat_id": chat_id})).all()]
        found = await machine.open_actions(conn, chat_id)
    return TurnInputs(None if row is None else chat_from_row(row), rows, await resumable_actions(db, now, found))


async def has_model_turns(db: Database, chat_id: uuid.UUID, up_to: int) -> tuple[int, bool]:
    """(user messages, whether any assistant/tool message exists) among the chat's messages up to
    id `up_to`, not deleted — the title condition, as it stood when a turn began."""
    async with db.read() as conn:
        rows = (
            await conn.execute(
                select(messages.c.role, func.count())
                .where(and_(messages.c.chat_id == chat_id, messages.c.id <= up_to, messages.c.deleted.is_(False)))
                .group_by(messages.c.role)
            )
        ).all()
    counts = {r[0]: int(r[1]) for r in rows}
    return counts.get(Role.USER.value, 0), bool(counts.get(Role.ASSISTANT.value) or counts.get(Role.TOOL.value))


__all__ = [
    "FinishResult",
    "Leases",
    "LostOwnership",
    "NewMessage",
    "StepWritten",
    "TurnEnd",
    "TurnInputs",
    "acquire_chats",
    "finish_turn",
    "has_model_turns",
    "heartbeat_many",
    "persist_step",
    "recover_stale",
    "release_chats",
    "take_steered",
    "turn_inputs",
]


async def record_trace(db: Database, chat_id: uuid.UUID, worker_id: uuid.UUID, generation: int, trace_id: str) -> bool:
    """Note the trace of the turn this worker runs, for the admins' debug view. One guarded
    UPDATE: a turn that was fenced off meanwhile writes nothing. `updated_at` stays as it is (it
    orders the pending queue and the chat list; a trace id is not a change a user sees)."""
    async with db.write() as conn:
        result = await conn.execute(
            update(chats)
            .where(chats.c.id == chat_id, chats.c.worker_id == worker_id, chats.c.generation == generation)
            .values(trace_id=trace_id)
        )
        return bool(result.rowcount)
