"""PostgresPubSub on a real server: one LISTEN connection shared by many subscriptions, probed for
liveness, replaced once when it dies (not over and over), and never used by two operations at once."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from chatd.pubsub.postgres import PostgresPubSub
from tests.conftest import _dsn


class Inbox:
    """A subscriber callback that records payloads and wakes whoever waits for one."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.changed = asyncio.Event()

    def __call__(self, payload: dict[str, Any]) -> None:
        self.items.append(payload)
        self.changed.set()

    async def until(self, payload: dict[str, Any], timeout: float = 10) -> None:
        async with asyncio.timeout(timeout):
            while payload not in self.items:
                self.changed.clear()
                await self.changed.wait()


async def test_a_killed_listen_connection_is_replaced_once_and_delivery_resumes(pg_url: str) -> None:
    ps = PostgresPubSub(pg_url, probe_interval=0.2, reconnect_delay=0.05)
    await ps.start()
    got = Inbox()
    try:
        await ps.subscribe("chan", got)
        assert ps._listen is not None
        old_pid = ps._listen.get_server_pid()
        admin = await asyncpg.connect(_dsn(pg_url))
        try:
            await admin.execute("SELECT pg_terminate_backend($1)", old_pid)
        finally:
            await admin.close()
        await got.until({"reconnected": 1})
        # Terminating the replaced connection must not look like another loss: give a reconnect
        # storm several probe intervals to show up.
        await asyncio.sleep(1.0)
        assert got.items.count({"reconnected": 1}) == 1
        assert ps.healthy and ps._listen is not None and ps._listen.get_server_pid() != old_pid
        await ps.publish("chan", {"a": 1})
        await got.until({"a": 1})
    finally:
        await ps.close()


async def test_replacing_a_live_listen_connection_does_not_start_a_reconnect_storm(pg_url: str) -> None:
    # What a failed LISTEN does: mark the connection lost while it is still open. Terminating
    # that (live) connection fires its termination listener, which must not count as a new loss.
    ps = PostgresPubSub(pg_url, probe_interval=0.2, reconnect_delay=0.05)
    await ps.start()
    got = Inbox()
    try:
        await ps.subscribe("chan", got)
        ps._lost.set()
        await got.until({"reconnected": 1})
        await asyncio.sleep(1.0)
        assert got.items.count({"reconnected": 1}) == 1
        await ps.publish("chan", {"a": 2})
        await got.until({"a": 2})
    finally:
        await ps.close()


async def test_subscriptions_churning_under_a_busy_probe_never_break_the_connection(pg_url: str) -> None:
    # The probe shares the LISTEN connection with LISTEN/UNLISTEN; asyncpg refuses two operations
    # at once ("another operation is in progress"), which used to read as a lost connection.
    ps = PostgresPubSub(pg_url, probe_interval=0.001, reconnect_delay=0.05)
    await ps.start()
    notes = Inbox()
    try:
        await ps.subscribe("watch", notes)

        async def churn(i: int) -> None:
            for j in range(20):
                unsubscribe = await ps.subscribe(f"c{i}_{j}", lambda _p: None)
                await unsubscribe()

        await asyncio.gather(*(churn(i) for i in range(10)))
        assert {"reconnected": 1} not in notes.items
        assert ps.healthy
    finally:
        await ps.close()
