"""Where a model call's stream comes from: a purpose-built reader for the model's wire format
(`chatd.providers.streams`) when there is one and it is on (`TurnOptions.fast_streams`), else
pydantic-ai's own stream. Both give the same parts and the same final response."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from pydantic_ai import messages as pm
from pydantic_ai.direct import model_request_stream
from pydantic_ai.models import ModelRequestParameters, StreamedResponse

from chatd.providers.models import ResolvedModel
from chatd.providers.streams import EventParts, ModelStream, Published, fast_stream


@asynccontextmanager
async def open_stream(
    model: ResolvedModel, history: Sequence[pm.ModelMessage], params: ModelRequestParameters, *, fast: bool = True
) -> AsyncIterator[ModelStream]:
    """Send the request and hand out its stream (it ends with the context)."""
    opener = fast_stream(model.model, model.settings, params) if fast else None
    if opener is not None:
        async with opener(history) as stream:
            yield stream
        return
    async with model_request_stream(
        model.model, list(history), model_settings=model.settings, model_request_parameters=params
    ) as response:
        yield PydanticStream(response)


class PydanticStream:
    """pydantic-ai's stream, one batch of parts per event (`EventParts`)."""

    __slots__ = ("_events", "_parts", "_response")

    def __init__(self, response: StreamedResponse) -> None:
        self._response = response
        self._events = aiter(response)
        self._parts = EventParts()

    def __aiter__(self) -> PydanticStream:
        return self

    async def __anext__(self) -> Published:
        return self._parts.parts(await anext(self._events))

    def get(self) -> pm.ModelResponse:
        return self._response.get()
