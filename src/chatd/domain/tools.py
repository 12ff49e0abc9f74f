"""The tool contract shared by built-in tools, MCP tools and the agent loop."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from chatd.domain.parts import Part


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a tool returns: a JSON-able result for the model, optional file parts, an error flag."""

    result: Any
    is_error: bool = False
    files: list[Part] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ToolContext:
    chat_id: uuid.UUID
    owner_id: uuid.UUID
    tool_call_id: str
    # Streams a transient message part (e.g. MCP progress) into the chat's stream.
    emit: Callable[[Part], Awaitable[None]] | None = None


class Tool(Protocol):
    """A tool the model may call. `parameters` is a JSON Schema object."""

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def parameters(self) -> dict[str, Any]: ...

    async def call(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult: ...
