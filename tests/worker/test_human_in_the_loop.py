"""Human in the loop (issue 11) end to end over the HTTP API, on SQLite and PostgreSQL: a turn
stops at a call that needs a person (a question, an approval) or a client (a client-side tool),
the chat waits in `requires_action` holding no worker, and the answer resumes it — on a new
worker pool, on a new service after a restart — turning the answer into the call's result
without asking the model first. Answers race (one wins, the tool runs once), a new message with
`interrupt` and archiving cancel the wait, and only the owner answers."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatd.bootstrap import build, turn_deps
from chatd.domain.actions import CANCELLED_BY_USER_TEXT, DENIED_TEXT, Answer, Decision
from chatd.domain.chat import ChatStatus, Role
from chatd.domain.parts import ToolResultPart
from chatd.domain.tools import ToolContext, ToolResult
from chatd.errors import Conflict
from chatd.settings import Settings
from chatd.store import actions as action_store
from chatd.worker import Workers
from tests.fakes.llm_server import Reply, ToolCall
from tests.fakes.turn_doubles import FnTool
from tests.mcp.mcp_test_servers import ServerState, SessionCounter, build_server, serve
from tests.worker.conftest import Rig


@dataclass
class Counter:
    """A tool with an effect: every execution is recorded."""

    runs: list[dict[str, Any]] = field(default_factory=list)

    def tool(self, name: str = "execute") -> FnTool:
        async def fn(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
            self.runs.append(args)
            return ToolResult({"ran": args})

        return FnTool(name, fn)


def auth(rig: Rig, who: str = "alice") -> dict[str, str]:
    return getattr(rig.people, who).headers  # type: ignore[no-any-return]


async def create(client: httpx.AsyncClient, rig: Rig, text: str, **extra: Any) -> dict[str, Any]:
    r = await client.post("/api/v1/chats", json={"content": text, **extra}, headers=auth(rig))
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


async def chat_of(client: httpx.AsyncClient, rig: Rig, chat_id: str) -> dict[str, Any]:
    r = await client.get(f"/api/v1/chats/{chat_id}", headers=auth(rig))
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def answer(client: httpx.AsyncClient, rig: Rig, chat_id: str, action_id: str, who: str = "alice", **body: Any) -> httpx.Response:
    return await client.post(f"/api/v1/chats/{chat_id}/actions/{action_id}", json=body, headers=auth(rig, who))


def tool_messages(request_body: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in request_body["messages"] if m["role"] == "tool"]


async def results(rig: Rig, chat_id: str) -> list[ToolResultPart]:
    return [p for m in await rig.messages(uuid.UUID(chat_id)) if m.role is Role.TOOL for p in m.content if isinstance(p, ToolResultPart)]


def ask(call_id: str = "q1", question: str = "Which colour?", options: list[str] | None = None) -> Reply:
    return Reply(text="Let me ask.", tool_calls=[ToolCall(call_id, "ask_user_question", {"question": question, "options": options or ["red", "blue"]})])


# --- questions ---------------------------------------------------------------------------------------


async def test_a_question_waits_without_a_worker_and_the_answer_is_the_tool_result(rig: Rig, client: httpx.AsyncClient) -> None:
    rig.llm.script(ask(), Reply(text="Blue it is."))
    chat = await create(client, rig, "paint it")
    await rig.run()

    waiting = await chat_of(client, rig, chat["id"])
    assert waiting["status"] == ChatStatus.REQUIRES_ACTION.value
    [action] = waiting["pending_actions"]
    assert {k: action[k] for k in ("kind", "tool_call_id", "tool_name", "message", "options", "deadline")} == {
        "kind": "question", "tool_call_id": "q1", "tool_name": "ask_user_question", "message": "Which colour?",
        "options": ["red", "blue"], "deadline": None,
    }  # fmt: skip
    row = await rig.get(uuid.UUID(chat["id"]))
    assert (row.worker_id, row.started_at, row.heartbeat_at) == (None, None, None)
    assert len(rig.llm.requests) == 1
    # The step is in the history: the call is stored, its result is not (yet).
    assert [m.role for m in await rig.messages(uuid.UUID(chat["id"]))][-1] is Role.ASSISTANT

    r = await answer(client, rig, chat["id"], action["id"], decision="accept", content="blue, please")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == ChatStatus.PENDING.value and r.json()["pending_actions"] == []
    await rig.run()

    assert (await chat_of(client, rig, chat["id"]))["status"] == ChatStatus.WAITING.value
    # One more model call, and it already carries the answer as the call's result.
    assert len(rig.llm.requests) == 2
    [tool_msg] = tool_messages(rig.llm.requests[1].body)
    assert tool_msg["tool_call_id"] == "q1" and json.loads(tool_msg["content"]) == {"answer": "blue, please"}
    assert [(r.tool_call_id, r.result, r.is_error) for r in await results(rig, chat["id"])] == [("q1", {"answer": "blue, please"}, False)]


async def test_declining_a_question_tells_the_model(rig: Rig, client: httpx.AsyncClient) -> None:
    rig.llm.script(ask(), Reply(text="Fine, I will pick."))
    chat = await create(client, rig, "paint it")
    await rig.run()
    [action] = (await chat_of(client, rig, chat["id"]))["pending_actions"]
    assert (await answer(client, rig, chat["id"], action["id"], decision="decline")).status_code == 200
    await rig.run()
    [result] = await results(rig, chat["id"])
    assert result.is_error and result.result["decision"] == "decline"
    [sent] = tool_messages(rig.llm.requests[-1].body)
    assert json.loads(sent["content"]) == {"error": f'{result.result["error"]} {{"decision": "decline"}}'}


async def test_answers_that_do_not_fit_the_action_are_refused_and_change_nothing(rig: Rig, client: httpx.AsyncClient) -> None:
    rig.llm.script(ask())
    chat = await create(client, rig, "paint it")
    await rig.run()
    [action] = (await chat_of(client, rig, chat["id"]))["pending_actions"]
    for body in (
        {"decision": "approve"},  # a question is not a tool approval
        {"decision": "accept"},  # no answer
        {"decision": "accept", "content": "   "},
        {"decision": "accept", "content": "x", "always_allow": True},
        {"decision": "maybe"},
    ):
        r = await answer(client, rig, chat["id"], action["id"], **body)
        assert r.status_code == 400, (body, r.text)
    assert (await chat_of(client, rig, chat["id"]))["status"] == ChatStatus.REQUIRES_ACTION.value


async def test_only_the_owner_answers_and_a_second_answer_is_a_conflict(rig: Rig, client: httpx.AsyncClient) -> None:
    rig.llm.script(ask())
    chat = await create(client, rig, "paint it")
    await rig.run()
    [action] = (await chat_of(client, rig, chat["id"]))["pending_actions"]
    r = await answer(client, rig, chat["id"], action["id"], who="bob", decision="accept", content="red")
    assert r.status_code == 404
    r = await answer(client, rig, chat["id"], str(uuid.uuid4()), decision="accept", content="red")
    assert r.status_code == 404
    assert (await answer(client, rig, chat["id"], action["id"], decision="accept", content="red")).status_code == 200
    again = await answer(client, rig, chat["id"], action["id"], decision="accept", content="blue")
    assert again.status_code == 409 and again.json()["code"] == "action_resolved"


# --- approvals ---------------------------------------------------------------------------------------


@pytest.fixture
def gated(rig: Rig) -> Counter:
    """`execute` (a workspace tool by name) waits for approval under CHATD_WORKSPACE_TOOL_APPROVAL=execute."""
    rig.app.settings.workspace_tool_approval = "execute"
    counter = Counter()
    rig.tools = [counter.tool("execute")]
    return counter


async def wait_for_approval(rig: Rig, client: httpx.AsyncClient, args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    rig.llm.script(Reply(text="Running it.", tool_calls=[ToolCall("e1", "execute", args)]))
    chat = await create(client, rig, "run it")
    await rig.run()
    body = await chat_of(client, rig, chat["id"])
    assert body["status"] == ChatStatus.REQUIRES_ACTION.value, body
    [action] = body["pending_actions"]
    assert (action["kind"], action["tool_name"], action["args"]) == ("tool_approval", "execute", args)
    return chat, action


async def test_an_approved_call_runs_once_when_the_chat_resumes(rig: Rig, client: httpx.AsyncClient, gated: Counter) -> None:
    chat, action = await wait_for_approval(rig, client, {"x": 1})
    assert gated.runs == []
    rig.llm.script(Reply(text="Done."))
    assert (await answer(client, rig, chat["id"], action["id"], decision="approve")).status_code == 200
    await rig.run()
    assert gated.runs == [{"x": 1}]
    assert [(r.result, r.is_error) for r in await results(rig, chat["id"])] == [({"ran": {"x": 1}}, False)]
    assert json.loads(tool_messages(rig.llm.requests[1].body)[0]["content"]) == {"ran": {"x": 1}}


async def test_a_denied_call_never_runs_and_the_model_reads_why(rig: Rig, client: httpx.AsyncClient, gated: Counter) -> None:
    chat, action = await wait_for_approval(rig, client, {"x": 1})
    rig.llm.script(Reply(text="Understood."))
    assert (await answer(client, rig, chat["id"], action["id"], decision="deny")).status_code == 200
    await rig.run()
    assert gated.runs == []
    assert [(r.result, r.is_error) for r in await results(rig, chat["id"])] == [({"error": DENIED_TEXT}, True)]
    # The model reads the error once, not a JSON text of it inside another `error`.
    assert [json.loads(m["content"]) for m in tool_messages(rig.llm.requests[-1].body)] == [{"error": DENIED_TEXT}]


async def test_approving_with_edited_arguments_runs_those_and_tells_the_model(rig: Rig, client: httpx.AsyncClient, gated: Counter) -> None:
    chat, action = await wait_for_approval(rig, client, {"x": 1})
    rig.llm.script(Reply(text="Done."))
    r = await answer(client, rig, chat["id"], action["id"], decision="approve", args={"x": 2})
    assert r.status_code == 200, r.text
    await rig.run()
    assert gated.runs == [{"x": 2}]
    [result] = await results(rig, chat["id"])
    assert result.result == {"edited_args": {"x": 2}, "result": {"ran": {"x": 2}}}


async def test_always_allow_runs_the_tool_unasked_for_the_rest_of_the_chat(rig: Rig, client: httpx.AsyncClient, gated: Counter) -> None:
    chat, action = await wait_for_approval(rig, client, {"x": 1})
    rig.llm.script(Reply(tool_calls=[ToolCall("e2", "execute", {"x": 3})]), Reply(text="Both done."))
    r = await answer(client, rig, chat["id"], action["id"], decision="approve", always_allow=True)
    assert r.status_code == 200 and r.json()["allowed_tools"] == ["execute"]
    await rig.run()
    assert gated.runs == [{"x": 1}, {"x": 3}]
    assert (await chat_of(client, rig, chat["id"]))["status"] == ChatStatus.WAITING.value


async def test_the_owner_revokes_an_always_allowed_tool_and_its_next_call_asks_again(
    rig: Rig, client: httpx.AsyncClient, gated: Counter
) -> None:
    chat, action = await wait_for_approval(rig, client, {"x": 1})
    rig.llm.script(Reply(text="Done."))
    r = await answer(client, rig, chat["id"], action["id"], decision="approve", always_allow=True)
    assert r.json()["allowed_tools"] == ["execute"]
    await rig.run()
    before = await chat_of(client, rig, chat["id"])
    path = f"/api/v1/chats/{chat['id']}/allowed-tools/execute"
    # Only the owner: anyone else is told the chat does not exist, and nothing changes.
    for who in ("bob", "admin"):
        r = await client.delete(path, headers=auth(rig, who))
        assert (r.status_code, r.json()["code"]) == (404, "not_found")
    assert (await chat_of(client, rig, chat["id"]))["allowed_tools"] == ["execute"]
    r = await client.delete(path, headers=auth(rig))
    assert r.status_code == 200, r.text
    after = r.json()
    assert after["allowed_tools"] == [] and after["updated_at"] == before["updated_at"]
    assert await chat_of(client, rig, chat["id"]) == after
    # Gone: a second revoke (or a tool never allowed) is a 404 that says so; a name that is no
    # tool name is a 400.
    r = await client.delete(path, headers=auth(rig))
    assert (r.status_code, r.json()["code"]) == (404, "not_found") and "execute" in r.json()["message"]
    r = await client.delete(f"/api/v1/chats/{chat['id']}/allowed-tools/no%20such%20tool", headers=auth(rig))
    assert (r.status_code, r.json()["code"]) == (400, "invalid_input"), r.text
    # The next call of the tool asks again.
    rig.llm.script(Reply(tool_calls=[ToolCall("e2", "execute", {"x": 2})]))
    r = await client.post(f"/api/v1/chats/{chat['id']}/messages", json={"content": "again"}, headers=auth(rig))
    assert r.status_code == 200, r.text
    await rig.run()
    body = await chat_of(client, rig, chat["id"])
    assert body["status"] == ChatStatus.REQUIRES_ACTION.value and gated.runs == [{"x": 1}]
    assert [(a["tool_name"], a["args"]) for a in body["pending_actions"]] == [("execute", {"x": 2})]


async def test_the_chats_actions_say_how_each_call_was_answered(rig: Rig, client: httpx.AsyncClient, gated: Counter) -> None:
    chat, first = await wait_for_approval(rig, client, {"x": 1})
    rig.llm.script(Reply(tool_calls=[ToolCall("e2", "execute", {"x": 2})]), Reply(text="Done."))
    assert (await answer(client, rig, chat["id"], first["id"], decision="approve", args={"x": 5})).status_code == 200
    # The test's clock stands still unless moved: the second action is asked later, as it would be.
    rig.app.clock.advance(1)  # type: ignore[attr-defined]
    await rig.run()
    [second] = (await chat_of(client, rig, chat["id"]))["pending_actions"]
    assert (await answer(client, rig, chat["id"], second["id"], decision="deny")).status_code == 200
    await rig.run()
    r = await client.get(f"/api/v1/chats/{chat['id']}/actions", headers=auth(rig))
    assert r.status_code == 200, r.text
    listed = [(a["tool_call_id"], a["kind"], a["state"], a["decision"], a["args"], a["edited_args"]) for a in r.json()]
    assert listed == [
        ("e1", "tool_approval", "done", "approve", {"x": 1}, {"x": 5}),
        ("e2", "tool_approval", "done", "deny", {"x": 2}, None),
    ]
    assert all(a["resolved_at"] is not None for a in r.json())
    # Paged like every list; anyone but the owner gets the chat's 404.
    r = await client.get(f"/api/v1/chats/{chat['id']}/actions?limit=1", headers=auth(rig))
    assert [a["tool_call_id"] for a in r.json()] == ["e1"]
    r = await client.get(f"/api/v1/chats/{chat['id']}/actions?limit=1&before={r.headers['x-next-cursor']}", headers=auth(rig))
    assert [a["tool_call_id"] for a in r.json()] == ["e2"] and "x-next-cursor" not in r.headers
    assert (await client.get(f"/api/v1/chats/{chat['id']}/actions", headers=auth(rig, "bob"))).status_code == 404


async def test_two_racing_answers_one_wins_and_the_tool_runs_once(rig: Rig, client: httpx.AsyncClient, gated: Counter) -> None:
    chat, action = await wait_for_approval(rig, client, {"x": 1})
    barrier = asyncio.Barrier(2)

    async def contender(decision: Decision) -> str:
        await barrier.wait()
        try:
            await action_store.answer_action(
                rig.app.db, rig.app.clock.now(), uuid.UUID(chat["id"]), uuid.UUID(action["id"]), Answer(decision),
                rig.people.alice.user.id,
            )
        except Conflict as exc:
            return exc.code
        return "won"

    outcomes = await asyncio.gather(contender(Decision.APPROVE), contender(Decision.APPROVE))
    assert sorted(outcomes) == ["action_resolved", "won"]
    rig.llm.script(Reply(text="Done."))
    await rig.run()
    assert gated.runs == [{"x": 1}]
    # And over HTTP, once more: the action is resolved.
    assert (await answer(client, rig, chat["id"], action["id"], decision="approve")).status_code == 409


# --- the wait survives restarts and ends with the chat's other moves ---------------------------------


async def answer_on_a_new_service(rig: Rig, db_url: str, chat_id: str, action_id: str, given: Answer) -> None:
    """A fresh process (its own service, hub, MCP pool and worker pool on the same database) takes
    the answer and runs the turn it resumes."""
    settings = Settings(data_dir=rig.app.settings.data_dir, database_url=db_url, run_workers=False, secret_key="", generate_titles=False)
    app = await build(settings, clock=rig.app.clock)
    try:
        got = await app.service.answer_action(rig.people.alice.user, uuid.UUID(chat_id), uuid.UUID(action_id), given)
        assert got.status is ChatStatus.PENDING
        workers = Workers(turn_deps(app), worker_id=uuid.uuid4())
        try:
            await workers.acquire_once()
            await workers.drain()
        finally:
            await workers.shutdown()
    finally:
        await app.close()


async def test_a_restart_between_question_and_answer_resumes_on_a_new_service(
    rig: Rig, client: httpx.AsyncClient, db_url: str, tmp_path: Path
) -> None:
    rig.llm.script(ask())
    chat = await create(client, rig, "paint it")
    await rig.run()
    [action] = (await chat_of(client, rig, chat["id"]))["pending_actions"]
    await rig.workers.shutdown()

    rig.llm.script(Reply(text="Red."))
    await answer_on_a_new_service(rig, db_url, chat["id"], action["id"], Answer(Decision.ACCEPT, content="red"))
    assert (await chat_of(client, rig, chat["id"]))["status"] == ChatStatus.WAITING.value
    assert json.loads(tool_messages(rig.llm.requests[1].body)[0]["content"]) == {"answer": "red"}


async def test_an_interrupting_message_cancels_the_wait_and_runs_after_the_cancelled_result(
    rig: Rig, client: httpx.AsyncClient, gated: Counter
) -> None:
    chat, action = await wait_for_approval(rig, client, {"x": 1})
    queued = await client.post(f"/api/v1/chats/{chat['id']}/messages", json={"content": "never mind"}, headers=auth(rig))
    assert queued.json()["queued"] is True and queued.json()["chat"]["status"] == ChatStatus.REQUIRES_ACTION.value
    r = await client.post(
        f"/api/v1/chats/{chat['id']}/messages", json={"content": "stop, do this instead", "busy_behavior": "interrupt"}, headers=auth(rig)
    )
    assert r.status_code == 200 and r.json()["chat"]["status"] == ChatStatus.PENDING.value, r.text
    rig.llm.script(Reply(text="Ok."), Reply(text="And this."))
    await rig.run()
    assert gated.runs == []
    roles = [(m.role, m.content[0]) for m in await rig.messages(uuid.UUID(chat["id"])) if m.role in (Role.TOOL, Role.USER)]
    assert [(role, getattr(p, "result", getattr(p, "text", None))) for role, p in roles] == [
        (Role.USER, "run it"),
        (Role.TOOL, {"error": CANCELLED_BY_USER_TEXT}),
        (Role.USER, "never mind"),
        (Role.USER, "stop, do this instead"),
    ]
    assert (await answer(client, rig, chat["id"], action["id"], decision="approve")).status_code == 409


async def test_stop_ends_the_wait_and_a_queued_message_runs_next(rig: Rig, client: httpx.AsyncClient, gated: Counter) -> None:
    chat, _ = await wait_for_approval(rig, client, {"x": 1})
    await client.post(f"/api/v1/chats/{chat['id']}/messages", json={"content": "then this"}, headers=auth(rig))
    r = await client.post(f"/api/v1/chats/{chat['id']}/interrupt", headers=auth(rig))
    assert r.status_code == 200 and (r.json()["status"], r.json()["queued_count"]) == (ChatStatus.PENDING.value, 0), r.text
    rig.llm.script(Reply(text="Ok."))
    await rig.run()
    kinds = [(m.role, getattr(m.content[0], "result", getattr(m.content[0], "text", None))) for m in await rig.messages(uuid.UUID(chat["id"]))]
    assert kinds[-3:] == [(Role.TOOL, {"error": CANCELLED_BY_USER_TEXT}), (Role.USER, "then this"), (Role.ASSISTANT, "Ok.")]
    assert gated.runs == []


async def test_stop_without_a_queue_leaves_the_chat_waiting_and_sending_a_queued_message_now_cancels_first(
    rig: Rig, client: httpx.AsyncClient, gated: Counter
) -> None:
    chat, _ = await wait_for_approval(rig, client, {"x": 1})
    r = await client.post(f"/api/v1/chats/{chat['id']}/interrupt", headers=auth(rig))
    assert (r.json()["status"], r.json()["pending_actions"]) == (ChatStatus.WAITING.value, [])
    # Again, with "Send now" on a queued message.
    rig.llm.script(Reply(text="Running it.", tool_calls=[ToolCall("e2", "execute", {"x": 2})]))
    await client.post(f"/api/v1/chats/{chat['id']}/messages", json={"content": "try again"}, headers=auth(rig))
    await rig.run()
    queued = await client.post(f"/api/v1/chats/{chat['id']}/messages", json={"content": "no, stop"}, headers=auth(rig))
    qid = queued.json()["queued_message"]["id"]
    assert (await client.post(f"/api/v1/chats/{chat['id']}/queue/{qid}/promote", headers=auth(rig))).status_code == 200
    rig.llm.script(Reply(text="Stopped."))
    await rig.run()
    tail = [(m.role, getattr(m.content[0], "result", getattr(m.content[0], "text", None))) for m in await rig.messages(uuid.UUID(chat["id"]))][-3:]
    assert tail == [(Role.TOOL, {"error": CANCELLED_BY_USER_TEXT}), (Role.USER, "no, stop"), (Role.ASSISTANT, "Stopped.")]
    assert gated.runs == []


async def test_archiving_a_waiting_chat_cancels_its_actions(rig: Rig, client: httpx.AsyncClient, gated: Counter) -> None:
    chat, action = await wait_for_approval(rig, client, {"x": 1})
    assert (await client.post(f"/api/v1/chats/{chat['id']}/archive", headers=auth(rig))).status_code == 204
    body = await chat_of(client, rig, chat["id"])
    assert (body["status"], body["pending_actions"], body["archived"]) == (ChatStatus.WAITING.value, [], True)
    assert [(r.result, r.is_error) for r in await results(rig, chat["id"])] == [({"error": CANCELLED_BY_USER_TEXT}, True)]
    assert (await answer(client, rig, chat["id"], action["id"], decision="approve")).status_code == 409
    await rig.run()
    assert gated.runs == [] and len(rig.llm.requests) == 1


async def test_editing_the_message_drops_the_wait(rig: Rig, client: httpx.AsyncClient, gated: Counter) -> None:
    chat, action = await wait_for_approval(rig, client, {"x": 1})
    first = next(m for m in await rig.messages(uuid.UUID(chat["id"])) if m.role is Role.USER)
    r = await client.patch(f"/api/v1/chats/{chat['id']}/messages/{first.id}", json={"content": "just say hi"}, headers=auth(rig))
    assert r.status_code == 200 and r.json()["chat"]["status"] == ChatStatus.PENDING.value
    rig.llm.script(Reply(text="hi"))
    await rig.run()
    assert gated.runs == [] and await results(rig, chat["id"]) == []
    assert (await answer(client, rig, chat["id"], action["id"], decision="approve")).status_code == 409


# --- client-side tools -------------------------------------------------------------------------------

CLIENT_TOOLS = [{"name": "open_file", "description": "Open a file in the editor.", "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}}]


async def test_a_client_tool_waits_for_the_clients_result(rig: Rig, client: httpx.AsyncClient) -> None:
    rig.llm.script(Reply(tool_calls=[ToolCall("c1", "open_file", {"path": "a.py"})]), Reply(text="Opened."))
    chat = await create(client, rig, "open a.py", client_tools=CLIENT_TOOLS)
    assert chat["client_tools"] == CLIENT_TOOLS
    await rig.run()
    offered = [t["function"] for t in rig.llm.requests[0].body["tools"] if t["function"]["name"] == "open_file"]
    assert offered and offered[0]["description"] == "Open a file in the editor."
    [action] = (await chat_of(client, rig, chat["id"]))["pending_actions"]
    assert action["kind"] == "client_tool" and action["args"] == {"path": "a.py"} and action["deadline"] is not None
    r = await answer(client, rig, chat["id"], action["id"], decision="accept", result={"lines": 12})
    assert r.status_code == 200, r.text
    await rig.run()
    assert json.loads(tool_messages(rig.llm.requests[1].body)[0]["content"]) == {"lines": 12}


async def test_a_client_tool_past_its_deadline_gives_the_model_a_timeout(rig: Rig, client: httpx.AsyncClient) -> None:
    rig.app.settings.client_tool_timeout = 30
    rig.llm.script(Reply(tool_calls=[ToolCall("c1", "open_file", {"path": "a.py"})]), Reply(text="The editor did not answer."))
    chat = await create(client, rig, "open a.py", client_tools=CLIENT_TOOLS)
    await rig.run()
    [action] = (await chat_of(client, rig, chat["id"]))["pending_actions"]
    assert await rig.workers.expire_actions_once() == []  # not yet
    rig.app.clock.advance(31)  # type: ignore[attr-defined]
    # Two replicas sweep at once: the chat resumes once.
    other = rig.new_workers()
    swept = await asyncio.gather(rig.workers.expire_actions_once(), other.expire_actions_once())
    assert sorted(len(s) for s in swept) == [0, 1]
    await rig.run()
    [result] = await results(rig, chat["id"])
    assert result.is_error and "Timed out" in result.result["error"]
    assert (await answer(client, rig, chat["id"], action["id"], decision="accept", result=1)).status_code == 409


@pytest.mark.parametrize(
    "tools",
    [
        [{"name": "1bad"}],
        [{"name": "a"}, {"name": "a"}],
        [{"name": "a", "input_schema": {"type": "string"}}],
        [{"name": "a", "input_schema": {"type": "object", "properties": 3}}],
    ],
)
async def test_bad_client_tools_are_refused(rig: Rig, client: httpx.AsyncClient, tools: list[dict[str, Any]]) -> None:
    r = await client.post("/api/v1/chats", json={"content": "hi", "client_tools": tools}, headers=auth(rig))
    assert r.status_code == 400, r.text


# --- the stream ----------------------------------------------------------------------------------------


async def test_the_stream_announces_the_action_and_its_resolution(rig: Rig, client: httpx.AsyncClient) -> None:
    rig.llm.script(ask())
    chat = await create(client, rig, "paint it")
    await rig.run()
    events: list[dict[str, Any]] = []
    got_required = asyncio.Event()
    done = asyncio.Event()

    async def follow() -> None:
        async with client.stream("GET", f"/api/v1/chats/{chat['id']}/stream", headers=auth(rig)) as resp:
            async for line in resp.aiter_lines():
                if line.startswith("data:"):
                    ev = json.loads(line[5:])
                    events.append(ev)
                    if ev["type"] == "action_required":
                        got_required.set()
                    if ev["type"] == "action_resolved":
                        done.set()
                        return

    task = asyncio.create_task(follow())
    await asyncio.wait_for(got_required.wait(), 10)
    action = next(e["action"] for e in events if e["type"] == "action_required")
    assert action["kind"] == "question" and action["options"] == ["red", "blue"]
    assert next(e["status"] for e in events if e["type"] == "status") == ChatStatus.REQUIRES_ACTION.value
    await answer(client, rig, chat["id"], action["id"], decision="accept", content="red")
    await asyncio.wait_for(done.wait(), 10)
    await task
    assert events[-1] == {"type": "action_resolved", "chat_id": chat["id"], "action_id": action["id"], "decision": "accept"}


# --- MCP tools by their server's approval policy -----------------------------------------------------


@pytest.fixture
def notes_server() -> Iterator[tuple[str, ServerState]]:
    state = ServerState()
    with serve(build_server(state).streamable_http_app()) as running:
        yield running.url, state


async def add_notes_server(client: httpx.AsyncClient, rig: Rig, url: str, **policy: Any) -> str:
    r = await client.post(
        "/api/v1/mcp-servers", headers=auth(rig, "admin"),
        json={"slug": "notes", "display_name": "Notes", "url": url, "tool_allow_list": ["lookup", "delete_note", "echo"], **policy},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    assert {k: r.json()[k] for k in policy} == policy
    return str(r.json()["id"])


async def test_unless_read_only_asks_before_a_destructive_mcp_tool_and_not_before_a_read(
    rig: Rig, client: httpx.AsyncClient, notes_server: tuple[str, ServerState]
) -> None:
    url, state = notes_server
    server_id = await add_notes_server(client, rig, url, approval="unless_read_only")
    rig.llm.script(
        Reply(tool_calls=[ToolCall("r1", "notes__lookup", {"key": "a"}), ToolCall("d1", "notes__delete_note", {"key": "a"})]),
        Reply(text="Deleted."),
    )
    chat = await create(client, rig, "clean up note a", mcp_server_ids=[server_id])
    await rig.run()
    body = await chat_of(client, rig, chat["id"])
    # The read ran at once; the delete waits, and nothing was deleted.
    assert state.calls == ["lookup"] and state.deleted == []
    [action] = body["pending_actions"]
    assert (action["kind"], action["tool_name"], action["server"], action["args"]) == ("tool_approval", "notes__delete_note", "notes", {"key": "a"})
    assert [r.tool_call_id for r in await results(rig, chat["id"])] == ["r1"]

    # Edited arguments the tool's input schema refuses are a 400, and the approval stays open.
    bad = await answer(client, rig, chat["id"], action["id"], decision="approve", args={"nokey": 1})
    assert bad.status_code == 400 and "input schema" in bad.json()["message"], bad.text
    assert [a["id"] for a in (await chat_of(client, rig, chat["id"]))["pending_actions"]] == [action["id"]]
    assert (await answer(client, rig, chat["id"], action["id"], decision="approve", args={"key": "b"})).status_code == 200
    await rig.run()
    assert state.deleted == ["b"]
    # Both results reach the model in one request, in call order.
    assert [m["tool_call_id"] for m in tool_messages(rig.llm.requests[1].body)] == ["r1", "d1"]


async def test_a_per_tool_override_wins_over_the_servers_policy(
    rig: Rig, client: httpx.AsyncClient, notes_server: tuple[str, ServerState]
) -> None:
    url, state = notes_server
    server_id = await add_notes_server(client, rig, url, approval="always", approval_overrides={"echo": "never"})
    rig.llm.script(Reply(tool_calls=[ToolCall("e1", "notes__echo", {"text": "hi"})]), Reply(tool_calls=[ToolCall("l1", "notes__lookup", {"key": "a"})]))
    chat = await create(client, rig, "echo hi", mcp_server_ids=[server_id])
    await rig.run()
    body = await chat_of(client, rig, chat["id"])
    assert state.calls == ["echo"]
    # `always` asks even for a read-only tool.
    assert [a["tool_name"] for a in body["pending_actions"]] == ["notes__lookup"]
    r = await client.patch(f"/api/v1/mcp-servers/{server_id}", headers=auth(rig, "admin"), json={"approval": "sometimes"})
    assert r.status_code == 400


# --- MCP elicitation: a server asks the user ----------------------------------------------------
#
# A 2026-07-28 server's question ends its call: the chat waits in `requires_action` holding no
# worker, and the answer is sent with the call made again (durable: any replica, any restart).
# A 2025-11-25 server asks inside the open call: the chat stays `running` while it waits.


async def elicited(
    rig: Rig, client: httpx.AsyncClient, url: str, call: ToolCall, *, status: ChatStatus = ChatStatus.REQUIRES_ACTION,
    workers: Workers | None = None, then: Reply | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Start a chat whose turn calls `call` on the notes server and wait until the call asks."""
    r = await client.post("/api/v1/mcp-servers", headers=auth(rig, "admin"), json={"slug": "notes", "display_name": "Notes", "url": url})
    rig.llm.script(Reply(tool_calls=[call]), then or Reply(text="Done."))
    chat = await create(client, rig, "go", mcp_server_ids=[r.json()["id"]])
    await (workers or rig.workers).acquire_once()
    async with asyncio.timeout(20):
        while not (body := await chat_of(client, rig, chat["id"]))["pending_actions"]:  # noqa: ASYNC110 - polls the API as a client does
            await asyncio.sleep(0.05)
    if status is ChatStatus.REQUIRES_ACTION:
        await (workers or rig.workers).drain()  # the turn ended with the question
        body = await chat_of(client, rig, chat["id"])
    assert body["status"] == status.value
    return chat, body["pending_actions"][0]


async def test_an_mcp_servers_form_ends_the_call_and_the_answer_calls_again(
    rig: Rig, client: httpx.AsyncClient, notes_server: tuple[str, ServerState]
) -> None:
    url, state = notes_server
    chat, action = await elicited(rig, client, url, ToolCall("r1", "notes__register", {}))
    assert (action["kind"], action["server"], action["message"]) == ("elicitation", "notes", "Who is registering?")
    assert action["schema"]["properties"]["name"]["type"] == "string" and action["schema"]["required"] == ["name"]
    assert action["deadline"] is not None and "resume" not in action and "request_state" not in json.dumps(action)
    # The tool's body has not run: the server asked before it.
    assert state.calls == [] and await results(rig, chat["id"]) == []
    # An answer that does not fit the form is refused, and the question stays open.
    bad = await answer(client, rig, chat["id"], action["id"], decision="accept", content={"team": "x"})
    assert bad.status_code == 400, bad.text
    ok = await answer(client, rig, chat["id"], action["id"], decision="accept", content={"name": "Ada"})
    assert ok.status_code == 200, ok.text
    assert ok.json()["status"] == ChatStatus.PENDING.value
    await rig.run()
    [result] = await results(rig, chat["id"])
    # The form's default (team) was filled in by chatd, as SEP-1034 asks of the client.
    assert "registered Ada in platform" in json.dumps(result.result) and not result.is_error
    assert state.calls == ["register"]
    body = await chat_of(client, rig, chat["id"])
    assert body["status"] == ChatStatus.WAITING.value and body["pending_actions"] == []
    assert (await answer(client, rig, chat["id"], action["id"], decision="decline")).status_code == 409
    # The server's requestState is not kept once it cannot be sent back any more.
    assert (await action_store.get_action(rig.app.db, uuid.UUID(action["id"]))).resume is None
    # The model read the call's result once, right after its call.
    sent = tool_messages(rig.llm.requests[-1].body)
    assert len(sent) == 1 and "registered Ada" in json.dumps(sent[0])


@pytest.mark.parametrize("decision", ["decline", "cancel"])
async def test_declining_an_mcp_servers_form_is_the_servers_answer(
    rig: Rig, client: httpx.AsyncClient, notes_server: tuple[str, ServerState], decision: str
) -> None:
    url, _state = notes_server
    chat, action = await elicited(rig, client, url, ToolCall("r1", "notes__register", {}))
    assert (await answer(client, rig, chat["id"], action["id"], decision=decision)).status_code == 200
    await rig.run()
    [result] = await results(rig, chat["id"])
    assert f"not registered: {decision}" in json.dumps(result.result)


async def test_a_2026_page_to_open_is_stored_and_the_servers_state_comes_back_with_the_answer(
    rig: Rig, client: httpx.AsyncClient, notes_server: tuple[str, ServerState]
) -> None:
    url, state = notes_server
    chat, action = await elicited(rig, client, url, ToolCall("p1", "notes__open_page", {}))
    assert (action["url"], action["message"], action["schema"]) == ("https://accounts.example/connect", "Sign in to the account service", None)
    assert "page-1" not in json.dumps(await chat_of(client, rig, chat["id"]))  # the server's state is never shown
    assert (await answer(client, rig, chat["id"], action["id"], decision="accept")).status_code == 200
    await rig.run()
    [result] = await results(rig, chat["id"])
    # The server got the answer under its own key and its requestState back byte for byte.
    assert "page: accept (page-1)" in json.dumps(result.result)
    assert state.calls == ["open_page"]


async def test_a_server_that_asks_again_gets_a_second_form_then_runs_once(
    rig: Rig, client: httpx.AsyncClient, notes_server: tuple[str, ServerState]
) -> None:
    url, state = notes_server
    chat, first = await elicited(rig, client, url, ToolCall("e1", "notes__enrol", {}))
    assert first["message"] == "Who is registering?"
    assert (await answer(client, rig, chat["id"], first["id"], decision="accept", content={"name": "Lin", "team": "db"})).status_code == 200
    await rig.run()
    # The call made again with the first answer brought the server's next question.
    body = await chat_of(client, rig, chat["id"])
    assert body["status"] == ChatStatus.REQUIRES_ACTION.value
    [second] = body["pending_actions"]
    assert second["id"] != first["id"] and second["tool_call_id"] == "e1" and second["message"] == "Enrol Lin in db?"
    assert state.calls == [] and await results(rig, chat["id"]) == []
    assert (await answer(client, rig, chat["id"], second["id"], decision="accept", content={"confirm": True})).status_code == 200
    await rig.run()
    [result] = await results(rig, chat["id"])
    assert "enrolled Lin in db" in json.dumps(result.result)
    assert state.calls == ["enrol"] and len(rig.llm.requests) == 2


async def test_a_form_survives_its_replica_and_the_answer_is_run_by_another(
    rig: Rig, client: httpx.AsyncClient, notes_server: tuple[str, ServerState]
) -> None:
    url, state = notes_server
    first = rig.new_workers()
    chat, action = await elicited(rig, client, url, ToolCall("r1", "notes__register", {}), workers=first)
    await first.shutdown()  # the replica that asked is gone; the question is in the database
    assert (await answer(client, rig, chat["id"], action["id"], decision="accept", content={"name": "Ada", "team": "ops"})).status_code == 200
    other = rig.new_workers()
    await rig.run(other)
    [result] = await results(rig, chat["id"])
    assert "registered Ada in ops" in json.dumps(result.result)
    assert state.calls == ["register"]
    assert (await chat_of(client, rig, chat["id"]))["status"] == ChatStatus.WAITING.value
    await other.shutdown()


async def test_an_unanswered_form_times_out_as_the_servers_cancel(
    rig: Rig, client: httpx.AsyncClient, notes_server: tuple[str, ServerState]
) -> None:
    url, _state = notes_server
    chat, action = await elicited(rig, client, url, ToolCall("r1", "notes__register", {}))
    rig.app.clock.advance(rig.app.settings.mcp_elicitation_timeout + 1)  # type: ignore[attr-defined]
    [expired] = await rig.workers.expire_actions_once()
    assert expired.status is ChatStatus.PENDING
    await rig.run()
    [result] = await results(rig, chat["id"])
    assert "not registered: cancel" in json.dumps(result.result)
    stored = await action_store.get_action(rig.app.db, uuid.UUID(action["id"]))
    assert (stored.state.value, stored.decision) == ("done", Decision.TIMEOUT)
    assert (await answer(client, rig, chat["id"], action["id"], decision="accept", content={"name": "late"})).status_code == 409


@pytest.fixture
def legacy_notes_server() -> Iterator[tuple[str, ServerState]]:
    """The same server, refusing 2026-07-28 requests: a 2025-11-25 session, where the server's
    elicitation/create arrives on the session while the call is open."""
    state = ServerState()
    with serve(SessionCounter(build_server(state).streamable_http_app(), legacy_only=True)) as running:
        yield running.url, state


async def test_a_2025_session_asks_mid_call(rig: Rig, client: httpx.AsyncClient, legacy_notes_server: tuple[str, ServerState]) -> None:
    url, _state = legacy_notes_server
    chat, action = await elicited(rig, client, url, ToolCall("r1", "notes__register", {}), status=ChatStatus.RUNNING)
    assert (action["kind"], action["message"]) == ("elicitation", "Who is registering?")
    bad = await answer(client, rig, chat["id"], action["id"], decision="accept", content={"team": "x"})
    assert bad.status_code == 400, bad.text
    assert (await answer(client, rig, chat["id"], action["id"], decision="accept", content={"name": "Lin", "team": "db"})).status_code == 200
    await rig.workers.drain()
    [result] = await results(rig, chat["id"])
    assert "registered Lin in db" in json.dumps(result.result)
    assert (await chat_of(client, rig, chat["id"]))["status"] == ChatStatus.WAITING.value


async def test_a_url_elicitation_shows_the_url_and_takes_the_users_accept(
    rig: Rig, client: httpx.AsyncClient, legacy_notes_server: tuple[str, ServerState]
) -> None:
    url, _state = legacy_notes_server
    chat, action = await elicited(rig, client, url, ToolCall("c1", "notes__connect_account", {}), status=ChatStatus.RUNNING)
    assert (action["url"], action["message"], action["schema"]) == ("https://accounts.example/connect", "Sign in to the account service", None)
    assert (await answer(client, rig, chat["id"], action["id"], decision="accept")).status_code == 200
    await rig.workers.drain()
    [result] = await results(rig, chat["id"])
    assert "connect: accept" in json.dumps(result.result)


async def test_the_owners_chat_lists_hear_when_a_running_call_asks_and_when_it_is_answered(
    rig: Rig, client: httpx.AsyncClient, legacy_notes_server: tuple[str, ServerState]
) -> None:
    """A call's question leaves the chat `running`: the watch (the chat lists) must still be told
    that it now waits for its user, and again once it no longer does."""
    from chatd.streams.watch import ChatChange, watch_owner

    url, _state = legacy_notes_server
    seen: list[ChatChange] = []
    arrived = asyncio.Event()
    async with watch_owner(rig.app.db, rig.app.pubsub, rig.app.clock, rig.people.alice.user.id) as changes:

        async def follow() -> None:
            async for change in changes:  # read as they come, as a page's list does
                seen.append(change)
                arrived.set()

        follower = asyncio.create_task(follow())

        async def until(test: Any) -> ChatChange:
            async with asyncio.timeout(10):
                while True:
                    found = [c for c in seen if str(c.chat.id) == chat["id"] and test(c)]
                    if found:
                        return found[-1]
                    arrived.clear()
                    await arrived.wait()

        try:
            chat, action = await elicited(rig, client, url, ToolCall("c1", "notes__connect_account", {}), status=ChatStatus.RUNNING)
            asked = await until(lambda c: [str(a.id) for a in c.chat.pending_actions] == [action["id"]])
            assert asked.kind == "status_change" and asked.chat.status is ChatStatus.RUNNING
            seen.clear()
            assert (await answer(client, rig, chat["id"], action["id"], decision="accept")).status_code == 200
            await until(lambda c: not c.chat.pending_actions)
        finally:
            follower.cancel()
    await rig.workers.drain()


async def test_an_unanswered_elicitation_in_a_2025_session_is_cancelled_after_its_timeout(
    rig: Rig, client: httpx.AsyncClient, legacy_notes_server: tuple[str, ServerState]
) -> None:
    rig.app.settings.mcp_elicitation_timeout = 0.5
    url, _state = legacy_notes_server
    chat, action = await elicited(rig, client, url, ToolCall("r1", "notes__register", {}), status=ChatStatus.RUNNING)
    await rig.workers.drain()
    [result] = await results(rig, chat["id"])
    # The server was told `cancel` (MCP has no other word for it); the action records why.
    assert "not registered: cancel" in json.dumps(result.result)
    r = await client.get(f"/api/v1/chats/{chat['id']}/actions", headers=auth(rig))
    assert [(a["id"], a["state"], a["decision"]) for a in r.json()] == [(action["id"], "cancelled", "timeout")]
    assert (await answer(client, rig, chat["id"], action["id"], decision="accept", content={"name": "late"})).status_code == 409


async def test_a_replica_that_dies_while_a_2025_form_waits_leaves_no_question_and_the_call_is_not_rerun(
    rig: Rig, client: httpx.AsyncClient, legacy_notes_server: tuple[str, ServerState], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 2025-11-25 server's question lives in the open call, which dies with its replica.
    url, state = legacy_notes_server
    dying = rig.new_workers()

    async def died_first(*_args: Any) -> Any:
        raise asyncio.CancelledError  # the process is gone before it writes the question's end

    monkeypatch.setattr(action_store, "end_in_flight", died_first)
    chat, action = await elicited(
        rig, client, url, ToolCall("r1", "notes__register", {}), status=ChatStatus.RUNNING, workers=dying,
        then=Reply(text="It did not go through."),
    )
    await dying.shutdown()
    monkeypatch.undo()
    # Still open in the database: the dead replica never said otherwise.
    assert (await action_store.get_action(rig.app.db, uuid.UUID(action["id"]))).state.value == "pending"

    rig.app.clock.advance(rig.app.settings.stale_after + 1)  # type: ignore[attr-defined]
    await rig.workers.recover_once()
    await rig.run()
    body = await chat_of(client, rig, chat["id"])
    assert body["status"] == ChatStatus.WAITING.value and body["pending_actions"] == []
    # The recovered turn dropped the question; the step that asked was never persisted and the
    # tool's body never ran (the form was not answered), so the turn starts over with the model.
    assert (await action_store.get_action(rig.app.db, uuid.UUID(action["id"]))).state.value == "cancelled"
    assert state.calls == [] and await results(rig, chat["id"]) == [] and len(rig.llm.requests) == 2
    assert (await answer(client, rig, chat["id"], action["id"], decision="accept", content={"name": "late"})).status_code == 409


@pytest.mark.parametrize("era", ["2026-07-28", "2025-11-25"])
async def test_interrupting_a_call_that_waits_on_a_form_closes_the_form_at_once(
    rig: Rig, client: httpx.AsyncClient, notes_server: tuple[str, ServerState], legacy_notes_server: tuple[str, ServerState], era: str
) -> None:
    # The question was asked from the connection's own task: an interrupt ended the turn, but the
    # question stayed pending (and the server's call open) until the elicitation timeout.
    url, state = notes_server if era == "2026-07-28" else legacy_notes_server
    status = ChatStatus.REQUIRES_ACTION if era == "2026-07-28" else ChatStatus.RUNNING
    chat, action = await elicited(rig, client, url, ToolCall("r1", "notes__register", {}), status=status)
    r = await client.post(f"/api/v1/chats/{chat['id']}/interrupt", headers=auth(rig))
    assert r.status_code == 200, r.text
    await rig.workers.drain()
    async with asyncio.timeout(20):
        while (await action_store.get_action(rig.app.db, uuid.UUID(action["id"]))).state.value == "pending":  # noqa: ASYNC110 - polls the store
            await asyncio.sleep(0.05)
    body = await chat_of(client, rig, chat["id"])
    assert body["status"] == ChatStatus.WAITING.value and body["pending_actions"] == []
    assert (await answer(client, rig, chat["id"], action["id"], decision="accept", content={"name": "late"})).status_code == 409
    assert "register" not in state.calls or era == "2025-11-25"
    if era == "2026-07-28":
        # The call ended when it asked: the interrupt gives it its result (the model must not
        # find a call without one).
        [result] = await results(rig, chat["id"])
        assert CANCELLED_BY_USER_TEXT in json.dumps(result.result) and result.is_error


# --- every kind of wait survives a restart --------------------------------------------------------

RESTART_CALLS = {
    "elicitation": ToolCall("r1", "notes__register", {}),
    "tool_approval": ToolCall("d1", "notes__delete_note", {"key": "old"}),
    "client_tool": ToolCall("c1", "open_file", {"path": "a.py"}),
}
RESTART_ANSWERS = {
    "elicitation": Answer(Decision.ACCEPT, content={"name": "Ada"}),
    "tool_approval": Answer(Decision.APPROVE),
    "client_tool": Answer(Decision.ACCEPT, result={"lines": 12}),
}
RESTART_RESULTS = {"elicitation": "registered Ada in platform", "tool_approval": "deleted old", "client_tool": '"lines":12'}


@pytest.mark.parametrize("kind", list(RESTART_CALLS))
async def test_each_kind_of_wait_is_answered_on_a_new_service_after_a_restart(
    rig: Rig, client: httpx.AsyncClient, db_url: str, notes_server: tuple[str, ServerState], kind: str
) -> None:
    # An MCP server's form, a destructive MCP tool's approval and an IDE's client tool: the
    # process that asked is gone; a new one (its own service, MCP pool and workers on the same
    # database) takes the answer and runs what it resumes, once.
    url, state = notes_server
    server_id = await add_notes_server(
        client, rig, url, approval="unless_read_only" if kind == "tool_approval" else "never", tool_allow_list=["register", "delete_note"]
    )
    rig.llm.script(Reply(tool_calls=[RESTART_CALLS[kind]]))
    chat = await create(client, rig, "go", mcp_server_ids=[server_id], client_tools=CLIENT_TOOLS)
    await rig.run()
    body = await chat_of(client, rig, chat["id"])
    [action] = body["pending_actions"]
    assert (body["status"], action["kind"]) == (ChatStatus.REQUIRES_ACTION.value, kind)
    await rig.workers.shutdown()

    rig.llm.script(Reply(text="Done."))
    await answer_on_a_new_service(rig, db_url, chat["id"], action["id"], RESTART_ANSWERS[kind])
    assert (await chat_of(client, rig, chat["id"]))["status"] == ChatStatus.WAITING.value
    [sent] = tool_messages(rig.llm.requests[1].body)
    assert RESTART_RESULTS[kind] in sent["content"]
    assert state.calls == {"elicitation": ["register"], "tool_approval": ["delete_note"], "client_tool": []}[kind]


async def test_edited_arguments_approved_before_a_servers_form_are_what_the_model_learns_ran(
    rig: Rig, client: httpx.AsyncClient, notes_server: tuple[str, ServerState]
) -> None:
    url, state = notes_server
    server_id = await add_notes_server(client, rig, url, approval="always", tool_allow_list=["register_as"])
    rig.llm.script(Reply(tool_calls=[ToolCall("g1", "notes__register_as", {"role": "guest"})]), Reply(text="Done."))
    chat = await create(client, rig, "go", mcp_server_ids=[server_id])
    await rig.run()
    [approval] = (await chat_of(client, rig, chat["id"]))["pending_actions"]
    assert approval["kind"] == "tool_approval"
    assert (await answer(client, rig, chat["id"], approval["id"], decision="approve", args={"role": "admin"})).status_code == 200
    await rig.run()
    # The approved call (with the edited arguments) asked its server's form.
    [form] = (await chat_of(client, rig, chat["id"]))["pending_actions"]
    assert (form["kind"], form["args"]) == ("elicitation", {"role": "admin"})
    assert "chatd_edited_args" not in json.dumps(form)
    assert (await answer(client, rig, chat["id"], form["id"], decision="accept", content={"name": "Ada"})).status_code == 200
    await rig.run()
    [sent] = tool_messages(rig.llm.requests[-1].body)
    assert json.loads(sent["content"]) == {"edited_args": {"role": "admin"}, "result": "registered Ada as admin"}
    assert state.calls == ["register_as"]
