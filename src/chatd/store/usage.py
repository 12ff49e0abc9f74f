"""Spend limits: resolution (user over global) and spend in the current period."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import and_, delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from chatd.domain.chat import UserRole
from chatd.domain.config import UsageLimit, UsageStatus, User
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


async def spend_by_user(db: Database, now: datetime) -> tuple[UsageLimit | None, list[tuple[User, UsageStatus, str | None]]]:
    """The global limit, and every user with their spend in the period of the limit that applies
    to them (a month without one), with that limit's scope. One sum per distinct period, not one
    per user."""
    async with db.read() as conn:
        limit_rows = (await conn.execute(select(usage_limits))).all()
        user_rows = (await conn.execute(select(users).order_by(users.c.username))).all()
        glob = next((r for r in limit_rows if r.scope == "global"), None)
        own = {r.user_id: r for r in limit_rows if r.scope == "user"}
        periods: dict[uuid.UUID, str] = {}
        for u in user_rows:
            applies = own.get(u.id) or glob
            periods[u.id] = applies.period if applies is not None else "month"
        spent: dict[tuple[str, uuid.UUID], int] = {}
        for period in sorted(set(periods.values())):
            start, end = period_bounds(period, now)
            q = (
                select(chats.c.owner_id, func.coalesce(func.sum(messages.c.total_cost_micros), 0))
                .select_from(messages.join(chats, chats.c.id == messages.c.chat_id))
                .where(and_(messages.c.created_at >= start, messages.c.created_at < end))
                .group_by(chats.c.owner_id)
            )
            for owner_id, total in (await conn.execute(q)).all():
                spent[(period, owner_id)] = int(total)
    out: list[tuple[User, UsageStatus, str | None]] = []
    for u in user_rows:
        applies = own.get(u.id) or glob
        period = periods[u.id]
        start, end = period_bounds(period, now)
        status = UsageStatus(
            period=period, period_start=start, period_end=end, spent_micros=spent.get((period, u.id), 0),
            limit_micros=applies.limit_micros if applies is not None else None,
        )
        out.append((User(u.id, u.username, UserRole(u.role), u.created_at, u.custom_prompt), status, applies.scope if applies is not None else None))
    global_limit = UsageLimit("global", None, glob.period, glob.limit_micros) if glob is not None else None
    return global_limit, out


async def delete_limit(db: Database, scope: str, user_id: uuid.UUID | None) -> None:
    """Remove a limit (a user then falls back to the global one). Removing none is not an error."""
    async with db.write() as conn:
        cond = usage_limits.c.user_id.is_(None) if user_id is None else usage_limits.c.user_id == user_id
        await conn.execute(delete(usage_limits).where((usage_limits.c.scope == scope) & cond))
