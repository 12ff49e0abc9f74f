"""The worker's side of the chat row: acquire, heartbeat, stale recovery, per-step persistence
and the end of a turn. Every change after acquire is a compare-and-set on (id, worker_id); a
function that can lose a race says whether it won."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, func, or_, select, update

from chatd.domain.chat import Chat, ChatStatus, Message, NewMessage, QueuedMessage, Role, Visibility
from chatd.domain.parts import parts_from_json
from chatd.errors import ChatdError, UsageLimitExceeded
from chatd.store.chats import _pop_queued, _queue, _set_chat, insert_messages, lock_chat
from chatd.store.database import Database
from chatd.store.rows import chat_from_row, message_from_row
from chatd.store.tables import chats, messages
from chatd.store.tool_calls import forget_started
from chatd.store.usage import check_spend

_RELEASE = {"worker_id": None, "started_at": None, "heartbeat_at": None}


class LostOwnership(ChatdError):
    """The chat is no longer this worker's (edited, re-acquired elsewhere): write nothing."""


class TurnEnd(enum.StrEnum):
    COMPLETED = "completed"
    INTERRUPTED = "interrupted"
    ERROR = "error"
    SHUTDOWN = "shutdown"


@dataclass(frozen=True, slots=True)
class FinishResult:
    chat: Chat
    # False when another worker owns the chat now: the caller publishes nothing.
    applied: bool
    promoted: Message | None = None
    queue: list[QueuedMessage] = field(default_factory=list)
    queue_changed: bool = False
    # Set when a queued message stayed queued because the owner's spend limit is reached.
    usage_limited: UsageLimitExceeded | None = None


async def acquire_chats(db: Database, now: datetime, worker_id: uuid.UUID, limit: int) -> list[Chat]:
    """Claim up to `limit` pending chats, oldest first. Safe across replicas: SKIP LOCKED on
    PostgreSQL; on SQLite the IMMEDIATE transaction plus the status guard (FOR UPDATE is ignored)."""
    async with db.write() as conn:
        pick = (
            select(chats.c.id)
            .where(chats.c.status == ChatStatus.PENDING.value)
            .order_by(chats.c.updated_at, chats.c.id)
            .limit(limit)
        )
        if db.is_postgres:
            pick = pick.with_for_update(skip_locked=True)
        rows = (
            await conn.execute(
                update(chats)
                .where(and_(chats.c.id.in_(pick.scalar_subquery()), chats.c.status == ChatStatus.PENDING.value))
                .values(status=ChatStatus.RUNNING.value, worker_id=worker_id, started_at=now, heartbeat_at=now, updated_at=now)
                .returning(*chats.c)
            )
        ).all()
    return sorted((chat_from_row(r) for r in rows), key=lambda c: (c.started_at or now, str(c.id)))


async def heartbeat(db: Database, now: datetime, chat_id: uuid.UUID, worker_id: uuid.UUID) -> bool:
    async with db.write() as conn:
        n = (
            await conn.execute(
                update(chats)
                .where(and_(chats.c.id == chat_id, chats.c.worker_id == worker_id, chats.c.status == ChatStatus.RUNNING.value))
                .values(heartbeat_at=now)
            )
        ).rowcount
    return bool(n)


async def heartbeat_many(db: Database, now: datetime, chat_ids: Sequence[uuid.UUID], worker_id: uuid.UUID) -> set[uuid.UUID]:
    """One round trip for every chat a worker runs; returns the ids still ours."""
    if not chat_ids:
        return set()
    async with db.write() as conn:
        rows = (
            await conn.execute(
                update(chats)
                .where(and_(chats.c.id.in_(list(chat_ids)), chats.c.worker_id == worker_id, chats.c.status == ChatStatus.RUNNING.value))
                .values(heartbeat_at=now)
                .returning(chats.c.id)
            )
        ).all()
    return {r.id for r in rows}


async def recover_stale(db: Database, now: datetime, stale_after: float, *, dead_workers: Sequence[uuid.UUID] = ()) -> list[Chat]:
    """Return running chats whose heartbeat is older than `stale_after` seconds (or whose worker is
    known dead) to `pending`. Each is re-checked under its row lock so a fresh heartbeat wins."""
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
            recovered.append(await _set_chat(conn, chat_id, now, status=ChatStatus.PENDING.value, **_RELEASE))
    return recovered


async def release_chats(db: Database, now: datetime, chat_ids: Sequence[uuid.UUID], worker_id: uuid.UUID) -> list[Chat]:
    """Shutdown: give our running chats back (`pending`, no error) so another replica resumes them."""
    if not chat_ids:
        return []
    async with db.write() as conn:
        rows = (
            await conn.execute(
                update(chats)
                .where(and_(chats.c.id.in_(list(chat_ids)), chats.c.worker_id == worker_id, chats.c.status == ChatStatus.RUNNING.value))
                .values(status=ChatStatus.PENDING.value, updated_at=now, **_RELEASE)
                .returning(*chats.c)
            )
        ).all()
    return [chat_from_row(r) for r in rows]


async def persist_step(
    db: Database,
    now: datetime,
    chat_id: uuid.UUID,
    worker_id: uuid.UUID,
    new: Sequence[NewMessage],
    *,
    ends_tool_calls: bool = True,
) -> list[Message]:
    """Write one step's messages in one transaction, only while we own the chat. A chat
    interrupted to `waiting` still takes its partial answer; an edited (pending) or re-acquired
    one does not. A step ends the journal of started tool calls (`ends_tool_calls`); compaction
    rows, written between steps, do not."""
    async with db.write() as conn:
        chat = await lock_chat(db, conn, chat_id)
        ours = chat.status is ChatStatus.RUNNING and chat.worker_id == worker_id
        if not ours and chat.status is not ChatStatus.WAITING:
            raise LostOwnership("The chat is no longer owned by this worker.")
        inserted = await insert_messages(conn, chat_id, new, now)
        if ends_tool_calls:
            # The step's tool calls have results now (and earlier orphans are behind this point).
            await forget_started(conn, chat_id)
        return inserted


async def take_steered(db: Database, now: datetime, chat_id: uuid.UUID, worker_id: uuid.UUID) -> tuple[list[Message], list[QueuedMessage]]:
    """Move steered queued messages into the history at a tool boundary (only while we own it)."""
    async with db.write() as conn:
        chat = await lock_chat(db, conn, chat_id)
        if chat.status is not ChatStatus.RUNNING or chat.worker_id != worker_id:
            return [], []
        out: list[Message] = []
        while (row := await _pop_queued(conn, chat_id, steer_only=True)) is not None:
            out += await insert_messages(
                conn, chat_id,
                [NewMessage(Role.USER, parts_from_json(row.content), created_by=row.created_by, model_config_id=chat.last_model_config_id)],
                now,
            )
        return out, (await _queue(conn, chat_id) if out else [])


async def finish_turn(
    db: Database, now: datetime, chat_id: uuid.UUID, worker_id: uuid.UUID, end: TurnEnd, error: str | None = None
) -> FinishResult:
    """Decide the chat's status after a turn (SPEC §2, cleanup precedence)."""
    async with db.write() as conn:
        chat = await lock_chat(db, conn, chat_id)
        if chat.status is ChatStatus.RUNNING and chat.worker_id != worker_id:
            return FinishResult(chat, applied=False)
        if chat.status is ChatStatus.PENDING:
            # Edited or promoted meanwhile: the new work runs next.
            return FinishResult(chat, applied=True)
        if end is TurnEnd.SHUTDOWN and chat.status is ChatStatus.RUNNING:
            chat = await _set_chat(conn, chat_id, now, status=ChatStatus.PENDING.value, **_RELEASE)
            return FinishResult(chat, applied=True)
        if end is TurnEnd.ERROR and chat.status is ChatStatus.RUNNING:
            chat = await _set_chat(conn, chat_id, now, status=ChatStatus.ERROR.value, last_error=error or "unknown error", **_RELEASE)
            return FinishResult(chat, applied=True)
        if chat.status is ChatStatus.ERROR:
            return FinishResult(chat, applied=True)
        # Completed, or interrupted (waiting): promote the oldest queued message, FIFO.
        limited: UsageLimitExceeded | None = None
        # An archived chat (a closed sub-agent) stays stopped: its queue waits for an unarchive.
        has_queue = not chat.archived and bool(await _queue(conn, chat_id))
        if has_queue:
            try:
                await check_spend(db, conn, chat.owner_id, now)
            except UsageLimitExceeded as exc:
                limited = exc
        if has_queue and limited is None:
            row = await _pop_queued(conn, chat_id)
            promoted = (
                await insert_messages(
                    conn, chat_id,
                    [NewMessage(Role.USER, parts_from_json(row.content), created_by=row.created_by, model_config_id=chat.last_model_config_id)],
                    now,
                )
            )[0]
            chat = await _set_chat(conn, chat_id, now, status=ChatStatus.PENDING.value, last_error=None, **_RELEASE)
            return FinishResult(chat, applied=True, promoted=promoted, queue=await _queue(conn, chat_id), queue_changed=True)
        chat = await _set_chat(conn, chat_id, now, status=ChatStatus.WAITING.value, last_error=None, **_RELEASE)
        return FinishResult(chat, applied=True, usage_limited=limited)





async def prompt_messages(db: Database, chat_id: uuid.UUID) -> list[Message]:
    """The prompt window: model-visible, not deleted; original system rows always; everything
    after the newest compaction summary, and the summary itself."""
    async with db.read() as conn:
        summary_id = (
            await conn.execute(
                select(messages.c.id)
                .where(
                    and_(
                        messages.c.chat_id == chat_id,
                        messages.c.compressed.is_(True),
                        messages.c.visibility == Visibility.MODEL.value,
                        messages.c.deleted.is_(False),
                    )
                )
                .order_by(messages.c.id.desc())
                .limit(1)
            )
        ).scalar()
        after: ColumnElement[bool] = messages.c.compressed.is_(False)
        if summary_id is not None:
            after = and_(after, messages.c.id > summary_id)
        keep = or_(
            and_(messages.c.role == Role.SYSTEM.value, messages.c.compressed.is_(False)),
            after,
            messages.c.id == (summary_id if summary_id is not None else -1),
        )
        q = (
            select(messages)
            .where(
                and_(
                    messages.c.chat_id == chat_id,
                    messages.c.deleted.is_(False),
                    messages.c.visibility.in_([Visibility.MODEL.value, Visibility.BOTH.value]),
                    keep,
                )
            )
            .order_by(messages.c.id)
        )
        return [message_from_row(r) for r in (await conn.execute(q)).all()]


async def has_model_turns(db: Database, chat_id: uuid.UUID) -> tuple[int, bool]:
    """(visible user messages, whether any assistant/tool message exists) — the title condition."""
    async with db.read() as conn:
        rows = (
            await conn.execute(
                select(messages.c.role, func.count())
                .where(and_(messages.c.chat_id == chat_id, messages.c.deleted.is_(False)))
                .group_by(messages.c.role)
            )
        ).all()
    counts = {r[0]: int(r[1]) for r in rows}
    return counts.get(Role.USER.value, 0), bool(counts.get(Role.ASSISTANT.value) or counts.get(Role.TOOL.value))
