"""Migration 0015 (human in the loop) on both databases: the schema it makes is the one the code
declares (the rebuilt `chats` table keeps its indexes and foreign keys on SQLite), it keeps the
chats and messages that exist, and it downgrades."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection

from chatd.store import tables
from chatd.store.database import Database
from chatd.store.migrate import alembic_config, migrate

TABLES = ("chats", "pending_actions", "mcp_servers", "messages")


def _diff(conn: Connection) -> list[Any]:
    found = compare_metadata(MigrationContext.configure(conn), tables.metadata)
    return [d for d in found if any(f"'{t}'" in repr(d) or f"table_name='{t}'" in repr(d) or f"Table('{t}'" in repr(d) for t in TABLES)]


def _to(conn: Connection, revision: str, *, down: bool = False) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    (command.downgrade if down else command.upgrade)(cfg, revision)


async def test_the_migrated_schema_is_the_declared_one_and_it_downgrades(db: Database) -> None:
    async with db.engine.connect() as conn:
        assert await conn.run_sync(_diff) == []
        await conn.run_sync(lambda c: _to(c, "0014_chat_trace_id", down=True))
        assert not await conn.run_sync(lambda c: c.dialect.has_table(c, "pending_actions"))
        await conn.run_sync(lambda c: _to(c, "head"))
        assert await conn.run_sync(_diff) == []
        await conn.commit()


async def _downgrade_to_0014(db: Database) -> None:
    async with db.engine.connect() as conn:
        if db.is_sqlite:
            # As store.migrate does: a table rebuild must not cascade.
            raw = (await conn.get_raw_connection()).driver_connection
            assert raw is not None
            await raw.execute("PRAGMA foreign_keys=OFF")
        await conn.run_sync(lambda c: _to(c, "0014_chat_trace_id", down=True))
        await conn.commit()
        await conn.invalidate()


async def test_upgrading_keeps_chats_and_their_messages(db: Database) -> None:
    chat_id, user_id, now = uuid.uuid4(), uuid.uuid4(), datetime.now(UTC)
    await _downgrade_to_0014(db)
    async with db.write() as conn:
        await conn.execute(insert(tables.users).values(id=user_id, username="u", role="member", created_at=now))
        await conn.execute(
            insert(tables.chats).values(
                id=chat_id, owner_id=user_id, title="t", status="waiting", mcp_server_ids=[], archived=False, created_at=now, updated_at=now
            )
        )
        await conn.execute(
            insert(tables.messages).values(chat_id=chat_id, role="user", content=[], visibility="both", compressed=False, deleted=False, created_at=now)
        )
    await migrate(db)
    async with db.write() as conn:
        row = (await conn.execute(select(tables.chats.c.status, tables.chats.c.allowed_tools, tables.chats.c.client_tools))).one()
        count = (await conn.execute(select(func.count()).select_from(tables.messages))).scalar_one()
        # The new status is accepted.
        await conn.execute(update(tables.chats).values(status="requires_action"))
    assert (row.status, row.allowed_tools, row.client_tools, count) == ("waiting", [], [], 1)
