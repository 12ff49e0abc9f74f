"""Run Alembic migrations programmatically (`chatd migrate`, `chatd serve`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

from chatd.store.database import Database

_HERE = Path(__file__).parent / "migrations"


def alembic_config(url: str = "") -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    if url:
        cfg.set_main_option("sqlalchemy.url", url)
    return cfg


async def migrate(db: Database) -> None:
    """Upgrade to head. PostgreSQL serialises concurrent replicas with an advisory lock; SQLite
    migrates with foreign keys off (a table rebuild must not cascade)."""
    await _run(db, lambda cfg: command.upgrade(cfg, "head"))


async def downgrade(db: Database, revision: str) -> None:
    """Downgrade to `revision`, with the same care as an upgrade: on SQLite a downgrade that drops
    a column rebuilds the table, which with foreign keys on would delete every row referring to
    it (a chat's messages)."""
    await _run(db, lambda cfg: command.downgrade(cfg, revision))


async def _run(db: Database, step: Callable[[Config], None]) -> None:
    def _step(conn: Connection) -> None:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(727274)")
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        step(cfg)

    async with db.engine.connect() as conn:
        if not db.is_sqlite:
            await conn.run_sync(_step)
            await conn.commit()
            return
        # SQLite changes a table by rebuilding it, and with foreign keys on, dropping the old
        # table would cascade into every table that refers to it (model configs, users' MCP
        # tokens, a chat's messages). Foreign keys are off while migrating: a pragma SQLite honours
        # only outside a transaction, so it goes through the driver before anything begins one.
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        await raw.execute("PRAGMA foreign_keys=OFF")
        try:
            await conn.run_sync(_step)
            await conn.commit()
            broken = await (await raw.execute("PRAGMA foreign_key_check")).fetchall()
            if broken:
                raise RuntimeError(f"a migration left rows that break foreign keys: {broken[:5]}")
            await raw.execute("PRAGMA foreign_keys=ON")
        except BaseException:
            # Never hand a connection without foreign keys back to the pool.
            await conn.invalidate()
            raise
