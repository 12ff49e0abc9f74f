"""MCP tools inside real turns: the worker connects the chat's servers (and force_on ones),
offers `slug__tool` to the model, calls the real MCP server, and reports a broken server in the
chat's stream while the turn goes on."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chatd.domain.chat import ChatStatus, Role
from chatd.domain.events import MessagePartEvent, StatusEvent
from chatd.domain.mcp import McpHealth
from chatd.domain.parts import NoticePart, TextPart, ToolResultPart
from chatd.store import mcp_servers as mcp_store
from tests.fakes.llm_server import Reply, ToolCall
from tests.mcp.mcp_test_servers import ServerState, build_server, free_port, serve
from tests.worker.conftest import Rig, collect

TEST_SERVERS = Path(__file__).parent.parent / "mcp" / "mcp_test_servers.py"


@pytest.fixture
def mcp_server() -> Iterator[tuple[str, ServerState]]:
    state = ServerState()
    with serve(build_server(state).streamable_http_app()) as running:
        yield running.url, state


async def add_server(rig: Rig, slug: str, url: str, **fields: Any) -> Any:
    return await rig.app.service.create_mcp_server(
        rig.people.admin.user, {"slug": slug, "display_name": slug.title(), "url": url, "enabled": True, **fields}
    )


def offered_tools(rig: Rig, request: int = 0) -> list[str]:
    return [t["function"]["name"] for t in rig.llm.requests[request].body.get("tools", [])]


async def test_a_chat_calls_a_tool_of_its_mcp_server(rig: Rig, mcp_server: tuple[str, ServerState]) -> None:
    url, state = mcp_server
    server = await add_server(rig, "calc", url)
    rig.llm.script(Reply(tool_calls=[ToolCall("c1", "calc__add", {"a": 2, "b": 3})]), Reply(text="It is 5."))
    chat = await rig.chat("add 2 and 3", mcp_server_ids=[server.id])
    await rig.run()
    assert (await rig.get(chat.id)).status is ChatStatus.WAITING
    assert "calc__add" in offered_tools(rig) and "calc__echo" in offered_tools(rig)
    assert state.calls == ["add"]
    tool_msgs = [m for m in await rig.messages(chat.id) if m.role is Role.TOOL]
    result = tool_msgs[0].content[0]
    assert isinstance(result, ToolResultPart) and not result.is_error and "5" in json.dumps(result.result)
    system = " ".join(str(m["content"]) for m in rig.llm.requests[0].body["messages"] if m["role"] == "system")
    assert "Connected MCP servers" in system and "calc__add" in system


async def test_force_on_servers_connect_even_when_the_chat_did_not_choose_them(rig: Rig, mcp_server: tuple[str, ServerState]) -> None:
    url, _state = mcp_server
    await add_server(rig, "forced", url, availability="force_on", tool_allow_list=["echo"])
    rig.llm.script(Reply(text="ok"))
    await rig.chat("hi")
    await rig.run()
    assert [t for t in offered_tools(rig) if t != "ask_user_question"] == ["forced__echo"]


async def test_a_broken_server_is_reported_in_the_stream_and_the_turn_goes_on(rig: Rig, mcp_server: tuple[str, ServerState]) -> None:
    url, _state = mcp_server
    good = await add_server(rig, "good", url)
    bad = await add_server(rig, "bad", f"http://127.0.0.1:{free_port()}/mcp")
    rig.llm.script(Reply(text="fine without it"))
    chat = await rig.chat("hi", mcp_server_ids=[good.id, bad.id])
    task = asyncio.create_task(collect(rig.app, chat.id, lambda e: isinstance(e, StatusEvent) and e.status is ChatStatus.WAITING))
    await asyncio.sleep(0.05)
    await rig.run()
    events = await task
    notices = [e.part for e in events if isinstance(e, MessagePartEvent) and isinstance(e.part, NoticePart)]
    assert len(notices) == 1 and notices[0].source == "bad" and "Bad" in notices[0].text
    assert "good__echo" in offered_tools(rig) and not any(t.startswith("bad__") for t in offered_tools(rig))
    assert (await rig.get(chat.id)).status is ChatStatus.WAITING


def running(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


async def test_a_chats_stdio_server_process_serves_all_its_turns_and_an_admins_edit_stops_it(rig: Rig, tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    server = await add_server(
        rig, "local", "", transport="stdio", command=sys.executable, args=[str(TEST_SERVERS), str(pid_file)],
    )

    def starts() -> list[int]:
        return [int(p) for p in pid_file.read_text().split()]

    chat = await rig.chat("echo one", mcp_server_ids=[server.id])
    for i, text in enumerate(["one", "two", "three"]):
        rig.llm.script(Reply(tool_calls=[ToolCall(f"c{i}", "local__echo", {"text": text})]), Reply(text=f"said {text}"))
        if i:
            await rig.app.service.send_message(rig.people.alice.user, chat.id, content=[TextPart(text=f"echo {text}")])
        await rig.run()
    results = [p.result for m in await rig.messages(chat.id) if m.role is Role.TOOL for p in m.content if isinstance(p, ToolResultPart)]
    assert results == ["one", "two", "three"]
    [pid] = starts()

    # The edit is announced on the config channel; the replica retires the idle connection.
    await rig.app.service.update_mcp_server(rig.people.admin.user, server.id, {"display_name": "Local files"})
    async with asyncio.timeout(10):
        while running(pid):  # noqa: ASYNC110 - a process to outlive
            await asyncio.sleep(0.02)
    rig.llm.script(Reply(tool_calls=[ToolCall("c9", "local__echo", {"text": "four"})]), Reply(text="said four"))
    await rig.app.service.send_message(rig.people.alice.user, chat.id, content=[TextPart(text="echo four")])
    await rig.run()
    assert len(starts()) == 2


async def test_a_turn_records_a_failing_server_and_its_recovery_for_the_status_pages(
    rig: Rig, mcp_server: tuple[str, ServerState]
) -> None:
    url, _state = mcp_server
    port = free_port()
    server = await add_server(rig, "later", f"http://127.0.0.1:{port}/mcp")

    async def health() -> McpHealth | None:
        async with asyncio.timeout(10):
            while (known := await mcp_store.statuses(rig.app.db, [server.id])).get(server.id) is None:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        return known[server.id].state

    rig.llm.script(Reply(text="fine without it"))
    chat = await rig.chat("hi", mcp_server_ids=[server.id])
    await rig.run()
    assert await health() is McpHealth.FAILING
    # The admin points it at a server that works: the edit retires the pool's negative entry too.
    await rig.app.service.update_mcp_server(rig.people.admin.user, server.id, {"url": url})
    rig.llm.script(Reply(text="now with it"))
    await rig.app.service.send_message(rig.people.alice.user, chat.id, content=[TextPart(text="again")])
    await rig.run()
    async with asyncio.timeout(10):
        while await health() is not McpHealth.CONNECTED:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    assert any(t.startswith("later__") for t in offered_tools(rig, 1))


async def test_a_disabled_server_the_chat_chose_is_named_in_the_chat_and_to_the_model(
    rig: Rig, mcp_server: tuple[str, ServerState]
) -> None:
    url, state = mcp_server
    server = await add_server(rig, "calc", url)
    rig.llm.script(Reply(text="ok"))
    chat = await rig.chat("hi", mcp_server_ids=[server.id])
    await rig.run()
    await rig.app.service.update_mcp_server(rig.people.admin.user, server.id, {"enabled": False})

    # History makes the model call the tool it used before; the answer says why it is gone.
    rig.llm.script(Reply(tool_calls=[ToolCall("c1", "calc__add", {"a": 1, "b": 2})]), Reply(text="it is off"))
    await rig.app.service.send_message(rig.people.alice.user, chat.id, content=[TextPart(text="add 1 and 2")])
    after = (await rig.messages(chat.id))[-1].id
    events = asyncio.create_task(collect(rig.app, chat.id, lambda e: isinstance(e, StatusEvent) and e.status is ChatStatus.WAITING, after_id=after))
    await asyncio.sleep(0.05)
    await rig.run()
    notices = [e.part for e in await events if isinstance(e, MessagePartEvent) and isinstance(e.part, NoticePart)]
    assert len(notices) == 1 and notices[0].source == "calc" and "disabled" in notices[0].text
    system = " ".join(str(m["content"]) for m in rig.llm.requests[1].body["messages"] if m["role"] == "system")
    assert "Calc (calc): an admin disabled it" in system
    [result] = [p for m in await rig.messages(chat.id) if m.role is Role.TOOL for p in m.content if isinstance(p, ToolResultPart)]
    assert result.is_error and "Calc (calc) is unavailable this turn: an admin disabled it" in json.dumps(result.result)
    assert state.calls == []


async def test_an_admins_successful_check_lets_the_next_turn_retry_a_failed_server_at_once(rig: Rig) -> None:
    rig.app.mcp_sessions.pool.retry_initial = 600  # no retry within this test but the forced one
    port = free_port()
    server = await add_server(rig, "back", f"http://127.0.0.1:{port}/mcp")
    rig.llm.script(Reply(text="without it"))
    chat = await rig.chat("hi", mcp_server_ids=[server.id])
    await rig.run()
    assert not any(t.startswith("back__") for t in offered_tools(rig, 0))
    with serve(build_server().streamable_http_app(), port=port):
        # Within the retry interval the server is skipped without an attempt...
        rig.llm.script(Reply(text="still without"))
        await rig.app.service.send_message(rig.people.alice.user, chat.id, content=[TextPart(text="again")])
        await rig.run()
        assert not any(t.startswith("back__") for t in offered_tools(rig, 1))
        # ...until an admin's check reaches it.
        assert (await rig.app.service.check_mcp_tools(rig.people.admin.user, server.id)).error is None
        rig.llm.script(Reply(text="with it"))
        await rig.app.service.send_message(rig.people.alice.user, chat.id, content=[TextPart(text="and now")])
        await rig.run()
        assert any(t.startswith("back__") for t in offered_tools(rig, 2))
