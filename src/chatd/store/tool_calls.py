"""The started-tool-call journal behind at-most-once tool effects (ARCHITECTURE.md, "Tool calls
across crashes"): a call is recorded before it runs and forgotten when its step is persisted."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Final

from sqlalchemy import and_, bindparam, delete, exists, func, or_, select, update
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

    After the lock, one statement in the common case (an `INSERT … SELECT` that inserts unless an
    orphan matches), two when an orphan is adopted: every statement costs ~150 µs of CPU, and this
    runs before each non-idempotent tool call.
    """
    values = {
        "p_chat_id": chat_id, "p_run_id": run_id, "p_worker_id": worker_id, "p_tool_call_id": tool_call_id,
        "p_tool_name": tool_name, "p_args_sha256": args_sha256, "p_started_at": now,
    }  # fmt: skip
    async with db.write() as conn:
        chat = await lock_chat(db, conn, chat_id)
        if not worker_owns(chat.status, chat.generation, chat.worker_id, mine=generation, me=worker_id, kind=WriteKind.LEASE):
            return ToolStart.NOT_OURS
        if (await conn.execute(_START, values)).rowcount:
            return ToolStart.RUN
        # Adopt the orphan: this run answers for it now (one orphan answers one re-issued call),
        # and the step that carries the "not re-run" result deletes it like any other.
        await conn.execute(_ADOPT, values)
        return ToolStart.NOT_RERUN


# The statements are built once (their cache keys are memoized on them); their parameters are
# `values` above, named apart from the columns (an UPDATE's SET claims the columns' own names).
_P = {name: bindparam(f"p_{name}", type_=tool_calls_started.c[name].type) for name in
      ("chat_id", "run_id", "worker_id", "tool_call_id", "tool_name", "args_sha256", "started_at")}  # fmt: skip

# Where the turn is in the history: the newest message id, deleted ones included (an edit moves
# it on), compaction rows excluded (a re-run may compact where the crashed run did not).
_POSITION: Final = (
    select(func.coalesce(func.max(messages.c.id), 0))
    .where(and_(messages.c.chat_id == _P["chat_id"], messages.c.compressed.is_(False)))
    .scalar_subquery()
)

# An earlier run's record of the same call (same id, or same tool and arguments) at the same point
# of the history; the oldest first.
_t = tool_calls_started.c
_ORPHAN: Final = (
    select(_t.id)
    .where(
        and_(
            _t.chat_id == _P["chat_id"],
            _t.run_id != _P["run_id"],
            _t.after_message_id == _POSITION,
            or_(_t.tool_call_id == _P["tool_call_id"], and_(_t.tool_name == _P["tool_name"], _t.args_sha256 == _P["args_sha256"])),
        )
    )
    .order_by(_t.id)
    .limit(1)
)
_START_COLUMNS = ("chat_id", "run_id", "worker_id", "tool_call_id", "tool_name", "args_sha256", "started_at")
_START: Final = tool_calls_started.insert().from_select(
    [*_START_COLUMNS, "after_message_id"],
    select(*(_P[name] for name in _START_COLUMNS), _POSITION).where(~exists(_ORPHAN)),
)
_FORGET: Final = delete(tool_calls_started).where(_t.chat_id == _P["chat_id"])
_ADOPT: Final = (
    update(tool_calls_started)
    .where(_t.id == _ORPHAN.scalar_subquery())
    .values(run_id=_P["run_id"], worker_id=_P["worker_id"], tool_call_id=_P["tool_call_id"])
)


async def forget_started(conn: AsyncConnection, chat_id: uuid.UUID) -> None:
    """In the transaction that persists a step: its calls have results now, and any orphan of an
    earlier run is behind the new position of the history, so no re-issued call can match it."""
    await conn.execute(_FORGET, {"p_chat_id": chat_id})


async def started_calls(db: Database, chat_id: uuid.UUID) -> list[tuple[str, str]]:
    """(tool_call_id, tool_name) of the calls recorded as started and not yet persisted (tests)."""
    t = tool_calls_started.c
    async with db.read() as conn:
        rows = (await conn.execute(select(t.tool_call_id, t.tool_name).where(t.chat_id == chat_id).order_by(t.id))).all()
    return [(r.tool_call_id, r.tool_name) for r in rows]
