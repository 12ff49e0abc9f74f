"""`/chats/watch` across a PostgreSQL LISTEN reconnect (issue 9, item 6): the watch survives the
reconnect notice and re-reads what changed while notifications were lost, like the chat stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from chatd.bootstrap import App, build
from chatd.domain.chat import UserRole
from chatd.domain.clock import ManualClock
from chatd.pubsub.postgres import PostgresPubSub
from chatd.settings import Settings
from chatd.store import users as user_store
from tests.conftest import _dsn, serve_http


class Watch:
    """Reads a watch SSE response in the background; tests wait for the events they expect."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.changed = asyncio.Event()
        self.ended = False

    async def read(self, response: httpx.Response) -> None:
        data: list[str] = []
        try:
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    data.append(line[5:].strip())
                elif not line and data:
                    self.events.append(json.loads("\n".join(data)))
                    data = []
                    self.changed.set()
        finally:
            self.ended = True
            self.changed.set()

    async def until(self, kind: str, chat_id: str, timeout: float = 15) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                for ev in self.events:
                    if ev["kind"] == kind and ev["chat"]["id"] == chat_id:
                        return ev
                assert not self.ended, f"the watch ended; got {self.events}"
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def pg_chatd(pg_url: str, tmp_path: Path) -> AsyncIterator[App]:
    settings = Settings(data_dir=tmp_path / "data", database_url=pg_url, run_workers=False, secret_key="")
    app = await build(settings, clock=ManualClock())
    try:
        yield app
    finally:
        await app.close()


def gate_reconnect(ps: PostgresPubSub) -> tuple[asyncio.Event, asyncio.Event]:
    """Hold the pubsub's reconnect until released, so the test acts while nothing listens."""
    entered, release = asyncio.Event(), asyncio.Event()
    connect: Callable[[], Awaitable[None]] = ps._connect

    async def gated() -> None:
        entered.set()
        await release.wait()
        await connect()

    ps._connect = gated  # type: ignore[method-assign]
    return entered, release


async def test_the_chat_watch_survives_a_postgres_reconnect_and_replays_what_it_missed(pg_chatd: App, pg_url: str) -> None:
    app = pg_chatd
    ps = app.pubsub
    assert isinstance(ps, PostgresPubSub)
    alice = await user_store.create_user(app.db, app.clock.now(), "alice", UserRole.MEMBER)
    h = {"Authorization": f"Bearer {await user_store.create_token(app.db, app.clock.now(), alice.id, 't')}"}
    watch = Watch()
    async with (
        serve_http(app) as base,
        httpx.AsyncClient(base_url=base, timeout=30) as client,
        client.stream("GET", "/api/v1/chats/watch", headers=h) as response,
    ):
        assert response.status_code == 200
        reader = asyncio.create_task(watch.read(response))
        try:
            first = (await client.post("/api/v1/chats", headers=h, json={"content": "one"})).json()["id"]
            await watch.until("created", first)

            entered, release = gate_reconnect(ps)
            assert ps._listen is not None
            admin = await asyncpg.connect(_dsn(pg_url))
            try:
                await admin.execute("SELECT pg_terminate_backend($1)", ps._listen.get_server_pid())
            finally:
                await admin.close()
            await asyncio.wait_for(entered.wait(), 15)
            # Nothing listens now: these notifications are lost.
            second = (await client.post("/api/v1/chats", headers=h, json={"content": "two"})).json()["id"]
            assert (await client.post(f"/api/v1/chats/{first}/archive", headers=h)).status_code == 204
            release.set()

            assert (await watch.until("created", second))["chat"]["title"] == "two"
            assert (await watch.until("deleted", first))["chat"]["archived"] is True
            # And live delivery goes on.
            third = (await client.post("/api/v1/chats", headers=h, json={"content": "three"})).json()["id"]
            await watch.until("created", third)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
