"""`chatd chat` asks an MCP server's form (an `elicitation`) while the call that asked waits: a
real `chatd` process, driven through its stdin, against the API on a loopback port with workers,
the scripted LLM and the test MCP server (its `register` tool asks for name, required, and team,
default "platform")."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console

from chatd.client import ClientError
from chatd.domain.chat import ChatStatus, Role
from chatd.domain.parts import TextPart, ToolResultPart
from chatd.terminal import Session, form_fields
from tests.fakes.llm_server import Reply, ToolCall
from tests.mcp.mcp_test_servers import ServerState, SessionCounter, build_server, serve
from tests.worker.conftest import Rig
from tests.worker.test_cli_chat import finish, read_until, running
from tests.worker.test_cli_session import start, type_line


@pytest.fixture(params=["2026-07-28", "2025-11-25"])
def notes_server(request: pytest.FixtureRequest) -> Iterator[tuple[str, ServerState]]:
    """The notes server in both protocol eras: a 2026-07-28 server's form stops the chat
    (`requires_action`); a 2025-11-25 server's is asked while the call waits (`running`)."""
    state = ServerState()
    app = build_server(state).streamable_http_app()
    with serve(app if request.param == "2026-07-28" else SessionCounter(app, legacy_only=True)) as server:
        yield server.url, state


async def add_notes(url: str, rig: Rig, mcp_url: str) -> None:
    """The notes server, on in every new chat."""
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {rig.people.admin.token}"}) as http:
        r = await http.post("/api/v1/mcp-servers", json={"slug": "notes", "display_name": "Notes", "url": mcp_url, "availability": "default_on"})
        assert r.status_code == 201, r.text


async def tool_results(rig: Rig, chat_id: uuid.UUID) -> list[ToolResultPart]:
    return [p for m in await rig.messages(chat_id) if m.role is Role.TOOL for p in m.content if isinstance(p, ToolResultPart)]


async def user_texts(rig: Rig, chat_id: uuid.UUID) -> list[list[Any]]:
    return [m.content for m in await rig.messages(chat_id) if m.role is Role.USER]


async def test_a_form_asked_during_a_running_call_is_answered_field_by_field(rig: Rig, notes_server: tuple[str, Any]) -> None:
    rig.llm.script(Reply(text="Registering.", tool_calls=[ToolCall("r1", "notes__register", {})]), Reply(text="You are in."))
    async with running(rig) as url:
        await add_notes(url, rig, notes_server[0])
        proc = await start(url, rig.people.alice.token)
        assert proc.stdout is not None
        await type_line(proc, "register me")
        seen = await read_until(proc.stdout, "Name: text; required")
        # Required: an empty line is asked again; then the default is kept with an empty line.
        await type_line(proc, "")
        seen += await read_until(proc.stdout, "Name is required")
        await type_line(proc, "Ada")
        seen += await read_until(proc.stdout, "Team: text; Enter keeps platform")
        await type_line(proc, "")
        seen += await read_until(proc.stdout, "You are in.")
        await type_line(proc, "/quit")
        code, rest, err = await finish(proc)
    assert code == 0, (seen, rest, err)
    assert "? Who is registering?" in seen and "notes asks you to fill in a form" in seen
    assert "registered Ada in platform" in seen and "queued" not in seen + rest
    (chat,) = await rig.app.service.list_chats(rig.people.alice.user, archived=None)
    [result] = await tool_results(rig, chat.id)
    assert "registered Ada in platform" in json.dumps(result.result) and not result.is_error
    # The answers went to the form, none to the chat.
    assert await user_texts(rig, chat.id) == [[TextPart(text="register me")]]


async def test_joining_a_chat_whose_form_waits_asks_it_and_declines_it(rig: Rig, notes_server: tuple[str, Any]) -> None:
    rig.llm.script(Reply(tool_calls=[ToolCall("r1", "notes__register", {})]), Reply(text="Not registered then."))
    async with running(rig) as url:
        await add_notes(url, rig, notes_server[0])
        chat = await rig.chat("register me")
        await wait_for_form(url, rig, chat.id)
        proc = await start(url, rig.people.alice.token, "--chat", str(chat.id))
        assert proc.stdout is not None
        seen = await read_until(proc.stdout, "Name: text; required")
        await type_line(proc, "/decline")
        seen += await read_until(proc.stdout, "Not registered then.")
        await type_line(proc, "/quit")
        code, rest, err = await finish(proc)
    assert code == 0, (seen, rest, err)
    assert "declined" in seen
    [result] = await tool_results(rig, chat.id)
    assert "not registered: decline" in json.dumps(result.result)
    assert await user_texts(rig, chat.id) == [[TextPart(text="register me")]]


async def wait_for_form(url: str, rig: Rig, chat_id: uuid.UUID) -> str:
    """The id of the form the chat's running call waits for, as the API shows it."""
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {rig.people.alice.token}"}) as http, asyncio.timeout(20):
        while not (body := (await http.get(f"/api/v1/chats/{chat_id}")).json())["pending_actions"]:  # noqa: ASYNC110 - polls the API as a client does
            await asyncio.sleep(0.05)
    [action] = body["pending_actions"]
    assert action["kind"] == "elicitation" and body["status"] in (ChatStatus.RUNNING.value, ChatStatus.REQUIRES_ACTION.value)
    return str(action["id"])


async def test_a_form_answered_elsewhere_ends_the_prompt_and_lines_are_messages_again(rig: Rig, notes_server: tuple[str, Any]) -> None:
    rig.llm.script(
        Reply(tool_calls=[ToolCall("r1", "notes__register", {})]), Reply(text="Registered Lin."), Reply(text="Got your note."),
    )  # fmt: skip
    async with running(rig) as url:
        await add_notes(url, rig, notes_server[0])
        proc = await start(url, rig.people.alice.token)
        assert proc.stdout is not None
        await type_line(proc, "register me")
        seen = await read_until(proc.stdout, "Name: text; required")
        (chat,) = await rig.app.service.list_chats(rig.people.alice.user, archived=None)
        action_id = await wait_for_form(url, rig, chat.id)
        # The web UI answers it meanwhile.
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {rig.people.alice.token}"}) as http:
            r = await http.post(f"/api/v1/chats/{chat.id}/actions/{action_id}", json={"decision": "accept", "content": {"name": "Lin"}})
            assert r.status_code == 200, r.text
        seen += await read_until(proc.stdout, "the form was answered elsewhere; back to the chat")
        seen += await read_until(proc.stdout, "Registered Lin.")
        await type_line(proc, "a note")
        seen += await read_until(proc.stdout, "Got your note.")
        await type_line(proc, "/quit")
        code, rest, err = await finish(proc)
    assert code == 0, (seen, rest, err)
    [result] = await tool_results(rig, chat.id)
    assert "registered Lin in platform" in json.dumps(result.result)
    assert await user_texts(rig, chat.id) == [[TextPart(text="register me")], [TextPart(text="a note")]]


async def test_a_page_to_open_shows_its_url_and_done_accepts(rig: Rig) -> None:
    with serve(SessionCounter(build_server(ServerState()).streamable_http_app(), legacy_only=True)) as server:
        rig.llm.script(Reply(tool_calls=[ToolCall("c1", "notes__connect_account", {})]), Reply(text="Connected."))
        async with running(rig) as url:
            await add_notes(url, rig, server.url)
            proc = await start(url, rig.people.alice.token)
            assert proc.stdout is not None
            await type_line(proc, "connect my account")
            seen = await read_until(proc.stdout, "type done when you are done there")
            await type_line(proc, "maybe")
            seen += await read_until(proc.stdout, "done, /decline or /cancel")
            await type_line(proc, "done")
            seen += await read_until(proc.stdout, "Connected.")
            await type_line(proc, "/quit")
            code, rest, err = await finish(proc)
    assert code == 0, (seen, rest, err)
    assert "  https://accounts.example/connect" in seen.splitlines()
    (chat,) = await rig.app.service.list_chats(rig.people.alice.user, archived=None)
    [result] = await tool_results(rig, chat.id)
    assert "connect: accept" in json.dumps(result.result)


# --- the form's prompts, without a server -----------------------------------------------------------


class Refusing:
    """A client whose first answer is refused with the server's 400, as chatd says it."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        self.sent.append(kwargs["json"])
        if len(self.sent) == 1:
            raise ClientError("The answer does not match the requested form: size: 9 is greater than the maximum of 5 (HTTP 400)", 400)
        return {"status": "running"}


SCHEMA = {
    "type": "object",
    "properties": {
        "size": {"type": "integer", "title": "Size", "description": "How many seats"},
        "ratio": {"type": "number", "minimum": 0, "maximum": 1},
        "color": {"type": "string", "enum": ["r", "g"], "enumNames": ["Red", "Green"], "default": "g"},
        "tier": {"type": "string", "oneOf": [{"const": "free", "title": "Free"}, {"const": "pro", "title": "Pro"}]},
        "notify": {"type": "boolean", "default": False},
        "nick": {"type": "string", "maxLength": 3},
    },
    "required": ["size", "tier"],
}


async def test_fields_are_checked_as_typed_and_a_refused_answer_is_asked_again() -> None:
    console = Console(record=True, width=200, color_system=None)
    client = Refusing()
    session = Session(client, console, chat_id="c", interactive=False)  # type: ignore[arg-type]
    typed = [
        "many", "9", "2", "0.5", "", "3", "pro", "", "toolong", "",  # refused by the server: size 9
        "4", "", "", "", "", "",  # asked again: Enter keeps what was typed
    ]  # fmt: skip
    for line in typed:
        session.lines.put_nowait(line)
    action = {"id": "a1", "kind": "elicitation", "server": "seats", "schema": SCHEMA}
    assert await session._fill_in("c", action, None) == "answered"
    out = console.export_text()
    lines = out.splitlines()
    assert "seats asks you to fill in a form" in out
    # Each field says what it takes; a line that is no value of it is refused there and then.
    assert "Size: How many seats; a whole number; required" in lines and "Size: a whole number" in lines
    assert "ratio: a number from 0 to 1; optional: Enter leaves it out" in lines and "ratio: at most 1" in lines
    assert "color: one of 1) Red  2) Green (a number or the value); Enter keeps g" in lines
    assert "tier: one of Free, Pro" in lines and "nick: at most 3 characters" in lines
    assert "The answer does not match the requested form: size: 9 is greater than the maximum of 5 (HTTP 400)" in out
    assert "Size: How many seats; a whole number; Enter keeps 9" in lines and lines[-1] == "sent"
    first, second = client.sent
    assert first == {"decision": "accept", "content": {"size": 9, "ratio": 0.5, "color": "g", "tier": "pro", "notify": False}}
    assert second == {"decision": "accept", "content": {"size": 4, "ratio": 0.5, "color": "g", "tier": "pro", "notify": False}}


def test_form_fields_parse_booleans_enums_and_numbers() -> None:
    size, ratio, color, tier, notify, _nick = form_fields(SCHEMA)
    assert (size.parse("12", None), ratio.parse("1", None), ratio.parse(".25", None)) == (12, 1, 0.25)
    assert (color.parse("2", None), color.parse("red", None), tier.parse("Free", None), tier.parse("", "pro")) == ("g", "r", "free", "pro")
    assert (notify.parse("y", None), notify.parse("no", None), notify.parse("", False)) == (True, False, False)
    assert _nick.parse("", None) is None  # optional: left out
    for field, text in ((size, "1.5"), (ratio, "2"), (ratio, "nan"), (notify, "maybe"), (tier, "3"), (size, "")):
        with pytest.raises(ValueError):
            field.parse(text, None)


# --- in a terminal (a pty: readline edits the line) ------------------------------------------------


class Terminal:
    """`chatd chat` on a pseudo-terminal: keys go in as typed, the screen's bytes come out."""

    def __init__(self, proc: asyncio.subprocess.Process, master: int) -> None:
        self.proc, self.master, self.screen = proc, master, ""

    @classmethod
    async def start(cls, url: str, token: str, data_dir: str) -> Terminal:
        master, slave = pty.openpty()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHATD_")}
        env.update({"COLUMNS": "200", "LINES": "50", "NO_COLOR": "1", "TERM": "xterm", "CHATD_TOKEN": token, "CHATD_DATA_DIR": data_dir})
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "chatd.cli", "chat", "--url", url, stdin=slave, stdout=slave, stderr=slave, env=env,
        )  # fmt: skip
        os.close(slave)
        return cls(proc, master)

    def keys(self, text: str) -> None:
        os.write(self.master, text.encode())

    async def until(self, marker: str, timeout: float = 30) -> str:
        """The screen's bytes up to and with `marker` (as text)."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            while marker not in self.screen:
                ready = asyncio.Event()
                loop.add_reader(self.master, ready.set)
                try:
                    await ready.wait()
                finally:
                    loop.remove_reader(self.master)
                try:
                    self.screen += os.read(self.master, 65536).decode(errors="replace")
                except OSError as exc:
                    raise AssertionError(f"the terminal closed before {marker!r}: {self.screen!r}") from exc
        return self.screen

    async def close(self) -> int:
        with contextlib.suppress(OSError):
            self.keys("\x04")  # Ctrl-D at the prompt: leave
        try:
            async with asyncio.timeout(30):
                return await self.proc.wait()
        finally:
            os.close(self.master)


@pytest.mark.parametrize("ends", ["answered elsewhere", "with the turn"])
async def test_half_typed_text_at_a_form_that_ends_leaves_the_line_and_the_next_message(
    rig: Rig, notes_server: tuple[str, Any], tmp_path: Path, ends: str
) -> None:
    # Interrupted, the turn ends without asking the model again.
    after = [Reply(text="Moving on.")] if ends == "answered elsewhere" else []
    rig.llm.script(Reply(tool_calls=[ToolCall("r1", "notes__register", {})]), *after, Reply(text="Got your note."))
    async with running(rig) as url:
        await add_notes(url, rig, notes_server[0])
        term = await Terminal.start(url, rig.people.alice.token, str(tmp_path))
        try:
            await term.until("you ›")
            term.keys("register me\r")
            await term.until("Name ›")
            (chat,) = await rig.app.service.list_chats(rig.people.alice.user, archived=None)
            action_id = await wait_for_form(url, rig, chat.id)
            term.keys("Half-typ")  # no Enter: the person is still typing the name
            await term.until("Half-typ")
            async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {rig.people.alice.token}"}) as http:
                if ends == "answered elsewhere":
                    body = {"decision": "accept", "content": {"name": "Lin"}}
                    r = await http.post(f"/api/v1/chats/{chat.id}/actions/{action_id}", json=body)
                else:
                    r = await http.post(f"/api/v1/chats/{chat.id}/interrupt")
                assert r.status_code == 200, r.text
            screen = await term.until("back to the chat")
            # The half-typed line was erased where it stood before anything else was said.
            typed_at = screen.rindex("Half-typ")
            assert "\r\x1b[2K" in screen[typed_at:screen.index("back to the chat")], repr(screen[typed_at:])
            if ends == "answered elsewhere":
                await term.until("Moving on.")
            await term.until("you ›", timeout=30)
            term.keys("a note\r")
            await term.until("Got your note.")
        finally:
            code = await term.close()
    assert code == 0, term.screen
    # The next message is what was typed for it, without the form's half-typed text.
    assert await user_texts(rig, chat.id) == [[TextPart(text="register me")], [TextPart(text="a note")]]
