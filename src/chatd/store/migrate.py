"""Run Alembic migrations programmatically (`chatd migrate`, `chatd serve`)."""

from __future__ import annotations

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
    """Upgrade to head. PostgreSQL serialises concurrent replicas with an advisory lock."""

    def _upgrade(conn: Connection) -> None:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(727274)")
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")

    async with db.engine.connect() as conn:
        await conn.run_sync(_upgrade)
        await conn.commit()
