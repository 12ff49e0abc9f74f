"""Streaming a model's answer into chatd's parts: the shared event -> part mapping, and purpose-built
readers for the wire formats that carry most traffic (OpenAI Chat Completions and compatible
servers), which skip the SDK's per-chunk objects and pydantic-ai's generator stack.

A reader yields, per wire chunk, the parts chatd publishes for it, and `get()` gives the
`pydantic_ai.messages.ModelResponse` so far, exactly as pydantic-ai's stream would (the loop keeps
it in the history and persists it). tests/providers/test_stream_differential.py replays the same
recorded and scripted streams through both and requires the same parts, response and errors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from pydantic_ai import messages as pm
from pydantic_ai.messages import INVALID_JSON_KEY
from pydantic_ai.models import Model, ModelRequestParameters
from pydantic_ai.settings import ModelSettings

from chatd.domain.chat import Role
from chatd.domain.parts import Part, ReasoningPart, TextPart, ToolCallPart

Published = list[tuple[Role, Part]]


class ModelStream(Protocol):
    """One streamed model response: iterate for the parts of each event, then `get()` it whole."""

    def __aiter__(self) -> AsyncIterator[Published]: ...

    def get(self) -> pm.ModelResponse: ...


# Opens a stream for the history (the request is sent on entering the context).
StreamOpener = Callable[[Sequence[pm.ModelMessage]], AbstractAsyncContextManager[ModelStream]]


def call_args(part: pm.BaseToolCallPart[Any]) -> tuple[dict[str, Any], str | None]:
    """The call's arguments as a dict, and an error when the model sent invalid or non-object JSON."""
    args = part.args_as_dict()
    if INVALID_JSON_KEY in args and len(args) == 1:
        return {}, f"invalid JSON arguments: {args[INVALID_JSON_KEY]!r}"
    return args, None


class EventParts:
    """Turns pydantic-ai stream events into the parts the loop publishes: text and reasoning deltas,
    a tool call's start and argument deltas, then the call with its parsed arguments when it ends.
    Both stream paths go through this, so they publish the same parts by construction."""

    __slots__ = ("calls",)

    def __init__(self) -> None:
        self.calls: dict[int, ToolCallPart] = {}

    def parts(self, event: pm.ModelResponseStreamEvent) -> Published:
        kind = type(event)
        if kind is pm.PartDeltaEvent:
            return self._delta(event.index, event.delta)  # type: ignore[union-attr]
        if kind is pm.PartStartEvent:
            return self._start(event.index, event.part)  # type: ignore[union-attr]
        if kind is pm.PartEndEvent and isinstance(event.part, pm.BaseToolCallPart):  # type: ignore[union-attr]
            return [self._end(event.index, event.part)]  # type: ignore[union-attr]
        return []

    def _end(self, index: int, part: pm.BaseToolCallPart[Any]) -> tuple[Role, Part]:
        args, _ = call_args(part)
        call = self.calls.get(index)
        return Role.ASSISTANT, ToolCallPart(
            tool_call_id=part.tool_call_id,
            tool_name=part.tool_name,
            args=args,
            provider_executed=call.provider_executed if call else isinstance(part, pm.NativeToolCallPart),
        )

    def _start(self, index: int, part: pm.ModelResponsePart) -> Published:
        if isinstance(part, pm.TextPart):
            return [(Role.ASSISTANT, TextPart(text=part.content))] if part.content else []
        if isinstance(part, pm.ThinkingPart):
            return [(Role.ASSISTANT, ReasoningPart(text=part.content))] if part.content else []
        if isinstance(part, pm.BaseToolCallPart):
            initial = part.args if isinstance(part.args, str) else ""
            call = ToolCallPart(
                tool_call_id=part.tool_call_id,
                tool_name=part.tool_name,
                args_delta=initial,
                provider_executed=isinstance(part, pm.NativeToolCallPart),
            )
            self.calls[index] = call
            return [(Role.ASSISTANT, call)]
        if isinstance(part, pm.NativeToolReturnPart):
            from chatd.domain.parts import ToolResultPart

            result = ToolResultPart(
                tool_call_id=part.tool_call_id,
                tool_name=part.tool_name,
                result=part.model_response_object(),
                is_error=part.outcome != "success",
                provider_executed=True,
            )
            return [(Role.TOOL, result)]
        return []

    def _delta(self, index: int, delta: pm.ModelResponsePartDelta) -> Published:
        kind = type(delta)
        if kind is pm.TextPartDelta:
            text = delta.content_delta  # type: ignore[union-attr]
            return [(Role.ASSISTANT, TextPart(text=text))] if text else []
        if kind is pm.ThinkingPartDelta:
            text = delta.content_delta  # type: ignore[union-attr]
            return [(Role.ASSISTANT, ReasoningPart(text=text))] if text else []
        if kind is pm.ToolCallPartDelta:
            call = self.calls.get(index)
            args = delta.args_delta  # type: ignore[union-attr]
            if call is None or not isinstance(args, str) or not args:
                return []
            return [(Role.ASSISTANT, call.model_copy(update={"args_delta": args}))]
        return []


def fast_stream(model: Model, settings: ModelSettings, params: ModelRequestParameters) -> StreamOpener | None:
    """A purpose-built reader for `model`'s wire format, or None when there is none (or the model
    is set up in a way only pydantic-ai's own stream handles): the caller then uses pydantic-ai."""
    # Checked by module, not by class: importing the SDK adapters here would load them at start.
    if type(model).__module__.startswith("pydantic_ai.models.openai"):
        from chatd.providers.streams.openai_chat import chat_completions_opener

        return chat_completions_opener(model, settings, params)
    return None


__all__ = ["EventParts", "ModelStream", "Published", "StreamOpener", "call_args", "fast_stream"]
