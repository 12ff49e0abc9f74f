"""The started-tool-call journal behind at-most-once tool effects (ARCHITECTURE.md, "Tool calls
across crashes"): a call is recorded before it runs and forgotten when its step is persisted."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from chatd.domain.chat import WriteKind, worker_owns
from chatd.store.database import Database
from chatd.store.machine import lock_chat
from chatd.store.tables import messages, tool_calls_started


class ToolStart(enum.StrEnum):
    RUN = "run"
    # An earlier run started this call at this point of the history and never saved its result.
    NOT_RERUN = "not_rerun"
    # The chat is no longer this worker's: start nothing.
    NOT_OURS = "not_ours"


async def start_tool_call(
    db: Database,
    now: datetime,
    *,
    chat_id: uuid.UUID,
    worker_id: uuid.UUID,
    generation: int,
    run_id: uuid.UUID,
    tool_call_id: str,
    tool_name: str,
    args_sha256: str,
) -> ToolStart:
    """Record a call as started, unless an earlier run left the same call unfinished here.

    Under the chat row lock, so it is decided against the current owner and turn generation: two
    turns that both believe they own the chat (a stale one and its recoverer, or an edited one and
    its successor on the same replica) cannot both start the call.
    """
    async with db.write() as conn:
        chat = await lock_chat(db, conn, chat_id)
        if not worker_owns(chat.status, chat.generation, chat.worker_id, mine=generation, me=worker_id, kind=WriteKind.LEASE):
            return ToolStart.NOT_OURS
        position = await _position(conn, chat_id)
        t = tool_calls_started.c
        orphan = (
            await conn.execute(
                select(t.id)
                .where(
                    and_(
                        t.chat_id == chat_id,
                        t.run_id != run_id,
                        t.after_message_id == position,
                        or_(t.tool_call_id == tool_call_id, and_(t.tool_name == tool_name, t.args_sha256 == args_sha256)),
                    )
                )
                .order_by(t.id)
                .limit(1)
            )
        ).first()
        if orphan is not None:
            # Adopt it: this run answers for it now (one orphan answers one re-issued call), and
            # the step that carries the "not re-run" result deletes it like any other.
            await conn.execute(
                update(tool_calls_started)
                .where(t.id == orphan.id)
                .values(run_id=run_id, worker_id=worker_id, tool_call_id=tool_call_id)
            )
            return ToolStart.NOT_RERUN
        await conn.execute(
            tool_calls_started.insert().values(
                chat_id=chat_id,
                run_id=run_id,
                worker_id=worker_id,
                tool_call_id=tool_call_id,
                tool_name=tool_name,
                args_sha256=args_sha256,
                after_message_id=position,
                started_at=now,
            )
        )
        return ToolStart.RUN


async def _position(conn: AsyncConnection, chat_id: uuid.UUID) -> int:
    """Where the turn is in the history: the newest message id, deleted ones included (an edit
    moves it on), compaction rows excluded (a re-run may compact where the crashed run did not)."""
    q = select(func.coalesce(func.max(messages.c.id), 0)).where(
        and_(messages.c.chat_id == chat_id, messages.c.compressed.is_(False))
    )
    return int((await conn.execute(q)).scalar_one())


async def forget_started(conn: AsyncConnection, chat_id: uuid.UUID) -> None:
    """In the transaction that persists a step: its calls have results now, and any orphan of an
    earlier run is behind the new position of the history, so no re-issued call can match it."""
    await conn.execute(delete(tool_calls_started).where(tool_calls_started.c.chat_id == chat_id))


async def started_calls(db: Database, chat_id: uuid.UUID) -> list[tuple[str, str]]:
    """(tool_call_id, tool_name) of the calls recorded as started and not yet persisted (tests)."""
    t = tool_calls_started.c
    async with db.read() as conn:
        rows = (await conn.execute(select(t.tool_call_id, t.tool_name).where(t.chat_id == chat_id).order_by(t.id))).all()
    return [(r.tool_call_id, r.tool_name) for r in rows]
