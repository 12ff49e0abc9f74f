"""Spend limits: resolution (user over global) and spend in the current period."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import and_, delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from chatd.domain.config import UsageLimit, UsageStatus
from chatd.domain.usage import period_bounds
from chatd.errors import UsageLimitExceeded
from chatd.store.database import Database
from chatd.store.tables import chats, messages, usage_limits, users


async def resolve_limit(conn: AsyncConnection, user_id: uuid.UUID) -> UsageLimit | None:
    """The most specific limit: the user's own, else the global one, else none."""
    rows = (
        await conn.execute(
            select(usage_limits).where(
                (usage_limits.c.user_id == user_id) | (usage_limits.c.scope == "global")
            )
        )
    ).all()
    best = None
    for r in rows:
        if r.scope == "user" or best is None:
            best = r
    if best is None:
        return None
    return UsageLimit(best.scope, best.user_id, best.period, best.limit_micros)


async def spent_between(conn: AsyncConnection, user_id: uuid.UUID, start: datetime, end: datetime) -> int:
    q = (
        select(func.coalesce(func.sum(messages.c.total_cost_micros), 0))
        .select_from(messages.join(chats, chats.c.id == messages.c.chat_id))
        .where(
            and_(
                chats.c.owner_id == user_id,
                messages.c.created_at >= start,
                messages.c.created_at < end,
            )
        )
    )
    return int((await conn.execute(q)).scalar_one())


async def usage_status(conn: AsyncConnection, user_id: uuid.UUID, now: datetime) -> UsageStatus:
    limit = await resolve_limit(conn, user_id)
    period = limit.period if limit else "month"
    start, end = period_bounds(period, now)
    spent = await spent_between(conn, user_id, start, end)
    return UsageStatus(
        period=period,
        period_start=start,
        period_end=end,
        spent_micros=spent,
        limit_micros=limit.limit_micros if limit else None,
    )


async def check_spend(db: Database, conn: AsyncConnection, user_id: uuid.UUID, now: datetime) -> None:
    """Refuse new work once the period's spend reached the limit.

    Runs inside the caller's write transaction. On PostgreSQL the user's row is locked so that
    concurrent checks for one user are serialised with the spend they guard.
    """
    limit = await resolve_limit(conn, user_id)
    if limit is None:
        return
    if db.is_postgres:
        await conn.execute(select(users.c.id).where(users.c.id == user_id).with_for_update())
    start, end = period_bounds(limit.period, now)
    spent = await spent_between(conn, user_id, start, end)
    if spent >= limit.limit_micros:
        raise UsageLimitExceeded(limit.limit_micros, spent, end)


async def set_limit(db: Database, limit: UsageLimit, now: datetime) -> None:
    async with db.write() as conn:
        await conn.execute(
            delete(usage_limits).where(
                (usage_limits.c.scope == limit.scope)
                & (
                    usage_limits.c.user_id.is_(None)
                    if limit.user_id is None
                    else usage_limits.c.user_id == limit.user_id
                )
            )
        )
        await conn.execute(
            insert(usage_limits).values(
                id=uuid.uuid4(),
                scope=limit.scope,
                user_id=limit.user_id,
                period=limit.period,
                limit_micros=limit.limit_micros,
                updated_at=now,
            )
        )


async def get_status(db: Database, user_id: uuid.UUID, now: datetime) -> UsageStatus:
    async with db.read() as conn:
        return await usage_status(conn, user_id, now)
