"""PostgreSQL LISTEN/NOTIFY on one dedicated connection, with reconnect and a liveness probe.

NOTIFY is delivered on commit only and dropped on rollback; payloads stay small (ids and flags).
After a reconnect every subscriber gets a `{"reconnected": 1}` payload so it can re-sync from the
database (notifications sent while we were away are lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from typing import Any

import asyncpg

from chatd.pubsub.base import MAX_PAYLOAD, Callback, Unsubscribe

log = logging.getLogger(__name__)


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


class PostgresPubSub:
    def __init__(
        self, url: str, *, probe_interval: float = 5.0, reconnect_delay: float = 0.5, probe_timeout: float = 10.0
    ) -> None:
        self._dsn = _dsn(url)
        self._subs: defaultdict[str, list[Callback]] = defaultdict(list)
        self._listen: asyncpg.Connection | None = None
        self._publish: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()
        self._publish_lock = asyncio.Lock()
        self._probe_interval = probe_interval
        # How long the probe's `SELECT 1` may take before the connection counts as lost: apart
        # from the interval, so that probing often never makes a slow answer (a busy database or
        # machine) read as a dead connection.
        self._probe_timeout = max(probe_timeout, probe_interval)
        self._reconnect_delay = reconnect_delay
        self._supervisor: asyncio.Task[None] | None = None
        self._closed = False
        self._healthy = False
        self._lost = asyncio.Event()

    @property
    def healthy(self) -> bool:
        return self._healthy

    async def start(self) -> None:
        await self._connect()
        self._supervisor = asyncio.create_task(self._supervise(), name="pubsub-supervisor")

    async def close(self) -> None:
        self._closed = True
        if self._supervisor:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._supervisor
        for conn in (self._listen, self._publish):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 2)
        self._listen = self._publish = None

    async def _connect(self) -> None:
        async with self._lock:
            conn = await asyncpg.connect(self._dsn)
            # Only the current connection's end counts: terminating the one this replaces (below)
            # fires its listener too, and must not start another reconnect.
            conn.add_termination_listener(lambda c: self._lost.set() if c is self._listen else None)
            try:
                for channel in list(self._subs):
                    await conn.add_listener(channel, self._dispatch)
            except BaseException:
                conn.terminate()
                raise
            old, self._listen = self._listen, conn
            self._healthy = True
            self._lost.clear()
        if old is not None:
            with contextlib.suppress(Exception):
                old.terminate()

    async def _supervise(self) -> None:
        while not self._closed:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that arrives
            # with the event (worker/pool.py's acquire loop hit it).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._probe_interval):
                    await self._lost.wait()
            try:
                assert self._listen is not None
                if self._lost.is_set() or self._listen.is_closed():
                    raise ConnectionError("listen connection lost")
                # Under the lock: asyncpg allows one operation at a time per connection, and
                # subscribe/unsubscribe LISTEN and UNLISTEN on this one.
                async with self._lock:
                    await asyncio.wait_for(self._listen.fetchval("SELECT 1"), self._probe_timeout)
            except Exception as exc:
                self._healthy = False
                log.warning("pubsub: connection lost (%s); reconnecting", exc)
                while not self._closed:
                    try:
                        await self._connect()
                        log.info("pubsub: reconnected")
                        break
                    except Exception as exc2:
                        log.warning("pubsub: reconnect failed: %s", exc2)
                        await asyncio.sleep(self._reconnect_delay)
                for cbs in list(self._subs.values()):
                    for cb in list(cbs):
                        with contextlib.suppress(Exception):
                            cb({"reconnected": 1})

    def _dispatch(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        try:
            data = json.loads(payload) if payload else {}
        except ValueError:
            log.warning("pubsub: ignoring a malformed payload on %s", channel)
            return
        for cb in list(self._subs.get(channel, ())):
            try:
                cb(data)
            except Exception:
                log.exception("pubsub subscriber failed on %s", channel)

    async def publish(self, channel: str, payload: dict[str, Any]) -> None:
        text = json.dumps(payload, separators=(",", ":"))
        if len(text.encode()) > MAX_PAYLOAD:
            raise ValueError(f"pubsub payload too large ({len(text)} bytes) on {channel}")
        async with self._publish_lock:
            for attempt in range(2):
                try:
                    if self._publish is None or self._publish.is_closed():
                        self._publish = await asyncpg.connect(self._dsn)
                    await self._publish.execute("SELECT pg_notify($1, $2)", channel, text)
                    return
                except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
                    self._publish = None
                    if attempt:
                        # A hint lost costs latency, never correctness.
                        log.warning("pubsub: publish on %s failed: %s", channel, exc)

    async def subscribe(self, channel: str, callback: Callback) -> Unsubscribe:
        async with self._lock:
            first = channel not in self._subs or not self._subs[channel]
            self._subs[channel].append(callback)
            if first and self._listen is not None and not self._listen.is_closed():
                try:
                    await self._listen.add_listener(channel, self._dispatch)
                except Exception as exc:
                    self._lost.set()
                    log.warning("pubsub: LISTEN %s failed: %s", channel, exc)

        async def unsubscribe() -> None:
            async with self._lock:
                subs = self._subs.get(channel)
                if subs and callback in subs:
                    subs.remove(callback)
                if subs is not None and not subs:
                    del self._subs[channel]
                    if self._listen is not None and not self._listen.is_closed():
                        with contextlib.suppress(Exception):
                            await self._listen.remove_listener(channel, self._dispatch)

        return unsubscribe
