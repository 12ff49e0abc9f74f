"""Deployment facts kept in the database (`server_meta`): the secret key's fingerprint."""

from __future__ import annotations

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError

from chatd.store.database import Database
from chatd.store.tables import providers, push_subscriptions, server_meta

KEY_FINGERPRINT = "secret_key_fingerprint"


async def get_value(db: Database, key: str) -> str | None:
    async with db.read() as conn:
        stored = (await conn.execute(select(server_meta.c.value).where(server_meta.c.key == key))).scalar_one_or_none()
    return None if stored is None else str(stored)


async def claim_value(db: Database, key: str, value: str) -> str:
    """Store `value` under `key` unless a value is there already; return the stored one. Two
    replicas starting together on an empty database: one inserts, the other reads its value."""
    stored = await get_value(db, key)
    if stored is not None:
        return stored
    try:
        async with db.write() as conn:
            await conn.execute(insert(server_meta).values(key=key, value=value))
    except IntegrityError:
        pass  # another replica claimed it first
    async with db.read() as conn:
        return str((await conn.execute(select(server_meta.c.value).where(server_meta.c.key == key))).scalar_one())


async def set_value(db: Database, key: str, value: str) -> None:
    async with db.write() as conn:
        await conn.execute(delete(server_meta).where(server_meta.c.key == key))
        await conn.execute(insert(server_meta).values(key=key, value=value))


async def a_sealed_value(db: Database) -> str | None:
    """Any one value sealed with the secret key, to check a key against a database that has no
    fingerprint yet (made before fingerprints existed)."""
    async with db.read() as conn:
        for column in (providers.c.api_key_enc, push_subscriptions.c.auth_enc):
            value = (await conn.execute(select(column).where(column.is_not(None)).limit(1))).scalar_one_or_none()
            if value is not None:
                return str(value)
    return None
