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
import contextvars
import logging
import math
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import IO, Any, Literal

import anyio
import httpx2
import mcp_types as types
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp import Client
from mcp.client.auth.utils import extract_scope_from_www_auth
from mcp.client.extension import advertise
from mcp.client.session import IncomingMessage
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

import chatd
from chatd import metrics
from chatd.domain.actions import ActionKind, ActionRequest, Answer, Decision
from chatd.domain.mcp import McpServerConfig
from chatd.mcp import apps
from chatd.mcp.config import redact_text, redact_url
from chatd.mcp.errors import McpAuthError, McpCallError, McpConnectError, McpSessionLost

log = logging.getLogger(__name__)

ProgressFn = Callable[[float, float | None, str | None], Awaitable[None]]
# Asks the chat's user on behalf of a server's elicitation and waits (bounded) for the answer.
ElicitFn = Callable[[ActionRequest], Awaitable[Answer]]

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
    future: asyncio.Future[Any]
    scope: anyio.CancelScope | None = None
    abandoned: bool = False
    # "ping" (a pool's health check) and "relist" (a listing past its ttlMs) use the same queue
    # as calls: only the owner task may touch the session.
    kind: Literal["call", "ping", "relist", "read"] = "call"
    # The server answered this request's own POST with 404 to the session: it never ran, so it
    # may be sent again on a new session. Per request: when calls share a connection, the
    # session being lost says nothing of a call that was already sent (it may have run).
    unprocessed: bool = False
    # Who answers the server's elicitations during this call (its chat's user).
    elicit: ElicitFn | None = None
    # A 2026-07-28 server's question may end the call (`InputAsked`) instead of being asked
    # inside it: the caller stores it and calls again with the answer (`input_responses`,
    # `request_state`), on any replica, after any restart.
    suspend: bool = False
    input_responses: types.InputResponses | None = None
    request_state: str | None = None


# The call a task serves: the SDK posts a request in a task that carries the sending call's
# context, so a 404 to the session can be told apart per request, and a 2026-07-28 server's
# `input_required` is answered inside the call's own task, so the elicitation it brings belongs
# to that call.
_serving: contextvars.ContextVar[_CallRequest | None] = contextvars.ContextVar("mcp_call_served", default=None)


@dataclass(frozen=True)
class InputAsked:
    """A 2026-07-28 server's `input_required` answered by ending the call: one form (or page) to
    put to the chat's user, and what the call needs to be sent again with the answer."""

    request: ActionRequest
    # The key of the server's input request, which the answer is sent under.
    key: str
    # The server's opaque `requestState`, echoed byte for byte with the answer (never logged).
    request_state: str | None = field(repr=False)

    def resume_state(self) -> dict[str, Any]:
        return {"key": self.key, "request_state": self.request_state}


def answer_responses(state: dict[str, Any], answer: Answer, schema: dict[str, Any] | None) -> tuple[types.InputResponses, str | None]:
    """The `inputResponses` and `requestState` that carry a stored question's answer back to
    the server that asked it (`InputAsked.resume_state`)."""
    return {str(state["key"]): elicit_result(answer, schema)}, state.get("request_state")


def elicit_result(answer: Answer, schema: dict[str, Any] | None) -> types.ElicitResult:
    """The user's answer as the server reads it (a timeout is the server's `cancel`)."""
    if answer.decision is Decision.ACCEPT:
        if schema is None:
            return types.ElicitResult(action="accept")
        content = answer.content if isinstance(answer.content, dict) else {}
        return types.ElicitResult(action="accept", content=with_defaults(content, schema))
    return types.ElicitResult(action="decline" if answer.decision is Decision.DECLINE else "cancel")


def ask_of(params: types.ElicitRequestParams, slug: str) -> ActionRequest:
    if isinstance(params, types.ElicitRequestURLParams):
        return ActionRequest(ActionKind.ELICITATION, message=params.message, url=params.url, server=slug)
    return ActionRequest(ActionKind.ELICITATION, message=params.message, schema=dict(params.requested_schema), server=slug)


class _Asked(Exception):
    """Raised through the SDK's call to end it with the server's question (`InputAsked`)."""

    def __init__(self, asked: InputAsked) -> None:
        super().__init__("input required")
        self.asked = asked


class _Client(Client):
    """The SDK's client, except that a 2026-07-28 `input_required` with one form (or page) for a
    call that may end by asking (`_CallRequest.suspend`) ends the call instead of being answered
    inside it: a person's answer can take hours, and the question must outlive this process.
    Anything else (several questions at once, sampling, roots) the SDK answers in the call."""

    slug = ""

    async def _drive_input_required(self, first: Any, retry: Any) -> Any:
        served = _serving.get()
        if isinstance(first, types.InputRequiredResult) and served is not None and served.suspend:
            requests = first.input_requests or {}
            if len(requests) == 1:
                [(key, request)] = requests.items()
                if isinstance(request, types.ElicitRequest):
                    raise _Asked(InputAsked(ask_of(request.params, self.slug), key, first.request_state))
        return await super()._drive_input_required(first, retry)


@dataclass
class ListedTools:
    tools: list[types.Tool] = field(default_factory=list)
    version: int = 0
    # time.monotonic() after which a 2026-07-28 server's listing is stale (its ttlMs); None for
    # servers that announce changes instead (the listing holds until tools/list_changed).
    expires_at: float | None = None
    # What the client derived from each tool (schema checks), kept as long as the listing is.
    prepared: dict[str, tuple[types.Tool, Any]] = field(default_factory=dict)


def with_defaults(content: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """An accepted form's content with the schema's defaults for the fields it leaves out
    (SEP-1034: the client applies them; a person sends a pre-filled form as it is), and only
    the fields the form asked for: a client's extra keys are not the server's to receive."""
    properties = schema.get("properties")
    out = {k: v for k, v in content.items() if k in properties} if isinstance(properties, dict) else dict(content)
    if isinstance(properties, dict):
        for name, prop in properties.items():
            if name not in out and isinstance(prop, dict) and "default" in prop:
                out[name] = prop["default"]
    return out


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
        self.scope_challenge: str | None = None
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
        # The server answered 404 to our session id (it restarted or expired the session): the
        # spec says start a new session; a pool replaces this connection.
        self.session_lost = False
        # The transport's read side ended while we were not closing: a stdio server's process
        # exited, an SSE stream was closed for good. The SDK keeps the session object and
        # answers every later request "Connection closed"; we end the connection instead.
        self.transport_ended = False
        # A call failed below the tool (transport, timeout, protocol) since the last health
        # check: a pool checks the connection before it lends it again.
        self.suspect = False

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, context: contextvars.Context | None = None) -> None:
        """Spawn the owner task; `context` lets a pool keep a turn's log context (chat id) out of
        a connection that outlives the turn."""
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self._task = loop.create_task(self._run(), name=f"mcp:{self.config.slug}", context=context)

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
        return (
            self._task is not None and not self._task.done() and not self._closing
            and not self.session_lost and not self.transport_ended
        )

    def listing_expired(self) -> bool:
        """A 2026-07-28 server's tool list past its ttlMs (re-read it before use)."""
        return self.listing.expires_at is not None and self.listing.expires_at <= time.monotonic()

    @property
    def connected(self) -> bool:
        """Ready (tools listed) and still alive."""
        return self.alive and self._ready is not None and self._ready.done() and self._ready.exception() is None

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
        elicit: ElicitFn | None = None,
    ) -> types.CallToolResult:
        result = await self.call_or_ask(name, arguments, call_timeout=call_timeout, on_progress=on_progress, elicit=elicit)
        # Without `suspend` a server's question is asked inside the call: it always ends in a result.
        assert isinstance(result, types.CallToolResult)
        return result

    async def call_or_ask(
        self,
        name: str,
        arguments: dict[str, Any],
        *,
        call_timeout: float,
        on_progress: ProgressFn | None = None,
        elicit: ElicitFn | None = None,
        suspend: bool = False,
        input_responses: types.InputResponses | None = None,
        request_state: str | None = None,
    ) -> types.CallToolResult | InputAsked:
        """`call`, except that with `suspend` a 2026-07-28 server's question may come back as
        `InputAsked` (the call is over); `input_responses` and `request_state` send a stored
        question's answer with the call made again."""
        result: types.CallToolResult | InputAsked = await self._submit(
            _CallRequest(
                name, arguments, call_timeout, on_progress, asyncio.get_running_loop().create_future(), elicit=elicit,
                suspend=suspend, input_responses=input_responses, request_state=request_state,
            )
        )  # fmt: skip
        return result

    async def read_resource(self, uri: str, *, timeout: float) -> types.ReadResourceResult:
        """resources/read (an MCP App's view), through the owner task like a call."""
        result: types.ReadResourceResult = await self._submit(
            _CallRequest(uri, {}, timeout, None, asyncio.get_running_loop().create_future(), kind="read")
        )
        return result

    async def ping(self, timeout: float) -> None:
        """A health check: raises McpCallError when the server does not answer a ping in time."""
        await self._submit(_CallRequest("ping", {}, timeout, None, asyncio.get_running_loop().create_future(), kind="ping"))
        self.suspect = False

    async def refresh_tools(self, timeout: float) -> None:
        """Re-read the tool list now (a 2026-07-28 listing past its ttlMs)."""
        await self._submit(_CallRequest("relist", {}, timeout, None, asyncio.get_running_loop().create_future(), kind="relist"))

    async def _submit(self, request: _CallRequest) -> Any:
        if not self.alive:
            raise self._dead_error()
        future = request.future
        self._pending.add(request)
        try:
            self._send.send_nowait(request)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._pending.discard(request)
            raise self._dead_error() from None
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
            self._dead_reason = reason if error is not None or self._dead_reason is None else self._dead_reason
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
        client = _Client(
            _watch_end(transport, self._transport_ended),
            mode="auto",
            cache=None,  # tool lists must be re-read on list_changed, never served stale
            message_handler=self._on_message,
            # Declares form and URL elicitation; answered by the user of the chat whose call asks.
            elicitation_callback=self._on_elicit,
            client_info=types.Implementation(name="chatd", version=chatd.__version__),
            # MCP Apps: tools may name a ui:// view, which the web UI shows (mcp/apps.py).
            extensions=[advertise(apps.EXTENSION_ID, apps.CAPABILITY)],
        )
        client.slug = cfg.slug
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
                # RFC 6750: the challenge may name the scopes needed (a 403 insufficient_scope).
                self.scope_challenge = extract_scope_from_www_auth(response) or self.scope_challenge
            elif response.status_code == 404 and response.request.headers.get("mcp-session-id"):
                # The server no longer knows our session (restarted, or expired it): this request
                # was not processed, and every later one would get the same answer. The SDK posts
                # in a task that carries the sending call's context, so `_serving` names the call
                # this answer is for (none for a ping, a listing or an unattributable request).
                self.session_lost = True
                if (served := _serving.get()) is not None:
                    served.unprocessed = True

        return httpx2.AsyncClient(
            headers=headers,
            timeout=timeout or _HTTP_TIMEOUT,
            auth=auth,
            event_hooks={"response": [on_response]},
        )

    async def _serve(self, client: Client) -> None:
        async with anyio.create_task_group() as tg:
            caps = client.server_capabilities
            # A notice is honoured even from a server that did not declare listChanged (the
            # SDK's own servers send them without): a kept session must not serve a stale list.
            tg.start_soon(self._watch_tool_changes, client)
            if caps.tools is not None and caps.tools.list_changed and client.protocol_version in MODERN_PROTOCOL_VERSIONS:
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

                result: Any = None
                if request.kind == "ping" and client.protocol_version in MODERN_PROTOCOL_VERSIONS:
                    # 2026-07-28 has no ping and no session to lose: a fresh tool list proves
                    # the server answers (and keeps the list current).
                    await self._relist(client, initial=False)
                elif request.kind == "ping":
                    await client.session.send_ping()
                elif request.kind == "relist":
                    await self._relist(client, initial=False)
                elif request.kind == "read":
                    result = await client.read_resource(request.name)
                else:
                    served = _serving.set(request)
                    try:
                        result = await client.call_tool(
                            request.name, request.arguments, progress_callback=on_progress,
                            input_responses=request.input_responses, request_state=request.request_state,
                        )  # fmt: skip
                    except _Asked as asked:
                        result = asked.asked
                    finally:
                        _serving.reset(served)
            if request.future.done():
                return
            if scope.cancelled_caught:
                self.suspect = True
                what = "a result or progress (the server's call_timeout_s setting)" if request.kind == "call" else "an answer"
                request.future.set_exception(McpCallError(f"timed out after {request.timeout:g}s without {what}"))
            else:
                request.future.set_result(result)
        except Exception as exc:  # one call's failure is its caller's error, not the connection's
            self.suspect = True
            if not request.future.done():
                # Only this request's own 404 makes it safe to resend: another call's may have
                # lost the session after this one was sent and ran.
                error = McpSessionLost(self._describe(exc)) if request.unprocessed else McpCallError(self._describe(exc))
                request.future.set_exception(error)
        finally:
            # The owner is being cancelled (close or a dead transport): answer the caller.
            if not request.future.done():
                request.future.set_exception(
                    McpCallError(self._dead_reason or "the MCP connection closed")
                )

    async def _on_elicit(self, context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        """A server asks for input during a call. A 2026-07-28 `input_required` arrives in the
        call's own task; a 2025-11-25 `elicitation/create` on the session, where the call it is
        for is only known when one call is in flight (several from the pool's turns at once: nobody
        can be sure whose it is, so it is declined rather than put to the wrong person)."""
        request = _serving.get()
        if request is None:
            calls = [r for r in self._pending if r.kind == "call" and not r.future.done()]
            request = calls[0] if len(calls) == 1 else None
        if request is None or request.elicit is None:
            return types.ElicitResult(action="decline")
        ask = ask_of(params, self.config.slug)
        scope = request.scope
        if scope is not None:
            # A person is being asked: the call's silence timeout does not run meanwhile.
            scope.deadline = math.inf
        waiting = asyncio.ensure_future(request.elicit(ask))
        try:
            await asyncio.wait({waiting, request.future}, return_when=asyncio.FIRST_COMPLETED)
            if not waiting.done():
                # The call ended meanwhile (its turn was interrupted, or it failed): stop asking.
                waiting.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await waiting
                return types.ElicitResult(action="cancel")
            answer = waiting.result()
        except Exception:
            log.warning("asking for MCP server %s's elicitation failed", self.config.slug, exc_info=True)
            return types.ElicitResult(action="cancel")
        finally:
            if not waiting.done():
                # This task was cancelled (the turn was interrupted and cancelled the call's
                # scope): the question ends with it, now, not at the elicitation timeout. Not
                # awaited: a cancelled scope would cancel that wait too; the asker's own cleanup
                # (the question marked cancelled) runs in its task.
                waiting.cancel()
            if scope is not None:
                scope.deadline = anyio.current_time() + request.timeout
        return elicit_result(answer, ask.schema)

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
        ttl_ms: int | None = None
        for _ in range(MAX_LIST_PAGES):
            page = await client.list_tools(cursor=cursor)
            tools.extend(page.tools)
            ttl_ms = page.ttl_ms if ttl_ms is None else min(ttl_ms, page.ttl_ms)
            cursor = page.next_cursor
            if not cursor or cursor in seen:
                break
            seen.add(cursor)
        else:
            log.warning(
                "MCP server %s: tool list cut at %d pages", self.config.slug, MAX_LIST_PAGES
            )
        expires_at = None
        if client.protocol_version in MODERN_PROTOCOL_VERSIONS:
            # A 2026-07-28 listing says how long it may be cached (0 = re-read before each use).
            expires_at = time.monotonic() + (ttl_ms or 0) / 1000
        listed = filter_tools(self.config, tools)
        if not initial and listed == self.listing.tools:
            self.listing.expires_at = expires_at  # re-read (a TTL or a health check): unchanged
            return
        self.listing = ListedTools(listed, self.listing.version + 1, expires_at)
        if not initial and self._on_tools_changed is not None:
            self._on_tools_changed(self)

    # -- errors ----------------------------------------------------------------------------

    def _connect_timeout_message(self) -> str:
        # Name the knob: a slow-starting server (npx, a cold container) needs a larger budget.
        return f"timed out after {self._connect_timeout:g}s (the server's connect_timeout_s setting)"

    def _transport_ended(self) -> None:
        if self._closing or self.transport_ended:
            return
        self.transport_ended = True
        self._dead_reason = "the server closed the connection" + (
            " (its process exited)" if self.config.transport == "stdio" else ""
        )
        log.warning("MCP server %s: %s", self.config.slug, self._dead_reason)
        # Ends the owner's serve loop: it leaves the session (a stdio process is reaped) and
        # answers anything still queued.
        self._send.close()

    def _dead_error(self) -> McpCallError:
        if self.session_lost:
            return McpSessionLost("the server ended the MCP session (it restarted or expired it)")
        return McpCallError(self._dead_reason or "the MCP connection is closed")

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


class _WatchedRead:
    """The transport's read stream, telling us when it ends (the SDK's dispatcher only marks
    itself closed)."""

    def __init__(self, inner: Any, on_end: Callable[[], None]) -> None:
        self._inner = inner
        self._on_end = on_end

    @property
    def last_context(self) -> Any:
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> Any:
        try:
            return await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            self._on_end()
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> _WatchedRead:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> _WatchedRead:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


@contextlib.asynccontextmanager
async def _watch_end(transport: Any, on_end: Callable[[], None]) -> AsyncIterator[tuple[Any, Any]]:
    async with transport as (read, write):
        yield _WatchedRead(read, on_end), write
