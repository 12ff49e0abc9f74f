"""Anthropic Messages streams driven without pydantic-ai's generator stack.

Everything that reads the wire is the SDK's and pydantic-ai's own: the request and its retries
(`AnthropicModel._messages_create`, which peeks the first event to retry an expired container or a
stale thinking block), the SDK's events, and `AnthropicStreamedResponse._map_event`, which turns
each event into parts (text, thinking and signatures, tool calls, server tools and their results,
citations, usage, stop reasons). What this module drops is what pydantic-ai wraps around that
mapping for every event: four nested async generators (`_get_event_iterator`, `_restored_events`,
the final-result and part-end layers, the cancel guard) and `MapStreamDecodeErrors`; the shared
`EventPipeline` does their work in plain calls. So the parts, the response and the errors are the
same by construction (tests/providers/test_stream_differential.py holds them to it), for less CPU
per event than pydantic-ai's stream, though more than the Chat Completions reader, which also
skips the SDK's object per event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from functools import partial
from typing import Any, NoReturn, cast

from pydantic_ai import _utils
from pydantic_ai import direct as _direct
from pydantic_ai import messages as pm
from pydantic_ai._special_tokens import StreamRestorer
from pydantic_ai.models import (
    Model,
    ModelRequestParameters,
    _open_request_download_budget,  # pyright: ignore[reportPrivateUsage]
    check_allow_model_requests,
)
from pydantic_ai.models._batch_model import check_resumable
from pydantic_ai.models._decode_errors import map_decode_errors
from pydantic_ai.models._request_timeout import start_request_deadline
from pydantic_ai.models.anthropic import AnthropicModel, AnthropicModelSettings
from pydantic_ai.models.anthropic._citations import fetched_pages_from_history
from pydantic_ai.models.anthropic._errors import map_api_errors
from pydantic_ai.models.anthropic._native_tools import open_turn_has_code_execution
from pydantic_ai.models.anthropic._response import mark_continuation_context_input_tokens
from pydantic_ai.models.anthropic._streaming import AnthropicStreamedResponse
from pydantic_ai.settings import ModelSettings

from chatd.providers.streams import EventPipeline, ModelStream, Published, StreamOpener

_NONE: Any = _utils.UNSET


def messages_opener(model: Model, settings: ModelSettings, params: ModelRequestParameters) -> StreamOpener | None:
    """How to stream from `model` this way, or None when pydantic-ai's own stream must do it."""
    if type(model) is not AnthropicModel:
        return None  # subclasses (Bedrock, ...) may map events their own way
    if _direct._prepare_model(model, None) is not model:  # pyright: ignore[reportPrivateUsage]
        return None  # instrumented: its wrapper must see the call
    if start_request_deadline(model, settings, stream=True) is not None:
        return None  # a request or first-event deadline pydantic-ai enforces per event
    return partial(_open, cast(AnthropicModel, model), settings, params)


def _open(
    model: AnthropicModel, settings: ModelSettings, params: ModelRequestParameters, history: Sequence[pm.ModelMessage]
) -> AbstractAsyncContextManager[ModelStream]:
    return _stream(model, settings, params, history)


@asynccontextmanager
async def _stream(
    model: AnthropicModel, settings: ModelSettings, params: ModelRequestParameters, history: Sequence[pm.ModelMessage]
) -> AsyncIterator[ModelStream]:
    # `pydantic_ai.direct.model_request_stream` and `AnthropicModel.request_stream`, in their order.
    messages = list(history)
    check_resumable(model, messages)
    mrp = _direct._ensure_instruction_parts(messages, params)  # pyright: ignore[reportPrivateUsage]
    messages = _direct._prepare_messages_carrying_a_retry(model, messages, settings, mrp)  # pyright: ignore[reportPrivateUsage]
    async with AsyncExitStack() as stack:
        # Files are downloaded while the request is built; the budget ends when the stream opens.
        with _open_request_download_budget():
            check_allow_model_requests()
            merged, mrp = model.prepare_request(settings, mrp)
            anthropic_settings = cast(AnthropicModelSettings, merged or {})
            events = await model._messages_create(messages, True, anthropic_settings, mrp)  # pyright: ignore[reportPrivateUsage]
            await stack.enter_async_context(events.source)
            streamed = await model._process_streamed_response(  # pyright: ignore[reportPrivateUsage]
                events,
                mrp,
                anthropic_settings,
                fetched_pages_from_history(messages),
                code_execution_in_open_turn=open_turn_has_code_execution(messages, model.system),
            )
        if model._restores_special_tokens:  # pyright: ignore[reportPrivateUsage]
            streamed._parts_manager.special_token_restorer = StreamRestorer()
        yield MessagesReader(streamed)
        mark_continuation_context_input_tokens(messages, streamed)


def _raise_mapped(exc: Exception, model_name: str, namespace: str) -> NoReturn:
    with map_api_errors(model_name, namespace), map_decode_errors(model_name):
        raise exc


class MessagesReader:
    """Drives an `AnthropicStreamedResponse`'s mapping event by event (see the module docstring)."""

    def __init__(self, streamed: AnthropicStreamedResponse) -> None:
        self._streamed = streamed
        # The first event was peeked (`_process_streamed_response`); the rest come straight from
        # the SDK's stream, without the peekable wrapper's cancel scope and lock per event (they
        # guard a concurrent close, which nothing here does).
        peekable: Any = streamed._response
        self._first: Any = peekable._buffer
        peekable._buffer = _NONE
        self._next = peekable.source.__anext__
        self._pipeline = EventPipeline(streamed._parts_manager)
        # As `_get_event_iterator` starts: the model name its errors name, the pages of the history.
        self._error_name = streamed._model_name
        self._namespace = streamed._model_id_namespace
        streamed._fetched_pages = list(streamed._history_fetched_pages)
        self._done = False

    def __aiter__(self) -> MessagesReader:
        return self

    async def __anext__(self) -> Published:
        streamed, emit = self._streamed, self._pipeline.emit
        while not self._done:
            event = self._first
            if event is not _NONE:
                self._first = _NONE
            else:
                try:
                    event = await self._next()
                except StopAsyncIteration:
                    self._done = True
                    out: Published = []
                    self._pipeline.end(out)
                    if out:
                        return out
                    break
                except Exception as exc:
                    _raise_mapped(exc, self._error_name, self._namespace)
            out = []
            emitted = False
            for mapped in streamed._map_event(event):
                emitted = True
                emit(mapped, out)
            if emitted:
                return out
        # A natural end, as pydantic-ai's cancel guard records it (`get()` says "complete").
        streamed._finished = True
        raise StopAsyncIteration

    def get(self) -> pm.ModelResponse:
        return self._streamed.get()
