"""The tool contract shared by built-in tools, MCP tools and the agent loop."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from chatd.domain.actions import ActionRequest, Answer, Resumption
from chatd.domain.parts import McpAppLink, Part


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a tool returns: a JSON-able result for the model, optional file parts, an error flag."""

    result: Any
    is_error: bool = False
    files: list[Part] = field(default_factory=list)
    # An MCP tool's view (MCP Apps): shown by the UI with the result; the model never sees it.
    app: McpAppLink | None = None
    # The call has not finished: it asks a person first (`ActionRequest.resume` says how it
    # carries on) and the turn waits in `requires_action`; `result` is unused. Only when the
    # context allowed it (`ToolContext.suspend`).
    ask: ActionRequest | None = None


@dataclass(frozen=True, slots=True)
class ToolContext:
    chat_id: uuid.UUID
    owner_id: uuid.UUID
    tool_call_id: str
    # Streams a transient message part (e.g. MCP progress) into the chat's stream.
    emit: Callable[[Part], Awaitable[None]] | None = None
    # Asks the chat's user while the call runs (an MCP server's elicitation) and waits, bounded,
    # for the answer; None when nobody can be asked.
    ask: Callable[[ActionRequest], Awaitable[Answer]] | None = None
    # The call may end by asking (`ToolResult.ask`) instead of waiting in `ask`: the turn can
    # stop for the answer and call again (`resume`) when it comes, on any replica.
    suspend: bool = False
    # The answer to the question this call asked before (a resumed turn's call).
    resume: Resumption | None = None


class Tool(Protocol):
    """A tool the model may call. `parameters` is a JSON Schema object."""

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def parameters(self) -> dict[str, Any]: ...

    async def call(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult: ...


class ToolWrapper:
    """A tool around another: the model sees the inner tool's name, description and parameters,
    and anything else the inner tool exposes (a journal's `idempotent`, a `concurrency_key`,
    shared locks) stays reachable through the wrapper. Subclasses override `call`."""

    def __init__(self, tool: Tool) -> None:
        self.tool = tool

    @property
    def name(self) -> str:
        return self.tool.name

    @property
    def description(self) -> str:
        return self.tool.description

    @property
    def parameters(self) -> dict[str, Any]:
        return self.tool.parameters

    def concurrency_key(self, args: dict[str, Any]) -> str | None:
        key_fn = getattr(self.tool, "concurrency_key", None)
        return key_fn(args) if key_fn is not None else None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tool, name)

    async def call(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        return await self.tool.call(args, ctx)
