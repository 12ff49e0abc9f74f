"""Message parts: the one normalised content model stored, streamed and sent to models."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TextPart(_Part):
    type: Literal["text"] = "text"
    text: str


class ReasoningPart(_Part):
    type: Literal["reasoning"] = "reasoning"
    text: str
    # Provider signature needed to send reasoning back (Anthropic); internal, stripped for clients.
    signature: str | None = None
    # Which provider system signed it (e.g. "anthropic"); signatures are only replayed to that one.
    provider: str | None = None


class ToolCallPart(_Part):
    type: Literal["tool-call"] = "tool-call"
    tool_call_id: str
    tool_name: str
    args: dict[str, Any] = Field(default_factory=dict)
    # Set only on streamed deltas (message_part events) while the arguments are still arriving.
    args_delta: str | None = None
    # True for tools the provider ran itself (web search): their result travels in the assistant message.
    provider_executed: bool = False


class McpAppLink(_Part):
    """An MCP App view for a tool result (`io.modelcontextprotocol/ui`): the UI shows the server's
    `ui://` resource in the tool card; the view may call `server_id`'s app-visible tools."""

    server_id: str
    resource_uri: str
    # The tool's name on its server (the view's tools/call and the host context use it).
    tool: str


class ToolResultPart(_Part):
    type: Literal["tool-result"] = "tool-result"
    tool_call_id: str
    tool_name: str
    result: Any = None
    is_error: bool = False
    provider_executed: bool = False
    # How long the tool ran (kept with the result so a reloaded page shows it; never sent to the model).
    duration_ms: int | None = None
    # The tool's MCP App view, if it has one (never sent to the model).
    app: McpAppLink | None = None


class FilePart(_Part):
    type: Literal["file"] = "file"
    file_id: str
    media_type: str
    name: str | None = None


class ToolProgressPart(_Part):
    """Progress a running tool reports (MCP progress notifications); streamed only, never stored."""

    type: Literal["tool-progress"] = "tool-progress"
    tool_call_id: str
    tool_name: str
    progress: float
    total: float | None = None
    message: str | None = None


class NoticePart(_Part):
    """Something the user should know about the turn that is not the model's output (an MCP
    server that could not be reached, ...); streamed only, never stored or sent to the model."""

    type: Literal["notice"] = "notice"
    level: Literal["info", "warning", "error"] = "warning"
    text: str
    source: str | None = None


class SourcePart(_Part):
    type: Literal["source"] = "source"
    url: str
    title: str | None = None


Part = Annotated[
    TextPart | ReasoningPart | ToolCallPart | ToolResultPart | FilePart | SourcePart | ToolProgressPart | NoticePart,
    Field(discriminator="type"),
]

PARTS = TypeAdapter(list[Part])
PART = TypeAdapter(Part)

def parts_to_json(parts: list[Part]) -> list[dict[str, Any]]:
    """Serialise parts for storage (internal fields kept)."""
    return [p.model_dump(mode="json", exclude_none=True) for p in parts]


def parts_from_json(data: Any) -> list[Part]:
    return PARTS.validate_python(data)


def text_of(parts: list[Part]) -> str:
    return "".join(p.text for p in parts if isinstance(p, TextPart))
