"""`chatd chat` without a message: an interactive session, driven through its stdin by a test as
a person would type, against the API on a loopback port with workers and the scripted LLM."""

from __future__ import annotations

import asyncio

from chatd.domain.chat import ChatStatus, Role
from chatd.domain.parts import TextPart
from chatd.domain.tools import ToolResult
from tests.fakes.llm_server import Reply, ToolCall
from tests.fakes.turn_doubles import FnTool
from tests.worker.conftest import Gate, Rig
from tests.worker.test_cli_chat import chatd_chat, finish, read_until, running


async def start(url: str, token: str, *args: str) -> asyncio.subprocess.Process:
    proc = await chatd_chat("--url", url, *args, token=token, stdin=True)
    assert proc.stdin is not None and proc.stdout is not None
    return proc


async def type_line(proc: asyncio.subprocess.Process, line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write((line + "\n").encode())
    await proc.stdin.drain()


async def test_session_renders_markdown_and_queues_a_line_typed_during_the_turn(rig: Rig) -> None:
    gate = Gate()
    rig.tools = [gate.tool()]
    rig.llm.script(
        Reply(text="Let me **wait**.", tool_calls=[ToolCall("call_1", "wait", {})]),
        Reply(text="First done."),
        Reply(text="# Second\n\n- one\n- two"),
    )
    async with running(rig) as url:
        proc = await start(url, rig.people.alice.token)
        assert proc.stdout is not None
        await type_line(proc, "first question")
        seen = await read_until(proc.stdout, "⏺ wait")
        await asyncio.wait_for(gate.entered.wait(), 10)
        await type_line(proc, "second question")
        seen += await read_until(proc.stdout, "queued: second question")
        gate.release.set()
        seen += await read_until(proc.stdout, "two")
        await type_line(proc, "/quit")
        code, rest, err = await finish(proc)

    assert code == 0, (seen, rest, err)
    lines = [line.strip() for line in (seen + rest).splitlines() if line.strip()]
    # Markdown is rendered: no asterisks, no hashes; list items as bullets.
    assert "Let me wait." in lines and "Let me **wait**." not in lines
    at = lines.index("you › second question")
    assert lines[at : at + 4] == ["you › second question", "Second", "• one", "• two"]
    (chat,) = await rig.app.service.list_chats(rig.people.alice.user, archived=None)
    assert (await rig.get(chat.id)).status is ChatStatus.WAITING
    users = [m.content for m in await rig.messages(chat.id) if m.role is Role.USER]
    assert users == [[TextPart(text="first question")], [TextPart(text="second question")]]


async def test_session_interrupts_the_running_turn_and_continues_a_chat(rig: Rig) -> None:
    gate = Gate()
    rig.tools = [gate.tool()]
    rig.llm.script(Reply(text="Working.", tool_calls=[ToolCall("call_1", "wait", {})]), Reply(text="Back again."))
    chat = await rig.chat("earlier question")
    async with running(rig) as url:
        await asyncio.wait_for(gate.entered.wait(), 10)
        proc = await start(url, rig.people.alice.token, "--chat", str(chat.id))
        assert proc.stdout is not None
        seen = await read_until(proc.stdout, "⏺ wait")
        await type_line(proc, "/interrupt")
        seen += await read_until(proc.stdout, "interrupted")
        gate.release.set()
        await rig.wait_status(chat.id, ChatStatus.WAITING)
        await type_line(proc, "and now?")
        seen += await read_until(proc.stdout, "Back again.")
        proc.stdin.close()  # type: ignore[union-attr]  # Ctrl-D
        code, rest, err = await finish(proc)

    assert code == 0, (seen, rest, err)
    assert "you › earlier question" in seen and "you › and now?" in seen
    assert (await rig.get(chat.id)).status is ChatStatus.WAITING


async def test_session_steers_the_running_turn_at_its_next_tool_call(rig: Rig) -> None:
    gate = Gate()
    rig.tools = [gate.tool()]
    rig.llm.script(Reply(text="Looking.", tool_calls=[ToolCall("call_1", "wait", {})]), Reply(text="Used the hint."))
    async with running(rig) as url:
        proc = await start(url, rig.people.alice.token)
        assert proc.stdout is not None
        await type_line(proc, "find it")
        seen = await read_until(proc.stdout, "⏺ wait")
        await asyncio.wait_for(gate.entered.wait(), 10)
        await type_line(proc, "/steer look in the attic")
        seen += await read_until(proc.stdout, "steering: look in the attic")
        gate.release.set()
        seen += await read_until(proc.stdout, "Used the hint.")
        await type_line(proc, "/quit")
        code, rest, err = await finish(proc)

    assert code == 0, (seen, rest, err)
    # The steered line joined the running turn: the model's second call already has it, after the
    # tool's result, and no second turn was needed.
    second = rig.llm.requests[1].body["messages"]
    assert [m["role"] for m in second[-2:]] == ["tool", "user"] and "look in the attic" in str(second[-1]["content"])
    assert len(rig.llm.requests) == 2
    (chat,) = await rig.app.service.list_chats(rig.people.alice.user, archived=None)
    users = [m.content for m in await rig.messages(chat.id) if m.role is Role.USER]
    assert users == [[TextPart(text="find it")], [TextPart(text="look in the attic")]]


# --- human in the loop: the session asks for the answers a chat waits for -------------------------


async def test_session_answers_a_question_with_an_options_number_and_follows_the_resumed_turn(rig: Rig) -> None:
    question = {"question": "Which colour?", "options": ["red", "blue"]}
    rig.llm.script(Reply(text="Let me ask.", tool_calls=[ToolCall("q1", "ask_user_question", question)]), Reply(text="Blue it is."))
    async with running(rig) as url:
        proc = await start(url, rig.people.alice.token)
        assert proc.stdout is not None
        await type_line(proc, "paint it")
        seen = await read_until(proc.stdout, "option's number")
        await type_line(proc, "2")
        seen += await read_until(proc.stdout, "Blue it is.")
        await type_line(proc, "/quit")
        code, rest, err = await finish(proc)
    assert code == 0, (seen, rest, err)
    assert "? Which colour?   1) red  2) blue" in seen
    (chat,) = await rig.app.service.list_chats(rig.people.alice.user, archived=None)
    results = [p for m in await rig.messages(chat.id) if m.role is Role.TOOL for p in m.content]
    assert [getattr(p, "result", None) for p in results] == [{"answer": "blue"}]


async def test_session_approves_a_tool_call_with_edited_arguments(rig: Rig) -> None:
    runs: list[dict[str, object]] = []

    async def execute(args: dict[str, object], ctx: object) -> ToolResult:
        runs.append(args)
        return ToolResult({"ran": args})

    rig.app.settings.workspace_tool_approval = "execute"
    rig.tools = [FnTool("execute", execute)]  # type: ignore[arg-type]
    rig.llm.script(Reply(tool_calls=[ToolCall("e1", "execute", {"x": 1})]), Reply(text="Ran it."))
    async with running(rig) as url:
        proc = await start(url, rig.people.alice.token)
        assert proc.stdout is not None
        await type_line(proc, "run it")
        seen = await read_until(proc.stdout, "arguments to run it with")
        await type_line(proc, "maybe")
        seen += await read_until(proc.stdout, "y, n, a, or the arguments as JSON")
        await type_line(proc, '{"x": 5}')
        seen += await read_until(proc.stdout, "Ran it.")
        proc.stdin.close()  # type: ignore[union-attr]
        code, rest, err = await finish(proc)
    assert code == 0, (seen, rest, err)
    assert "? Run execute? {\"x\": 1}" in seen and runs == [{"x": 5}]


async def test_a_one_shot_chat_that_waits_for_an_answer_says_so_and_exits_3(rig: Rig) -> None:
    question = {"question": "Deploy now?", "options": ["yes", "no"]}
    rig.llm.script(Reply(tool_calls=[ToolCall("q1", "ask_user_question", question)]))
    async with running(rig) as url:
        proc = await chatd_chat("--url", url, "deploy", token=rig.people.alice.token)
        code, out, err = await finish(proc)
    assert code == 3, (out, err)
    assert "? Deploy now?   1) yes  2) no" in out and "waits for an answer: chatd chat --chat" in err
