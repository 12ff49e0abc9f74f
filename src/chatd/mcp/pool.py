"""Warm MCP sessions: one connection per (server, user) on a replica, shared by the turns.

Connecting per turn cost a stdio server a process start and every server an initialize and a
tools/list (seconds with `npx`), and it broke stateful servers, whose session ended with each
turn. The pool keeps a connection open between turns instead:

- **Keys.** A connection belongs to a server config and a user (and a chat, for servers that
  receive the chat id as a header). Users never share a session: a server may keep per-session
  state (a browser, a working directory, subscriptions) that one user must not see another's.
  A chat's turns therefore keep their server's session, and a stdio server its process.
- **Fingerprints.** A connection also remembers exactly what it was opened with: the whole
  config and the headers (a refreshed OAuth token, an admin's edit). A lease that asks for
  something else retires it and opens a new one; a retired connection closes when its last
  lease ends, so no running call is cut. `invalidate` retires on an admin's change at once.
- **Leases.** Turns lease a connection and release it when they end; calls of concurrent turns
  share it (the owner task serves them concurrently). An idle connection closes after
  `idle_ttl` (stopping a stdio process), or earlier when more than `max_idle` are idle.
- **Health.** A connection that died (process exited, transport closed, session 404) is
  replaced at the next lease; one idle for `health_check_after`, or whose last call failed
  below the tool, is pinged first.
- **Negative cache.** A failed connect is remembered per (server, headers it was sent): until the
  retry time, leases fail at once with the last reason, so a down server costs one attempt per
  interval (doubling from `retry_initial` to `retry_max`), not one per turn. Users with the same
  credentials share the entry; OAuth users each have their own, and so do the (user, chat) of a
  server that receives the caller's identity (it may refuse one user and serve the next). A
  new token is new headers: a user who reconnected is not held back by their old token's failure.
- **Single flight.** Concurrent leases of one key wait for one connect.

Connections run in tasks the pool owns (started in a clean context, so a turn's log fields do
not follow a connection that outlives it), and `close` ends them all at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import inspect
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from chatd import logs, metrics
from chatd.domain.mcp import McpHealth, McpServerConfig
from chatd.mcp.config import OAuthToken, connection_headers
from chatd.mcp.connection import ServerConnection
from chatd.mcp.errors import McpAuthError, McpCallError, McpConnectError

log = logging.getLogger(__name__)

ToolsChanged = Callable[[ServerConnection], None]

# A ping is tiny; a server that cannot answer one in this time will not serve a turn either.
PING_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class PoolKey:
    server_id: uuid.UUID
    user_id: uuid.UUID | None
    # Only for servers that receive X-Chatd-Chat-Id: their headers differ per chat.
    chat_id: uuid.UUID | None = None

    @classmethod
    def of(cls, config: McpServerConfig, user_id: uuid.UUID | None, chat_id: uuid.UUID | None) -> PoolKey:
        return cls(config.id, user_id, chat_id if config.forward_identity else None)


@dataclass(frozen=True, slots=True)
class ServerHealth:
    """What the last attempt to reach a server said (reported on changes, for status pages)."""

    state: McpHealth
    reason: str | None = None
    # Connected: how many tools it lists (after the allow/deny lists).
    tool_count: int | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


OnHealth = Callable[[McpServerConfig, ServerHealth], Awaitable[None] | None]


class McpUnavailable(McpConnectError):
    """The server failed recently; no new attempt before `retry_in` seconds (negative cache)."""

    code = "mcp_unavailable"

    def __init__(self, reason: str, retry_in: float) -> None:
        super().__init__(f"{reason} (last attempt failed; next attempt in {max(retry_in, 0):.0f}s)", {"retry_in": retry_in})
        self.reason = reason
        self.retry_in = retry_in


def fingerprint(config: McpServerConfig, headers: dict[str, str]) -> str:
    """Everything a connection was opened with, hashed (the config holds secrets: never kept).
    The dataclass repr names every field; dicts keep insertion order, so an equal config with
    its headers in another order merely opens a new connection once."""
    return hashlib.sha256(repr((config, sorted(headers.items()))).encode()).hexdigest()


@dataclass(eq=False)
class _Entry:
    key: PoolKey
    fingerprint: str
    conn: ServerConnection
    connecting: asyncio.Task[None] | None = None
    leases: int = 0
    last_used: float = 0.0
    retired: bool = False
    listeners: list[ToolsChanged] = field(default_factory=list)


@dataclass
class _Failure:
    reason: str
    error: McpConnectError
    failures: int
    retry_at: float


class Lease:
    """A turn's hold on a pooled connection; `release()` once (idempotent)."""

    def __init__(self, pool: McpPool, entry: _Entry, listener: ToolsChanged | None) -> None:
        self._pool = pool
        self._entry = entry
        self._listener = listener
        self._released = False

    @property
    def connection(self) -> ServerConnection:
        return self._entry.conn

    async def release(self) -> None:
        if self._released:
            return
        self._released = True
        await self._pool._release(self._entry, self._listener)


class McpPool:
    def __init__(
        self,
        *,
        idle_ttl: float = 300.0,
        health_check_after: float = 30.0,
        retry_initial: float = 5.0,
        retry_max: float = 300.0,
        max_idle: int = 200,
        on_health: OnHealth | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        reap_interval: float | None = None,
    ) -> None:
        self.idle_ttl = idle_ttl
        self.health_check_after = health_check_after
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.max_idle = max_idle
        self._on_health = on_health
        self._now = monotonic
        self._reap_interval = reap_interval if reap_interval is not None else max(1.0, min(idle_ttl / 4, 30.0))
        self._entries: dict[PoolKey, _Entry] = {}
        self._retired: set[_Entry] = set()
        self._failures: dict[tuple[uuid.UUID, str], _Failure] = {}
        self._health: dict[uuid.UUID, tuple[McpHealth, int | None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False
        # Counters for tests and the bench: connections opened, leases served by a warm one.
        self.opened = 0
        self.reused = 0

    # -- leasing ---------------------------------------------------------------------------------

    async def lease(
        self,
        config: McpServerConfig,
        token: OAuthToken | None,
        *,
        user_id: uuid.UUID | None,
        chat_id: uuid.UUID | None,
        connect_timeout: float,
        on_tools_changed: ToolsChanged | None = None,
    ) -> Lease:
        """A connected, listed connection for (config, user[, chat]); raises McpConnectError
        (McpAuthError on 401/403, McpUnavailable while the negative cache holds)."""
        if self._closed:
            raise McpConnectError("the MCP connection pool is closed (shutting down)")
        self._ensure_reaper()
        key = PoolKey.of(config, user_id, chat_id)
        headers = connection_headers(config, token, (user_id, chat_id) if user_id and chat_id else None)
        fp = fingerprint(config, headers)
        # Keyed on the headers the attempt is sent with (credentials and any forwarded identity),
        # never on the server alone: one caller's refusal must not make it down for the others.
        failure_key = (config.id, fp)
        for _attempt in range(3):
            entry = self._entries.get(key)
            while entry is not None and (entry.fingerprint != fp or self._dead(entry)):
                await self._retire(entry)
                # Re-read after the await: another lease may have opened the key's replacement
                # meanwhile, and opening a second one would orphan it (held, but in no table).
                entry = self._entries.get(key)
            if entry is None:
                failure = self._failures.get(failure_key)
                if failure is not None and failure.retry_at > self._now():
                    raise McpUnavailable(failure.reason, failure.retry_at - self._now())
                entry = self._open(key, fp, config, headers, connect_timeout, failure_key)
            # Counted as ours while we wait, so the reaper never closes it under us.
            entry.leases += 1
            try:
                if entry.connecting is not None:
                    await self._wait_connected(entry)
                elif not await self._healthy(entry):
                    entry.leases -= 1
                    await self._retire(entry)
                    continue  # replaced by a fresh connect in the next round
                else:
                    self.reused += 1
                    metrics.MCP_CONNECTIONS_REUSED.labels(config.slug).inc()
                await self._fresh_listing(entry)
            except BaseException:
                entry.leases -= 1
                # A connect still under way finishes on its own (and is kept warm, or recorded
                # as a failure); a retired connection nobody holds is closed now.
                if entry.leases == 0 and entry.retired:
                    await self._close_entry(entry)
                raise
            if on_tools_changed is not None:
                entry.listeners.append(on_tools_changed)
            entry.last_used = self._now()
            return Lease(self, entry, on_tools_changed)
        raise McpConnectError("the MCP server's connection kept failing its health check")

    def _open(
        self, key: PoolKey, fp: str, config: McpServerConfig, headers: dict[str, str], connect_timeout: float,
        failure_key: tuple[uuid.UUID, str],
    ) -> _Entry:
        listeners: list[ToolsChanged] = []

        def tools_changed(conn: ServerConnection) -> None:
            for listener in list(listeners):
                try:
                    listener(conn)
                except Exception:  # one turn's listener must not break another's
                    log.warning("MCP tool-change listener failed", exc_info=True)

        conn = ServerConnection(config, headers, connect_timeout=connect_timeout, on_tools_changed=tools_changed)
        entry = _Entry(key, fp, conn, last_used=self._now(), listeners=listeners)
        conn.start(context=_clean_context())
        metrics.MCP_CONNECTIONS_OPENED.labels(config.slug).inc()
        entry.connecting = self._spawn(self._connect(entry, config, failure_key), f"mcp-connect:{config.slug}")
        self._entries[key] = entry
        self.opened += 1
        return entry

    async def _connect(self, entry: _Entry, config: McpServerConfig, failure_key: tuple[uuid.UUID, str]) -> None:
        """The pool's own task for one connect, so its outcome is recorded once, whether or not
        the turns that asked for it are still waiting."""
        try:
            await entry.conn.wait_ready()
        except Exception as exc:
            error = exc if isinstance(exc, McpConnectError) else McpConnectError(str(exc) or type(exc).__name__)
            if self._entries.get(entry.key) is entry:
                del self._entries[entry.key]
            entry.retired = True
            self._record_failure(config, failure_key, error)
            await entry.conn.aclose()
            if error is exc:
                raise
            raise error from exc
        entry.connecting = None
        entry.last_used = self._now()
        self._failures.pop(failure_key, None)
        self._report(config, ServerHealth(McpHealth.CONNECTED, tool_count=len(entry.conn.listing.tools)))

    async def _wait_connected(self, entry: _Entry) -> None:
        task = entry.connecting
        assert task is not None
        try:
            # Shielded: one cancelled turn must not cancel the connect other turns wait for.
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                raise
            raise McpConnectError("the MCP connection pool is closed (shutting down)") from None

    def _record_failure(self, config: McpServerConfig, failure_key: tuple[uuid.UUID, str], error: McpConnectError) -> None:
        previous = self._failures.get(failure_key)
        failures = previous.failures + 1 if previous is not None else 1
        wait = min(self.retry_max, self.retry_initial * 2 ** (failures - 1)) if self.retry_initial > 0 else 0.0
        self._failures[failure_key] = _Failure(error.message, error, failures, self._now() + wait)
        user_flow = config.auth_type == "oauth2" and config.oauth2.grant_type == "authorization_code"
        if isinstance(error, McpAuthError):
            # One user's missing or expired OAuth grant, or a server refusing the identity it was
            # given, says nothing about the server.
            if not (user_flow or config.forward_identity):
                self._report(config, ServerHealth(McpHealth.UNAUTHORIZED, error.message))
        else:
            self._report(config, ServerHealth(McpHealth.FAILING, error.message))

    def _dead(self, entry: _Entry) -> bool:
        return entry.connecting is None and not entry.conn.connected

    async def _healthy(self, entry: _Entry) -> bool:
        conn = entry.conn
        if not conn.connected:
            return False
        idle = entry.leases == 1 and self._now() - entry.last_used >= self.health_check_after
        if not (idle or conn.suspect):
            return True
        try:
            await conn.ping(PING_TIMEOUT)
        except McpCallError as exc:
            log.info("MCP server %s: pooled connection failed its health check (%s); reconnecting", conn.config.slug, exc.message)
            return False
        return conn.connected

    async def _fresh_listing(self, entry: _Entry) -> None:
        if not entry.conn.listing_expired():
            return
        try:
            await entry.conn.refresh_tools(PING_TIMEOUT * 2)
        except McpCallError as exc:  # the old list is better than none; the next lease tries again
            log.info("MCP server %s: re-reading an expired tool list failed: %s", entry.conn.config.slug, exc.message)

    async def _release(self, entry: _Entry, listener: ToolsChanged | None) -> None:
        entry.leases -= 1
        if listener is not None:
            with contextlib.suppress(ValueError):
                entry.listeners.remove(listener)
        entry.last_used = self._now()
        if entry.leases > 0:
            return
        if entry.retired or self._closed or self.idle_ttl <= 0 or not entry.conn.connected:
            if self._entries.get(entry.key) is entry:
                del self._entries[entry.key]
            await self._close_entry(entry)
            return
        idle = [e for e in self._entries.values() if self._idle(e)]
        if len(idle) > self.max_idle:
            idle.sort(key=lambda e: e.last_used)
            for extra in idle[: len(idle) - self.max_idle]:
                # Each close awaits: one leased, retired or replaced meanwhile is no longer extra.
                if self._entries.get(extra.key) is extra and self._idle(extra):
                    del self._entries[extra.key]
                    await self._close_entry(extra)

    @staticmethod
    def _idle(entry: _Entry) -> bool:
        return entry.leases == 0 and entry.connecting is None

    # -- retiring and closing ----------------------------------------------------------------------

    async def _retire(self, entry: _Entry) -> None:
        """Take the entry out of the pool; close it now if nobody holds it, else at its last release."""
        if self._entries.get(entry.key) is entry:
            del self._entries[entry.key]
        entry.retired = True
        if entry.leases == 0:
            await self._close_entry(entry)
        else:
            self._retired.add(entry)

    async def _close_entry(self, entry: _Entry) -> None:
        self._retired.discard(entry)
        entry.retired = True
        if entry.connecting is not None and not entry.connecting.done():
            entry.connecting.cancel()
        try:
            await entry.conn.aclose()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("closing a pooled MCP connection failed", exc_info=True)

    async def invalidate(self, server_ids: set[uuid.UUID] | None = None) -> None:
        """An admin changed or deleted servers (None = any): their connections are retired (closed
        when their turns end) and their negative-cache entries forgotten."""
        for entry in list(self._entries.values()):
            if server_ids is None or entry.key.server_id in server_ids:
                await self._retire(entry)
        for fkey in list(self._failures):
            if server_ids is None or fkey[0] in server_ids:
                del self._failures[fkey]

    def forget_failures(self, server_id: uuid.UUID) -> None:
        """The server answered someone else (an admin's check): the next turn tries it at once."""
        for fkey in [k for k in self._failures if k[0] == server_id]:
            del self._failures[fkey]

    async def reconcile(self, current: dict[uuid.UUID, McpServerConfig]) -> None:
        """Retire connections whose server is gone, disabled or configured differently now
        (after a config-change hint; the turns' own fingerprints catch the rest)."""
        stale: set[uuid.UUID] = set()
        for entry in self._entries.values():
            config = current.get(entry.key.server_id)
            if config is None or not config.enabled or config != entry.conn.config:
                stale.add(entry.key.server_id)
        if stale:
            await self.invalidate(stale)

    def server_ids(self) -> set[uuid.UUID]:
        return {key.server_id for key in self._entries}

    async def reap(self) -> int:
        """Close connections idle for `idle_ttl` or dead; returns how many were closed."""
        now = self._now()
        closed = 0
        for entry in list(self._entries.values()):
            # Re-read after every close (an await): a lease may have retired this entry and put
            # its replacement under the key, which is not ours to delete.
            if self._entries.get(entry.key) is not entry or not self._idle(entry):
                continue
            if now - entry.last_used >= self.idle_ttl or not entry.conn.connected:
                del self._entries[entry.key]
                await self._close_entry(entry)
                closed += 1
        for fkey, failure in list(self._failures.items()):
            # Forget failures long past: the next attempt starts the backoff from scratch.
            if failure.retry_at + self.retry_max < now:
                del self._failures[fkey]
        return closed

    async def close(self) -> None:
        """Shutdown: close every connection (stdio processes end), wait for the pool's tasks."""
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
        entries = [*self._entries.values(), *self._retired]
        self._entries.clear()
        self._retired.clear()
        results = await asyncio.gather(*(self._close_entry(e) for e in entries), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                log.warning("closing an MCP connection failed: %s", result)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- status ------------------------------------------------------------------------------------

    def open_connections(self, server_id: uuid.UUID | None = None) -> int:
        return len(self.connections(server_id))

    def connections(self, server_id: uuid.UUID | None = None) -> list[ServerConnection]:
        """The pooled connections (of one server), connected or not yet."""
        return [e.conn for e in self._entries.values() if server_id is None or e.key.server_id == server_id]

    def _report(self, config: McpServerConfig, health: ServerHealth) -> None:
        # Only changes are reported (and a failure's reason, which may change between attempts):
        # a status row is written per change, not per turn.
        # A connect that lists another number of tools is a change too (the admin page shows it).
        if self._health.get(config.id) == (health.state, health.tool_count) and health.state is McpHealth.CONNECTED:
            return
        self._health[config.id] = (health.state, health.tool_count)
        if self._on_health is None:
            return

        async def report() -> None:
            assert self._on_health is not None
            try:
                outcome = self._on_health(config, health)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception:  # status is advisory; it must not break a turn
                log.warning("recording the status of MCP server %s failed", config.slug, exc_info=True)

        self._spawn(report(), f"mcp-health:{config.slug}")

    # -- tasks -------------------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[None], name: str) -> asyncio.Task[None]:
        async def run() -> None:
            await coro

        task = asyncio.get_running_loop().create_task(run(), name=name, context=_clean_context())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # The outcome is read by whoever waits (a connect) or logged inside (a report).
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return task

    def _ensure_reaper(self) -> None:
        if self.idle_ttl <= 0:
            return  # nothing stays idle: connections close with their last lease
        if self._reaper is None or self._reaper.done():
            self._reaper = self._spawn(self._reap_forever(), "mcp-pool-reaper")

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self._reap_interval)
            try:
                closed = await self.reap()
            except Exception:
                log.warning("reaping idle MCP connections failed", exc_info=True)
                continue
            if closed:
                log.debug("closed %d idle MCP connections", closed)


def _clean_context() -> contextvars.Context:
    """A copy of the current context without the turn's log fields (chat, turn)."""
    ctx = contextvars.copy_context()
    ctx.run(logs.chat_id_var.set, None)
    ctx.run(logs.turn_var.set, None)
    return ctx


__all__ = ["Lease", "McpPool", "McpUnavailable", "PoolKey", "ServerHealth", "fingerprint"]
