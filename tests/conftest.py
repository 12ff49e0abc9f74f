"""Shared fixtures: every database test runs on SQLite and on a real PostgreSQL.

PostgreSQL comes from CHATD_TEST_DATABASE_URL when set (CI: the machine's PostgreSQL 15), else
from a private server started with the `pgserver` wheel. A migrated template database is made
once per session and each test gets a fresh copy. A missing PostgreSQL is an error, not a skip.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from chatd import logs
from chatd.server import preload
from chatd.store.database import Database, async_url
from chatd.store.migrate import migrate
from tests import private_postgres

# The provider SDKs are imported on first use (chatd starts faster); here they are imported once
# up front, so that a test's first turn does not spend seconds importing inside its timeout.
preload()

# One migrated template per test session: concurrent sessions on one server never share it.
TEMPLATE = f"chatd_tpl_{uuid.uuid4().hex[:10]}"


def _admin_url() -> str:
    url = os.environ.get("CHATD_TEST_DATABASE_URL")
    if url:
        return url
    return private_postgres.start(private_postgres.pgdata_for())


def run_sync(coro: Any) -> Any:
    """asyncio.run, also where a loop already runs in this thread (Playwright's sync API keeps
    one running in the browser tests): then the coroutine runs on a loop of its own in a thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _with_db(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    url = _admin_url()

    async def make_template() -> None:
        conn = await asyncpg.connect(_dsn(url))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
        finally:
            await conn.close()
        db = Database(_with_db(url, TEMPLATE))
        try:
            await migrate(db)
        finally:
            await db.dispose()

    async def drop_template() -> None:
        conn = await asyncpg.connect(_dsn(url))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')
        finally:
            await conn.close()

    run_sync(make_template())
    try:
        yield url
    finally:
        run_sync(drop_template())


async def _create_pg_database(admin_url: str) -> tuple[str, str]:
    name = f"chatd_t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(_dsn(admin_url))
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
    finally:
        await conn.close()
    return name, _with_db(admin_url, name)


async def _drop_pg_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(_dsn(admin_url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database (multi-replica tests need one shared server)."""
    name, url = asyncio.run(_create_pg_database(pg_admin_url))
    try:
        yield url
    finally:
        asyncio.run(_drop_pg_database(pg_admin_url, name))


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database URL of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'chatd.db'}"
        return
    admin = request.getfixturevalue("pg_admin_url")
    name, url = asyncio.run(_create_pg_database(admin))
    try:
        yield url
    finally:
        asyncio.run(_drop_pg_database(admin, name))


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    if database.is_sqlite:
        await migrate(database)
    try:
        yield database
    finally:
        await database.dispose()


def pytest_collection_modifyitems(items: list[Any]) -> None:
    # Readable ids: test_x[sqlite] / test_x[postgres].
    return None


__all__ = ["async_url"]


# --- the composed application, users and an HTTP client ------------------------------------------

from contextlib import asynccontextmanager  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import httpx  # noqa: E402

from chatd.bootstrap import App, build  # noqa: E402
from chatd.domain.chat import UserRole  # noqa: E402
from chatd.domain.clock import ManualClock  # noqa: E402
from chatd.domain.config import User  # noqa: E402
from chatd.settings import Settings  # noqa: E402
from chatd.store import users as user_store  # noqa: E402


@dataclass
class Person:
    user: User
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class People:
    admin: Person
    alice: Person
    bob: Person


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def chatd(db_url: str, tmp_path: Path, clock: ManualClock) -> AsyncIterator[App]:
    settings = Settings(data_dir=tmp_path / "data", database_url=db_url, run_workers=False, secret_key="")
    app = await build(settings, clock=clock)
    try:
        yield app
    finally:
        await app.close()


@pytest.fixture
async def people(chatd: App) -> People:
    async def person(name: str, role: UserRole) -> Person:
        u = await user_store.create_user(chatd.db, chatd.clock.now(), name, role)
        return Person(u, await user_store.create_token(chatd.db, chatd.clock.now(), u.id, "test"))

    return People(await person("admin", UserRole.ADMIN), await person("alice", UserRole.MEMBER), await person("bob", UserRole.MEMBER))


@pytest.fixture
async def client(chatd: App) -> AsyncIterator[httpx.AsyncClient]:
    """A real HTTP client against the app served by uvicorn on a loopback port."""
    async with serve_http(chatd) as base_url, httpx.AsyncClient(base_url=base_url, timeout=30) as c:
        yield c


@asynccontextmanager
async def serve_http(app_state: App) -> AsyncIterator[str]:
    import socket

    import uvicorn

    from chatd.api.app import create_app

    sock = socket.socket()
    # Accepted connections inherit this; without it every response waits ~40 ms on delayed ACKs.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(app_state), log_level="warning", lifespan="off", ws="websockets-sansio")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        server.force_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """The process's logging configured as `chatd serve` does, into a buffer; restored after."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    buf = io.StringIO()
    logs.configure("debug", stream=buf, json_lines=True)
    try:
        yield buf
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
