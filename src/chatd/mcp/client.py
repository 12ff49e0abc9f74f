"""connect_all and the MCP tools it yields: what a turn (and the connection-check endpoint) calls."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import inspect
import json
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import mcp_types as types
from jsonschema import exceptions as jsonschema_exceptions  # type: ignore[import-untyped]
from jsonschema import validators as jsonschema_validators
from jsonschema.protocols import Validator  # type: ignore[import-untyped]

from chatd import metrics
from chatd.domain.actions import Answer
from chatd.domain.mcp import McpAuthType, McpServerConfig
from chatd.domain.parts import McpAppLink, ToolProgressPart
from chatd.domain.tools import Tool, ToolContext, ToolResult
from chatd.mcp import apps
from chatd.mcp.config import OAuthToken, connection_headers, redact_url
from chatd.mcp.connection import InputAsked, ServerConnection, answer_responses
from chatd.mcp.errors import McpAuthError, McpCallError, McpConnectError, McpError, McpSessionLost
from chatd.mcp.naming import SEPARATOR, ToolNamer
from chatd.mcp.pool import Lease, McpPool
from chatd.mcp.results import StoreFile, convert_result

log = logging.getLogger(__name__)

Reauthorize = Callable[[McpServerConfig, OAuthToken | None], Awaitable[OAuthToken | None]]
"""reauthorize(config, rejected_token) -> a fresh token after a 401/403 mid-turn, or None."""

OnServerError = Callable[[McpServerConfig, str], Awaitable[None] | None]
"""on_server_error(config, message): a server was skipped or lost; message is already redacted."""

DEFAULT_CONNECT_TIMEOUT = 10.0
# A stdio server is a process to start: `npx -y …` alone took 25 s with a warm cache.
DEFAULT_STDIO_CONNECT_TIMEOUT = 60.0
DEFAULT_CALL_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class ToolInfo:
    """A discovered tool as the API shows it (`GET /mcp-servers/{id}/tools`)."""

    name: str
    original_name: str
    description: str
    input_schema: dict[str, Any]


def _parameters(schema: dict[str, Any]) -> dict[str, Any]:
    """The tool's input schema as a provider-ready object schema (copied; never shared)."""
    params = copy.deepcopy(schema) if isinstance(schema, dict) else {}
    params.setdefault("type", "object")
    if params.get("type") == "object":
        params.setdefault("properties", {})
    return params


@dataclass(frozen=True, slots=True)
class _Definition:
    description: str
    parameters: dict[str, Any]  # read only: shared by every turn that uses this listing
    validator: Validator | None


def _definition(server: ServerConnection, tool: types.Tool) -> _Definition:
    """The tool as the model and the argument check see it, prepared once per listing: checking
    a schema against its metaschema cost ~2 ms a tool, every turn, once connections were kept."""
    prepared = server.listing.prepared
    if (known := prepared.get(tool.name)) is not None and known[0] is tool:
        return cast(_Definition, known[1])
    parameters = _parameters(tool.input_schema)
    validator: Validator | None = None
    try:
        cls = jsonschema_validators.validator_for(parameters)
        cls.check_schema(parameters)
        validator = cls(parameters)
    except jsonschema_exceptions.SchemaError as exc:
        # A broken schema from the server must not make the tool unusable; the server validates.
        log.warning(
            "MCP server %s: tool %r has an invalid input schema (%s); arguments are not checked",
            server.config.slug,
            tool.name,
            exc.message,
        )
    definition = _Definition(tool.description or tool.title or "", parameters, validator)
    prepared[tool.name] = (tool, definition)
    return definition


class McpTool:
    """One MCP tool exposed to the model as `slug__tool` (or its sanitised form)."""

    def __init__(
        self, owner: McpConnections, server: ServerConnection, tool: types.Tool, name: str
    ) -> None:
        self._owner = owner
        self.server = server
        self.original_name = tool.name
        self._name = name
        self._set_definition(tool)

    def _set_definition(self, tool: types.Tool) -> None:
        definition = _definition(self.server, tool)
        self._description = definition.description
        self._parameters = definition.parameters
        self._validator = definition.validator
        # The server's word that the tool only reads (`readOnlyHint`): an approval policy of
        # `unless_read_only` runs it unasked. A hint, as the spec says; the admin decides to trust it.
        self._read_only = tool.annotations.read_only_hint if tool.annotations is not None else None
        uri = apps.resource_uri(tool)
        self._app = McpAppLink(server_id=str(self.server.config.id), resource_uri=uri, tool=tool.name) if uri else None

    @property
    def name(self) -> str:
        return self._name

    @property
    def description(self) -> str:
        return self._description

    @property
    def parameters(self) -> dict[str, Any]:
        return self._parameters

    @property
    def read_only(self) -> bool | None:
        return self._read_only

    @property
    def server_slug(self) -> str:
        return self.server.config.slug

    def info(self) -> ToolInfo:
        return ToolInfo(
            self._name, self.original_name, self._description, copy.deepcopy(self._parameters)
        )

    async def call(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        if not isinstance(args, dict):
            return ToolResult(
                result="Invalid input: the arguments must be a JSON object.", is_error=True
            )
        if not self._owner.offers(self):
            return ToolResult(
                result=f"The tool {self._name} is no longer offered by its MCP server.",
                is_error=True,
            )
        if (problem := self._check_arguments(args)) is not None:
            return ToolResult(result=problem, is_error=True)

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            if ctx.emit is None:
                return
            part = ToolProgressPart(
                tool_call_id=ctx.tool_call_id,
                tool_name=self._name,
                progress=progress,
                total=total,
                message=message,
            )
            try:
                await ctx.emit(part)
            except Exception:  # progress is decoration; losing one must not fail the call
                log.warning("emitting MCP progress failed", exc_info=True)

        started = time.monotonic()
        timeout = self.server.config.call_timeout_for(self._owner.call_timeout)
        responses, request_state = (None, None)
        if ctx.resume is not None:
            # The answer to the question this call asked before: sent with the call made again.
            r = ctx.resume
            responses, request_state = answer_responses(r.state, Answer(r.decision, content=r.content), r.schema)

        async def call() -> types.CallToolResult | InputAsked:
            return await self.server.call_or_ask(
                self.original_name, args, call_timeout=timeout, on_progress=on_progress, elicit=ctx.ask,
                suspend=ctx.suspend, input_responses=responses, request_state=request_state,
            )  # fmt: skip

        try:
            if not self.server.alive:
                # It died while the turn held it (a stdio process exited, the server restarted):
                # nothing was sent yet, so a fresh connection can take the call.
                await self._owner.reconnect(self.server)
            try:
                result = await call()
            except McpSessionLost:
                # The server answered 404 to the session: it did not run the call. New session, once.
                if await self._owner.reconnect(self.server) is None:
                    raise
                result = await call()
            except McpCallError:
                # A token revoked or expired mid-chat: refresh it once, reconnect, call again.
                if not await self._owner.reauthorize(self.server):
                    raise
                result = await call()
        except McpCallError as exc:
            text = f"The MCP tool call failed: {exc.message}"
            server = self.server
            if server.http_error_status == 403 and server.scope_challenge:
                # A step-up the user must do in a browser: say which scopes, so an admin can add
                # them to the server's OAuth scopes and the user can connect again.
                text += (
                    f" The server requires the OAuth scope(s) {server.scope_challenge!r}, which the user's sign-in "
                    "did not grant: an admin can add them to the server's OAuth scopes, then the user connects again."
                )
            return ToolResult(result=text, is_error=True)
        finally:
            metrics.MCP_CALL_SECONDS.labels(self.server.config.slug).observe(time.monotonic() - started)
        if isinstance(result, InputAsked):
            # The server asks the user before it goes on: the call is over and the turn waits
            # for the answer (`ToolResult.ask`), then calls again with it.
            ask = dataclasses.replace(result.request, resume=result.resume_state(), timeout_s=self._owner.elicitation_timeout)
            return ToolResult(None, ask=ask)
        converted = await convert_result(
            result,
            tool_name=self._name,
            store_file=self._owner.store_file,
            max_chars=self._owner.max_result_chars,
        )
        if self._app is None:
            return converted
        return ToolResult(converted.result, converted.is_error, converted.files, app=self._app)

    def _check_arguments(self, args: dict[str, Any]) -> str | None:
        if self._validator is None:
            return None
        errors = sorted(self._validator.iter_errors(args), key=lambda e: list(e.absolute_path))
        if not errors:
            return None
        lines = []
        for error in errors[:5]:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            lines.append(f"- {where}: {error.message}")
        more = f"\n(and {len(errors) - 5} more)" if len(errors) > 5 else ""
        return (
            f"Invalid arguments for {self._name}; nothing was called. Fix these and call again:\n"
            + "\n".join(lines)
            + more
            + f"\nThe input schema is: {json.dumps(self._parameters, ensure_ascii=False)[:2000]}"
        )


class McpConnections:
    """The servers one turn uses, each a lease on a (pooled) connection. Awaiting the object
    itself (or `close()`) gives the leases back; without a shared pool that closes them."""

    def __init__(
        self,
        *,
        store_file: StoreFile | None,
        call_timeout: float,
        max_result_chars: int | None,
        on_tools_changed: Callable[[], None] | None = None,
        reauthorize: Reauthorize | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        stdio_connect_timeout: float = DEFAULT_STDIO_CONNECT_TIMEOUT,
        identity: tuple[uuid.UUID, uuid.UUID] | None = None,
        pool: McpPool | None = None,
        elicitation_timeout: float | None = None,
    ) -> None:
        self._identity = identity
        # How long a server's question that ended its call (2026-07-28) waits for its answer.
        self.elicitation_timeout = elicitation_timeout
        self._stdio_connect_timeout = stdio_connect_timeout
        self.store_file = store_file
        self._reauthorize = reauthorize
        self._connect_timeout = connect_timeout
        # Without a shared pool, a private one whose connections close with their lease (and
        # which remembers no failures): the per-turn behaviour of the connection check and tests.
        self._own_pool = pool is None
        self._pool = pool if pool is not None else McpPool(idle_ttl=0, retry_initial=0, health_check_after=math.inf)
        self._tokens: dict[uuid.UUID, OAuthToken | None] = {}
        self._locks: dict[uuid.UUID, asyncio.Lock] = {}
        self._on_tools_changed = on_tools_changed
        self.call_timeout = call_timeout
        self.max_result_chars = max_result_chars
        self.servers: list[ServerConnection] = []
        self._leases: dict[uuid.UUID, Lease] = {}
        self._namer = ToolNamer()
        self._tools: dict[uuid.UUID, list[McpTool]] = {}
        # The chat's servers that are not there this turn: slug -> (label, why).
        self.unavailable: dict[str, tuple[str, str]] = {}
        self._closed = False

    def mark_unavailable(self, config: McpServerConfig, reason: str) -> None:
        self.unavailable[config.slug] = (config.label, reason)

    def explain_missing(self, tool_name: str) -> str | None:
        """For a tool the model called that is not offered: the reason, when the name belongs to
        one of the chat's servers that is unavailable this turn (history from earlier turns makes
        models call them)."""
        for slug, (label, reason) in self.unavailable.items():
            if tool_name.startswith(f"{slug}{SEPARATOR}"):
                return (
                    f"The MCP server {label} ({slug}) is unavailable this turn: {reason}. "
                    "Its tools cannot be called now; tell the user if the task needs them."
                )
        return None

    # -- tools -----------------------------------------------------------------------------

    def tools(self) -> list[Tool]:
        """The current MCP tools, server order then tool order (reflects tools/list_changed)."""
        return [t for server in self.servers for t in self._tools.get(server.config.id, [])]

    def offers(self, tool: McpTool) -> bool:
        return any(t is tool for t in self._tools.get(tool.server.config.id, []))

    def _build_tools(self, server: ServerConnection) -> None:
        old = {t.original_name: t for t in self._tools.get(server.config.id, [])}
        tools: list[McpTool] = []
        for listed in server.listing.tools:
            if not apps.for_model(listed):
                continue  # MCP Apps: an app-only tool is callable by its view, never offered to the model
            existing = old.get(listed.name)
            if existing is not None:
                # Same object, so a call the model already chose still resolves.
                existing.server = server
                existing._set_definition(listed)
                tools.append(existing)
            else:
                name = self._namer.assign(server.config.slug, listed.name)
                tools.append(McpTool(self, server, listed, name))
        self._tools[server.config.id] = tools

    def _tools_changed(self, server: ServerConnection) -> None:
        if server in self.servers:
            self._build_tools(server)
            log.info(
                "MCP server %s: tool list changed (%d tools)",
                server.config.slug,
                len(server.listing.tools),
            )
            if self._on_tools_changed is not None:
                self._on_tools_changed()

    async def _lease(self, config: McpServerConfig, token: OAuthToken | None) -> Lease:
        user_id, chat_id = self._identity if self._identity is not None else (None, None)
        return await self._pool.lease(
            config, token, user_id=user_id, chat_id=chat_id,
            connect_timeout=config.connect_timeout_for(self._connect_timeout, self._stdio_connect_timeout),
            on_tools_changed=self._tools_changed,
        )

    def _swap(self, old: ServerConnection, lease: Lease) -> ServerConnection:
        fresh = lease.connection
        self._leases[old.config.id] = lease
        self.servers = [fresh if c is old else c for c in self.servers]
        self._build_tools(fresh)
        return fresh

    async def reconnect(self, server: ServerConnection) -> ServerConnection | None:
        """The connection died under the turn (process exited, session ended by the server): a
        fresh one for the rest of the turn, or None when the server cannot be reached now."""
        config = server.config
        async with self._locks.setdefault(config.id, asyncio.Lock()):
            current = next((c for c in self.servers if c.config.id == config.id), None)
            if current is None or self._closed:
                return None
            if current is not server and current.alive:
                return current  # another call already reconnected
            old = self._leases.get(config.id)
            try:
                lease = await self._lease(config, self._tokens.get(config.id))
            except McpConnectError as exc:
                log.warning("MCP server %s: reconnecting failed: %s", config.slug, exc.message)
                return None
            fresh = self._swap(current, lease)
        if old is not None:
            await old.release()
        log.info("MCP server %s: reconnected", config.slug)
        return fresh

    async def reauthorize(self, server: ServerConnection) -> bool:
        """After a call failed on a 401/403 from an OAuth2 server: get a fresh token, reconnect
        and move the server's tools to the new connection. False when nothing changed."""
        config = server.config
        if self._reauthorize is None or config.auth_type != McpAuthType.OAUTH2 or server.http_error_status not in (401, 403):
            return False
        async with self._locks.setdefault(config.id, asyncio.Lock()):
            current = next((c for c in self.servers if c.config.id == config.id), None)
            if current is not None and current is not server:
                return True  # another call already reconnected
            rejected = self._tokens.get(config.id)
            token = await self._reauthorize(config, rejected)
            if token is None or (rejected is not None and token.access_token == rejected.access_token):
                return False
            old = self._leases.get(config.id)
            try:
                # A new token is a new fingerprint: the pool retires the rejected connection.
                lease = await self._lease(config, token)
            except McpConnectError:
                log.warning("MCP server %s: reconnecting with a refreshed token failed", config.slug)
                return False
            self._tokens[config.id] = token
            self._swap(server, lease)
        if old is not None:
            await old.release()
        log.info("MCP server %s: reconnected with a refreshed token", config.slug)
        return True

    # -- lifecycle -------------------------------------------------------------------------

    async def close(self) -> None:
        """Give every lease back (closing the connections unless a shared pool keeps them);
        leaves no task, process or socket behind that the pool does not own."""
        self._closed = True
        leases, self._leases = list(self._leases.values()), {}
        self.servers = []
        self._tools = {}
        results = await asyncio.gather(*(lease.release() for lease in leases), return_exceptions=True)
        if self._own_pool:
            results.extend(await asyncio.gather(self._pool.close(), return_exceptions=True))
        for result in results:
            if isinstance(result, asyncio.CancelledError):
                raise result
            if isinstance(result, BaseException):
                log.warning("closing an MCP connection failed: %s", result, exc_info=result)

    async def __call__(self) -> None:
        await self.close()


async def _report(
    on_server_error: OnServerError | None, config: McpServerConfig, message: str
) -> None:
    log.warning("MCP server %s (%s) skipped: %s", config.slug, redact_url(config.url), message)
    metrics.MCP_CONNECT_FAILURES.labels(config.slug).inc()
    if on_server_error is None:
        return
    try:
        outcome = on_server_error(config, message)
        if inspect.isawaitable(outcome):
            await outcome
    except Exception:  # the reporter is advisory; it must not break the turn
        log.warning("on_server_error callback failed", exc_info=True)


async def connect_all(
    configs: Sequence[McpServerConfig],
    user_tokens: Mapping[uuid.UUID, OAuthToken],
    *,
    store_file: StoreFile | None = None,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    stdio_connect_timeout: float = DEFAULT_STDIO_CONNECT_TIMEOUT,
    call_timeout: float = DEFAULT_CALL_TIMEOUT,
    max_result_chars: int | None = None,
    on_server_error: OnServerError | None = None,
    on_tools_changed: Callable[[], None] | None = None,
    reauthorize: Reauthorize | None = None,
    identity: tuple[uuid.UUID, uuid.UUID] | None = None,
    pool: McpPool | None = None,
    elicitation_timeout: float | None = None,
) -> tuple[list[Tool], McpConnections]:
    """Lease a connection to every enabled server concurrently and return (tools, close).

    `close` is the McpConnections object: `await close()` gives the leases back. With a shared
    `pool` (a replica's), connections stay open between turns; without one they close. A server
    that fails, hangs past its connect timeout, failed recently (the pool's negative cache) or
    answers garbage is reported and skipped; this function itself only raises on cancellation
    (after giving back whatever it leased).
    """
    connections = McpConnections(
        store_file=store_file,
        call_timeout=call_timeout,
        max_result_chars=max_result_chars,
        on_tools_changed=on_tools_changed,
        reauthorize=reauthorize,
        connect_timeout=connect_timeout,
        stdio_connect_timeout=stdio_connect_timeout,
        identity=identity,
        pool=pool,
        elicitation_timeout=elicitation_timeout,
    )
    wanted: list[McpServerConfig] = []
    seen_slugs: set[str] = set()
    for config in configs:
        if not config.enabled:
            continue
        if config.slug in seen_slugs:
            await _report(on_server_error, config, f"duplicate slug {config.slug!r}")
            continue
        seen_slugs.add(config.slug)
        token = user_tokens.get(config.id)
        connections._tokens[config.id] = token
        if config.auth_type == McpAuthType.OAUTH2 and (token is None or not token.access_token):
            # Connect anyway: some servers offer public tools; a 401 is reported below.
            log.info("MCP server %s: no OAuth2 token for this user", config.slug)
        wanted.append(config)

    leased: list[Lease] = []

    async def one(config: McpServerConfig) -> Lease:
        lease = await connections._lease(config, connections._tokens.get(config.id))
        leased.append(lease)
        return lease

    try:
        outcomes = await asyncio.gather(*(one(c) for c in wanted), return_exceptions=True)
    except asyncio.CancelledError:
        # gather cancelled its children; give back the leases that were already granted.
        connections._leases = {lease.connection.config.id: lease for lease in leased}
        await connections.close()
        raise
    try:
        unused: list[Lease] = []
        for config, outcome in zip(wanted, outcomes, strict=True):
            if isinstance(outcome, asyncio.CancelledError):
                raise outcome
            if isinstance(outcome, BaseException):
                message = outcome.message if isinstance(outcome, McpConnectError) else str(outcome)
                # The model gets the kind of failure, not the text: a server's error (or its
                # stderr) is untrusted and has no place in a system prompt. The user sees it.
                why = "it could not be reached"
                if isinstance(outcome, McpAuthError):
                    signed_in = connections._tokens.get(config.id) is not None
                    why = "it refused the credentials" if signed_in or config.auth_type != McpAuthType.OAUTH2 else "the user has not signed in to it"
                connections.mark_unavailable(config, why)
                await _report(on_server_error, config, message)
                continue
            conn = outcome.connection
            if not conn.listing.tools:
                log.info("MCP server %s offers no tools after filtering; not used", config.slug)
                unused.append(outcome)
                continue
            connections._leases[config.id] = outcome
            connections.servers.append(conn)
            connections._build_tools(conn)
        await asyncio.gather(*(lease.release() for lease in unused))
    except BaseException:
        connections._leases = {lease.connection.config.id: lease for lease in leased}
        await connections.close()
        raise
    return connections.tools(), connections


async def list_tools_check(
    config: McpServerConfig,
    token: OAuthToken | None,
    *,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    stdio_connect_timeout: float = DEFAULT_STDIO_CONNECT_TIMEOUT,
) -> list[ToolInfo]:
    """Connect to one server now and return its filtered, namespaced tools (the connection check).

    Raises McpConnectError (McpAuthError for 401/403) with a redacted reason.
    """
    conn = ServerConnection(
        config, connection_headers(config, token, None),
        connect_timeout=config.connect_timeout_for(connect_timeout, stdio_connect_timeout),
    )
    conn.start()
    try:
        await conn.wait_ready()
        namer = ToolNamer()
        return [
            ToolInfo(
                name=namer.assign(config.slug, t.name),
                original_name=t.name,
                description=t.description or t.title or "",
                input_schema=_parameters(t.input_schema),
            )
            for t in conn.listing.tools
        ]
    finally:
        await conn.aclose()


def system_prompt_section(connected: McpConnections) -> str:
    """A short system-prompt section naming the connected servers, their tools and instructions,
    and the chat's servers that are unavailable this turn (and why)."""
    if not connected.servers:
        return "\n".join(["## MCP servers", *_unavailable_lines(connected)]) if connected.unavailable else ""
    lines = ["## Connected MCP servers", "Tools from these servers are available this turn:"]
    for server in connected.servers:
        names = ", ".join(t.name for t in connected._tools.get(server.config.id, []))
        lines.append(f"- {server.config.label} ({server.config.slug}): {names}")
        if server.instructions and server.instructions.strip():
            # Instructions come from the server and are untrusted; fence them so they read as data.
            lines.append(f'  <server-instructions server="{server.config.slug}">')
            lines.extend(f"  {line}" for line in server.instructions.strip()[:4000].splitlines())
            lines.append("  </server-instructions>")
    return "\n".join([*lines, *_unavailable_lines(connected)])


def _unavailable_lines(connected: McpConnections) -> list[str]:
    if not connected.unavailable:
        return []
    lines = ["The chat also uses these MCP servers, which are unavailable this turn (their tools cannot be called):"]
    for slug, (label, reason) in connected.unavailable.items():
        lines.append(f"- {label} ({slug}): {reason}")
    return lines


# -- MCP Apps: a view's requests, outside any turn --------------------------------------------


class AppToolRefused(McpError):
    """A view asked for a tool its server does not offer to apps (absent, filtered out by the
    admin's allow/deny lists, or model-only)."""

    code = "mcp_app_tool_refused"


async def _with_server(
    config: McpServerConfig,
    token: OAuthToken | None,
    use: Callable[[ServerConnection], Awaitable[Any]],
    *,
    pool: McpPool | None,
    identity: tuple[uuid.UUID, uuid.UUID],
    connect_timeout: float,
    stdio_connect_timeout: float,
) -> Any:
    """Lease one server (the replica's pool keeps it warm for the chat's next turn, as a turn
    does) and run `use` on it. Raises McpConnectError when it cannot be reached."""
    failures: list[str] = []
    _tools, conns = await connect_all(
        [config], {config.id: token} if token is not None else {},
        connect_timeout=connect_timeout, stdio_connect_timeout=stdio_connect_timeout,
        on_server_error=lambda _config, message: failures.append(message),
        identity=identity, pool=pool,
    )
    try:
        if not conns.servers:
            raise McpConnectError(failures[0] if failures else f"MCP server {config.slug} offers no tools")
        return await use(conns.servers[0])
    finally:
        await conns.close()


async def read_app_view(
    config: McpServerConfig,
    token: OAuthToken | None,
    uri: str,
    *,
    max_bytes: int,
    call_timeout: float,
    pool: McpPool | None,
    identity: tuple[uuid.UUID, uuid.UUID],
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    stdio_connect_timeout: float = DEFAULT_STDIO_CONNECT_TIMEOUT,
) -> apps.AppView:
    """resources/read of a tool's `ui://` view on its own server. Raises AppToolRefused when no
    offered tool names that view (a view is reachable only through a tool that declares it),
    AppResourceError when it is not servable HTML within `max_bytes`."""

    async def use(server: ServerConnection) -> apps.AppView:
        if not any(apps.resource_uri(t) == uri for t in server.listing.tools):
            raise AppToolRefused(f"no tool of MCP server {config.slug} has the view {uri}")
        timeout = config.call_timeout_for(call_timeout)
        result = await server.read_resource(uri, timeout=timeout)
        return apps.view_from(result, uri, max_bytes)

    view: apps.AppView = await _with_server(
        config, token, use, pool=pool, identity=identity,
        connect_timeout=connect_timeout, stdio_connect_timeout=stdio_connect_timeout,
    )
    log.info("MCP server %s: serving view %s under CSP %r", config.slug, uri, view.csp)
    return view


async def read_app_resource(
    config: McpServerConfig,
    token: OAuthToken | None,
    uri: str,
    *,
    max_bytes: int,
    call_timeout: float,
    pool: McpPool | None,
    identity: tuple[uuid.UUID, uuid.UUID],
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    stdio_connect_timeout: float = DEFAULT_STDIO_CONNECT_TIMEOUT,
) -> dict[str, Any]:
    """A view's resources/read, sent to the view's own server only (as the chat's owner; chatd
    never fetches the URI itself). Returns the ReadResourceResult as the view expects it (wire
    JSON `contents`); raises AppToolRefused when no tool of the server has a view (it has no app to
    read for), AppResourceError when the contents are over `max_bytes`, McpCallError when the
    server refuses or fails the read."""

    async def use(server: ServerConnection) -> dict[str, Any]:
        # Only a server with a view has apps to read for: others' resources stay out of reach.
        if not any(apps.resource_uri(t) for t in server.listing.tools):
            raise AppToolRefused(f"MCP server {config.slug} has no app")
        result = await server.read_resource(uri, timeout=config.call_timeout_for(call_timeout))
        apps.check_size(result, uri, max_bytes)
        # The contents only: the 2026-07-28 envelope (resultType, ttlMs, cacheScope, the server's
        # _meta) is the connection's business, not the view's.
        dumped = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        return {"contents": dumped["contents"]}

    outcome: dict[str, Any] = await _with_server(
        config, token, use, pool=pool, identity=identity,
        connect_timeout=connect_timeout, stdio_connect_timeout=stdio_connect_timeout,
    )
    return outcome


async def call_app_tool(
    config: McpServerConfig,
    token: OAuthToken | None,
    name: str,
    arguments: dict[str, Any],
    *,
    call_timeout: float,
    pool: McpPool | None,
    identity: tuple[uuid.UUID, uuid.UUID],
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    stdio_connect_timeout: float = DEFAULT_STDIO_CONNECT_TIMEOUT,
) -> dict[str, Any]:
    """A view's tools/call: only a tool of this server whose visibility includes "app". Returns
    the CallToolResult as the view expects it (wire JSON); a failed call is a result with
    `isError`, as the spec has a tool's own failures travel."""

    async def use(server: ServerConnection) -> dict[str, Any]:
        tool = next((t for t in server.listing.tools if t.name == name), None)
        if tool is None:
            raise AppToolRefused(f"MCP server {config.slug} offers no tool {name!r}")
        if not apps.for_app(tool):
            raise AppToolRefused(f"the tool {name!r} of MCP server {config.slug} is not callable by apps")
        try:
            result = await server.call(name, arguments, call_timeout=config.call_timeout_for(call_timeout))
        except McpCallError as exc:
            return {"content": [{"type": "text", "text": f"The MCP tool call failed: {exc.message}"}], "isError": True}
        dumped: dict[str, Any] = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        return dumped

    outcome: dict[str, Any] = await _with_server(
        config, token, use, pool=pool, identity=identity,
        connect_timeout=connect_timeout, stdio_connect_timeout=stdio_connect_timeout,
    )
    return outcome
