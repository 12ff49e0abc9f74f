"""Engines and transactions for SQLite and PostgreSQL.

SQLite: WAL, foreign keys on, and every write transaction is `BEGIN IMMEDIATE` so the write lock
is taken up front (the database-wide lock plays the role of PostgreSQL's row lock, and two
writers never deadlock upgrading a read lock). PostgreSQL: row locks with `FOR UPDATE`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from sqlalchemy import Select, Table, bindparam, event, select
from sqlalchemy.engine import Connection as SyncConnection
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DataError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.util import await_

from chatd import metrics
from chatd.errors import DatabaseUnavailable, InvalidInput

_IMMEDIATE = "chatd_immediate"
log = logging.getLogger(__name__)


def async_url(url: str) -> str:
    """Accept plain `postgresql://` and `sqlite:///` URLs and pick the async drivers."""
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres", "postgresql+psycopg2", "postgresql+psycopg"):
        u = u.set(drivername="postgresql+asyncpg")
    elif u.drivername in ("sqlite", "sqlite+pysqlite"):
        u = u.set(drivername="sqlite+aiosqlite")
    return u.render_as_string(hide_password=False)


class Database:
    """An engine plus the two kinds of transaction the store uses."""

    def __init__(self, url: str, *, echo: bool = False, pool_size: int = 10) -> None:
        self.url = async_url(url)
        self.dialect = make_url(self.url).get_backend_name()
        kwargs: dict[str, Any] = {"echo": echo}
        # Every connection the pool opens is kept (opened when first needed, none beyond the
        # pool): an "overflow" connection is closed when it is returned, and with 100 turns
        # starting together nearly every turn opened one (on PostgreSQL a new server process and
        # its start-up, on SQLite a thread and the pragmas) only to close it again.
        kwargs["max_overflow"] = 0
        if self.is_sqlite:
            # A busy writer makes others wait (in their own thread) rather than fail at once.
            kwargs["connect_args"] = {"timeout": 60, "isolation_level": None}
            # Writers queue on `_writer` below, so connections are held by readers and the one
            # writer; a larger pool keeps hundreds of concurrent turns from timing out on it.
            kwargs["pool_size"] = 60
            kwargs["pool_timeout"] = 120
        else:
            kwargs["pool_size"] = pool_size * 3
            kwargs["pool_pre_ping"] = True
        # Connections the pool opens at most (what this replica can take of max_connections).
        self.capacity: int = kwargs["pool_size"]
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        self._writer: asyncio.Lock | None = asyncio.Lock() if self.is_sqlite else None
        self._lock_queries: dict[Table, Select[Any]] = {}
        if self.is_sqlite:
            _install_sqlite_hooks(self.engine)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: commits on success, rolls back on error."""
        # SQLite has one writer at a time anyway: wait for it here, in-process, instead of
        # holding a pooled connection while blocked on the database lock.
        async with self._writer if self._writer is not None else contextlib.nullcontext(), self._write() as conn:
            yield conn

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        try:
            asked = time.monotonic()
            async with self.engine.connect() as conn:
                metrics.DB_POOL_WAIT.observe(time.monotonic() - asked)
                await conn.execution_options(**{_IMMEDIATE: True})
                async with conn.begin():
                    yield conn
        except DataError as exc:
            raise _refused_value(exc) from exc
        except Exception as exc:
            if is_connection_error(exc):
                raise DatabaseUnavailable("The database is not reachable.") from exc
            raise

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read transaction (a consistent snapshot on PostgreSQL)."""
        try:
            asked = time.monotonic()
            async with self.engine.connect() as conn, conn.begin():
                metrics.DB_POOL_WAIT.observe(time.monotonic() - asked)
                yield conn
        except DataError as exc:
            raise _refused_value(exc) from exc
        except Exception as exc:
            if is_connection_error(exc):
                raise DatabaseUnavailable("The database is not reachable.") from exc
            raise

    def for_update(self, query: Select[Any], *, skip_locked: bool = False) -> Select[Any]:
        """Row locks on PostgreSQL; on SQLite the IMMEDIATE transaction already excludes writers."""
        if self.is_postgres:
            return query.with_for_update(skip_locked=skip_locked)
        return query

    async def lock_row(self, conn: AsyncConnection, table: Table, row_id: uuid.UUID) -> Any:
        query = self._lock_queries.get(table)
        if query is None:
            # Built once per table (a statement memoizes its cache key): every step of every turn
            # locks its chat, and building and keying a SELECT of the chat's columns each time
            # cost about as much CPU as running it (~450 vs ~200 µs per lock, measured alone).
            query = self._lock_queries[table] = self.for_update(select(table).where(table.c.id == bindparam("p_row_id")))
        return (await conn.execute(query, {"p_row_id": row_id})).first()

    async def dispose(self) -> None:
        await self.engine.dispose()


def _refused_value(exc: DataError) -> InvalidInput:
    """A value the database refuses (a number out of range, text it cannot store) is bad input.
    The driver's text carries the SQL and the parameters: it goes to the log, never to a client."""
    log.info("the database refused a value: %s", exc)
    return InvalidInput("A value is out of range or is not text the database can store.")


def is_connection_error(exc: BaseException) -> bool:
    """Whether an error means the database connection was lost or could not be made (a blip to
    wait out), judged by exception type, never by message text: SQLAlchemy's
    `connection_invalidated`, asyncpg's connection and operator-intervention classes (admin
    shutdown, "starting up", too many clients), and OS-level socket errors and timeouts. The
    driver's original exception is followed through `orig` and `__cause__`."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, DBAPIError) and e.connection_invalidated:
            return True
        if isinstance(e, OSError | asyncpg.PostgresConnectionError | asyncpg.TooManyConnectionsError):
            return True
        if isinstance(e, asyncpg.OperatorInterventionError) and not isinstance(e, asyncpg.QueryCanceledError):
            return True
        todo += [x for x in (getattr(e, "orig", None), e.__cause__) if isinstance(x, BaseException)]
    return False


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _install_sqlite_hooks(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
        # The driver's own transaction handling is off (isolation_level=None): we BEGIN ourselves.
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.close()
        # SQLite's own lower() folds ASCII only: a title search for "über" would miss "Über".
        # No index uses lower(), so replacing it changes nothing stored.
        dbapi_conn.create_function("lower", 1, _lower, deterministic=True)

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: SyncConnection) -> None:
        sql = "BEGIN IMMEDIATE" if conn.get_execution_options().get(_IMMEDIATE) else "BEGIN"
        # Straight to aiosqlite, one trip to its thread: through SQLAlchemy a statement takes
        # three (cursor, execute, close) plus its execution machinery, and every transaction
        # begins here (7% of the CPU of 100 streaming chats on SQLite). Errors are raised as
        # SQLAlchemy would have wrapped them.
        driver = conn.connection.driver_connection
        assert driver is not None
        try:
            await_(driver.execute(sql))
        except sqlite3.Error as exc:
            raise DBAPIError.instance(sql, None, exc, sqlite3.Error) from exc


__all__ = ["Database", "async_url", "sqlite3"]
