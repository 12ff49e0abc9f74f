"""Warm MCP sessions (chatd.mcp.pool) against real servers, counted from the server's side:
stdio processes started (one pidfile line per start) and HTTP sessions handed out."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mcp_test_servers import (
    IdentityGate,
    ServerState,
    SessionCounter,
    SessionLostMidCall,
    build_server,
    failing_app,
    free_port,
    serve,
)

from chatd.domain.mcp import McpHealth, McpServerConfig
from chatd.domain.tools import Tool, ToolResult
from chatd.mcp import connect_all
from chatd.mcp.config import OAuthToken
from chatd.mcp.pool import McpPool, McpUnavailable, ServerHealth
from conftest import make_config, make_ctx

USER = uuid.uuid4()
CHAT = uuid.uuid4()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Health:
    seen: list[tuple[str, ServerHealth]]

    def __call__(self, config: McpServerConfig, health: ServerHealth) -> None:
        self.seen.append((config.slug, health))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def pool(clock: Clock) -> AsyncIterator[McpPool]:
    p = McpPool(idle_ttl=60, health_check_after=30, retry_initial=5, retry_max=40, monotonic=clock)
    yield p
    await p.close()


def by_name(tools: list[Tool]) -> dict[str, Tool]:
    return {t.name: t for t in tools}


async def turn(
    pool: McpPool, config: McpServerConfig, tool: str | None = None, args: dict[str, Any] | None = None,
    *, user: uuid.UUID = USER, errors: list[str] | None = None, token: OAuthToken | None = None,
) -> tuple[list[str], ToolResult | None]:
    """One turn's MCP use: lease, optionally call one tool, give the lease back."""

    async def failed(cfg: McpServerConfig, message: str) -> None:
        if errors is not None:
            errors.append(message)

    tokens = {config.id: token} if token is not None else {}
    tools, conns = await connect_all([config], tokens, pool=pool, identity=(user, CHAT), on_server_error=failed)
    try:
        result = await by_name(tools)[tool].call(args or {}, make_ctx()) if tool else None
        return sorted(by_name(tools)), result
    finally:
        await conns.close()


def starts(pid_file: Path) -> list[int]:
    return [int(line) for line in pid_file.read_text().split()] if pid_file.exists() else []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead but unreaped; the client must have reaped it.
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


async def until_dead(pid: int, timeout: float = 10) -> bool:
    async with asyncio.timeout(timeout):
        while alive(pid):  # noqa: ASYNC110 - a process to outlive, no event to wait on
            await asyncio.sleep(0.02)
    return True


@pytest.fixture
def stdio_config(stdio_python_command: tuple[str, list[str]], tmp_path: Path) -> tuple[McpServerConfig, Path]:
    command, args = stdio_python_command
    pid_file = tmp_path / "pids"
    return make_config(slug="local", transport="stdio", command=command, args=(*args, str(pid_file))), pid_file


# -- stdio: one process for many turns -----------------------------------------------------------


async def test_a_stdio_server_process_serves_every_turn_and_stops_when_idle(
    pool: McpPool, clock: Clock, stdio_config: tuple[McpServerConfig, Path]
) -> None:
    config, pid_file = stdio_config
    for i in range(3):
        _, result = await turn(pool, config, "local__echo", {"text": f"turn {i}"})
        assert result is not None and result.result == f"turn {i}"
        clock.now += 10
    [pid] = starts(pid_file)
    assert alive(pid) and pool.opened == 1 and pool.reused == 2

    clock.now += 49  # 59 s since the last turn released it
    assert await pool.reap() == 0 and alive(pid)
    clock.now += 1
    assert await pool.reap() == 1
    assert await until_dead(pid)
    await turn(pool, config, "local__echo", {"text": "again"})
    assert len(starts(pid_file)) == 2


async def test_concurrent_turns_share_one_connect(pool: McpPool, stdio_config: tuple[McpServerConfig, Path]) -> None:
    config, pid_file = stdio_config
    results = await asyncio.gather(*(turn(pool, config, "local__add", {"a": i, "b": 1}) for i in range(5)))
    assert [r.result for _, r in results if r is not None] == ["1", "2", "3", "4", "5"]
    assert len(starts(pid_file)) == 1 and pool.opened == 1


async def test_users_never_share_a_connection(pool: McpPool, stdio_config: tuple[McpServerConfig, Path]) -> None:
    config, pid_file = stdio_config
    await turn(pool, config, "local__echo", {"text": "a"}, user=uuid.uuid4())
    await turn(pool, config, "local__echo", {"text": "b"}, user=uuid.uuid4())
    assert len(set(starts(pid_file))) == 2


async def test_a_stdio_server_that_died_between_turns_is_started_again(
    pool: McpPool, stdio_config: tuple[McpServerConfig, Path]
) -> None:
    config, pid_file = stdio_config
    await turn(pool, config, "local__echo", {"text": "a"})
    [first] = starts(pid_file)
    os.kill(first, 9)
    async with asyncio.timeout(10):  # the client notices the process's end (its stdout closes)
        while any(c.alive for c in pool.connections(config.id)):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    assert await until_dead(first)
    _, result = await turn(pool, config, "local__echo", {"text": "b"})
    assert result is not None and not result.is_error and result.result == "b"
    assert len(starts(pid_file)) == 2


async def test_a_stdio_server_that_dies_mid_turn_is_replaced_for_the_next_call(
    pool: McpPool, stdio_config: tuple[McpServerConfig, Path]
) -> None:
    config, pid_file = stdio_config
    tools, conns = await connect_all([config], {}, pool=pool, identity=(USER, CHAT), call_timeout=10)
    try:
        slow = asyncio.create_task(by_name(tools)["local__slow"].call({"seconds": 30}, make_ctx()))
        [first] = starts(pid_file)
        os.kill(first, 9)
        # The call that was running gets an error: it may have had effects, so it is not re-sent.
        assert (await asyncio.wait_for(slow, 10)).is_error
        again = await by_name(tools)["local__echo"].call({"text": "x"}, make_ctx())
        assert not again.is_error and again.result == "x"
    finally:
        await conns.close()
    assert len(starts(pid_file)) == 2


async def test_an_admin_change_retires_the_connection_and_stops_the_process(
    pool: McpPool, stdio_config: tuple[McpServerConfig, Path]
) -> None:
    config, pid_file = stdio_config
    await turn(pool, config, "local__echo", {"text": "a"})
    [first] = starts(pid_file)
    edited = dataclasses.replace(config, display_name="Edited")
    await pool.reconcile({config.id: edited})
    assert await until_dead(first)
    # A lease for the edited config opens a new process; the same holds without the hint.
    await turn(pool, edited, "local__echo", {"text": "b"})
    await turn(pool, config, "local__echo", {"text": "c"})
    assert len(starts(pid_file)) == 3


async def test_a_deleted_server_is_closed_even_while_a_turn_holds_it_once_that_turn_ends(
    pool: McpPool, stdio_config: tuple[McpServerConfig, Path]
) -> None:
    config, pid_file = stdio_config
    tools, conns = await connect_all([config], {}, pool=pool, identity=(USER, CHAT))
    await pool.reconcile({})
    [pid] = starts(pid_file)
    # The running turn keeps its connection until it ends.
    assert (await by_name(tools)["local__echo"].call({"text": "still"}, make_ctx())).result == "still"
    assert alive(pid)
    await conns.close()
    assert await until_dead(pid)
    assert pool.open_connections() == 0


async def test_closing_the_pool_stops_every_process(stdio_config: tuple[McpServerConfig, Path], no_leaked_tasks: None) -> None:
    config, pid_file = stdio_config
    pool = McpPool(idle_ttl=60)
    await turn(pool, config, "local__echo", {"text": "a"})
    await turn(pool, config, "local__echo", {"text": "b"}, user=uuid.uuid4())
    pids = starts(pid_file)
    await pool.close()
    for pid in pids:
        assert await until_dead(pid)
    assert pool.open_connections() == 0


# -- HTTP: one session for a chat's turns ----------------------------------------------------------


@dataclass
class LegacyServer:
    url: str
    port: int
    state: ServerState
    counter: SessionCounter


@contextmanager
def legacy_server(port: int = 0) -> Iterator[LegacyServer]:
    """The SDK's server in the handshake era (2025-11-25): sessions with Mcp-Session-Id."""
    state = ServerState()
    counter = SessionCounter(build_server(state).streamable_http_app(), legacy_only=True)
    with serve(counter, port=port) as running:
        yield LegacyServer(running.url, running.port, state, counter)


async def test_a_chat_keeps_its_http_session_and_the_servers_state_across_turns(pool: McpPool, clock: Clock) -> None:
    with legacy_server() as server:
        config = make_config(server.url, slug="web")
        counts = []
        for _ in range(3):
            _, result = await turn(pool, config, "web__visits")
            assert result is not None
            counts.append(result.result)
            clock.now += 5
        assert counts == ["1", "2", "3"]
        assert server.counter.sessions == 1 and pool.opened == 1


@pytest.mark.parametrize("found_by", ["call", "health_check"])
async def test_a_server_restarted_mid_chat_gets_a_new_session_and_the_call_goes_through(
    pool: McpPool, clock: Clock, found_by: str
) -> None:
    with legacy_server() as first:
        config = make_config(first.url, slug="web")
        _, result = await turn(pool, config, "web__visits")
        assert result is not None and result.result == "1"
        port = first.port
    with legacy_server(port) as second:
        if found_by == "health_check":
            clock.now += pool.health_check_after  # idle long enough: pinged before use
        _, result = await turn(pool, config, "web__visits")
        assert result is not None and not result.is_error and result.result == "1"
        assert second.counter.sessions == 1
        # The call reached the new server once: the lost session's 404 was not a call.
        assert second.state.visits and sum(second.state.visits.values()) == 1
    assert pool.opened == 2


async def test_a_lost_session_resends_only_the_call_it_refused_not_one_that_ran_beside_it(pool: McpPool) -> None:
    """Two calls share a session; `delete_note` runs, then `echo` gets the 404 of the lost
    session, then delete_note's answer fails. Only echo was refused unprocessed: it goes through
    on a new session, and delete_note is reported failed, not sent (and run) a second time."""
    state = ServerState()
    counter = SessionCounter(SessionLostMidCall(build_server(state).streamable_http_app(), state), legacy_only=True)
    with serve(counter) as running:
        config = make_config(running.url, slug="web")
        tools, conns = await connect_all([config], {}, pool=pool, identity=(USER, CHAT))
        try:
            deleted, echoed = await asyncio.wait_for(
                asyncio.gather(
                    by_name(tools)["web__delete_note"].call({"key": "k"}, make_ctx()),
                    by_name(tools)["web__echo"].call({"text": "hi"}, make_ctx()),
                ),
                20,
            )
        finally:
            await conns.close()
    assert not echoed.is_error and echoed.result == "hi"
    assert deleted.is_error and "failed" in str(deleted.result)
    assert state.deleted == ["k"]
    assert counter.sessions == 2


@pytest.mark.parametrize("era", ["2025-11-25", "2026-07-28"])
async def test_tool_list_changes_reach_the_next_turn_without_reconnecting(pool: McpPool, era: str) -> None:
    """Handshake era: the server's notice; 2026-07-28: the listing's ttlMs (0 here) and the
    subscriptions/listen stream."""
    state = ServerState()
    counter = SessionCounter(build_server(state).streamable_http_app(), legacy_only=era == "2025-11-25")
    with serve(counter) as running:
        config = make_config(running.url, slug="web")
        names, _ = await turn(pool, config, "web__grow")
        assert "web__late" not in names
        async with asyncio.timeout(10):
            while "web__late" not in (names := (await turn(pool, config))[0]):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        assert counter.sessions == (1 if era == "2025-11-25" else 0) and pool.opened == 1
        assert pool.connections(config.id)[0].protocol_version == era


# -- races: an entry replaced while the pool awaited ---------------------------------------------


def gate_closing(pool: McpPool, monkeypatch: pytest.MonkeyPatch, which: Any) -> tuple[asyncio.Event, asyncio.Event]:
    """Hold the pool's close of the entries `which(entry)` picks until `gate` is set; `reached`
    says one is held."""
    gate, reached = asyncio.Event(), asyncio.Event()
    close_entry = pool._close_entry

    async def held(entry: Any) -> None:
        if which(entry):
            reached.set()
            await gate.wait()
        await close_entry(entry)

    monkeypatch.setattr(pool, "_close_entry", held)
    return gate, reached


async def test_a_lease_replacing_a_dead_connection_joins_the_one_another_lease_opened_meanwhile(
    pool: McpPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    with legacy_server() as server:
        config = make_config(server.url, slug="web")

        async def lease() -> Any:
            return await pool.lease(config, None, user_id=USER, chat_id=CHAT, connect_timeout=10)

        first = await lease()
        dead = first.connection
        await first.release()
        dead.transport_ended = True  # found dead by the next lease
        gate, reached = gate_closing(pool, monkeypatch, lambda entry: entry.conn is dead)
        a = asyncio.create_task(lease())
        await reached.wait()  # a retired the dead one and is closing it
        b = await lease()  # meanwhile b opens its replacement
        gate.set()
        held = await a
        # One replacement, shared: a second one would have taken the key from b's, leaving b's
        # connection in no table (never reaped, never closed at shutdown).
        assert held.connection is b.connection and pool.opened == 2
        await held.release()
        await b.release()
        assert pool.connections(config.id) == [b.connection]
        await pool.close()
        assert not b.connection.alive


async def test_the_reaper_leaves_alone_an_entry_that_replaced_the_one_it_saw(
    pool: McpPool, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    with legacy_server() as one, legacy_server() as two:
        first, second = make_config(one.url, slug="one"), make_config(two.url, slug="two")
        for config in (first, second):
            await (await pool.lease(config, None, user_id=USER, chat_id=CHAT, connect_timeout=10)).release()
        clock.now += pool.idle_ttl  # both idle long enough
        gate, reached = gate_closing(pool, monkeypatch, lambda entry: entry.key.server_id == first.id)
        reaping = asyncio.create_task(pool.reap())
        await reached.wait()  # the reaper is closing `one`'s connection
        # Meanwhile an admin's edit reaches a turn: `two`'s idle connection is replaced.
        edited = dataclasses.replace(second, display_name="Two, renamed")
        lease = await pool.lease(edited, None, user_id=USER, chat_id=CHAT, connect_timeout=10)
        gate.set()
        assert await reaping == 1
        assert pool.connections(second.id) == [lease.connection] and lease.connection.alive
        await lease.release()
        assert pool.connections(second.id) == [lease.connection]  # kept warm, still the pool's


# -- failing servers: the negative cache ---------------------------------------------------------


async def test_a_down_server_costs_one_attempt_per_interval_with_backoff(clock: Clock) -> None:
    health = Health([])
    pool = McpPool(idle_ttl=60, retry_initial=5, retry_max=40, monotonic=clock, on_health=health)
    counter = SessionCounter(failing_app)
    try:
        with serve(counter) as running:
            config = make_config(running.url, slug="down")
            errors: list[str] = []
            await turn(pool, config, errors=errors)
            attempt = counter.requests
            assert attempt > 0 and len(errors) == 1
            for _ in range(5):  # five more turns within the interval: no request reaches the server
                await turn(pool, config, errors=errors)
            assert counter.requests == attempt and len(errors) == 6
            with pytest.raises(McpUnavailable) as unavailable:
                await pool.lease(config, None, user_id=USER, chat_id=CHAT, connect_timeout=5)
            assert unavailable.value.reason == errors[0] and 0 < unavailable.value.retry_in <= 5

            clock.now += 5
            await turn(pool, config, errors=errors)
            assert counter.requests == 2 * attempt
            clock.now += 5  # the second failure doubled the wait
            await turn(pool, config, errors=errors)
            assert counter.requests == 2 * attempt
            clock.now += 5
            await turn(pool, config, errors=errors)
            assert counter.requests == 3 * attempt

            # Other users with the same credentials share the verdict.
            await turn(pool, config, user=uuid.uuid4(), errors=errors)
            assert counter.requests == 3 * attempt
        await asyncio.sleep(0)
        assert [h.state for _, h in health.seen] == [McpHealth.FAILING] * 3
    finally:
        await pool.close()


async def test_a_server_that_comes_back_is_used_after_the_interval(clock: Clock) -> None:
    health = Health([])
    pool = McpPool(idle_ttl=60, retry_initial=5, monotonic=clock, on_health=health)
    port = free_port()
    try:
        config = make_config(f"http://127.0.0.1:{port}/mcp", slug="later")
        errors: list[str] = []
        assert (await turn(pool, config, errors=errors))[0] == []
        with legacy_server(port) as server:
            assert (await turn(pool, config, errors=errors))[0] == []  # still within the interval
            clock.now += 5
            names, _ = await turn(pool, config, errors=errors)
            assert "later__echo" in names and server.counter.sessions == 1
        await asyncio.sleep(0)
        assert [h.state for _, h in health.seen] == [McpHealth.FAILING, McpHealth.CONNECTED]
        assert health.seen[0][1].reason == errors[0]
        # The connect reports how many tools it listed (the admin page shows it after a reload).
        assert health.seen[1][1].tool_count == len([n for n in names if n.startswith("later__")])
    finally:
        await pool.close()


async def test_a_server_refusing_one_forwarded_identity_stays_up_for_the_others(clock: Clock) -> None:
    health = Health([])
    pool = McpPool(idle_ttl=60, retry_initial=5, retry_max=40, monotonic=clock, on_health=health)
    gate = IdentityGate(build_server().streamable_http_app())
    alice, bob = uuid.uuid4(), uuid.uuid4()
    gate.refused.add(str(alice))
    try:
        with serve(gate) as running:
            config = make_config(running.url, slug="ident", forward_identity=True)
            errors: list[str] = []
            assert (await turn(pool, config, user=alice, errors=errors))[0] == []
            refused = gate.attempts[str(alice)]
            assert refused > 0 and len(errors) == 1
            # Bob is served at once: Alice's refusal is hers, not the server's.
            names, _ = await turn(pool, config, user=bob, errors=errors)
            assert "ident__echo" in names and gate.attempts[str(bob)] > 0 and len(errors) == 1
            # Alice again within her interval: nothing reaches the server.
            await turn(pool, config, user=alice, errors=errors)
            assert gate.attempts[str(alice)] == refused and len(errors) == 2
            # The server lets her in; she is tried once her own interval is over.
            gate.refused.discard(str(alice))
            clock.now += 5
            names, _ = await turn(pool, config, user=alice, errors=errors)
            assert "ident__echo" in names and len(errors) == 2
        await asyncio.sleep(0)
        # A refused identity never made the server's status unauthorized for everyone.
        assert [h.state for _, h in health.seen] == [McpHealth.CONNECTED]
    finally:
        await pool.close()


async def test_a_users_new_token_is_tried_at_once_and_their_old_ones_failure_blocks_nobody_else(clock: Clock) -> None:
    pool = McpPool(idle_ttl=60, retry_initial=5, retry_max=40, monotonic=clock)
    gate = IdentityGate(build_server().streamable_http_app())
    gate.refused.add("revoked")
    alice, bob = uuid.uuid4(), uuid.uuid4()
    try:
        with serve(gate) as running:
            config = make_config(running.url, slug="oauth", auth_type="oauth2", forward_identity=True)
            errors: list[str] = []
            assert (await turn(pool, config, user=alice, token=OAuthToken("revoked"), errors=errors))[0] == []
            assert (await turn(pool, config, user=alice, token=OAuthToken("revoked"), errors=errors))[0] == []
            refused = gate.attempts[str(alice)]
            assert len(errors) == 2 and refused > 0  # the second turn was the negative cache's
            names, _ = await turn(pool, config, user=bob, token=OAuthToken("bobs"), errors=errors)
            assert "oauth__echo" in names
            # Alice reconnected (a new token): no waiting out the old token's interval.
            names, _ = await turn(pool, config, user=alice, token=OAuthToken("fresh"), errors=errors)
            assert "oauth__echo" in names and gate.attempts[str(alice)] > refused and len(errors) == 2
    finally:
        await pool.close()


async def test_without_a_shared_pool_every_turn_connects_and_closes(stdio_config: tuple[McpServerConfig, Path]) -> None:
    config, pid_file = stdio_config
    for text in ("a", "b"):
        tools, conns = await connect_all([config], {})
        assert (await by_name(tools)["local__echo"].call({"text": text}, make_ctx())).result == text
        await conns.close()
    first, second = starts(pid_file)
    assert first != second and not alive(first) and not alive(second)
