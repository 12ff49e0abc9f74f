"""A database blip mid-turn (hardening issue, item 9): the turn loses its connection while it
writes a step; the chat is given back as pending, not failed, and runs to its answer once the
database is back. The database really goes away: PostgreSQL is reached through a TCP proxy that
the test cuts."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from sqlalchemy.engine import make_url

from chatd.bootstrap import build, turn_deps
from chatd.domain.chat import ChatStatus, Role, UserRole
from chatd.domain.clock import ManualClock
from chatd.domain.config import ModelOptions, Pricing
from chatd.domain.parts import TextPart, text_of
from chatd.errors import DatabaseUnavailable
from chatd.settings import Settings
from chatd.store import chats as chat_store
from chatd.store import users as user_store
from chatd.store.database import Database, is_connection_error
from chatd.worker import Workers
from tests.fakes.llm_server import FakeLLMServer, Reply, ToolCall
from tests.fakes.tcp_proxy import TcpProxy
from tests.worker.conftest import Gate


async def test_a_turn_that_loses_the_database_gives_the_chat_back_and_it_is_answered_later(pg_url: str, tmp_path: Path) -> None:
    url = make_url(pg_url)
    async with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy, FakeLLMServer() as llm:
        proxied = url.set(host="127.0.0.1", port=proxy.listen_port).render_as_string(hide_password=False)
        settings = Settings(data_dir=tmp_path / "data", database_url=proxied, run_workers=False, secret_key="", generate_titles=False)
        app = await build(settings, clock=ManualClock())
        try:
            admin = await user_store.create_user(app.db, app.clock.now(), "admin", UserRole.ADMIN)
            await app.service.create_provider(admin, provider="openai-compatible", display_name=None, api_key="sk", base_url=llm.openai_base_url, enabled=True)
            await app.service.create_model_config(
                admin, provider="openai-compatible", model="fake-model", display_name=None, context_limit=100_000,
                compression_threshold=70, is_default=True, options=ModelOptions(), pricing=Pricing(),
            )  # fmt: skip
            gate = Gate()
            waits: list[float] = []

            async def sleep(delay: float) -> None:
                # The database comes back during the first backoff.
                waits.append(delay)
                proxy.restore()
                await asyncio.sleep(0)

            deps = turn_deps(app)
            deps.sleep = sleep
            deps.tool_providers = [lambda ctx: _tools(gate)]
            workers = Workers(deps, worker_id=uuid.uuid4())
            chat = await app.service.create_chat(admin, content=[TextPart(text="do it")])
            llm.script(Reply(text="working", tool_calls=[ToolCall("c1", "wait", {})]))
            await workers.acquire_once()
            await asyncio.wait_for(gate.entered.wait(), 20)
            proxy.cut()  # mid-turn: the step is written after the tool returns
            gate.release.set()
            await asyncio.wait_for(workers.drain(), 60)
            assert waits, "the turn did not wait for the database"
            after = await chat_store.get_chat(app.db, chat.id)
            assert after.status is ChatStatus.PENDING and after.last_error is None, after
            # Once back, the chat runs again and is answered.
            llm.script(Reply(text="done"))
            await workers.acquire_once()
            await asyncio.wait_for(workers.drain(), 60)
            final = await chat_store.get_chat(app.db, chat.id)
            assert final.status is ChatStatus.WAITING and final.last_error is None
            msgs = [m for m in await chat_store.all_messages(app.db, chat.id) if m.role is not Role.SYSTEM]
            assert [(m.role, text_of(m.content)) for m in msgs] == [(Role.USER, "do it"), (Role.ASSISTANT, "done")]
            await workers.shutdown()
        finally:
            proxy.restore()
            await app.close()


async def _tools(gate: Gate) -> tuple[list[object], list[str]]:
    return [gate.tool()], []


async def test_a_lost_connection_is_classified_by_type_not_by_message(pg_url: str) -> None:
    url = make_url(pg_url)
    async with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        db = Database(url.set(host="127.0.0.1", port=proxy.listen_port).render_as_string(hide_password=False))
        try:
            async with db.read() as conn:
                await conn.exec_driver_sql("select 1")
            # Dropped in the middle of a transaction.
            try:
                async with db.write() as conn:
                    await conn.exec_driver_sql("select 1")
                    proxy.cut()
                    await conn.exec_driver_sql("select 2")
            except DatabaseUnavailable as exc:
                assert is_connection_error(exc.__cause__ or exc)
            else:
                raise AssertionError("a dropped connection was not reported")
            # Refused while away.
            try:
                async with db.read() as conn:
                    await conn.exec_driver_sql("select 1")
            except DatabaseUnavailable:
                pass
            else:
                raise AssertionError("a refused connection was not reported")
            proxy.restore()
            async with db.read() as conn:
                assert (await conn.exec_driver_sql("select 3")).scalar() == 3
        finally:
            await db.dispose()


def test_errors_that_only_mention_connections_are_not_connection_errors() -> None:
    # The old text matching took these for a lost database.
    assert not is_connection_error(ValueError("could not connect the dots"))
    assert not is_connection_error(RuntimeError("connection refused by policy"))
    assert is_connection_error(ConnectionResetError())
    assert is_connection_error(TimeoutError())
