"""Counts for operators (/metrics): one read transaction, no locks."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from chatd.store.database import Database
from chatd.store.tables import chats, queued_messages


@dataclass(frozen=True, slots=True)
class DatabaseStats:
    chats_by_status: dict[str, int]
    queued_messages: int
    # Connections checked out of this process's pool, and all it holds (idle included).
    pool_in_use: int
    pool_size: int


async def database_stats(db: Database) -> DatabaseStats:
    async with db.read() as conn:
        by_status = {str(s): int(n) for s, n in (await conn.execute(select(chats.c.status, func.count()).group_by(chats.c.status))).all()}
        queued = int((await conn.execute(select(func.count()).select_from(queued_messages))).scalar_one())
    pool = db.engine.pool
    # Read outside the transaction above, which holds one of them.
    in_use = int(getattr(pool, "checkedout", lambda: 0)())
    size = in_use + int(getattr(pool, "checkedin", lambda: 0)())
    return DatabaseStats(by_status, queued, in_use, size)
