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
from pydantic_ai._parts_manager import ModelResponsePartsManager
from pydantic_ai._special_tokens import _TOKEN_START_LENGTH, StreamRestorer, _StreamedTextRestorer
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


class EventPipeline:
    """What pydantic-ai's `StreamedResponse.__aiter__` does to the events its mapping yields, without
    its generators: chat-template tokens restored (`_restored_events`, for models that need it),
    the previous part ended when one starts (`iterator_with_part_end`), then `EventParts`."""

    __slots__ = ("_last_start", "_parts", "_publish", "_restorer")

    def __init__(self, parts: ModelResponsePartsManager) -> None:
        self._parts = parts
        self._restorer = parts.special_token_restorer
        self._publish = EventParts()
        self._last_start: pm.PartStartEvent | None = None

    def emit(self, event: pm.ModelResponseStreamEvent, out: Published) -> None:
        restorer = self._restorer
        if restorer is not None:
            if type(event) is pm.PartStartEvent:
                for flushed in restorer.flush_text():
                    self._emit_restored(flushed, out)
                event = restorer.restore(event)
            elif not self._plain_text(restorer, event):
                event = restorer.restore(event)
        self._emit_restored(event, out)

    @staticmethod
    def _plain_text(restorer: StreamRestorer, event: pm.ModelResponseStreamEvent) -> bool:
        """Whether `event` is a text delta the restorer would pass on unchanged, its state updated as
        `restore` updates it. A joiner is a zero-width (non-ASCII) character and only a joiner is
        ever held, so ASCII text behind nothing held goes out as it is: `restore` copied the event
        and its delta for every token (~4% of the CPU at 100 chats). Checked against `restore` by
        tests/providers/test_stream_pipeline.py."""
        if type(event) is not pm.PartDeltaEvent:
            return False
        delta = event.delta
        if type(delta) is not pm.TextPartDelta:
            return False
        text = delta.content_delta
        if not text.isascii():
            return False
        state = restorer.restorers.get(event.index)
        if type(state) is not _StreamedTextRestorer or state.held:
            return False
        state.previous = (state.previous + text)[-_TOKEN_START_LENGTH:]
        return True

    def end(self, out: Published) -> None:
        """The mapping's events are over: what is still held, then the last part's end."""
        if self._restorer is not None:
            for flushed in self._restorer.flush():
                self._emit_restored(flushed, out)
        if self._last_start is not None:
            self._part_end(out)

    def _emit_restored(self, event: pm.ModelResponseStreamEvent, out: Published) -> None:
        if type(event) is pm.PartStartEvent:
            if self._last_start is not None:
                self._part_end(out)
            self._last_start = event
        out.extend(self._publish.parts(event))

    def _part_end(self, out: Published) -> None:
        assert self._last_start is not None
        index = self._last_start.index
        # Looked up as pydantic-ai does (by index into the complete parts), only the part kinds
        # that publish anything at their end are turned into an event.
        part = self._parts.get_parts()[index]
        if isinstance(part, pm.BaseToolCallPart):
            out.extend(self._publish.parts(pm.PartEndEvent(index=index, part=part)))


def fast_stream(model: Model, settings: ModelSettings, params: ModelRequestParameters) -> StreamOpener | None:
    """A purpose-built reader for `model`'s wire format, or None when there is none (or the model
    is set up in a way only pydantic-ai's own stream handles): the caller then uses pydantic-ai."""
    # Checked by module, not by class: importing the SDK adapters here would load them at start.
    module = type(model).__module__
    if module.startswith("pydantic_ai.models.openai"):
        from chatd.providers.streams.openai_chat import chat_completions_opener

        return chat_completions_opener(model, settings, params)
    if module.startswith("pydantic_ai.models.anthropic"):
        from chatd.providers.streams.anthropic_messages import messages_opener

        return messages_opener(model, settings, params)
    return None


__all__ = ["EventParts", "EventPipeline", "ModelStream", "Published", "StreamOpener", "call_args", "fast_stream"]
