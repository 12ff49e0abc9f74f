"""OpenAI Chat Completions streams (OpenAI and every compatible server) read straight off the wire.

The request is pydantic-ai's own (`OpenAIChatModel._completions_create`, so the body, headers and
HTTP errors are exactly what its stream sends and raises). The response is read here instead of
through the SDK's `AsyncStream` and pydantic-ai's `OpenAIStreamedResponse`: the SSE decoder in
`sse.py`, orjson, plain dicts for chunks, and pydantic-ai's parts manager fed directly. At
100 concurrent chats the SDK's object per chunk (`construct_type`) and pydantic-ai's four nested
async generators per event were about 40% of the daemon's CPU (issue 15).

`ChatCompletionsReader` is a port of `OpenAIStreamedResponse._get_event_iterator` onto dicts, kept
in the same order and with the same rules (finish reasons, refusals, reasoning fields and tags,
tool calls split across chunks, usage-only chunks, annotations), and of the SDK's stream rules
(`[DONE]`, an `error` object mid-stream, transport errors, undecodable data), so errors are the
same exception types with the same messages and `providers/retry.py` classifies them the same
way. Rare fields (usage, moderation, logprobs) are built into the SDK's objects and mapped by
pydantic-ai's own functions. Models set up in ways this reader does not cover (another class, Azure,
settings that change the stream) are left to pydantic-ai (`chat_completions_opener`
returns None). tests/providers/test_stream_differential.py holds the two paths to the same result.
"""

from __future__ import annotations

import json
import warnings
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from copy import copy
from datetime import datetime
from functools import partial
from typing import Any, Final, NoReturn, cast

import httpx2
import orjson
from openai import APIConnectionError, APIError, APITimeoutError
from openai._httpx2 import request_exceptions, timeout_exceptions
from openai._models import construct_type
from openai._streaming_cleanup import drain_response_async
from openai.types.chat import ChatCompletionChunk
from pydantic import ValidationError
from pydantic_ai import direct as _direct
from pydantic_ai import messages as pm
from pydantic_ai._parts_manager import ModelResponsePartsManager
from pydantic_ai._special_tokens import StreamRestorer
from pydantic_ai._utils import now_utc, number_to_datetime
from pydantic_ai.exceptions import ModelAPIError, UnexpectedModelBehavior
from pydantic_ai.models import (
    Model,
    ModelRequestParameters,
    _open_request_download_budget,  # pyright: ignore[reportPrivateUsage]
    check_allow_model_requests,
)
from pydantic_ai.models._batch_model import check_resumable
from pydantic_ai.models._decode_errors import map_decode_errors
from pydantic_ai.models.openai import OpenAIChatModel, OpenAIChatModelSettings
from pydantic_ai.models.openai._chat_completions import CHAT_FINISH_REASON_MAP, split_content_parts
from pydantic_ai.models.openai._chat_streaming import OpenAIStreamedResponse
from pydantic_ai.models.openai._citations import (
    chat_annotation_ta,
    chat_citations_provider_details,
    map_chat_citations,
)
from pydantic_ai.models.openai._errors import is_azure, map_api_errors
from pydantic_ai.models.openai._response_fields import map_logprobs, map_usage
from pydantic_ai.profiles import DEFAULT_THINKING_TAGS
from pydantic_ai.settings import ModelSettings
from pydantic_ai.usage import RequestUsage

from chatd.providers.streams import EventPipeline, ModelStream, Published, StreamOpener
from chatd.providers.streams.sse import ServerEvent, SSEDecoder

# Settings that shape only the request: the stream reads the same with or without them. Any other
# setting (continuous usage, raw annotations, unmapped data, logprobs, deadlines, ...) changes
# what the stream keeps, and leaves the call to pydantic-ai.
_REQUEST_ONLY_SETTINGS: Final = frozenset(
    {
        "max_tokens",
        "max_retries",
        "temperature",
        "top_p",
        "seed",
        "stop_sequences",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "parallel_tool_calls",
        "thinking",
        "tool_choice",
        "timeout",
        "extra_headers",
        "extra_body",
        "openai_reasoning_effort",
        "openai_user",
        "openai_service_tier",
        "openai_prompt_cache_key",
    }
)

_END: Final = object()


def chat_completions_opener(model: Model, settings: ModelSettings, params: ModelRequestParameters) -> StreamOpener | None:
    """How to stream from `model` through this reader, or None when pydantic-ai must do it."""
    if type(model) is not OpenAIChatModel:
        return None  # subclasses (OpenRouter, Azure, ...) map chunks their own way
    if model._streamed_response_cls is not OpenAIStreamedResponse:  # pyright: ignore[reportPrivateUsage]
        return None
    if is_azure(model.client, model.system):
        return None
    if model.client._strict_response_validation:  # pyright: ignore[reportPrivateUsage]
        return None
    if _direct._prepare_model(model, None) is not model:  # pyright: ignore[reportPrivateUsage]
        return None  # instrumented (OpenTelemetry through pydantic-ai): its wrapper must see the call
    if not (set(settings) | set(model.settings or {})) <= _REQUEST_ONLY_SETTINGS:
        return None
    return partial(_open, cast(OpenAIChatModel, model), settings, params)


def _open(
    model: OpenAIChatModel, settings: ModelSettings, params: ModelRequestParameters, history: Sequence[pm.ModelMessage]
) -> AbstractAsyncContextManager[ModelStream]:
    return _stream(model, settings, params, history)


@asynccontextmanager
async def _stream(
    model: OpenAIChatModel, settings: ModelSettings, params: ModelRequestParameters, history: Sequence[pm.ModelMessage]
) -> AsyncIterator[ModelStream]:
    # What `pydantic_ai.direct.model_request_stream` and `OpenAIChatModel.request_stream` do, in
    # their order, up to the response: the request is theirs, byte for byte.
    messages = list(history)
    check_resumable(model, messages)
    mrp = _direct._ensure_instruction_parts(messages, params)  # pyright: ignore[reportPrivateUsage]
    messages = _direct._prepare_messages_carrying_a_retry(model, messages, settings, mrp)  # pyright: ignore[reportPrivateUsage]
    check_allow_model_requests()
    merged, mrp = model.prepare_request(settings, mrp)
    chat_settings = cast(OpenAIChatModelSettings, merged or {})
    with _open_request_download_budget():
        sdk_stream = await model._completions_create(messages, True, chat_settings, mrp)  # pyright: ignore[reportPrivateUsage]
    if isinstance(sdk_stream, pm.ModelResponse):  # pragma: no cover - Azure's content filter; Azure is not read here
        raise AssertionError("an Azure content-filter response reached the Chat Completions reader")
    # The SDK's stream object is only the holder of the HTTP response: it is never iterated.
    async with sdk_stream:
        reader = ChatCompletionsReader(model, mrp, sdk_stream.response)
        try:
            await reader.start()
            yield reader
        finally:
            await reader.aclose()


def _raise_mapped(exc: Exception, model_name: str, namespace: str) -> NoReturn:
    """Raise `exc` as pydantic-ai raises it from the SDK's stream: API and transport errors become
    its `ModelAPIError`s, an undecodable chunk a `ModelAPIError` about JSON."""
    with map_api_errors(model_name, namespace), map_decode_errors(model_name):
        raise exc


def _no_attribute(value: object, name: str) -> AttributeError:
    # What reading a field of a malformed chunk raises on pydantic-ai's path (the SDK's loose
    # constructor keeps a value of the wrong shape as it came).
    return AttributeError(f"{type(value).__name__!r} object has no attribute {name!r}")


class ChatCompletionsReader:
    """One Chat Completions stream; see the module docstring. Iterating gives, for each chunk that
    gave pydantic-ai events, the parts the loop publishes for them (possibly none)."""

    def __init__(self, model: OpenAIChatModel, params: ModelRequestParameters, response: httpx2.Response) -> None:
        self._response = response
        self._bytes = response.aiter_bytes()
        self._decoder = SSEDecoder()
        self._events: deque[ServerEvent] = deque()
        self._eof = False
        self._done = False
        self._finished = False
        self._first: Any = _END
        self._parts = ModelResponsePartsManager(model_request_parameters=params)
        # Open-weight models get a joiner inside chat-template tokens in what they are sent; it is
        # taken out of what they write, as pydantic-ai's `restoring_request_stream` does.
        if model._restores_special_tokens:  # pyright: ignore[reportPrivateUsage]
            self._parts.special_token_restorer = StreamRestorer()
        self._pipeline = EventPipeline(self._parts)
        self._emit = self._pipeline.emit

        profile = model.profile
        custom = profile.get("openai_chat_thinking_field", None)
        self._thinking_fields = tuple(f for f in (custom, "reasoning", "reasoning_content") if f)
        self._thinking_tags = profile.get("thinking_tags", DEFAULT_THINKING_TAGS)
        self._ignore_leading_whitespace = profile.get("ignore_streamed_leading_whitespace", False)
        self._requires_finish_reason = profile.get("openai_chat_streaming_requires_finish_reason", False)

        provider = model._provider  # pyright: ignore[reportPrivateUsage]
        self._configured_name = model.model_name
        self._model_name = model.model_name
        self._error_name = model.model_name
        self._namespace = provider.model_id_namespace
        self._provider_name = provider.name
        self._provider_url = provider.base_url
        self._canonical_system = model._canonical_system_stamp  # pyright: ignore[reportPrivateUsage]
        self._timestamp = now_utc()

        self._usage = RequestUsage()
        self._usage_received = False
        self._provider_timestamp: datetime | None = None
        self.provider_details: dict[str, Any] | None = None
        self.provider_response_id: str | None = None
        self.finish_reason: pm.FinishReason | None = None
        self._content_generation = 0
        self._reasoning_generation = 0
        self._held_text_whitespace = ""
        self._awaiting_text_after_reasoning = False
        self._has_refusal = False
        self._refusal_text = ""
        self._has_finish_reason = False
        self._logprobs: list[dict[str, Any]] = []
        self._raw_text: list[str] = []
        self._pending_raw_annotations: list[object] = []

    # ---------------------------------------------------------------------------------- wire

    async def start(self) -> None:
        """Read the first chunk (pydantic-ai peeks it before the stream is handed out: an empty
        stream fails here, and the first chunk names the model)."""
        try:
            first = await self._next_chunk()
        except Exception as exc:
            _raise_mapped(exc, self._configured_name, self._namespace)
        if first is _END:
            raise UnexpectedModelBehavior("Streamed response ended without content or tool calls")
        if type(first) is not dict:
            raise _no_attribute(first, "model")
        self._model_name = first.get("model") or self._configured_name
        self._error_name = self._model_name
        self._first = first

    async def aclose(self) -> None:
        await self._bytes.aclose()

    async def _next_chunk(self) -> Any:
        """The next chunk's JSON, or `_END` after `[DONE]` or the end of the body."""
        events = self._events
        while not events:
            if self._eof:
                return _END
            try:
                raw = await self._bytes.__anext__()
            except StopAsyncIteration:
                self._eof = True
                self._decoder.finish()
                return _END
            except timeout_exceptions() as err:
                raise APITimeoutError(request=self._response.request) from err
            except request_exceptions() as err:
                raise APIConnectionError(request=self._response.request) from err
            events.extend(self._decoder.feed(raw))
        event = events.popleft()
        if event.error is not None:
            raise event.error
        data = event.data
        if data.startswith(b"[DONE]"):
            self._eof = True
            events.clear()
            # HTTP/1.1 needs the rest of the body read for the connection to be reused.
            if self._response.http_version == "HTTP/1.1":
                await drain_response_async(self._response)
            return _END
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            # Decoded as the SDK decodes it, so what fails raises the same error (and what only
            # orjson refuses, NaN or huge integers, parses).
            value = json.loads(event.text())
        if event.event and event.event.startswith("thread."):
            # The SDK wraps these Assistants events as `{data, event}`: a chunk with no fields.
            return {}
        if type(value) is dict and value.get("error"):
            error = value["error"]
            message = error.get("message") if isinstance(error, dict) else None
            if not message or not isinstance(message, str):
                message = "An error occurred during streaming"
            raise APIError(message=message, request=self._response.request, body=error)
        return value

    # ------------------------------------------------------------------------------ iterate

    def __aiter__(self) -> ChatCompletionsReader:
        return self

    async def __anext__(self) -> Published:
        while not self._done:
            chunk = self._first
            if chunk is not _END:
                self._first = _END
            else:
                try:
                    chunk = await self._next_chunk()
                except Exception as exc:
                    _raise_mapped(exc, self._error_name, self._namespace)
            if chunk is _END:
                self._done = True
                out = self._end()
                if out:
                    return out
                break
            batch = self._chunk(chunk)
            if batch is not None:
                return batch
        self._finished = True
        raise StopAsyncIteration

    def _chunk(self, chunk: Any) -> Published | None:
        """One chunk, as `OpenAIStreamedResponse._get_event_iterator` reads it: None when it gave no
        events, else the parts of its events."""
        if type(chunk) is not dict:
            raise _no_attribute(chunk, "created" if self._provider_timestamp is None else "usage")
        created = chunk.get("created")
        if self._provider_timestamp is None and created:
            self._provider_timestamp = number_to_datetime(created)
            self.provider_details = {**(self.provider_details or {}), "timestamp": self._provider_timestamp}
        if chunk.get("usage") is not None:
            self._add_usage(map_usage(_sdk_chunk(chunk), self._provider_name, self._provider_url, self._model_name))
        if response_id := chunk.get("id"):
            self.provider_response_id = response_id
        if model_name := chunk.get("model"):
            self._model_name = model_name
        if chunk.get("moderation") is not None and (moderation := _sdk_chunk(chunk).moderation):
            self.provider_details = {**(self.provider_details or {}), "moderation": moderation.model_dump()}
        if service_tier := chunk.get("service_tier"):
            self.provider_details = {**(self.provider_details or {}), "service_tier": service_tier}

        choices = chunk.get("choices")
        if not choices:
            return None
        choice = choices[0]
        if type(choice) is not dict:
            raise _no_attribute(choice, "finish_reason")
        raw_finish_reason = choice.get("finish_reason")
        self._has_finish_reason = self._has_finish_reason or bool(raw_finish_reason)
        delta = choice.get("delta")
        if delta is None:
            return None
        if type(delta) is not dict:
            raise _no_attribute(delta, "refusal")
        if refusal := delta.get("refusal"):
            self._has_refusal = True
            self.finish_reason = "content_filter"
            self._refusal_text += refusal
            return None
        if raw_finish_reason and not self._has_refusal:
            self.finish_reason = CHAT_FINISH_REASON_MAP.get(raw_finish_reason)
        details = self._choice_details(chunk, choice, raw_finish_reason)
        if details:
            if self._has_refusal:
                details.pop("finish_reason", None)
            self.provider_details = {**(self.provider_details or {}), **details}

        out: Published = []
        emitted = self._thinking(delta, out)
        emitted = self._text(delta, out) or emitted
        emitted = self._tool_calls(delta, out) or emitted
        return out if emitted else None

    def _choice_details(self, chunk: dict[str, Any], choice: dict[str, Any], raw_finish_reason: Any) -> dict[str, Any] | None:
        # `map_provider_details`, with the logprobs collected for the end as pydantic-ai does.
        details: dict[str, Any] = {}
        if choice.get("logprobs") is not None:
            logprobs = _sdk_chunk(chunk).choices[0].logprobs
            if logprobs is not None and logprobs.content:
                self._logprobs.extend(map_logprobs(logprobs.content))
        if raw_finish_reason:
            details["finish_reason"] = raw_finish_reason
        return details or None

    def _thinking(self, delta: dict[str, Any], out: Published) -> bool:
        for field_name in self._thinking_fields:
            reasoning = delta.get(field_name)
            if not reasoning:
                continue
            if not isinstance(reasoning, str):
                warnings.warn(
                    f"Unexpected non-string value for {field_name!r}: {type(reasoning).__name__}. "
                    "Please open an issue at https://github.com/pydantic/pydantic-ai/issues.",
                    UserWarning,
                    stacklevel=2,
                )
                continue
            emitted = False
            for event in self._parts.handle_thinking_delta(
                vendor_part_id=("reasoning", field_name, self._reasoning_generation),
                id=field_name,
                content=reasoning,
                provider_name=self._provider_name,
            ):
                emitted = True
                if type(event) is pm.PartStartEvent:
                    self._advance_part_boundary("reasoning")
                self._emit(event, out)
            return emitted
        return False

    def _text(self, delta: dict[str, Any], out: Published) -> bool:
        emitted = False
        content, _ = split_content_parts(delta.get("content"))
        if isinstance(content, str) and content:
            self._raw_text.append(content)
            for event in self._parts.handle_text_delta(
                vendor_part_id=("content", self._content_generation),
                content=content,
                thinking_tags=self._thinking_tags,
                ignore_leading_whitespace=self._ignore_leading_whitespace,
            ):
                emitted = True
                if type(event) is pm.PartStartEvent:
                    self._advance_part_boundary("content")
                    part = event.part
                    if isinstance(part, pm.ThinkingPart):
                        part.id = "content"
                        part.provider_name = self._provider_name
                    elif isinstance(part, pm.TextPart) and self._held_text_whitespace:
                        part.content = self._held_text_whitespace + part.content
                        self._held_text_whitespace = ""
                self._emit(event, out)
            if not emitted and content.isspace() and self._awaiting_text_after_reasoning:
                # See `OpenAIStreamedResponse._map_text_delta`: whitespace dropped right after
                # reasoning that interrupted text is held for the next text part.
                self._held_text_whitespace += content
        raw_annotations = delta.get("annotations")
        if isinstance(raw_annotations, list):
            self._pending_raw_annotations.extend(raw_annotations)
        return emitted

    def _tool_calls(self, delta: dict[str, Any], out: Published) -> bool:
        emitted = False
        for call in delta.get("tool_calls") or []:
            if type(call) is not dict:
                raise _no_attribute(call, "model_extra")
            extra_content = call.get("extra_content")
            provider_details = {"extra_content": extra_content} if extra_content else None
            function = call.get("function")
            if function is not None and type(function) is not dict:
                raise _no_attribute(function, "name")
            for event in self._parts.handle_tool_call_delta_events(
                vendor_part_id=call.get("index"),
                tool_name=function.get("name") if function is not None else None,
                args=function.get("arguments") if function is not None else None,
                tool_call_id=call.get("id"),
                provider_name=self._provider_name if provider_details else None,
                provider_details=provider_details,
            ):
                emitted = True
                if type(event) is pm.PartStartEvent:
                    self._advance_part_boundary("tool")
                self._emit(event, out)
        return emitted

    def _advance_part_boundary(self, source: str) -> None:
        if source != "reasoning":
            self._reasoning_generation += 1
            self._awaiting_text_after_reasoning = False
        # Keep the content key while it names a ThinkingPart so closing tags retain their context.
        if source != "content" and isinstance(
            self._parts.get_part_by_vendor_id(("content", self._content_generation)), pm.TextPart
        ):
            self._content_generation += 1
            self._awaiting_text_after_reasoning = source == "reasoning"

    def _end(self) -> Published:
        """The stream's end: what `_get_event_iterator` does after its loop, then the last part's end."""
        if self._refusal_text:
            self.provider_details = {**(self.provider_details or {}), "refusal": self._refusal_text}
        if self._logprobs:
            self.provider_details = {**(self.provider_details or {}), "logprobs": self._logprobs}
        if self._requires_finish_reason and not self._has_finish_reason:
            raise ModelAPIError(model_name=self._model_name, message="Streamed response ended without a `finish_reason`")
        if not self._has_finish_reason and not self._has_refusal:
            # Some OpenAI-compatible providers never send a finish reason.
            self.finish_reason = "stop"
        out: Published = []
        for event in self._annotation_events():
            self._emit(event, out)
        self._pipeline.end(out)
        return out

    def _annotation_events(self) -> list[pm.ModelResponseStreamEvent]:
        """`OpenAIStreamedResponse._flush_pending_chat_annotations`: citations on the answer's text."""
        if not self._pending_raw_annotations:
            return []
        text_part_ids = [
            vendor_part_id
            for generation in range(self._content_generation + 1)
            if isinstance(self._parts.get_part_by_vendor_id(vendor_part_id := ("content", generation)), pm.TextPart)
        ]
        if not text_part_ids:
            return []
        annotations: list[Any] = []
        for raw_annotation in self._pending_raw_annotations:
            # Kinds the SDK does not know (OpenRouter's `file`) only matter for raw annotations,
            # which this reader does not keep (`openai_include_raw_annotations` is left to pydantic-ai).
            try:
                annotations.append(chat_annotation_ta.validate_python(raw_annotation))
            except ValidationError:
                continue
        part = self._parts.get_part_by_vendor_id(text_part_ids[-1])
        assert isinstance(part, pm.TextPart)
        raw_text = "".join(self._raw_text)
        citations = map_chat_citations(annotations, part.content) if len(text_part_ids) == 1 and part.content == raw_text else None
        provider_details: dict[str, Any] = {}
        if citations:
            provider_details.update(chat_citations_provider_details(annotations))
        if not provider_details:
            return []
        return list(
            self._parts.handle_text_delta(
                vendor_part_id=text_part_ids[-1],
                content="",
                provider_name=self._provider_name,
                provider_details=provider_details,
                citations=citations,
            )
        )

    def _add_usage(self, usage: RequestUsage) -> None:
        usage = copy(usage)
        usage.unmeasured_requests = 0
        self._usage_received = True
        self._usage = self._usage + usage

    # ---------------------------------------------------------------------------------- result

    def get(self) -> pm.ModelResponse:
        """The response so far, as `StreamedResponse.get()` builds it."""
        usage = self._usage
        if not self._usage_received and self._finished:
            usage = usage + RequestUsage(unmeasured_requests=1)
        return pm.ModelResponse(
            parts=self._parts.get_parts(),
            model_name=self._model_name,
            timestamp=self._timestamp,
            usage=usage,
            provider_name=self._provider_name,
            provider_url=self._provider_url,
            canonical_system=self._canonical_system,
            provider_response_id=self.provider_response_id,
            provider_details=self.provider_details,
            finish_reason=self.finish_reason,
            state="complete" if self._finished else "incomplete",
            metadata=None,
            failed_attempts=None,
        )


def _sdk_chunk(chunk: dict[str, Any]) -> ChatCompletionChunk:
    """The SDK's object for a chunk, for the rare fields mapped by pydantic-ai's own functions."""
    return cast(ChatCompletionChunk, construct_type(type_=ChatCompletionChunk, value=chunk))
