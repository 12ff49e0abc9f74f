"""`chatd chat "…"` end to end: a real `chatd` process talks to the app served by uvicorn, whose
workers run the turn against the scripted LLM server, and renders the stream as it comes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from rich.console import Console

from chatd.client import ChatdClient, ChatView
from chatd.domain.chat import ChatStatus, Role
from chatd.domain.parts import TextPart
from chatd.store import turns
from chatd.streams import hub as hub_module
from chatd.streams.hub import StreamHub
from chatd.worker.sink import StoreSink
from tests.conftest import serve_http
from tests.fakes.llm_server import Fault, Reply, ToolCall
from tests.fakes.turn_doubles import echo_tool
from tests.worker.conftest import Gate, Rig


@contextlib.asynccontextmanager
async def running(rig: Rig) -> AsyncIterator[str]:
    """The API on a loopback port and the rig's workers polling, as `chatd serve` runs them."""
    stop = asyncio.Event()
    workers = asyncio.create_task(rig.workers.run(stop), name="workers")
    try:
        async with serve_http(rig.app) as url:
            yield url
    finally:
        stop.set()
        await asyncio.wait_for(workers, 10)


async def chatd_chat(*args: str, token: str | None = None, stdin: bool = False) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATD_")}
    # Wide lines and no colours: the output is read as text.
    env.update({"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"})
    if token is not None:
        env["CHATD_TOKEN"] = token
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chatd.cli", "chat", *args,
        stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip


async def finish(proc: asyncio.subprocess.Process) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def read_until(stream: asyncio.StreamReader, marker: str, timeout: float = 30) -> str:
    seen = ""
    async with asyncio.timeout(timeout):
        while marker not in seen:
            line = await stream.readline()
            if not line:
                raise AssertionError(f"output ended before {marker!r}: {seen!r}")
            seen += line.decode()
    return seen


async def test_chat_command_renders_the_turn_live_until_waiting(rig: Rig) -> None:
    gate = Gate()
    rig.tools = [gate.tool(), echo_tool()]
    rig.llm.script(
        Reply(thinking="Look it up first.", text="Let me check.", tool_calls=[ToolCall("call_1", "echo", {"x": 7}), ToolCall("call_2", "wait", {})]),
        Reply(text="The answer is 7."),
    )
    async with running(rig) as url:
        proc = await chatd_chat("what is x?", "--url", url, "--title", "Find x", token=rig.people.alice.token)
        assert proc.stdout is not None
        # The tool call shows while the turn is still running (the tool will block until released).
        early = await read_until(proc.stdout, "⏺ wait")
        await asyncio.wait_for(gate.entered.wait(), 10)
        assert proc.returncode is None
        chats = await rig.app.service.list_chats(rig.people.alice.user, archived=None)
        assert [c.status for c in chats] == [ChatStatus.RUNNING]
        gate.release.set()
        code, rest, err = await finish(proc)

    assert code == 0, (rest, err)
    out = early + rest
    lines = [line.rstrip() for line in out.splitlines() if line.strip()]
    assert lines == [
        "you › what is x?",
        "Look it up first.",
        "Let me check.",
        '⏺ echo({"x": 7})',
        "⏺ wait({})",
        '  ⎿ {"echo": {"x": 7}}',
        '  ⎿ {"waited": true}',
        "The answer is 7.",
    ]
    (chat,) = chats
    assert f"chat {chat.id}: Find x" in err
    assert (await rig.get(chat.id)).status is ChatStatus.WAITING


@pytest.mark.parametrize("streamed", ["before_it_subscribes", "after_it_subscribes"])
async def test_an_answer_persisted_while_the_command_connects_shows_once(rig: Rig, monkeypatch: pytest.MonkeyPatch, streamed: str) -> None:
    """Found by hand: a new chat's answer was printed twice, once. The command reads the history,
    then opens the stream, whose snapshot captures the parts in flight (later ones reach its
    queue) and then reads the messages. When the answer's step was committed before that read,
    the snapshot sent the persisted answer and then its parts again: captured ones when the
    commit came before the worker dropped them, queued ones always (their generation was not
    checked). Forced here: the answer streams before (or after) the stream subscribes, the read
    waits for the commit, and the worker goes on after its commit only once the read is done."""
    rig.llm.script(Reply(text="The answer is 42."))
    subscribed, answered, committed, read = asyncio.Event(), asyncio.Event(), asyncio.Event(), asyncio.Event()
    real_subscribe, real_read = StreamHub.subscribe, hub_module.read_snapshot
    real_publish, real_step, real_persist = StoreSink.publish_part, StoreSink.persist_step, turns.persist_step

    @contextlib.asynccontextmanager
    async def subscribe(self: StreamHub, chat_id: uuid.UUID, after_id: int = 0) -> AsyncIterator[Any]:
        if streamed == "before_it_subscribes":
            await asyncio.wait_for(answered.wait(), 10)
        async with real_subscribe(self, chat_id, after_id) as events:
            subscribed.set()  # the parts in flight are captured; later ones reach the queue
            yield events

    async def read_snapshot(db: Any, chat_id: uuid.UUID, after_id: int) -> Any:
        await asyncio.wait_for(committed.wait(), 10)
        try:
            return await real_read(db, chat_id, after_id)
        finally:
            read.set()

    async def publish_part(self: StoreSink, *args: Any) -> None:
        if streamed == "after_it_subscribes":
            await asyncio.wait_for(subscribed.wait(), 10)
        await real_publish(self, *args)

    async def step(self: StoreSink, *args: Any, **kw: Any) -> None:
        self.hub.flush_parts(self.chat_id)  # the whole answer is out (not waiting to be merged)
        answered.set()
        await asyncio.wait_for(subscribed.wait(), 10)
        await real_step(self, *args, **kw)

    async def persist_step(*args: Any, **kw: Any) -> Any:
        written = await real_persist(*args, **kw)
        committed.set()
        # The worker goes on after its commit once the snapshot is read (a busy event loop, or a
        # slow return of the connection to its pool, may well hold it that long).
        await asyncio.wait_for(read.wait(), 10)
        return written

    monkeypatch.setattr(StreamHub, "subscribe", subscribe)
    monkeypatch.setattr(hub_module, "read_snapshot", read_snapshot)
    monkeypatch.setattr(StoreSink, "publish_part", publish_part)
    monkeypatch.setattr(StoreSink, "persist_step", step)
    monkeypatch.setattr(turns, "persist_step", persist_step)
    async with running(rig) as url:
        code, out, err = await finish(await chatd_chat("what is 6 x 7?", "--url", url, token=rig.people.alice.token))
    assert code == 0, (out, err)
    assert read.is_set()
    assert [line for line in out.splitlines() if line] == ["you › what is 6 x 7?", "The answer is 42."]


async def test_chat_command_exits_1_with_the_error_of_a_failed_turn(rig: Rig) -> None:
    rig.llm.script(Reply(fault=Fault.status(401, message="Incorrect API key provided")))
    async with running(rig) as url:
        code, out, err = await finish(await chatd_chat("hello", "--url", url, token=rig.people.alice.token))
    assert code == 1, (out, err)
    (chat,) = await rig.app.service.list_chats(rig.people.alice.user, archived=None)
    failed = await rig.get(chat.id)
    assert failed.status is ChatStatus.ERROR and failed.last_error
    assert out.splitlines()[0] == "you › hello"
    assert f"✗ {failed.last_error}" in " ".join(out.split())


async def test_chat_command_uses_the_data_dir_token_and_continues_a_chat(rig: Rig, tmp_path: Path) -> None:
    data_dir = tmp_path / "client"
    data_dir.mkdir()
    (data_dir / "admin-token").write_text(rig.people.alice.token + "\n")
    rig.llm.script(Reply(text="First answer."), Reply(text="Second answer."))
    async with running(rig) as url:
        code, out, err = await finish(await chatd_chat("first", "--url", url, "--data-dir", str(data_dir)))
        assert code == 0, (out, err)
        (chat,) = await rig.app.service.list_chats(rig.people.alice.user, archived=None)
        # The start of the id, as `chatd chats list` shows it in a narrow terminal.
        code, out2, err2 = await finish(await chatd_chat("second", "--url", url, "--data-dir", str(data_dir), "--chat", str(chat.id)[:8]))
    assert code == 0, (out2, err2)
    assert [line for line in out.splitlines() if line] == ["you › first", "First answer."]
    # Only what follows the new message: the first exchange is not shown again.
    assert [line for line in out2.splitlines() if line] == ["you › second", "Second answer."]
    msgs = [m for m in await rig.messages(chat.id) if m.role is not Role.SYSTEM]
    assert [m.content for m in msgs] == [[TextPart(text=t)] for t in ("first", "First answer.", "second", "Second answer.")]


async def test_chat_command_refuses_a_bad_token_readably(rig: Rig) -> None:
    async with running(rig) as url:
        code, out, err = await finish(await chatd_chat("hello", "--url", url, token="chatd_not-a-real-token"))
    assert code == 2 and out == ""
    assert "Invalid token" in err and "401" in err
    assert await rig.app.service.list_chats(rig.people.alice.user, archived=None) == []


def test_streamed_text_is_not_shown_again_when_its_message_arrives() -> None:
    console = Console(record=True, width=200, color_system=None)
    view = ChatView(console)
    part = {"type": "message_part", "role": "assistant"}
    view.event({**part, "part": {"type": "text", "text": "Hel"}})
    view.event({**part, "part": {"type": "text", "text": "lo. "}})
    # The next step's text starts streaming before the previous step's message event lands.
    view.event({**part, "part": {"type": "tool-call", "tool_call_id": "c1", "tool_name": "echo", "args": {"x": 1}}})
    view.event({**part, "part": {"type": "text", "text": "More"}})
    view.message({"id": 2, "role": "assistant", "content": [{"type": "text", "text": "Hello. "}, {"type": "tool-call", "tool_call_id": "c1", "tool_name": "echo", "args": {"x": 1}}]})
    view.message({"id": 3, "role": "assistant", "content": [{"type": "text", "text": "More"}]})
    # A message nobody streamed (e.g. persisted before the stream opened) is shown whole.
    view.message({"id": 4, "role": "assistant", "content": [{"type": "text", "text": "Unseen."}]})
    view.event({"type": "retry", "attempt": 1, "delay_ms": 2000, "error": "overloaded"})
    view.finished({"status": "waiting"})
    assert console.export_text().splitlines() == ["Hello. ", '⏺ echo({"x": 1})', "More", "Unseen.", "↻ retry 1 in 2s: overloaded"]


async def test_a_stream_resumed_mid_answer_shows_the_answer_once() -> None:
    """A dropped stream is resumed from its cursor; the new snapshot sends the parts of the step
    in flight from its start again. The view printed them a second time, and then, its streamed
    text no longer matching, the persisted answer whole a third time."""
    chat = "c0ffee00-0000-4000-8000-000000000000"
    streams: list[str | None] = []

    def sse(*events: dict[str, Any]) -> bytes:
        return b"".join(f"event: {e['type']}\nid: 1\ndata: {json.dumps(e)}\n\n".encode() for e in events)

    def part(text: str) -> dict[str, Any]:
        return {"type": "message_part", "role": "assistant", "part": {"type": "text", "text": text}}

    def handle(request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        if path.endswith("/stream"):
            streams.append(request.headers.get("last-event-id"))
            running = {"type": "status", "status": "running"}
            if len(streams) == 1:  # the connection drops after "Hel", "lo"
                body = sse(running, part("Hel"), part("lo"))
            else:  # the snapshot: the step in flight from its start, then live
                answer = {"id": 2, "role": "assistant", "content": [{"type": "text", "text": "Hello world"}]}
                body = sse(running, part("Hello"), part(" world"), {"type": "message", "message": answer}, {"type": "status", "status": "waiting"})
            return httpx2.Response(200, content=body, headers={"content-type": "text/event-stream"})
        if path.endswith("/messages"):
            first = [{"id": 1, "role": "user", "content": [{"type": "text", "text": "hi"}]}]
            return httpx2.Response(200, json={"messages": first if request.url.params.get("after_id") == "0" else []})
        return httpx2.Response(200, json={"id": chat, "status": "waiting"})

    console = Console(record=True, width=200, color_system=None)
    async with ChatdClient("http://chatd.test", "t", transport=httpx2.MockTransport(handle)) as client:
        await asyncio.wait_for(client.follow(chat, ChatView(console)), 10)
    assert streams == ["1", "1"]  # after the history read first
    assert console.export_text().splitlines() == ["you › hi", "Hello world"]


def test_a_resumed_stream_shows_the_next_step_when_the_shown_one_was_persisted_meanwhile() -> None:
    console = Console(record=True, width=200, color_system=None)
    view = ChatView(console)
    part = {"type": "message_part", "role": "assistant"}
    view.event({**part, "part": {"type": "text", "text": "Hel"}})
    view.event({**part, "part": {"type": "text", "text": "lo. "}})
    view.resumed()
    # The snapshot: the step shown was persisted meanwhile; the next one is under way.
    view.message({"id": 2, "role": "assistant", "content": [{"type": "text", "text": "Hello. "}]})
    view.event({**part, "part": {"type": "text", "text": "Next"}})
    view.event({**part, "part": {"type": "text", "text": " one."}})
    view.message({"id": 3, "role": "assistant", "content": [{"type": "text", "text": "Next one."}]})
    view.finished({"status": "waiting"})
    assert console.export_text().splitlines() == ["Hello. ", "Next one."]
