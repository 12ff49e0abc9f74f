"""`chatd chat` without a message: an interactive session with a chat over the public API.

Lines typed are sent; the answer streams as rendered markdown (rich), tool calls and results as
lines. While a turn runs, a typed line is queued (the server's default), `/steer TEXT` reaches
the running turn at its next tool boundary, `/interrupt` or Ctrl-C stops the turn (the partial
answer is kept), `/quit` or Ctrl-D leaves (the chat goes on on the server). Typed lines are kept
in a history file (up/down arrows, with readline).

When the chat stops for an answer (`requires_action`), the session asks for each pending action
in turn: a question takes an option's number or any text, a tool call y(es) / n(o) / a(lways in
this chat) or edited JSON arguments; then the answer resumes the chat and its stream is followed
again. A client-side tool is the chat's client's to answer: the session says so and goes back to
the prompt.

Input is read on a thread of its own, so typing never waits for the stream and the stream never
waits for typing; lines reach the event loop through a queue."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.markdown import Markdown
from rich.markup import escape

from chatd.client import ChatdClient, ChatView, ClientError

HELP = (
    "Type a message and press Enter. While the agent works: another line is queued, "
    "/steer TEXT reaches it at its next tool call, /interrupt (or Ctrl-C) stops it. "
    "/quit (or Ctrl-D) leaves; the chat goes on on the server."
)


class MarkdownView(ChatView):
    """ChatView with the assistant's text rendered as markdown: redrawn live as it streams on a
    terminal; printed once per paragraph run elsewhere (a pipe cannot be redrawn)."""

    def __init__(self, console: Console, *, reasoning: bool = True) -> None:
        super().__init__(console, reasoning=reasoning)
        self._live: Live | None = None
        self._markdown = ""
        self.last_id = 0  # the newest message shown

    def message(self, message: dict[str, Any]) -> None:
        self.last_id = max(self.last_id, int(message.get("id") or 0))
        super().message(message)

    def _inline(self, kind: str, text: str) -> None:
        if kind != "text":
            super()._inline(kind, text)
            return
        if self._open != "text":
            self._end()
            self._open = "text"
            self._markdown = ""
            if self.console.is_terminal:
                # Our own prints go through the console (no stdout redirection needed).
                self._live = Live(console=self.console, auto_refresh=False, redirect_stdout=False, redirect_stderr=False)
                self._live.start()
        self._markdown += text
        if self._live is not None:
            self._live.update(Markdown(self._markdown), refresh=True)

    def _end(self) -> None:
        if self._open != "text":
            super()._end()
            return
        self._open = None
        if self._live is not None:
            live, self._live = self._live, None
            live.stop()
        else:
            self.console.print(Markdown(self._markdown))
        self._markdown = ""


class Session:
    def __init__(
        self,
        client: ChatdClient,
        console: Console,
        *,
        chat_id: str | None = None,
        title: str | None = None,
        model: str | None = None,
        reasoning: bool = True,
        history_file: Path | None = None,
        interactive: bool = True,
    ) -> None:
        self.client = client
        self.console = console
        self.chat_id = chat_id
        self.title = title
        self.model = model
        self.reasoning = reasoning
        self.history_file = history_file
        self.interactive = interactive
        self.lines: asyncio.Queue[str | None] = asyncio.Queue()
        self.interrupts = asyncio.Event()
        # The newest message shown: a resumed turn is followed from there.
        self.last_id = 0

    # --- input -------------------------------------------------------------------------------

    def _start_reader(self, loop: asyncio.AbstractEventLoop) -> None:
        readline: Any = None
        if self.interactive:
            with contextlib.suppress(ImportError):
                import readline
            if readline is not None and self.history_file is not None:
                with contextlib.suppress(OSError):
                    readline.read_history_file(self.history_file)

        def lines_from_fd() -> Iterator[str]:
            # Not sys.stdin: a daemon thread blocked on its buffer lock aborts the interpreter at
            # exit; os.read holds no Python lock.
            pending = b""
            while chunk := os.read(0, 65536):
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for raw in complete:
                    yield raw.decode(errors="replace")
            if pending:
                yield pending.decode(errors="replace")

        def read_lines() -> Iterator[str]:
            if readline is None:
                yield from lines_from_fd()
                return
            while True:  # a terminal with readline: line editing and history
                try:
                    yield input()
                except EOFError:
                    return

        def read() -> None:
            source = read_lines()
            while True:
                try:
                    line: str | None = next(source)
                except (StopIteration, OSError):
                    line = None
                if line is not None and readline is not None and self.history_file is not None and line.strip():
                    with contextlib.suppress(OSError):
                        self.history_file.parent.mkdir(parents=True, exist_ok=True)
                        # append_history_file needs the file; what people type may be private.
                        os.close(os.open(self.history_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
                        readline.append_history_file(1, self.history_file)
                loop.call_soon_threadsafe(self.lines.put_nowait, line)
                if line is None:
                    return

        # A daemon: a thread blocked in input() must not keep the process alive after /quit.
        threading.Thread(target=read, name="chatd-input", daemon=True).start()

    def _prompt(self) -> None:
        if self.interactive:
            self.console.print("[bold]you ›[/bold] ", end="")

    # --- the session -------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, self.interrupts.set)
        self._start_reader(loop)
        if self.interactive:
            self.console.print(f"[dim]{escape(HELP)}[/dim]")
        if self.chat_id is not None:
            chat = await self.client.get_chat(self.chat_id)
            self.console.print(f"[dim]chat {escape(self.chat_id)}: {escape(chat.get('title') or '')}[/dim]")
            if chat.get("status") in ("pending", "running"):
                if await self._follow(0) == "quit":
                    return 0
            else:
                view = MarkdownView(self.console, reasoning=self.reasoning)
                for message in await self.client.messages(self.chat_id):
                    view.message(message)
                view.finished(chat)
                self.last_id = view.last_id
                if chat.get("status") == "requires_action" and await self._answer_and_follow(chat) == "quit":
                    return 0
        while True:
            self._prompt()
            self.interrupts.clear()
            line = await self._next_line()
            if line is None:
                if self.interactive:
                    self.console.print()
                return 0
            text = line.strip()
            if not text:
                continue
            command, _, rest = text.partition(" ")
            if command in ("/quit", "/exit"):
                return 0
            if command == "/help":
                self.console.print(f"[dim]{escape(HELP)}[/dim]")
                continue
            if command == "/interrupt":
                self.console.print("[dim]nothing is running[/dim]")
                continue
            if command == "/steer":
                text = rest.strip()  # idle: a steer is an ordinary message
                if not text:
                    continue
            try:
                after = await self._send(text)
            except ClientError as exc:
                self.console.print(f"[red]error:[/red] {escape(exc.message)}")
                continue
            if await self._follow(after) == "quit":
                return 0

    async def _next_line(self) -> str | None:
        """The next typed line; a Ctrl-C at the prompt leaves (None), like Ctrl-D."""
        get = asyncio.ensure_future(self.lines.get())
        stop = asyncio.ensure_future(self.interrupts.wait())
        try:
            await asyncio.wait({get, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if get.done():
            return get.result()
        get.cancel()
        return None

    async def _send(self, text: str, busy_behavior: str | None = None) -> int:
        """Send (or start the chat with) `text`; returns the message id to follow after."""
        if self.chat_id is None:
            created = await self.client.create_chat(text, title=self.title, model_config_id=self.model)
            self.chat_id = str(created["id"])
            self.console.print(f"[dim]chat {escape(self.chat_id)}: {escape(created.get('title') or '')}[/dim]")
            return 0
        body: dict[str, Any] = {"content": text}
        if busy_behavior:
            body["busy_behavior"] = busy_behavior
        sent = await self.client.request("POST", f"/api/v1/chats/{self.chat_id}/messages", json=body)
        message = sent.get("message") if isinstance(sent, dict) else None
        if message:
            return int(message["id"]) - 1
        return max((int(m["id"]) for m in await self.client.messages(self.chat_id)), default=0)

    async def _follow(self, after: int) -> str:
        """Show the turn until the chat waits; meanwhile typed lines queue, steer or interrupt.
        A line sent while the stream was ending may start a turn of its own: then follow again,
        from the last message shown. Returns "quit" when the user left during the turn."""
        assert self.chat_id is not None
        view = MarkdownView(self.console, reasoning=self.reasoning)
        while True:
            outcome, sent, chat = await self._follow_once(self.chat_id, view, after)
            self.last_id = max(self.last_id, view.last_id)
            if outcome == "quit":
                return outcome
            if chat is not None and chat.get("status") == "requires_action":
                return await self._answer_and_follow(chat)
            if not sent:
                return outcome
            after = max(after, view.last_id)

    # --- human in the loop -------------------------------------------------------------------

    async def _answer_and_follow(self, chat: dict[str, Any]) -> str:
        """Ask for each pending action; once the chat resumes, follow its turn (which may stop
        for answers again). Returns "quit" when the user left."""
        outcome = await self._answer(chat)
        if outcome != "answered":
            return outcome
        return await self._follow(self.last_id)

    async def _answer(self, chat: dict[str, Any]) -> str:
        """"answered" when the chat resumes, "prompt" when it still waits (for a client), "quit"."""
        assert self.chat_id is not None
        for action in chat.get("pending_actions") or []:
            if action.get("kind") == "client_tool":
                self.console.print("[dim]the chat's client answers this; a message you type is queued behind it[/dim]")
                return "prompt"
            while True:
                self.console.print(f"[dim]{escape(_how_to_answer(action))}[/dim]")
                if self.interactive:
                    self.console.print("[bold]answer ›[/bold] ", end="")
                line = await self._next_line()
                if line is None or line.strip() in ("/quit", "/exit"):
                    return "quit"
                try:
                    body = _answer_body(action, line.strip())
                except ValueError as exc:
                    self.console.print(f"[red]{escape(str(exc))}[/red]")
                    continue
                try:
                    chat = await self.client.request("POST", f"/api/v1/chats/{self.chat_id}/actions/{action['id']}", json=body)
                except ClientError as exc:
                    self.console.print(f"[red]error:[/red] {escape(exc.message)}")
                    if exc.status == 409:
                        break  # answered elsewhere meanwhile
                    continue
                break
        return "answered" if chat.get("status") != "requires_action" else "prompt"

    async def _follow_once(self, chat_id: str, view: MarkdownView, after: int) -> tuple[str, bool, dict[str, Any] | None]:
        follow = asyncio.ensure_future(self.client.follow(chat_id, view, after))
        sent = False
        try:
            while not follow.done():
                get = asyncio.ensure_future(self.lines.get())
                stop = asyncio.ensure_future(self.interrupts.wait())
                await asyncio.wait({follow, get, stop}, return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                if stop.done() and not stop.cancelled():
                    self.interrupts.clear()
                    await self._interrupt(chat_id)
                if not get.done():
                    get.cancel()
                    continue
                line = get.result()
                if line is None:
                    return "quit", sent, None
                text = line.strip()
                command, _, rest = text.partition(" ")
                if not text:
                    continue
                if command in ("/quit", "/exit"):
                    self.console.print(f"[dim]chat {escape(chat_id)} goes on on the server[/dim]")
                    return "quit", sent, None
                if command == "/interrupt":
                    await self._interrupt(chat_id)
                elif command == "/help":
                    self.console.print(f"[dim]{escape(HELP)}[/dim]")
                else:
                    steer = command == "/steer"
                    content = rest.strip() if steer else text
                    if not content:
                        continue
                    try:
                        await self._send(content, "steer" if steer else "queue")
                    except ClientError as exc:
                        self.console.print(f"[red]error:[/red] {escape(exc.message)}")
                        continue
                    sent = True
                    self.console.print(f"[dim]{'steering' if steer else 'queued'}: {escape(content)}[/dim]")
            chat = await follow
        finally:
            if not follow.done():
                follow.cancel()
                with contextlib.suppress(asyncio.CancelledError, ClientError):
                    await follow
        return "done", sent, chat

    async def _interrupt(self, chat_id: str) -> None:
        try:
            await self.client.request("POST", f"/api/v1/chats/{chat_id}/interrupt")
        except ClientError as exc:
            self.console.print(f"[red]error:[/red] {escape(exc.message)}")
            return
        self.console.print("[dim]interrupted[/dim]")


def _how_to_answer(action: dict[str, Any]) -> str:
    kind = action.get("kind")
    if kind == "question":
        return "answer with an option's number or your own words; /decline to not answer"
    if kind == "tool_approval":
        return "y to run it, n to deny, a to run it and allow it for the rest of this chat, or the arguments to run it with as JSON"
    return "the answer as JSON, /decline or /cancel"


def _answer_body(action: dict[str, Any], text: str) -> dict[str, Any]:
    """What a typed line answers; ValueError (said to the user) when it answers nothing."""
    kind = action.get("kind")
    if text in ("/decline", "/cancel") and kind != "tool_approval":
        return {"decision": text[1:]}
    if kind == "question":
        options = action.get("options") or []
        if text.isdigit() and 1 <= int(text) <= len(options):
            return {"decision": "accept", "content": options[int(text) - 1]}
        if not text:
            raise ValueError("type an answer")
        return {"decision": "accept", "content": text}
    if kind == "tool_approval":
        word = text.lower()
        if word in ("y", "yes"):
            return {"decision": "approve"}
        if word in ("n", "no"):
            return {"decision": "deny"}
        if word in ("a", "always"):
            return {"decision": "approve", "always_allow": True}
        if text.startswith("{"):
            args = json.loads(text) if _is_json(text) else None
            if not isinstance(args, dict):
                raise ValueError("the arguments must be one JSON object")
            return {"decision": "approve", "args": args}
        raise ValueError("y, n, a, or the arguments as JSON")
    if not _is_json(text):
        raise ValueError("the answer must be JSON")
    return {"decision": "accept", "content": json.loads(text)}


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
