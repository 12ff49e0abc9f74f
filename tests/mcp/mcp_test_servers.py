"""Real MCP servers for the client tests: the Python SDK's MCPServer and a few broken servers.

Every server listens on 127.0.0.1 only, on a port the kernel picks.
"""

from __future__ import annotations

import base64
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Annotated, Any

import anyio
import mcp_types as types
import uvicorn
from mcp.server.elicitation import AcceptedElicitation, ElicitationResult
from mcp.server.lowlevel import Server
from mcp.server.mcpserver import Context, MCPServer, Resolve
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resolve import Elicit
from mcp.server.mcpserver.utilities.types import Image
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import BaseModel
from starlette.types import ASGIApp, Receive, Scope, Send

# A 1x1 transparent PNG.
PNG_BYTES = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)
INSTRUCTIONS = "Use echo to repeat things back."


class Weather(BaseModel):
    city: str
    celsius: float


class Contact(BaseModel):
    name: str
    team: str = "platform"


def ask_contact() -> Elicit[Contact]:
    """The `register` tool's question (a resolver: the SDK asks in the protocol era it speaks)."""
    return Elicit("Who is registering?", Contact)


class Confirmation(BaseModel):
    confirm: bool


def ask_confirmation(contact: Annotated[Contact, Resolve(ask_contact)]) -> Elicit[Confirmation]:
    """`enrol`'s second question, which needs the first one's answer (a second round)."""
    return Elicit(f"Enrol {contact.name} in {contact.team}?", Confirmation)


@dataclass
class ServerState:
    """What the test server saw; written from the server's thread, read by the test."""

    calls: list[str] = field(default_factory=list)
    cancelled: threading.Event = field(default_factory=threading.Event)
    slow_started: threading.Event = field(default_factory=threading.Event)
    # `visits` calls per MCP session (by Mcp-Session-Id; "" without a session).
    visits: dict[str, int] = field(default_factory=dict)
    # Keys `delete_note` deleted, in call order.
    deleted: list[str] = field(default_factory=list)


def build_server(
    state: ServerState | None = None, *, instructions: str = INSTRUCTIONS
) -> MCPServer:
    state = state if state is not None else ServerState()
    srv = MCPServer("test-server", instructions=instructions)

    @srv.tool()
    def echo(text: str) -> str:
        """Echo the text back."""
        state.calls.append("echo")
        return text

    @srv.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        state.calls.append("add")
        return a + b

    @srv.tool(annotations=types.ToolAnnotations(read_only_hint=True))
    def lookup(key: str) -> str:
        """Read a note (the server says: read-only)."""
        state.calls.append("lookup")
        return f"note {key}"

    @srv.tool(annotations=types.ToolAnnotations(read_only_hint=False, destructive_hint=True))
    def delete_note(key: str) -> str:
        """Delete a note (the server says: destructive)."""
        state.calls.append("delete_note")
        state.deleted.append(key)
        return f"deleted {key}"

    @srv.tool()
    def register(contact: Annotated[ElicitationResult[Contact], Resolve(ask_contact)]) -> str:
        """Register the user: asks them for a name (form elicitation; 2025-11-25 sends
        elicitation/create mid-call, 2026-07-28 answers input_required and takes the retry)."""
        state.calls.append("register")
        if isinstance(contact, AcceptedElicitation):
            return f"registered {contact.data.name} in {contact.data.team}"
        return f"not registered: {contact.action}"

    @srv.tool()
    def register_as(role: str, contact: Annotated[Contact, Resolve(ask_contact)]) -> str:
        """Register the user in a role: the role from the call, the name from a form."""
        state.calls.append("register_as")
        return f"registered {contact.name} as {role}"

    @srv.tool()
    def enrol(
        contact: Annotated[Contact, Resolve(ask_contact)],
        confirmation: Annotated[ElicitationResult[Confirmation], Resolve(ask_confirmation)],
    ) -> str:
        """Enrol the user: asks for a name, then to confirm (two questions, one after the other)."""
        state.calls.append("enrol")
        if isinstance(confirmation, AcceptedElicitation) and confirmation.data.confirm:
            return f"enrolled {contact.name} in {contact.team}"
        return f"not enrolled: {confirmation.action if not isinstance(confirmation, AcceptedElicitation) else 'unconfirmed'}"

    @srv.tool()
    def open_page(ctx: Context) -> str | types.InputRequiredResult:
        """Asks the user to open a page, the 2026-07-28 way: the tool returns `input_required`
        itself and reads the answer (and its own echoed state) from the call made again."""
        answer = (ctx.input_responses or {}).get("page")
        if not isinstance(answer, types.ElicitResult):
            page = types.ElicitRequestURLParams(message="Sign in to the account service", url="https://accounts.example/connect", elicitation_id="e-2")
            return types.InputRequiredResult(input_requests={"page": types.ElicitRequest(params=page)}, request_state="page-1")
        state.calls.append("open_page")
        return f"page: {answer.action} ({ctx.request_state})"

    @srv.tool()
    async def connect_account(ctx: Context) -> str:
        """Asks the user to open a page (URL elicitation; 2025-11-25 sessions only)."""
        state.calls.append("connect_account")
        result = await ctx.elicit_url("Sign in to the account service", "https://accounts.example/connect", "e-1")
        return f"connect: {result.action}"

    @srv.tool()
    def fail(message: str) -> str:
        """Always fails with the message."""
        state.calls.append("fail")
        raise ToolError(message)

    @srv.tool()
    def image() -> Image:
        """Return a tiny PNG."""
        return Image(data=PNG_BYTES, format="png")

    @srv.tool()
    def weather(city: str) -> Weather:
        """Structured weather."""
        return Weather(city=city, celsius=21.5)

    @srv.tool()
    def resources() -> list[types.ContentBlock]:
        """Return an embedded text resource, an embedded blob and a resource link."""
        return [
            types.TextContent(text="see attached"),
            types.EmbeddedResource(
                resource=types.TextResourceContents(
                    uri="file:///notes.txt", mime_type="text/plain", text="hello notes"
                )
            ),
            types.EmbeddedResource(
                resource=types.BlobResourceContents(
                    uri="file:///pixel.png",
                    mime_type="image/png",
                    blob=base64.b64encode(PNG_BYTES).decode(),
                )
            ),
            types.ResourceLink(uri="https://example.com/doc", name="doc", description="A document"),
        ]

    @srv.tool()
    async def slow(seconds: float) -> str:
        """Sleep, to exercise call timeouts."""
        state.calls.append("slow")
        state.slow_started.set()
        try:
            await anyio.sleep(seconds)
        except anyio.get_cancelled_exc_class():
            state.cancelled.set()
            raise
        return "done"

    @srv.tool()
    async def progress(steps: int, delay: float, ctx: Context) -> str:
        """Report progress `steps` times, `delay` seconds apart."""
        for i in range(steps):
            await anyio.sleep(delay)
            await ctx.report_progress(i + 1, steps, f"step {i + 1}")
        return "finished"

    @srv.tool()
    def big(n: int) -> str:
        """Return n characters."""
        return "x" * n

    @srv.tool()
    async def grow(ctx: Context) -> str:
        """Add the tool `late` and announce the change."""

        def late() -> str:
            """Added at run time."""
            return "late"

        srv.add_tool(late, name="late")
        # Modern (2026-07-28) clients hear it on their listen stream, handshake-era ones as a
        # notification on the session.
        await ctx.notify_tools_changed()
        if ctx.session is not None:
            # A 2026-07-28 session has no standing stream for this; only the listen path applies.
            with suppress(Exception):
                await ctx.session.send_tool_list_changed()
        return "grown"

    @srv.tool()
    def visits(ctx: Context) -> int:
        """How many times this MCP session called visits (server-side session state)."""
        key = str((ctx.headers or {}).get("mcp-session-id", ""))
        state.visits[key] = state.visits.get(key, 0) + 1
        return state.visits[key]

    @srv.tool()
    def header(name: str, ctx: Context) -> str:
        """Return the value of a request header."""
        headers = ctx.headers or {}
        return str(headers.get(name.lower(), ""))

    return srv


def paginated_server(pages: int = 3, per_page: int = 2) -> Server[Any]:
    """A low-level server whose tools/list needs `pages` requests."""
    all_tools = [
        types.Tool(
            name=f"t{i}", description=f"tool {i}", input_schema={"type": "object", "properties": {}}
        )
        for i in range(pages * per_page)
    ]

    async def list_tools(
        ctx: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        start = int(params.cursor) if params is not None and params.cursor else 0
        end = start + per_page
        return types.ListToolsResult(
            tools=all_tools[start:end], next_cursor=str(end) if end < len(all_tools) else None
        )

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        return types.CallToolResult(content=[types.TextContent(text=f"called {params.name}")])

    return Server("paged", on_list_tools=list_tools, on_call_tool=call_tool)


class RequireHeader:
    """ASGI middleware: 401 unless the request carries `header: value` (checked by the server)."""

    def __init__(self, app: ASGIApp, header: str, value: str) -> None:
        self.app = app
        self.header = header.lower().encode()
        self.value = value.encode()
        self.seen: list[bytes | None] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        got = dict(scope["headers"]).get(self.header)
        self.seen.append(got)
        if got != self.value:
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [(b"content-type", b"text/plain")],
                }
            )
            await send({"type": "http.response.body", "body": b"unauthorized"})
            return
        await self.app(scope, receive, send)


class IdentityGate:
    """ASGI middleware for a server that receives its callers' identity: 401 to the users
    (X-Chatd-User-Id) and bearer tokens in `refused`, and every request counted per user, so a
    test sees how many attempts each caller cost the server."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.refused: set[str] = set()
        self.attempts: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        user = headers.get(b"x-chatd-user-id", b"").decode()
        token = headers.get(b"authorization", b"").decode().removeprefix("Bearer ")
        self.attempts[user] = self.attempts.get(user, 0) + 1
        if user in self.refused or token in self.refused:
            await send({"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"unauthorized"})
            return
        await self.app(scope, receive, send)


class SessionCounter:
    """ASGI middleware counting what a pool must save: MCP sessions started (a response that
    hands out a new Mcp-Session-Id) and every request. With `legacy_only` it refuses 2026-07-28
    requests (HTTP 400), so clients fall back to the handshake era, where sessions exist."""

    def __init__(self, app: ASGIApp, *, legacy_only: bool = False) -> None:
        self.app = app
        self.legacy_only = legacy_only
        self.sessions = 0
        self.requests = 0
        self.session_ids: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.requests += 1
        headers = dict(scope["headers"])
        version = headers.get(b"mcp-protocol-version", b"").decode()
        if self.legacy_only and version and version not in HANDSHAKE_PROTOCOL_VERSIONS:
            await send({"type": "http.response.start", "status": 400, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"handshake-era protocol versions only"})
            return
        asked_for_one = b"mcp-session-id" in headers

        async def counting_send(message: Any) -> None:
            if message["type"] == "http.response.start" and not asked_for_one:
                for name, value in message.get("headers", []):
                    if name.lower() == b"mcp-session-id":
                        self.sessions += 1
                        self.session_ids.append(value.decode())
            await send(message)

        await self.app(scope, receive, counting_send)


async def read_body(receive: Receive) -> tuple[bytes, Receive]:
    """Read a request's whole body (for a middleware to look at), and a `receive` that hands the
    app the same body again, then whatever the connection says next (a disconnect)."""
    chunks: list[bytes] = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body = b"".join(chunks)
    replayed = False

    async def replay() -> Any:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


class ScopeGate:
    """ASGI middleware: tools/call needs more scope than any token has (403 insufficient_scope
    naming `scope`, RFC 6750 §3.1); everything else passes."""

    def __init__(self, app: ASGIApp, scope: str) -> None:
        self.app = app
        self.scope = scope

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body, replay = await read_body(receive)
        if b'"tools/call"' in body:
            challenge = f'Bearer error="insufficient_scope", scope="{self.scope}"'.encode()
            await send({"type": "http.response.start", "status": 403, "headers": [(b"www-authenticate", challenge), (b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"insufficient scope"})
            return
        await self.app(scope, replay, send)


class SessionLostMidCall:
    """ASGI middleware: the session is lost while two calls share it. `delete_note` runs, but
    its answer is held; `echo` then gets the 404 of a lost session; only after that does the
    held answer fail (HTTP 500), so the first call fails on a connection whose session is lost
    though it was sent (and ran) before. Once; everything after passes."""

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state
        self.lost = threading.Event()
        self.done = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.done or scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body, replay = await read_body(receive)
        if b'"tools/call"' in body and b'"echo"' in body and not self.lost.is_set():
            while not self.state.deleted:  # noqa: ASYNC110 - the other call has run (a list the tool fills)
                await anyio.sleep(0.01)
            error = b'{"jsonrpc": "2.0", "id": null, "error": {"code": -32600, "message": "Session not found"}}'
            await send({"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": error})
            self.lost.set()
            return
        if b'"tools/call"' in body and b'"delete_note"' in body:
            answered = False

            async def held(message: Any) -> None:
                nonlocal answered
                if answered:
                    return
                answered = True
                while not self.lost.is_set():  # noqa: ASYNC110 - a threading.Event, set in this loop
                    await anyio.sleep(0.01)
                self.done = True
                await send({"type": "http.response.start", "status": 500, "headers": [(b"content-type", b"text/plain")]})
                await send({"type": "http.response.body", "body": b"the answer was lost"})

            await self.app(scope, replay, held)
            return
        await self.app(scope, replay, send)


async def failing_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers every request with HTTP 503 (a server that is down behind a proxy)."""
    if scope["type"] == "lifespan":
        await garbage_app(scope, receive, send)
        return
    await send({"type": "http.response.start", "status": 503, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"down"})


async def garbage_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers every request with 200 and a body that is not JSON-RPC."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": b"<html>this is not json</html>"})


@dataclass
class RunningServer:
    url: str
    port: int


@contextmanager
def serve(app: ASGIApp, path: str = "/mcp", port: int = 0) -> Iterator[RunningServer]:
    """Run an ASGI app with uvicorn on 127.0.0.1 in a background thread (own event loop);
    `port` reuses a port (a server restarted at the same address)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    started = threading.Event()

    def run() -> None:
        # uvicorn's `started` flag is set inside its loop; signal through an event, not polling.
        original = server.startup

        async def startup(sockets: list[socket.socket] | None = None) -> None:
            await original(sockets=sockets)
            started.set()

        server.startup = startup  # type: ignore[method-assign]
        server.run(sockets=[sock])

    thread = threading.Thread(target=run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    if not started.wait(10):
        raise RuntimeError("test server did not start")
    try:
        yield RunningServer(url=f"http://127.0.0.1:{port}{path}", port=port)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@dataclass
class SilentListener:
    port: int
    accepted: threading.Event


@contextmanager
def silent_listener() -> Iterator[SilentListener]:
    """A TCP port that accepts connections but never answers: a hanging server."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    accepted = threading.Event()
    held: list[socket.socket] = []

    def accept_forever() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return  # the listener was closed
            held.append(conn)
            accepted.set()

    thread = threading.Thread(target=accept_forever, daemon=True)
    thread.start()
    try:
        yield SilentListener(sock.getsockname()[1], accepted)
    finally:
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        thread.join(5)
        for conn in held:
            conn.close()


def free_port() -> int:
    """A port nothing listens on (bound then released), for connection-refused tests."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":  # stdio mode: `python mcp_test_servers.py [pidfile]`
    if len(sys.argv) > 1:
        import os

        # One line per start: a test counts the processes a client started.
        with open(sys.argv[1], "a") as f:
            f.write(f"{os.getpid()}\n")
    stdio_server = build_server()

    @stdio_server.tool()
    def getenv(name: str) -> str:
        """The value of an environment variable of this process ('' when unset)."""
        import os

        return os.environ.get(name, "")

    stdio_server.run("stdio")
