"""At-most-once tool effects across crashes (issue 6 item 6, ARCHITECTURE.md "Tool calls across
crashes"): a worker dies while a tool runs; the recovered turn re-asks the model, which issues the
same call again (same id, or a new id with the same arguments), and the tool does not run twice."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

from chatd.domain.chat import ChatStatus, Role
from chatd.domain.parts import TextPart, ToolResultPart
from chatd.domain.tools import ToolContext, ToolResult
from chatd.store import tool_calls, turns
from chatd.store.tool_calls import ToolStart
from chatd.worker import Workers
from chatd.worker.journal import NOT_RERUN_RESULT, args_sha256
from tests.fakes.llm_server import Reply, ToolCall
from tests.fakes.turn_doubles import FnTool
from tests.worker.conftest import Gate, Rig

NOT_RERUN = {"error": NOT_RERUN_RESULT, "not_rerun": True}


@dataclass
class Deploy:
    """A tool with an effect: records every execution; the first one hangs (the worker dies in it)."""

    executions: list[dict[str, Any]] = field(default_factory=list)
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    hang_first: bool = True

    def tool(self, name: str = "deploy", *, idempotent: bool = False) -> FnTool:
        async def fn(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
            self.executions.append(args)
            self.entered.set()
            if self.hang_first and len(self.executions) == 1:
                await asyncio.Event().wait()  # a crashed process never returns
            return ToolResult({"deployed": args})

        return IdempotentTool(name, fn) if idempotent else FnTool(name, fn)


@dataclass
class IdempotentTool(FnTool):
    idempotent: bool = True


async def crash_mid_tool(rig: Rig, deploy: Deploy, call: ToolCall) -> tuple[uuid.UUID, Workers]:
    """Start a turn whose tool call hangs, then let its worker 'die': it never heartbeats, writes or
    releases again. Stale recovery gives the chat to a new worker pool, which is returned."""
    rig.llm.script(Reply(text="deploying", tool_calls=[call]))
    chat = await rig.chat("deploy it")
    await rig.workers.acquire_once()
    await asyncio.wait_for(deploy.entered.wait(), 10)
    assert await tool_calls.started_calls(rig.app.db, chat.id) == [(call.id, call.name)]
    rig.app.clock.advance(rig.app.settings.stale_after + 1)  # type: ignore[attr-defined]
    survivor = rig.new_workers()
    assert [c.id for c in await survivor.recover_once()] == [chat.id]
    return chat.id, survivor


async def tool_results(rig: Rig, chat_id: uuid.UUID) -> list[ToolResultPart]:
    """The chat's tool results, without how long each took (that varies from run to run)."""
    return [
        p.model_copy(update={"duration_ms": None})
        for m in await rig.messages(chat_id) if m.role is Role.TOOL for p in m.content if isinstance(p, ToolResultPart)
    ]  # fmt: skip


@pytest.mark.parametrize("new_id", [False, True], ids=["same-call-id", "new-call-id"])
async def test_a_call_started_before_a_crash_is_not_run_again_by_the_recovered_turn(rig: Rig, new_id: bool) -> None:
    deploy = Deploy()
    rig.tools = [deploy.tool()]
    chat_id, survivor = await crash_mid_tool(rig, deploy, ToolCall("c1", "deploy", {"env": "prod", "version": 7}))
    # Re-asked from the last persisted step, the model issues the same call (providers usually
    # mint a new id; key order differs too: arguments are compared canonically).
    again = ToolCall("c2" if new_id else "c1", "deploy", {"version": 7, "env": "prod"})
    rig.llm.script(Reply(text="deploying", tool_calls=[again]), Reply(text="I will check before retrying"))
    await rig.run(survivor)

    assert deploy.executions == [{"env": "prod", "version": 7}]  # exactly once
    assert await tool_results(rig, chat_id) == [
        ToolResultPart(tool_call_id=again.id, tool_name="deploy", result=NOT_RERUN, is_error=True)
    ]
    # The model was told, in the request after the refused call.
    assert NOT_RERUN_RESULT in json.dumps(rig.llm.requests[-1].body)
    assert (await rig.get(chat_id)).status is ChatStatus.WAITING
    assert await tool_calls.started_calls(rig.app.db, chat_id) == []
    await survivor.shutdown()


async def test_a_deliberate_retry_after_the_not_rerun_result_runs(rig: Rig) -> None:
    deploy = Deploy()
    rig.tools = [deploy.tool()]
    chat_id, survivor = await crash_mid_tool(rig, deploy, ToolCall("c1", "deploy", {"env": "prod"}))
    rig.llm.script(
        Reply(tool_calls=[ToolCall("c2", "deploy", {"env": "prod"})]),
        # Having read the "not re-run" result, the model decides to run it again: a new step.
        Reply(tool_calls=[ToolCall("c3", "deploy", {"env": "prod"})]),
        Reply(text="deployed"),
    )
    await rig.run(survivor)
    assert deploy.executions == [{"env": "prod"}, {"env": "prod"}]
    refused, ran = await tool_results(rig, chat_id)
    assert (refused.tool_call_id, refused.result) == ("c2", NOT_RERUN)
    assert (ran.tool_call_id, ran.result, ran.is_error) == ("c3", {"deployed": {"env": "prod"}}, False)
    await survivor.shutdown()


async def test_a_different_call_after_a_crash_runs(rig: Rig) -> None:
    deploy = Deploy()
    rig.tools = [deploy.tool()]
    chat_id, survivor = await crash_mid_tool(rig, deploy, ToolCall("c1", "deploy", {"env": "prod"}))
    rig.llm.script(Reply(tool_calls=[ToolCall("c2", "deploy", {"env": "staging"})]), Reply(text="staging instead"))
    await rig.run(survivor)
    assert deploy.executions == [{"env": "prod"}, {"env": "staging"}]
    [ran] = await tool_results(rig, chat_id)
    assert not ran.is_error
    await survivor.shutdown()


async def test_an_idempotent_tool_runs_again_after_a_crash(rig: Rig) -> None:
    deploy = Deploy()
    rig.tools = [deploy.tool("status", idempotent=True)]
    chat_id, survivor = await crash_mid_tool_unjournaled(rig, deploy)
    rig.llm.script(Reply(tool_calls=[ToolCall("c1", "status", {})]), Reply(text="all green"))
    await rig.run(survivor)
    assert deploy.executions == [{}, {}]
    [ran] = await tool_results(rig, chat_id)
    assert ran.result == {"deployed": {}} and not ran.is_error
    await survivor.shutdown()


async def crash_mid_tool_unjournaled(rig: Rig, deploy: Deploy) -> tuple[uuid.UUID, Workers]:
    rig.llm.script(Reply(tool_calls=[ToolCall("c1", "status", {})]))
    chat = await rig.chat("status?")
    await rig.workers.acquire_once()
    await asyncio.wait_for(deploy.entered.wait(), 10)
    assert await tool_calls.started_calls(rig.app.db, chat.id) == []  # nothing recorded for it
    rig.app.clock.advance(rig.app.settings.stale_after + 1)  # type: ignore[attr-defined]
    survivor = rig.new_workers()
    assert [c.id for c in await survivor.recover_once()] == [chat.id]
    return chat.id, survivor


async def test_a_call_cut_off_by_shutdown_is_not_run_again_on_the_next_replica(rig: Rig) -> None:
    gate = Gate()
    rig.tools = [gate.tool()]
    rig.llm.script(Reply(tool_calls=[ToolCall("c1", "wait", {})]))
    chat = await rig.chat()
    await rig.workers.acquire_once()
    await asyncio.wait_for(gate.entered.wait(), 10)
    await rig.workers.shutdown()
    assert (await rig.get(chat.id)).status is ChatStatus.PENDING
    rig.llm.script(Reply(tool_calls=[ToolCall("c9", "wait", {})]), Reply(text="finished"))
    other = rig.new_workers()
    await rig.run(other)
    assert gate.calls == 1
    [result] = await tool_results(rig, chat.id)
    assert result.result == NOT_RERUN
    await other.shutdown()


async def test_an_edit_after_a_crash_starts_a_new_turn_where_the_call_runs(rig: Rig) -> None:
    deploy = Deploy()
    rig.tools = [deploy.tool()]
    chat_id, survivor = await crash_mid_tool(rig, deploy, ToolCall("c1", "deploy", {"env": "prod"}))
    [user] = [m for m in await rig.messages(chat_id) if m.role is Role.USER]
    await rig.app.service.edit_message(rig.people.alice.user, chat_id, user.id, [TextPart(text="deploy it, really")])
    rig.llm.script(Reply(tool_calls=[ToolCall("c1", "deploy", {"env": "prod"})]), Reply(text="done"))
    await rig.run(survivor)
    assert deploy.executions == [{"env": "prod"}, {"env": "prod"}]
    await survivor.shutdown()


async def test_a_worker_that_lost_the_chat_starts_no_tool(rig: Rig) -> None:
    chat = await rig.chat()
    now, me = rig.app.clock.now(), uuid.uuid4()
    start = dict(chat_id=chat.id, worker_id=me, run_id=uuid.uuid4(), tool_call_id="c1", tool_name="deploy", args_sha256=args_sha256({}))
    assert await tool_calls.start_tool_call(rig.app.db, now, generation=1, **start) is ToolStart.NOT_OURS  # type: ignore[arg-type]
    [acquired] = await turns.acquire_chats(rig.app.db, now, me, 10)
    assert acquired.generation == 1
    # A turn of an older generation of the same worker starts nothing either.
    assert await tool_calls.start_tool_call(rig.app.db, now, generation=0, **start) is ToolStart.NOT_OURS  # type: ignore[arg-type]
    assert await tool_calls.start_tool_call(rig.app.db, now, generation=1, **start) is ToolStart.RUN  # type: ignore[arg-type]
