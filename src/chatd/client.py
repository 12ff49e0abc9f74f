"""A client of a running chatd over its public HTTP API (API.md): create a chat or send to one,
then follow the chat's Server-Sent Events until its turn is over. `chatd chat` uses it with
`ChatView`, which renders the stream in a terminal with rich.

httpx2 errors are converted here, once, to `ClientError` with a message for a person.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx2
from rich.console import Console
from rich.markup import escape

from chatd.errors import ChatdError

__all__ = ["ChatView", "ChatdClient", "ClientError", "SseEvent"]

# The statuses at which a turn is over for someone waiting on it (SPEC §2).
# Statuses where a turn is over: idle, failed, or stopped for an answer (human in the loop).
DONE = frozenset({"waiting", "error", "requires_action"})


class ClientError(ChatdError):
    """The server could not be reached, or refused the request (`status` is the HTTP status)."""

    code = "client_error"

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message, {"status": status})
        self.status = status


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str
    data: dict[str, Any]
    id: str | None = None


class ChatdClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 30.0,
        reconnects: int = 5,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.reconnects = reconnects
        self._http = httpx2.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}"},
            # A stream is quiet between events (the server pings every few seconds): no read timeout.
            timeout=httpx2.Timeout(timeout, read=None),
            transport=transport,
        )

    async def __aenter__(self) -> ChatdClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- requests ------------------------------------------------------------------------------

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            r = await self._http.request(method, path, **kwargs)
        except httpx2.TransportError as exc:
            raise ClientError(f"Cannot reach chatd at {self.base_url}: {type(exc).__name__}.") from exc
        _raise_for(r)
        return r.json() if r.content else None

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Any API call: the decoded JSON body (None when empty), or ClientError."""
        return await self._call(method, path, **kwargs)

    async def list_all(self, path: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Every item of a list endpoint: pages are followed through their `X-Next-Cursor`
        header (passed back as `before`) until a page comes without one."""
        params = dict(params or {})
        rows: list[dict[str, Any]] = []
        while True:
            try:
                r = await self._http.get(path, params=params)
            except httpx2.TransportError as exc:
                raise ClientError(f"Cannot reach chatd at {self.base_url}: {type(exc).__name__}.") from exc
            _raise_for(r)
            body = r.json()
            rows += body if isinstance(body, list) else []
            cursor = r.headers.get("x-next-cursor")
            if not cursor or cursor == params.get("before"):
                return rows
            params["before"] = cursor

    async def create_chat(self, content: str, *, title: str | None = None, model_config_id: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"content": content}
        if title:
            body["title"] = title
        if model_config_id:
            body["model_config_id"] = model_config_id
        chat: dict[str, Any] = await self._call("POST", "/api/v1/chats", json=body)
        return chat

    async def send_message(self, chat_id: str, content: str) -> dict[str, Any]:
        sent: dict[str, Any] = await self._call("POST", f"/api/v1/chats/{chat_id}/messages", json={"content": content})
        return sent

    async def resolve_chat_id(self, ref: str) -> str:
        """The id of the chat `ref` names: a whole id as it is, else one of the caller's chats
        (archived or not) whose id starts with `ref` (`chatd chats list` shows such short ids in a
        narrow terminal). Anything else is refused before it reaches a request path."""
        if is_uuid(ref):
            return ref
        if not is_id_prefix(ref):
            raise ClientError(f"{ref!r} is not an id (ids are UUIDs, or the start of one).")
        start = ref.lower()
        found = [
            str(c["id"]) for archived in ("false", "true")
            for c in await self.list_all("/api/v1/chats", {"archived": archived}) if str(c.get("id", "")).startswith(start)
        ]  # fmt: skip
        if len(found) != 1:
            raise ClientError(
                f"No chat of yours has an id starting with {ref!r}." if not found
                else f"{ref!r} starts the ids of {len(found)} of your chats: give more of the id."
            )
        return found[0]

    async def get_chat(self, chat_id: str) -> dict[str, Any]:
        chat: dict[str, Any] = await self._call("GET", f"/api/v1/chats/{chat_id}")
        return chat

    async def messages(self, chat_id: str, after_id: int = 0) -> list[dict[str, Any]]:
        body = await self._call("GET", f"/api/v1/chats/{chat_id}/messages", params={"after_id": after_id})
        msgs: list[dict[str, Any]] = body["messages"]
        return msgs

    # --- the stream ----------------------------------------------------------------------------

    async def events(self, chat_id: str, after_id: int = 0, *, resumed: Callable[[], None] | None = None) -> AsyncIterator[SseEvent]:
        """The chat's events, resuming after a dropped connection from the last cursor seen
        (`Last-Event-ID`); the server then sends a fresh snapshot from there, whose parts repeat
        the step in flight from its start: `resumed` is called before it."""
        cursor = str(after_id)
        failures = 0
        connected = False
        while True:
            try:
                async with self._http.stream(
                    "GET", f"/api/v1/chats/{chat_id}/stream", headers={"Last-Event-ID": cursor, "Accept": "text/event-stream"}
                ) as r:
                    if r.status_code >= 400:
                        await r.aread()
                        _raise_for(r)
                    if connected and resumed is not None:
                        resumed()
                    connected = True
                    async for ev in _parse_sse(r.aiter_lines()):
                        failures = 0
                        if ev.id is not None:
                            cursor = ev.id
                        yield ev
            except httpx2.TransportError as exc:
                failures += 1
                if failures > self.reconnects:
                    raise ClientError(f"Lost the event stream of chat {chat_id}: {type(exc).__name__}.") from exc
                await asyncio.sleep(min(0.5 * 2**failures, 10))
                continue
            # The server ended the stream (it never does on its own): resume like after a drop.
            failures += 1
            if failures > self.reconnects:
                raise ClientError(f"The event stream of chat {chat_id} keeps closing.")
            await asyncio.sleep(0.5)

    async def follow(self, chat_id: str, view: ChatView, after_id: int = 0) -> dict[str, Any]:
        """Render the chat's events until it is waiting or in error; returns the chat then.

        The stream's snapshot sends the parts of the step under way before the persisted
        messages, so the history is read and rendered first and the stream opened after it. A
        status event may also come before the messages that precede it (a turn may even end
        before the stream opens): on the way out, whatever was persisted after the last message
        rendered is fetched and rendered too."""
        last = after_id
        for message in await self.messages(chat_id, after_id):
            last = max(last, message["id"])
            view.message(message)
        async for ev in self.events(chat_id, last, resumed=view.resumed):
            data = ev.data
            if data.get("type") == "message":
                message = data["message"]
                if message["id"] > last:
                    last = message["id"]
                    view.message(message)
            elif data.get("type") == "status":
                if data.get("status") in DONE:
                    break
            else:
                view.event(data)
        for message in await self.messages(chat_id, last):
            view.message(message)
        chat = await self.get_chat(chat_id)
        view.finished(chat)
        return chat


# A chat's status as people read it, the same words as the web UI's badges (ui/src/chat/StatusBadge.tsx):
# the API's `waiting` means the chat waits for its person, which read as "still working"; `idle`
# says it is done. The API's values stay as they are (`--json` prints them).
STATUS_WORDS = {"pending": "pending", "running": "running", "waiting": "idle", "error": "error", "requires_action": "waiting for you"}


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


# The start of an id, as `chatd chats list` shows it in a narrow terminal (at least 8 characters;
# 4 are accepted, as git accepts short hashes).
_ID_PREFIX = re.compile(r"[0-9a-fA-F][0-9a-fA-F-]{3,35}")


def is_id_prefix(value: str) -> bool:
    return _ID_PREFIX.fullmatch(value) is not None


def status_word(status: str) -> str:
    return STATUS_WORDS.get(status, status)


def _raise_for(r: httpx2.Response) -> None:
    if r.status_code < 400:
        return
    try:
        message = str(r.json().get("message") or r.text)
    except (ValueError, AttributeError):
        message = r.text or r.reason_phrase
    raise ClientError(f"{message} (HTTP {r.status_code})", r.status_code)


async def _parse_sse(lines: AsyncIterator[str]) -> AsyncIterator[SseEvent]:
    event: str = "message"
    data: list[str] = []
    event_id: str | None = None
    async for line in lines:
        if not line:
            if data:
                try:
                    payload = json.loads("\n".join(data))
                except ValueError:
                    payload = None
                if isinstance(payload, dict):
                    yield SseEvent(event, payload, event_id)
            event, data, event_id = "message", [], None
            continue
        if line.startswith(":"):
            continue  # a keep-alive comment
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            event_id = value


# --- rendering ---------------------------------------------------------------------------------


def _short(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ChatView:
    """Renders a chat's events as they come: text and reasoning live, tool calls and results as
    lines. Persisted messages repeat what was streamed, so text already shown is not shown
    again (it is matched against what streamed, which survives events arriving interleaved)."""

    def __init__(self, console: Console, *, reasoning: bool = True) -> None:
        self.console = console
        self.reasoning = reasoning
        self._open: str | None = None  # the kind of the unfinished line: "text" | "reasoning"
        self._streamed = {"text": "", "reasoning": ""}
        # After a reconnect: how much of `_streamed` the new snapshot's parts have repeated so far
        # (None: not repeating, or done).
        self._replayed: dict[str, int | None] = {"text": None, "reasoning": None}
        self._shown_calls: set[str] = set()
        self._shown_results: set[str] = set()
        self._shown_actions: set[str] = set()

    # -- output helpers -------------------------------------------------------------------------

    def _line(self, markup: str) -> None:
        self._end()
        self.console.print(markup, highlight=False)

    def _end(self) -> None:
        if self._open is not None:
            self.console.print()
            self._open = None

    def _inline(self, kind: str, text: str) -> None:
        if self._open != kind:
            self._end()
            self._open = kind
        style = "dim italic" if kind == "reasoning" else None
        self.console.print(text, end="", style=style, markup=False, highlight=False, soft_wrap=True)

    # -- events ---------------------------------------------------------------------------------

    def event(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        if kind == "message_part":
            self.part(data.get("role", "assistant"), data["part"], live=True)
        elif kind == "retry":
            # The partial step is thrown away and asked again.
            self._streamed = {"text": "", "reasoning": ""}
            self._replayed = {"text": None, "reasoning": None}
            self._line(f"[yellow]↻ retry {data.get('attempt')} in {int(data.get('delay_ms', 0)) / 1000:g}s: {escape(str(data.get('error', '')))}[/yellow]")
        elif kind == "error":
            self._line(f"[red]✗ {escape(str(data.get('message', '')))}[/red]")
        elif kind == "action_required":
            # A running call asks (an MCP server's form): answer it in the web UI or the API.
            self._action(data.get("action") or {})
        elif kind == "queue_update" and data.get("queued_messages"):
            self._line(f"[dim]{len(data['queued_messages'])} message(s) queued[/dim]")

    def resumed(self) -> None:
        """The stream reconnected: its snapshot sends the parts of the step in flight from the
        start again (after the messages persisted meanwhile): what was shown of them is skipped."""
        self._replayed = {"text": 0, "reasoning": 0}

    def message(self, message: dict[str, Any]) -> None:
        role = message.get("role")
        for part in message.get("content") or []:
            if role == "user" and part.get("type") == "text":
                self._line(f"[bold]you ›[/bold] {escape(part['text'])}")
            elif role in ("assistant", "tool"):
                self.part(role, part, live=False)
        if role == "assistant":
            self._end()

    def part(self, role: str, part: dict[str, Any], *, live: bool) -> None:
        kind = part.get("type")
        if kind in ("text", "reasoning"):
            if kind == "reasoning" and not self.reasoning:
                return
            text = part.get("text", "")
            replayed = self._replayed[kind]
            if live and replayed is not None:
                rest = self._streamed[kind][replayed:]
                if text and rest.startswith(text):
                    self._replayed[kind] = replayed + len(text)
                    return
                self._replayed[kind] = None
                if text.startswith(rest):
                    text = text[len(rest) :]  # what follows the part already shown
                if not text:
                    return
            if live:
                self._streamed[kind] += text
                self._inline(kind, text)
            elif self._streamed[kind].startswith(text) and text:
                self._streamed[kind] = self._streamed[kind][len(text) :]
                if replayed is not None:
                    self._replayed[kind] = max(0, replayed - len(text))
            else:
                self._inline(kind, text)
        elif kind == "tool-call":
            call_id = part.get("tool_call_id", "")
            if part.get("args_delta") is not None or call_id in self._shown_calls:
                return  # arguments still arriving; the complete call follows
            self._shown_calls.add(call_id)
            self._line(f"[cyan]⏺ {escape(part.get('tool_name', '?'))}[/cyan]([dim]{escape(_short(part.get('args', {}), 200))}[/dim])")
        elif kind == "tool-result":
            call_id = part.get("tool_call_id", "")
            if call_id in self._shown_results:
                return
            self._shown_results.add(call_id)
            style = "red" if part.get("is_error") else "green"
            self._line(f"  [{style}]⎿ {escape(_short(part.get('result')))}[/{style}]")
        elif kind == "notice":
            self._line(f"[yellow]! {escape(part.get('text', ''))}[/yellow]")
        elif kind == "source":
            self._line(f"[dim]source: {escape(part.get('title') or '')} {escape(part.get('url', ''))}[/dim]")
        elif kind == "file":
            self._line(f"[dim]file {escape(part.get('file_id', ''))} ({escape(part.get('media_type', ''))})[/dim]")

    def finished(self, chat: dict[str, Any]) -> None:
        self._end()
        if chat.get("status") == "error":
            self._line(f"[red]✗ {escape(chat.get('last_error') or 'the turn failed')}[/red]")
        for action in chat.get("pending_actions") or []:
            self._action(action)

    def _action(self, action: dict[str, Any]) -> None:
        if action.get("id") in self._shown_actions:
            return
        self._shown_actions.add(str(action.get("id")))
        self._line(f"[yellow]? {escape(describe_action(action))}[/yellow]")


def describe_action(action: dict[str, Any]) -> str:
    """One line for what a chat waits for (docs/api.md, "Human in the loop")."""
    kind, tool = action.get("kind"), action.get("tool_name", "?")
    args = _short(action.get("args") or {}, 300)
    if kind == "question":
        options = "  ".join(f"{i}) {o}" for i, o in enumerate(action.get("options") or [], 1))
        return f"{action.get('message') or 'A question'}   {options}".rstrip()
    if kind == "tool_approval":
        server = f" on {action['server']}" if action.get("server") else ""
        return f"Run {tool}{server}? {args}"
    if kind == "client_tool":
        return f"Waiting for the chat's client to run {tool} {args}"
    return f"{action.get('message') or (action.get('server') or 'A server') + ' asks for input'}"
