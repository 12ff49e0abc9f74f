"""One live connection to one MCP server, owned by a single task.

The SDK's client contexts contain anyio cancel scopes, which must be entered and exited by the
same task; a server dying inside the context cancels whatever task is in it. So each connection
has exactly one owner task: it opens the transport and session, lists the tools, then serves
calls that other tasks submit through a queue (each call in a child task, so calls run
concurrently), and finally closes the session. Callers wait on a future and always get either a
result or a clean `McpCallError`, never the owner's cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import tempfile
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import IO, Any

import anyio
import httpx2
import mcp_types as types
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp import Client
from mcp.client.session import IncomingMessage
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

import chatd
from chatd import metrics
from chatd.domain.mcp import McpServerConfig
from chatd.mcp.config import redact_text, redact_url
from chatd.mcp.errors import McpAuthError, McpCallError, McpConnectError

log = logging.getLogger(__name__)

ProgressFn = Callable[[float, float | None, str | None], Awaitable[None]]

# Bounds the graceful part of a close (DELETE of the HTTP session, stdin close of a stdio
# server); past it every remaining wait in the owner is cancelled.
CLOSE_GRACE_SECONDS = 3.0
# A server paginating forever must not hang the connect; 100 pages is far beyond real servers.
MAX_LIST_PAGES = 100
# Unlike web clients, a daemon never needs an HTTP read to last longer than a tool call; calls
# are bounded by our own per-call timer, so the transport read timeout is generous.
_HTTP_TIMEOUT = httpx2.Timeout(30.0, read=300.0)


@dataclass(eq=False)
class _CallRequest:
    name: str
    arguments: dict[str, Any]
    timeout: float
    on_progress: ProgressFn | None
    future: asyncio.Future[types.CallToolResult]
    scope: anyio.CancelScope | None = None
    abandoned: bool = False


@dataclass
class ListedTools:
    tools: list[types.Tool] = field(default_factory=list)
    version: int = 0


def filter_tools(config: McpServerConfig, tools: list[types.Tool]) -> list[types.Tool]:
    """Allow list (if non-empty) then deny list, by exact match on the server's tool name."""
    if config.tool_allow_list:
        allowed = set(config.tool_allow_list)
        tools = [t for t in tools if t.name in allowed]
    if config.tool_deny_list:
        denied = set(config.tool_deny_list)
        tools = [t for t in tools if t.name not in denied]
    return tools


class ServerConnection:
    """A connection to one server; start() spawns the owner task, wait_ready() awaits the listing."""

    def __init__(
        self,
        config: McpServerConfig,
        headers: dict[str, str],
        *,
        connect_timeout: float,
        on_tools_changed: Callable[[ServerConnection], None] | None = None,
    ) -> None:
        self.config = config
        self._headers = headers
        self._connect_timeout = connect_timeout
        self._on_tools_changed = on_tools_changed
        self.listing = ListedTools()
        self.instructions: str | None = None
        self.server_name: str | None = None
        self.protocol_version: str | None = None
        # Set by the httpx2 response hook: the SDK reports a 401 as a nested exception group
        # with the status lost, so the hook is how a connect failure is told apart as auth.
        self.http_error_status: int | None = None
        self._send: MemoryObjectSendStream[_CallRequest]
        self._receive: MemoryObjectReceiveStream[_CallRequest]
        self._send, self._receive = anyio.create_memory_object_stream[_CallRequest](math.inf)
        self._pending: set[_CallRequest] = set()
        self._ready: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._scope: anyio.CancelScope | None = None
        self._closing = False
        self._dead_reason: str | None = None
        self._relist_wanted = anyio.Event()
        self._stderr: IO[str] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self._task = loop.create_task(self._run(), name=f"mcp:{self.config.slug}")

    async def wait_ready(self) -> None:
        """Wait until the tools are listed; raise McpConnectError if that failed or timed out."""
        assert self._ready is not None and self._task is not None, "start() first"
        # The owner enforces the budget itself; the margin only guards against a wait in the
        # SDK that ignores cancellation, so a server can never hold a turn much longer.
        try:
            await asyncio.wait_for(
                asyncio.shield(self._ready), self._connect_timeout + CLOSE_GRACE_SECONDS + 2
            )
        except TimeoutError:
            await self.aclose()
            raise McpConnectError(self._connect_timeout_message()) from None

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done() and not self._closing

    async def aclose(self) -> None:
        """End the session and wait for the owner task; safe to call more than once."""
        self._closing = True
        self._send.close()
        task = self._task
        if task is None:
            return
        scope = self._scope
        if scope is not None:
            if self._ready is not None and not self._ready.done():
                scope.cancel()  # still connecting: nothing to close gracefully
            else:
                scope.deadline = min(scope.deadline, anyio.current_time() + CLOSE_GRACE_SECONDS)
        elif not task.done():
            task.cancel()  # the owner has not started running yet
        # A cancelled caller (the turn cancelled during cleanup) still waits for the owner, which
        # the deadline above bounds; the cancellation then escalates to a hard close and is
        # re-raised once nothing is left running.
        cancelled = False
        while not task.done():
            try:
                await asyncio.wait({task})
            except asyncio.CancelledError:
                cancelled = True
                if self._scope is not None:
                    self._scope.cancel()
                else:
                    task.cancel()
        if cancelled:
            raise asyncio.CancelledError

    # -- calls -----------------------------------------------------------------------------

    async def call(
        self,
        name: str,
        arguments: dict[str, Any],
        *,
        call_timeout: float,
        on_progress: ProgressFn | None = None,
    ) -> types.CallToolResult:
        if not self.alive:
            raise McpCallError(self._dead_reason or "the MCP connection is closed")
        future: asyncio.Future[types.CallToolResult] = asyncio.get_running_loop().create_future()
        request = _CallRequest(name, arguments, call_timeout, on_progress, future)
        self._pending.add(request)
        try:
            self._send.send_nowait(request)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._pending.discard(request)
            raise McpCallError(self._dead_reason or "the MCP connection is closed") from None
        try:
            return await future
        except asyncio.CancelledError:
            # The caller (the chat turn) was cancelled: stop the server-side work too.
            request.abandoned = True
            if request.scope is not None:
                request.scope.cancel()
            raise
        finally:
            self._pending.discard(request)

    # -- owner task ------------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._ready is not None
        error: BaseException | None = None
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                scope.deadline = anyio.current_time() + self._connect_timeout
                async with AsyncExitStack() as stack:
                    client = await self._open(stack)
                    await self._relist(client, initial=True)
                    # Connected: from here on only close() bounds the owner's life.
                    scope.deadline = math.inf
                    if not self._ready.done():
                        self._ready.set_result(None)
                    sessions = metrics.MCP_SESSIONS.labels(self.config.slug)
                    sessions.inc()
                    try:
                        await self._serve(client)
                    finally:
                        sessions.dec()
            if scope.cancelled_caught and not self._ready.done():
                error = McpConnectError(self._connect_timeout_message())
        except Exception as exc:  # isolate this server: any failure becomes its error
            error = exc
        finally:
            self._closing = True
            reason = self._describe(error) if error is not None else "the MCP connection is closed"
            if error is not None and self._ready.done():
                log.warning(
                    "MCP server %s (%s) connection lost: %s",
                    self.config.slug,
                    redact_url(self.config.url),
                    reason,
                )
            self._dead_reason = reason
            if not self._ready.done():
                self._ready.set_exception(self._connect_error(error, reason))
                # Mark it retrieved: after a timeout nobody may await it, and asyncio would log it.
                self._ready.exception()
            self._fail_pending(reason)
            if self._stderr is not None:
                self._stderr.close()

    async def _open(self, stack: AsyncExitStack) -> Client:
        cfg = self.config
        transport: Any
        if cfg.transport == "stdio":
            if not cfg.command:
                raise McpConnectError("stdio transport needs a command")
            # The server's stderr goes to a temporary file so a failed start can be explained.
            self._stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")  # noqa: SIM115
            params = StdioServerParameters(
                command=cfg.command, args=list(cfg.args), env=dict(cfg.env) or None
            )
            transport = stdio_client(params, errlog=self._stderr)
        elif cfg.transport == "sse":
            transport = sse_client(
                cfg.url, headers=self._headers, httpx_client_factory=self._http_client
            )
        elif cfg.transport == "streamable_http":
            http = await stack.enter_async_context(self._http_client(headers=self._headers))
            transport = streamable_http_client(cfg.url, http_client=http)
        else:
            raise McpConnectError(f"unsupported transport {cfg.transport!r}")
        client = Client(
            transport,
            mode="auto",
            cache=None,  # tool lists must be re-read on list_changed, never served stale
            message_handler=self._on_message,
            client_info=types.Implementation(name="chatd", version=chatd.__version__),
        )
        await stack.enter_async_context(client)
        self.protocol_version = client.protocol_version
        self.instructions = client.instructions
        info = client.server_info
        self.server_name = info.name if info is not None else None
        return client

    def _http_client(
        self,
        headers: dict[str, str] | None = None,
        timeout: httpx2.Timeout | None = None,
        auth: httpx2.Auth | None = None,
    ) -> httpx2.AsyncClient:
        async def on_response(response: httpx2.Response) -> None:
            if response.status_code in (401, 403):
                self.http_error_status = response.status_code

        return httpx2.AsyncClient(
            headers=headers,
            timeout=timeout or _HTTP_TIMEOUT,
            auth=auth,
            event_hooks={"response": [on_response]},
        )

    async def _serve(self, client: Client) -> None:
        async with anyio.create_task_group() as tg:
            caps = client.server_capabilities
            if caps.tools is not None and caps.tools.list_changed:
                tg.start_soon(self._watch_tool_changes, client)
                if client.protocol_version in MODERN_PROTOCOL_VERSIONS:
                    # 2026-07-28 servers only push list changes on a subscriptions/listen stream.
                    tg.start_soon(self._listen_for_changes, client)
            async for request in self._receive:
                tg.start_soon(self._serve_call, client, request)
            # close(): in-flight calls belong to a finished turn, so they are cancelled.
            tg.cancel_scope.cancel()

    async def _serve_call(self, client: Client, request: _CallRequest) -> None:
        if request.abandoned or request.future.done():
            return
        try:
            with anyio.CancelScope() as scope:
                request.scope = scope
                scope.deadline = anyio.current_time() + request.timeout

                async def on_progress(
                    progress: float, total: float | None, message: str | None
                ) -> None:
                    # Progress proves the server is working: the timeout counts from the last sign.
                    scope.deadline = anyio.current_time() + request.timeout
                    if request.on_progress is not None and not request.future.done():
                        await request.on_progress(progress, total, message)

                result = await client.call_tool(
                    request.name, request.arguments, progress_callback=on_progress
                )
            if request.future.done():
                return
            if scope.cancelled_caught:
                request.future.set_exception(
                    McpCallError(
                        f"timed out after {request.timeout:g}s without a result or progress "
                        "(the server's call_timeout_s setting)"
                    )
                )
            else:
                request.future.set_result(result)
        except Exception as exc:  # one call's failure is its caller's error, not the connection's
            if not request.future.done():
                request.future.set_exception(McpCallError(self._describe(exc)))
        finally:
            # The owner is being cancelled (close or a dead transport): answer the caller.
            if not request.future.done():
                request.future.set_exception(
                    McpCallError(self._dead_reason or "the MCP connection closed")
                )

    async def _on_message(self, message: IncomingMessage) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            self._relist_wanted.set()
        elif isinstance(message, Exception):
            log.debug(
                "MCP server %s transport error: %s", self.config.slug, self._describe(message)
            )

    async def _listen_for_changes(self, client: Client) -> None:
        try:
            async with client.listen(tools_list_changed=True) as subscription:
                async for _event in subscription:
                    self._relist_wanted.set()
        except Exception as exc:  # without the stream we merely miss updates; calls still work
            log.info(
                "MCP server %s: no tool change stream: %s", self.config.slug, self._describe(exc)
            )

    async def _watch_tool_changes(self, client: Client) -> None:
        while True:
            await self._relist_wanted.wait()
            self._relist_wanted = anyio.Event()
            try:
                await self._relist(client, initial=False)
            except Exception as exc:  # keep the old list; a later change notice may succeed
                log.warning(
                    "MCP server %s: re-listing tools failed: %s",
                    self.config.slug,
                    self._describe(exc),
                )

    async def _relist(self, client: Client, *, initial: bool) -> None:
        tools: list[types.Tool] = []
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(MAX_LIST_PAGES):
            page = await client.list_tools(cursor=cursor)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor or cursor in seen:
                break
            seen.add(cursor)
        else:
            log.warning(
                "MCP server %s: tool list cut at %d pages", self.config.slug, MAX_LIST_PAGES
            )
        self.listing = ListedTools(filter_tools(self.config, tools), self.listing.version + 1)
        if not initial and self._on_tools_changed is not None:
            self._on_tools_changed(self)

    # -- errors ----------------------------------------------------------------------------

    def _connect_timeout_message(self) -> str:
        # Name the knob: a slow-starting server (npx, a cold container) needs a larger budget.
        return f"timed out after {self._connect_timeout:g}s (the server's connect_timeout_s setting)"

    def _fail_pending(self, reason: str) -> None:
        with contextlib.suppress(anyio.ClosedResourceError, anyio.EndOfStream, anyio.WouldBlock):
            while True:
                self._pending.add(self._receive.receive_nowait())
        self._receive.close()
        for request in list(self._pending):
            if not request.future.done():
                request.future.set_exception(McpCallError(reason))

    def _connect_error(self, error: BaseException | None, reason: str) -> McpConnectError:
        if isinstance(error, McpConnectError):
            return error
        if self.http_error_status in (401, 403):
            return McpAuthError(
                f"unauthorized (HTTP {self.http_error_status})", self.http_error_status
            )
        return McpConnectError(reason)

    def _describe(self, error: BaseException | None) -> str:
        text = describe_exception(error) if error is not None else "unknown error"
        if self._stderr is not None and isinstance(error, Exception):
            tail = _tail(self._stderr)
            if tail:
                text = f"{text} (stderr: {tail})"
        return redact_text(text, self.config)


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        out: list[BaseException] = []
        for inner in error.exceptions:
            out.extend(_leaves(inner))
        return out
    return [error]


def describe_exception(error: BaseException) -> str:
    """A one-line, human-readable reason from a possibly nested SDK/transport exception."""
    leaves = [
        e
        for e in _leaves(error)
        if not isinstance(e, asyncio.CancelledError | anyio.get_cancelled_exc_class())
    ]
    if not leaves:
        return "cancelled"
    # Prefer the most specific signal: an HTTP status, then an MCP error, then anything.
    for leaf in leaves:
        if isinstance(leaf, httpx2.HTTPStatusError):
            return f"HTTP {leaf.response.status_code} from the server"
    for leaf in leaves:
        if isinstance(leaf, MCPError):
            return f"MCP error {leaf.code}: {leaf.message}"
    leaf = leaves[0]
    if isinstance(leaf, httpx2.ConnectError):
        return f"cannot connect: {leaf}" if str(leaf) else "cannot connect"
    if isinstance(leaf, httpx2.TimeoutException):
        return "the server did not answer in time"
    if isinstance(leaf, TimeoutError):
        return "timed out"
    text = str(leaf)
    return f"{type(leaf).__name__}: {text}" if text else type(leaf).__name__


def _tail(stream: IO[str], limit: int = 500) -> str:
    try:
        stream.flush()
        stream.seek(0)
        data = stream.read()
    except (OSError, ValueError):
        return ""
    return " ".join(data.strip().splitlines()[-5:])[-limit:]
