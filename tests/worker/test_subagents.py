"""Sub-agent tools (REFERENCE §7.5) through real turns on both databases: a root chat spawns a child
that a worker runs like any chat, waits for its report (woken by the child's status notification),
messages it, lists and closes it; children cannot spawn and chats reach only their own children."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from chatd.domain.chat import BusyBehavior, Chat, ChatStatus, Role
from chatd.domain.events import MessagePartEvent, StreamEvent
from chatd.domain.parts import TextPart, ToolCallPart, ToolResultPart
from chatd.store import chats as chat_store
from chatd.worker import Workers
from chatd.worker.prompt import SUBAGENT_INSTRUCTION
from chatd.worker.subagents import subagent_provider
from tests.fakes.llm_server import Fault, Reply, ToolCall
from tests.fakes.turn_doubles import echo_tool
from tests.worker.conftest import Gate, Rig, collect

AGENT_TOOLS = {"spawn_agent", "wait_agent", "message_agent", "close_agent", "list_agents"}


def agent_workers(rig: Rig) -> Workers:
    w = rig.new_workers()
    app = rig.app
    w.deps.tool_providers.append(subagent_provider(app.db, app.hub, app.pubsub, app.clock))
    return w


@pytest.fixture
async def agents(rig: Rig) -> Rig:
    await rig.workers.shutdown()
    rig.workers = agent_workers(rig)
    return rig


async def tool_results(rig: Rig, chat_id: uuid.UUID) -> list[ToolResultPart]:
    """The chat's tool results, without how long each took (that varies from run to run)."""
    return [
        p.model_copy(update={"duration_ms": None})
        for m in await rig.messages(chat_id) if m.role is Role.TOOL for p in m.content if isinstance(p, ToolResultPart)
    ]  # fmt: skip


async def children(rig: Rig, parent_id: uuid.UUID) -> list[Chat]:
    return await chat_store.list_chats(rig.app.db, rig.people.alice.user.id, archived=None, parent_chat_id=parent_id)


def request_tools(rig: Rig, index: int) -> set[str]:
    return {t["function"]["name"] for t in rig.llm.requests[index].body.get("tools", [])}


def request_system_text(rig: Rig, index: int) -> str:
    return "\n".join(str(m.get("content")) for m in rig.llm.requests[index].body["messages"] if m["role"] == "system")


async def spawn(rig: Rig, parent_text: str = "delegate", **spawn_args: Any) -> tuple[Chat, Chat]:
    """A root chat whose first turn spawns one child (not run yet: only the parent is acquired)."""
    rig.llm.script(Reply(tool_calls=[ToolCall("s1", "spawn_agent", {"prompt": "count the files", **spawn_args})]), Reply(text="spawned"))
    parent = await rig.chat(parent_text)
    await rig.workers.acquire_once()
    await rig.workers.drain()
    [child] = await children(rig, parent.id)
    return parent, child


async def say(rig: Rig, chat: Chat, text: str) -> None:
    await rig.app.service.send_message(rig.people.alice.user, chat.id, content=[TextPart(text=text)], busy_behavior=BusyBehavior.QUEUE)


async def test_spawned_child_runs_and_wait_agent_returns_its_answer(agents: Rig) -> None:
    rig = agents
    parent, child = await spawn(rig, title="Counter")
    assert (child.parent_chat_id, child.root_chat_id, child.owner_id, child.title) == (parent.id, parent.id, parent.owner_id, "Counter")
    assert child.last_model_config_id == rig.model_config_id and child.status is ChatStatus.PENDING
    [spawned] = await tool_results(rig, parent.id)
    assert spawned.result == {"chat_id": str(child.id), "title": "Counter", "status": "pending"} and not spawned.is_error

    rig.llm.script(Reply(text="there are 3 files"))
    await rig.run()
    assert (await rig.get(child.id)).status is ChatStatus.WAITING
    # The child is a delegated chat: the sub-agent instruction, and no sub-agent tools.
    assert request_tools(rig, 0) >= AGENT_TOOLS
    assert not AGENT_TOOLS & request_tools(rig, 2)
    assert SUBAGENT_INSTRUCTION in request_system_text(rig, 2)
    assert SUBAGENT_INSTRUCTION not in request_system_text(rig, 0)

    rig.llm.script(Reply(tool_calls=[ToolCall("w1", "wait_agent", {"chat_id": str(child.id)})]), Reply(text="it found 3"))
    await say(rig, parent, "what did it find?")
    await rig.run()
    waited = (await tool_results(rig, parent.id))[-1]
    assert waited == ToolResultPart(
        tool_call_id="w1", tool_name="wait_agent",
        result={"chat_id": str(child.id), "title": "Counter", "status": "waiting", "report": "there are 3 files"},
    )  # fmt: skip


async def test_wait_agent_reports_a_failed_child_as_an_error(agents: Rig) -> None:
    rig = agents
    parent, child = await spawn(rig)
    rig.llm.script(Reply(fault=Fault.status(400, message="bad request")))
    await rig.run()
    failed = await rig.get(child.id)
    assert failed.status is ChatStatus.ERROR and failed.last_error
    rig.llm.script(Reply(tool_calls=[ToolCall("w1", "wait_agent", {"chat_id": str(child.id)})]), Reply(text="it failed"))
    await say(rig, parent, "how did it go?")
    await rig.run()
    waited = (await tool_results(rig, parent.id))[-1]
    assert waited.is_error and waited.result == {"chat_id": str(child.id), "status": "error", "error": failed.last_error}


async def test_wait_agent_returns_when_the_child_waits_for_the_users_approval(agents: Rig) -> None:
    rig = agents
    rig.app.settings.workspace_tool_approval = "execute"
    rig.tools = [echo_tool("execute")]
    parent, child = await spawn(rig)
    rig.llm.script(Reply(tool_calls=[ToolCall("e1", "execute", {"x": 1})]))
    await rig.run()
    assert (await rig.get(child.id)).status is ChatStatus.REQUIRES_ACTION
    rig.llm.script(Reply(tool_calls=[ToolCall("w1", "wait_agent", {"chat_id": str(child.id)})]), Reply(text="it needs you"))
    await say(rig, parent, "how is it going?")
    await rig.run()
    waited = (await tool_results(rig, parent.id))[-1]
    assert waited.is_error and waited.result["status"] == "requires_action"
    assert "waiting for the user to answer in its chat (tool_approval: execute)" in waited.result["error"]


async def child_at_gate(rig: Rig, gate: Gate) -> tuple[Chat, Chat, Workers]:
    """A parent (waiting) and its child mid-turn on another worker pool, held by the gate tool."""
    rig.tools = [gate.tool("wait")]
    parent, child = await spawn(rig)
    rig.llm.script(Reply(text="looking", tool_calls=[ToolCall("g1", "wait", {})]))
    other = agent_workers(rig)
    assert [t.chat.id for t in await other.acquire_once()] == [child.id]
    await asyncio.wait_for(gate.entered.wait(), 10)
    return parent, child, other


def calls_tool(name: str) -> Any:
    def until(ev: StreamEvent) -> bool:
        return isinstance(ev, MessagePartEvent) and isinstance(ev.part, ToolCallPart) and ev.part.tool_name == name

    return until


async def test_wait_agent_is_woken_by_the_childs_status_change(agents: Rig) -> None:
    rig, gate = agents, Gate()
    parent, child, other = await child_at_gate(rig, gate)
    # Parent: wait (a long timeout: only the child's notification can end it in time); then the
    # child's second step; then the parent's answer.
    rig.llm.script(
        Reply(tool_calls=[ToolCall("w1", "wait_agent", {"chat_id": str(child.id), "timeout_seconds": 120})]),
        Reply(text="child done"),
        Reply(text="thanks"),
    )
    seen = asyncio.create_task(collect(rig.app, parent.id, calls_tool("wait_agent")))
    await say(rig, parent, "wait for it")
    await rig.workers.acquire_once()
    await seen  # the parent has taken its scripted reply and is about to wait
    gate.release.set()
    async with asyncio.timeout(20):
        await asyncio.gather(other.drain(), rig.workers.drain())
    waited = (await tool_results(rig, parent.id))[-1]
    assert waited.result == {"chat_id": str(child.id), "title": child.title, "status": "waiting", "report": "child done"}
    assert (await rig.get(parent.id)).status is ChatStatus.WAITING
    await other.shutdown()


async def test_wait_agent_timeout_says_the_child_is_still_running(agents: Rig) -> None:
    rig, gate = agents, Gate()
    parent, child, other = await child_at_gate(rig, gate)
    rig.llm.script(
        Reply(tool_calls=[ToolCall("w1", "wait_agent", {"chat_id": str(child.id), "timeout_seconds": 0.2})]), Reply(text="still busy")
    )
    await say(rig, parent, "is it done?")
    await rig.workers.acquire_once()
    await rig.workers.drain()
    waited = (await tool_results(rig, parent.id))[-1]
    assert waited.is_error and waited.result["status"] == "running"
    assert "still running" in waited.result["error"]
    assert (await rig.get(child.id)).status is ChatStatus.RUNNING  # it keeps working
    rig.llm.script(Reply(text="finally"))
    gate.release.set()
    await other.drain()
    assert (await rig.get(child.id)).status is ChatStatus.WAITING
    await other.shutdown()


async def test_message_agent_sends_the_child_more_work(agents: Rig) -> None:
    rig = agents
    parent, child = await spawn(rig)
    rig.llm.script(Reply(text="3 files"))
    await rig.run()
    rig.llm.script(
        Reply(tool_calls=[ToolCall("m1", "message_agent", {"chat_id": str(child.id), "message": "now count dirs"})]),
        Reply(tool_calls=[ToolCall("m2", "message_agent", {"chat_id": str(child.id), "message": "x", "busy_behavior": "shout"})]),
        Reply(text="asked"),
        Reply(text="2 dirs"),  # the child's second turn
    )
    await say(rig, parent, "ask for dirs too")
    await rig.run()
    sent, bad = (await tool_results(rig, parent.id))[-2:]
    assert sent.result == {"chat_id": str(child.id), "queued": False, "status": "pending"} and not sent.is_error
    assert bad.is_error and bad.result == {"error": "busy_behavior is one of queue, interrupt, steer."}
    texts = [(m.role, m.content) for m in await rig.messages(child.id) if m.role is not Role.SYSTEM]
    assert texts == [
        (Role.USER, [TextPart(text="count the files")]),
        (Role.ASSISTANT, [TextPart(text="3 files")]),
        (Role.USER, [TextPart(text="now count dirs")]),
        (Role.ASSISTANT, [TextPart(text="2 dirs")]),
    ]


async def test_message_agent_queues_while_the_child_is_busy(agents: Rig) -> None:
    rig, gate = agents, Gate()
    parent, child, other = await child_at_gate(rig, gate)
    rig.llm.script(Reply(tool_calls=[ToolCall("m1", "message_agent", {"chat_id": str(child.id), "message": "then this"})]), Reply(text="queued it"))
    await say(rig, parent, "queue more")
    await rig.workers.acquire_once()
    await rig.workers.drain()
    sent = (await tool_results(rig, parent.id))[-1]
    assert sent.result == {"chat_id": str(child.id), "queued": True, "status": "running"}
    rig.llm.script(Reply(text="first done"), Reply(text="second done"))
    gate.release.set()
    await rig.run(other)
    child_texts = [m.content for m in await rig.messages(child.id) if m.role is Role.USER]
    assert child_texts[-1] == [TextPart(text="then this")]
    await other.shutdown()


async def test_close_agent_stops_and_archives_the_child(agents: Rig) -> None:
    rig, gate = agents, Gate()
    parent, child, other = await child_at_gate(rig, gate)
    rig.llm.script(
        Reply(tool_calls=[ToolCall("c1", "close_agent", {"chat_id": str(child.id)})]),
        Reply(tool_calls=[ToolCall("l1", "list_agents", {})]),
        Reply(tool_calls=[ToolCall("m1", "message_agent", {"chat_id": str(child.id), "message": "more"})]),
        Reply(text="closed"),
    )
    await say(rig, parent, "stop it")
    await rig.workers.acquire_once()
    await rig.workers.drain()
    await asyncio.wait_for(other.drain(), 10)  # the child's turn was interrupted by the status change
    closed, listed, refused = (await tool_results(rig, parent.id))[-3:]
    assert closed.result == {"chat_id": str(child.id), "closed": True}
    current = await rig.get(child.id)
    assert current.archived and current.status is ChatStatus.WAITING
    assert [(a["chat_id"], a["status"], a["closed"]) for a in listed.result["agents"]] == [(str(child.id), "waiting", True)]
    assert refused.is_error and refused.result == {"error": "This sub-agent was closed; spawn a new one."}
    await other.shutdown()


async def test_list_agents_shows_this_chats_children(agents: Rig) -> None:
    rig = agents
    rig.llm.script(
        Reply(tool_calls=[ToolCall("s1", "spawn_agent", {"prompt": "a", "title": "A"}), ToolCall("s2", "spawn_agent", {"prompt": "b", "title": "B"})]),
        Reply(tool_calls=[ToolCall("l1", "list_agents", {})]),
        Reply(text="two"),
    )
    parent = await rig.chat("split the work")
    await rig.workers.acquire_once()
    await rig.workers.drain()
    listed = (await tool_results(rig, parent.id))[-1]
    assert listed.result["count"] == 2
    assert sorted((a["title"], a["status"], a["closed"]) for a in listed.result["agents"]) == [("A", "pending", False), ("B", "pending", False)]


async def test_a_chat_cannot_reach_another_chats_child(agents: Rig) -> None:
    rig = agents
    _parent, child = await spawn(rig)
    rig.llm.script(Reply(text="child answer"))
    await rig.run()  # the child is done before the other chat runs, so the script order holds
    rig.llm.script(
        Reply(tool_calls=[
            ToolCall("w1", "wait_agent", {"chat_id": str(child.id)}),
            ToolCall("w2", "message_agent", {"chat_id": str(child.id), "message": "hijack"}),
            ToolCall("w3", "close_agent", {"chat_id": "not-an-id"}),
        ]),
        Reply(text="refused"),
    )  # fmt: skip
    other_root = await rig.chat("another root chat")
    await rig.workers.acquire_once()
    await rig.workers.drain()
    waited, messaged, bad = await tool_results(rig, other_root.id)
    assert waited.is_error and waited.result == {"error": f"No sub-agent {child.id} was spawned by this chat."}
    assert messaged.is_error and messaged.result == waited.result
    assert bad.is_error and bad.result == {"error": "chat_id must be the id spawn_agent returned."}
    # The child got nothing.
    assert [m.role for m in await rig.messages(child.id) if m.role is not Role.SYSTEM] == [Role.USER, Role.ASSISTANT]
    assert not (await rig.get(child.id)).archived


async def test_a_child_cannot_spawn_even_if_it_calls_the_tool(agents: Rig) -> None:
    rig = agents
    _parent, child = await spawn(rig)
    rig.llm.script(Reply(tool_calls=[ToolCall("s9", "spawn_agent", {"prompt": "grandchild"})]), Reply(text="could not"))
    await rig.run()
    [refused] = await tool_results(rig, child.id)
    assert refused.is_error and refused.result == {"error": "Tool not found: spawn_agent"}
    assert await children(rig, child.id) == []


async def test_archiving_a_root_archives_its_children_and_the_api_shows_the_tree(agents: Rig, client: httpx.AsyncClient) -> None:
    rig = agents
    parent, child = await spawn(rig)
    headers = rig.people.alice.headers
    listed = (await client.get("/api/v1/chats", params={"parent_chat_id": str(parent.id)}, headers=headers)).json()
    assert [(c["id"], c["parent_chat_id"], c["root_chat_id"]) for c in listed] == [(str(child.id), str(parent.id), str(parent.id))]
    root = (await client.get(f"/api/v1/chats/{parent.id}", headers=headers)).json()
    assert (root["parent_chat_id"], root["root_chat_id"]) == (None, str(parent.id))
    # Bob sees none of alice's sub-agents.
    assert (await client.get("/api/v1/chats", params={"parent_chat_id": str(parent.id)}, headers=rig.people.bob.headers)).json() == []

    await rig.app.service.set_archived(rig.people.alice.user, parent.id, True)
    for c in (await rig.get(parent.id), await rig.get(child.id)):
        assert c.archived and c.status is ChatStatus.WAITING  # the pending child was stopped too
