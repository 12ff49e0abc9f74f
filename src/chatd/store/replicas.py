"""Replica registry: where each server replica can be reached internally, and whether it lives."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update

from chatd.store.database import Database
from chatd.store.tables import replicas


async def heartbeat(db: Database, now: datetime, replica_id: uuid.UUID, address: str | None) -> None:
    async with db.write() as conn:
        n = (await conn.execute(update(replicas).where(replicas.c.id == replica_id).values(heartbeat_at=now, address=address))).rowcount
        if not n:
            await conn.execute(replicas.insert().values(id=replica_id, address=address, started_at=now, heartbeat_at=now))


async def address_of(db: Database, replica_id: uuid.UUID) -> str | None:
    async with db.read() as conn:
        return (await conn.execute(select(replicas.c.address).where(replicas.c.id == replica_id))).scalar()


async def dead_replicas(db: Database, now: datetime, stale_after: float) -> list[uuid.UUID]:
    threshold = now - timedelta(seconds=stale_after)
    async with db.read() as conn:
        return [r.id for r in (await conn.execute(select(replicas.c.id).where(replicas.c.heartbeat_at < threshold))).all()]


async def forget(db: Database, replica_ids: list[uuid.UUID]) -> None:
    """A replica that left cleanly, or whose chats were all recovered."""
    if replica_ids:
        async with db.write() as conn:
            await conn.execute(delete(replicas).where(replicas.c.id.in_(replica_ids)))
