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

An MCP server's form (an `elicitation`) is asked field by field, or Done / decline / cancel for a
page to open. A 2026-07-28 server's form stops the chat like any other action. A 2025-11-25
server's comes while the chat is still running (its tool call waits for the answer): the session
asks it as soon as the stream announces it (`action_required`, also sent on connect).
Meanwhile typed lines answer the form, not the chat. When the stream says the form ended
elsewhere (`action_resolved`: answered in the web UI, timed out) or the turn ends, the prompt
ends and typed lines are chat messages again.

Input is read on a thread of its own, so typing never waits for the stream and the stream never
waits for typing; lines reach the event loop through a queue."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
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


FORM_HELP = (
    "Type each field's value and press Enter (an empty line keeps the value in brackets). "
    "/decline or /cancel to not answer, /interrupt (or Ctrl-C) stops the turn, /quit leaves."
)


class LiveForms:
    """The forms a running chat's stream announces (`action_required` of kind `elicitation`) and
    the ends of actions (`action_resolved`): the session asks the former as they come and stops
    asking one when its end comes. Fed by the view, from the task following the stream."""

    def __init__(self) -> None:
        self.arrived = asyncio.Event()
        self._waiting: list[dict[str, Any]] = []
        self._seen: set[str] = set()
        self._ends: dict[str, asyncio.Future[str]] = {}

    def saw(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        if kind == "action_required":
            action = data.get("action") or {}
            action_id = str(action.get("id"))
            # Announced again on every (re)connect while it waits: asked once.
            if action.get("kind") == "elicitation" and action_id not in self._seen:
                self._seen.add(action_id)
                self._waiting.append(action)
                self.arrived.set()
        elif kind == "action_resolved":
            end = self.end_of(str(data.get("action_id")))
            if not end.done():
                end.set_result(str(data.get("decision") or ""))

    def end_of(self, action_id: str) -> asyncio.Future[str]:
        """Done with the decision once the stream says the action no longer waits."""
        if action_id not in self._ends:
            self._ends[action_id] = asyncio.get_running_loop().create_future()
        return self._ends[action_id]

    def next(self) -> dict[str, Any] | None:
        """The oldest announced form that has not ended, if any."""
        while self._waiting:
            action = self._waiting.pop(0)
            if not self.end_of(str(action.get("id"))).done():
                return action
        self.arrived.clear()
        return None


class MarkdownView(ChatView):
    """ChatView with the assistant's text rendered as markdown: redrawn live as it streams on a
    terminal; printed once per paragraph run elsewhere (a pipe cannot be redrawn)."""

    def __init__(self, console: Console, *, reasoning: bool = True, forms: LiveForms | None = None) -> None:
        super().__init__(console, reasoning=reasoning)
        self._live: Live | None = None
        self._markdown = ""
        self.last_id = 0  # the newest message shown
        self.forms = forms

    def event(self, data: dict[str, Any]) -> None:
        super().event(data)
        if self.forms is not None:
            self.forms.saw(data)

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
        self.forms = LiveForms()
        self._form_interrupted = False  # the form being asked ends with the turn stopped here
        self._readline: Any = None  # the line editor reading the terminal, if any

    # --- input -------------------------------------------------------------------------------

    def _start_reader(self, loop: asyncio.AbstractEventLoop) -> None:
        readline: Any = None
        if self.interactive:
            with contextlib.suppress(ImportError):
                import readline
            if readline is not None and self.history_file is not None:
                with contextlib.suppress(OSError):
                    readline.read_history_file(self.history_file)
        self._readline = readline

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

        # GNU readline does not echo the end of an empty line after a prompt it did not print
        # (ours are printed through the console): the next output would land on the prompt's line.
        newline_lost = readline is not None and "libedit" not in (readline.__doc__ or "")

        def read() -> None:
            source = read_lines()
            while True:
                try:
                    line: str | None = next(source)
                except (StopIteration, OSError):
                    line = None
                if line == "" and newline_lost:
                    loop.call_soon_threadsafe(self.console.print)
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
        # A stream announces the forms waiting when it opens: none is carried over from before.
        self.forms = LiveForms()
        view = MarkdownView(self.console, reasoning=self.reasoning, forms=self.forms)
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
        if outcome == "quit" and self.chat_id is not None:
            # Leaving is fine (the wait is kept on the server), but say how to come back to it.
            cid = escape(self.chat_id)
            self.console.print(f"[dim]chat {cid} still waits for your answer: chatd chat --chat {cid} asks again[/dim]")
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
            if action.get("kind") == "elicitation":
                # A stopped chat's stream still says when the form is answered elsewhere (the
                # web UI) or times out: the prompt ends then instead of at the next Enter.
                connected = asyncio.Event()
                watcher = asyncio.create_task(self._watch_ends(self.chat_id, connected), name=f"form-ends:{self.chat_id}")
                try:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(5):
                            await connected.wait()
                    # Answered elsewhere before the stream was open: nothing to ask.
                    waiting = {str(a.get("id")) for a in (await self.client.get_chat(self.chat_id)).get("pending_actions") or []}
                    if str(action["id"]) in waiting:
                        filled = await self._fill_in(self.chat_id, action, None)
                    else:
                        self.console.print("[dim]the form was answered elsewhere; back to the chat[/dim]")
                        filled = "ended"
                finally:
                    watcher.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await watcher
                if filled == "quit":
                    return "quit"
                chat = await self.client.get_chat(self.chat_id)
                continue
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
                if (action := self.forms.next()) is not None:
                    if (await self.client.get_chat(chat_id)).get("status") == "requires_action":
                        # The form stopped the chat (a 2026-07-28 server's, stored with its step
                        # in the transaction that set the status): asked once the follow ends.
                        continue
                    # A running call waits for this form: typed lines answer it until it ends.
                    if await self._fill_in(chat_id, action, follow) == "quit":
                        self.console.print(f"[dim]chat {escape(chat_id)} goes on on the server[/dim]")
                        return "quit", sent, None
                    continue
                get = asyncio.ensure_future(self.lines.get())
                stop = asyncio.ensure_future(self.interrupts.wait())
                asked = asyncio.ensure_future(self.forms.arrived.wait())
                await asyncio.wait({follow, get, stop, asked}, return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                asked.cancel()
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

    # --- an MCP server's form, asked while its call waits ------------------------------------

    async def _watch_ends(self, chat_id: str, connected: asyncio.Event) -> None:
        """Feed the ends of actions (`action_resolved`) from the chat's stream to the forms."""
        try:
            with contextlib.suppress(Exception):
                async for ev in self.client.events(chat_id, self.last_id):
                    connected.set()  # the snapshot's first event: later ends will be seen
                    if ev.data.get("type") == "action_resolved":
                        self.forms.saw(ev.data)
        finally:
            connected.set()  # no stream (refused, gone): the form is asked all the same

    async def _fill_in(self, chat_id: str, action: dict[str, Any], follow: asyncio.Future[Any] | None) -> str:
        """Ask for a form's answer (field by field, or Done / decline / cancel for a page) and
        send it. Ends early when the action ends elsewhere or the followed turn ends. Returns
        "answered", "ended" or "quit"."""
        end = self.forms.end_of(str(action["id"]))
        self._form_interrupted = False
        schema = action.get("schema")
        fields = form_fields(schema) if isinstance(schema, dict) else []
        who = action.get("server") or "an MCP server"
        if fields:
            self.console.print(f"[dim]{escape(who)} asks you to fill in a form. {escape(FORM_HELP)}[/dim]")
        elif action.get("url"):
            self.console.print(f"[dim]{escape(who)} asks you to open this page:[/dim]")
            self.console.print(f"  {escape(str(action['url']))}", soft_wrap=True, highlight=False)
            self.console.print("[dim]type done when you are done there, or /decline, /cancel[/dim]")
        else:
            self.console.print(f"[dim]{escape(who)} asks you to confirm: done, /decline or /cancel[/dim]")
        before: dict[str, Any] = {}
        while True:
            try:
                body = await (self._fill_fields(chat_id, fields, before, end, follow) if fields else self._confirm(chat_id, end, follow))
            except FormClosed as closed:
                if closed.why == "ended":
                    self._form_ended(end)
                return closed.why
            try:
                await self.client.request("POST", f"/api/v1/chats/{chat_id}/actions/{action['id']}", json=body)
            except ClientError as exc:
                self.console.print(f"[red]error:[/red] {escape(exc.message)}")
                if exc.status == 409:
                    self.console.print("[dim]the form was answered elsewhere; back to the chat[/dim]")
                    return "ended"
                if end.done() or (follow is not None and follow.done()):
                    self._form_ended(end)
                    return "ended"
                # Refused (a 400 says how the form was misread) or not delivered: asked again,
                # what was typed being what Enter keeps.
                before = dict(body.get("content") or {})
                continue
            said = {"accept": "sent", "decline": "declined", "cancel": "cancelled"}.get(body["decision"], "sent")
            self.console.print(f"[dim]{said}[/dim]")
            return "answered"

    def _form_ended(self, end: asyncio.Future[str]) -> None:
        if self._form_interrupted:
            said = "the form is closed with the turn"
        elif end.done():
            said = {
                "accept": "the form was answered elsewhere",
                "decline": "the form was declined elsewhere",
                "cancel": "the form was cancelled elsewhere",
                "timeout": "nobody answered the form in time",
            }.get(end.result(), "the form was closed elsewhere")
        else:
            said = "the turn ended; the form is closed"
        self.console.print(f"[dim]{said}; back to the chat[/dim]")

    async def _fill_fields(
        self, chat_id: str, fields: list[FormField], before: dict[str, Any], end: asyncio.Future[str], follow: asyncio.Future[Any] | None
    ) -> dict[str, Any]:
        """One prompt per field; the answer's body. FormClosed when the form ends unanswered."""
        content: dict[str, Any] = {}
        for field in fields:
            keep = before.get(field.key, field.default)
            self.console.print(f"[dim]{escape(field.hint(keep))}[/dim]", highlight=False)
            while True:
                shown = f" [{_shown(keep)}]" if keep is not None else ""
                text = (await self._form_line(chat_id, f"{field.label}{shown} ›", end, follow)).strip()
                command = await self._form_command(chat_id, text)
                if isinstance(command, dict):
                    return command
                if command:
                    continue
                try:
                    value = field.parse(text, keep)
                except ValueError as exc:
                    self.console.print(f"[red]{escape(str(exc))}[/red]")
                    continue
                if value is not None:
                    content[field.key] = value
                break
        return {"decision": "accept", "content": content}

    async def _confirm(self, chat_id: str, end: asyncio.Future[str], follow: asyncio.Future[Any] | None) -> dict[str, Any]:
        """A page to open (or a form without fields): done accepts."""
        while True:
            text = (await self._form_line(chat_id, "done? ›", end, follow)).strip()
            word = text.lower()
            if word in ("done", "d", "y", "yes", "ok"):
                return {"decision": "accept"}
            if word in ("decline", "cancel"):
                return {"decision": word}
            command = await self._form_command(chat_id, text)
            if isinstance(command, dict):
                return command
            if not command:
                self.console.print("[red]done, /decline or /cancel[/red]")

    async def _form_command(self, chat_id: str, text: str) -> dict[str, Any] | bool:
        """A command typed at a form's prompt: an answer (/decline, /cancel), True when done with
        here (/help, /interrupt), False when the line is no command. FormClosed for /quit."""
        if text in ("/decline", "/cancel"):
            return {"decision": text[1:]}
        if text in ("/quit", "/exit"):
            raise FormClosed("quit")
        if text == "/help":
            self.console.print(f"[dim]{escape(FORM_HELP)}[/dim]")
            return True
        if text == "/interrupt":
            self._form_interrupted = True
            await self._interrupt(chat_id)  # the turn's end closes the form
            return True
        return False

    async def _form_line(self, chat_id: str, prompt: str, end: asyncio.Future[str], follow: asyncio.Future[Any] | None) -> str:
        """The next line typed for a form. FormClosed("ended") when the action ended elsewhere
        or the turn ended first, FormClosed("quit") on Ctrl-D. Ctrl-C interrupts the turn (whose
        end then closes the form)."""
        prompted = self.interactive
        if prompted:
            self.console.print(f"[bold]{escape(prompt)}[/bold] ", end="")
        get = asyncio.ensure_future(self.lines.get())
        try:
            while True:
                stop = asyncio.ensure_future(self.interrupts.wait())
                waits: set[asyncio.Future[Any]] = {get, stop, end}
                if follow is not None:
                    waits.add(follow)
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                if end.done() or (follow is not None and follow.done()):
                    if prompted:
                        self._drop_typed()
                    raise FormClosed("ended")  # a line typed meanwhile was meant for the form: dropped
                if get.done():
                    line = get.result()
                    if line is None:
                        raise FormClosed("quit")
                    return line
                if stop.done() and not stop.cancelled():
                    self.interrupts.clear()
                    if prompted:
                        self.console.print()
                        prompted = False
                    self._form_interrupted = True
                    await self._interrupt(chat_id)
        finally:
            if not get.done():
                get.cancel()

    def _drop_typed(self) -> None:
        """A form's prompt ended under the person's fingers (answered elsewhere, or closed with
        the turn): what they had half typed for it leaves the line editor, so it cannot become the
        start of their next chat message, and the screen, so the prompt line is clean again."""
        if self._readline is not None and self._readline.get_line_buffer():
            _clear_line_buffer(self._readline)
        if self.console.is_terminal:
            self.console.file.write("\r\x1b[2K")  # back to the line's start, the line erased
            self.console.file.flush()
        else:
            self.console.print()

    async def _interrupt(self, chat_id: str) -> None:
        try:
            await self.client.request("POST", f"/api/v1/chats/{chat_id}/interrupt")
        except ClientError as exc:
            self.console.print(f"[red]error:[/red] {escape(exc.message)}")
            return
        self.console.print("[dim]interrupted[/dim]")


def _clear_line_buffer(readline: Any) -> None:
    """Empty GNU readline's line (its Python module has no call for that). The reader thread is
    blocked in `input()` waiting for a key, so the buffer is not being edited meanwhile; the next
    key it reads edits an empty line. libedit or an unknown library: left as it is."""
    with contextlib.suppress(OSError, AttributeError, ValueError):
        lib = ctypes.CDLL(readline.__file__)  # its symbols and those of the libreadline it links
        lib.rl_replace_line(b"", 0)
        ctypes.c_int.in_dll(lib, "rl_point").value = 0
        lib.rl_on_new_line()  # the cursor is at the start of a fresh line now (erased below)


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


# --- forms (an MCP server's elicitation) ------------------------------------------------------


class FormClosed(Exception):
    """A form's prompt ended unanswered: `why` is "ended" (elsewhere, or the turn ended) or "quit"."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


_YES = ("y", "yes", "true", "1")
_NO = ("n", "no", "false", "0")


class FormField:
    """One property of a form's schema (a flat object of strings, numbers, integers, booleans
    and enums), as a prompt: what to show and how a typed line becomes its value."""

    def __init__(self, key: str, prop: dict[str, Any], required: bool) -> None:
        self.key = key
        self.prop = prop
        self.required = required
        self.label = str(prop.get("title") or key)
        self.default = prop.get("default")
        kind = prop.get("type")
        self.type = kind if isinstance(kind, str) else "string"
        # Choices: `enum` (labels in `enumNames`), or `oneOf`/`anyOf` of `{const, title}`.
        self.choices: list[tuple[Any, str]] = []
        if isinstance(prop.get("enum"), list):
            names: list[Any] = prop["enumNames"] if isinstance(prop.get("enumNames"), list) else []
            self.choices = [(v, str(names[i]) if i < len(names) else _shown(v)) for i, v in enumerate(prop["enum"])]
        else:
            for option in prop.get("oneOf") or prop.get("anyOf") or []:
                if isinstance(option, dict) and "const" in option:
                    self.choices.append((option["const"], str(option.get("title") or _shown(option["const"]))))

    def hint(self, keep: Any) -> str:
        """One line above the prompt: description, what to type, whether it may stay empty."""
        said = [str(self.prop["description"])] if self.prop.get("description") else []
        if self.choices:
            said.append("one of " + "  ".join(f"{i}) {label}" for i, (_, label) in enumerate(self.choices, 1)) + " (a number or the value)")
        elif self.type == "boolean":
            said.append("y or n")
        elif self.type == "integer":
            said.append("a whole number" + _bounds(self.prop, "minimum", "maximum"))
        elif self.type == "number":
            said.append("a number" + _bounds(self.prop, "minimum", "maximum"))
        else:
            said.append("text" + _bounds(self.prop, "minLength", "maxLength", " characters"))
        if keep is not None:
            said.append(f"Enter keeps {_shown(keep)}")
        elif self.required:
            said.append("required")
        else:
            said.append("optional: Enter leaves it out")
        return f"{self.label}: " + "; ".join(said)

    def parse(self, text: str, keep: Any) -> Any:
        """The field's value for a typed line: `keep` for an empty one, None to leave the field
        out; ValueError (said to the user) when the line is no value of the field."""
        if not text:
            if keep is not None:
                return keep
            if self.required:
                raise ValueError(f"{self.label} is required")
            return None
        if self.choices:
            if text.isdigit() and 1 <= int(text) <= len(self.choices):
                return self.choices[int(text) - 1][0]
            for value, label in self.choices:
                if text in (_shown(value), label) or text.lower() in (_shown(value).lower(), label.lower()):
                    return value
            raise ValueError(f"{self.label}: one of " + ", ".join(label for _, label in self.choices))
        if self.type == "boolean":
            if text.lower() in _YES:
                return True
            if text.lower() in _NO:
                return False
            raise ValueError(f"{self.label}: y or n")
        if self.type in ("integer", "number"):
            number: int | float
            try:
                number = int(text)
            except ValueError:
                if self.type == "integer":
                    raise ValueError(f"{self.label}: a whole number") from None
                try:
                    number = float(text)
                except ValueError:
                    raise ValueError(f"{self.label}: a number") from None
                if number != number or number in (float("inf"), float("-inf")):
                    raise ValueError(f"{self.label}: a number") from None
            _check_bounds(self.label, number, self.prop.get("minimum"), self.prop.get("maximum"), "")
            return number
        if self.type != "string":
            return json.loads(text) if _is_json(text) else text  # beyond a flat form: JSON, else text
        _check_bounds(self.label, len(text), self.prop.get("minLength"), self.prop.get("maxLength"), " characters")
        return text


def form_fields(schema: dict[str, Any]) -> list[FormField]:
    """The fields of a form's schema, in the schema's order."""
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return []
    required = set(schema.get("required") or [])
    return [FormField(str(key), prop if isinstance(prop, dict) else {}, key in required) for key, prop in properties.items()]


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _bounds(prop: dict[str, Any], low: str, high: str, unit: str = "") -> str:
    lo, hi = prop.get(low), prop.get(high)
    if lo is not None and hi is not None:
        return f" from {lo} to {hi}{unit}"
    if lo is not None:
        return f", at least {lo}{unit}"
    if hi is not None:
        return f", at most {hi}{unit}"
    return ""


def _check_bounds(label: str, value: float, low: Any, high: Any, unit: str) -> None:
    if isinstance(low, int | float) and value < low:
        raise ValueError(f"{label}: at least {low}{unit}")
    if isinstance(high, int | float) and value > high:
        raise ValueError(f"{label}: at most {high}{unit}")
