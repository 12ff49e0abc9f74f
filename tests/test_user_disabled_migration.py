"""Migration 0017 (users.disabled_at) on both databases: the schema it makes is the declared one,
and it downgrades and upgrades again."""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from chatd.store import tables
from chatd.store.database import Database
from chatd.store.migrate import alembic_config

REVISION = "0017_user_disabled"


def _diff(conn: Connection) -> list[Any]:
    found = compare_metadata(MigrationContext.configure(conn), tables.metadata)
    return [d for d in found if "'users'" in repr(d) or "Table('users'" in repr(d)]


def _columns(conn: Connection) -> set[str]:
    return {c["name"] for c in inspect(conn).get_columns("users")}


def _to(conn: Connection, revision: str, *, down: bool = False) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    (command.downgrade if down else command.upgrade)(cfg, revision)


async def test_users_disabled_at_is_declared_and_the_migration_downgrades(db: Database) -> None:
    before = ScriptDirectory.from_config(alembic_config()).get_revision(REVISION).down_revision
    assert isinstance(before, str)
    async with db.engine.connect() as conn:
        assert await conn.run_sync(_diff) == []
        assert "disabled_at" in await conn.run_sync(_columns)
        await conn.run_sync(lambda c: _to(c, before, down=True))
        assert "disabled_at" not in await conn.run_sync(_columns)
        await conn.run_sync(lambda c: _to(c, "head"))
        assert await conn.run_sync(_diff) == []
        await conn.commit()
