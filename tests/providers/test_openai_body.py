"""The Chat Completions body chatd sends without the SDK's transform is the SDK's body, byte for byte.

Each history goes through pydantic-ai's `OpenAIChatModel` twice, once with the SDK's own
`async_maybe_transform` at `create`'s call site and once with `openai_body.plain_or_transform`,
and the two requests on the wire must be identical (bytes, headers, URL). The histories cover what
pydantic-ai maps: system prompts, text, images and documents (URLs and inline bytes), tool calls
with dict and string arguments, tool returns (failed and retried), thinking, and model settings.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from openai import AsyncOpenAI
from openai._utils import async_maybe_transform
from openai._utils._transform import PropertyInfo
from openai.resources.chat.completions import completions as sdk_completions
from openai.types.chat import completion_create_params
from pydantic_ai import messages as pm
from pydantic_ai.models import ModelRequestParameters
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.profiles.openai import OpenAIModelProfile
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.settings import ModelSettings
from pydantic_ai.tools import ToolDefinition

from chatd.providers import openai_body

COMPLETION = {
    "id": "c1", "object": "chat.completion", "created": 0, "model": "m",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}],
}  # fmt: skip
TOOLS = [
    ToolDefinition(name="echo", description="echo", parameters_json_schema={"type": "object", "properties": {"x": {"type": "integer"}}}),
    ToolDefinition(name="strict", description="s", parameters_json_schema={"type": "object", "additionalProperties": False}, strict=True),
]
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


def _histories() -> Iterator[tuple[str, list[pm.ModelMessage]]]:
    user = pm.ModelRequest(parts=[pm.SystemPromptPart("be brief"), pm.UserPromptPart("hi")])
    yield "text", [user]
    call = pm.ToolCallPart("echo", {"x": 1}, tool_call_id="call_1")
    steps: list[pm.ModelMessage] = [user]
    for i in range(6):
        steps += [
            pm.ModelResponse(parts=[pm.TextPart(f"step {i} "), pm.ToolCallPart("echo", {"x": i}, tool_call_id=f"call_{i}")]),
            pm.ModelRequest(parts=[pm.ToolReturnPart("echo", {"echo": {"x": i}}, tool_call_id=f"call_{i}")]),
        ]
    yield "tool steps", steps
    yield "string args, retry, thinking", [
        user,
        pm.ModelResponse(parts=[pm.ThinkingPart("hmm"), pm.ToolCallPart("echo", '{"x": "bad"}', tool_call_id="call_2"), call]),
        pm.ModelRequest(
            parts=[
                pm.ToolReturnPart("echo", "x must be an integer", tool_call_id="call_2", outcome="retried"),
                pm.ToolReturnPart("echo", "plain text result", tool_call_id="call_1"),
                pm.ToolReturnPart("echo", {"error": "boom"}, tool_call_id="call_3", outcome="failed"),
            ]
        ),
        pm.ModelResponse(parts=[pm.TextPart("done")]),
        pm.ModelRequest(parts=[pm.UserPromptPart("and now?")]),
    ]
    yield "media", [
        pm.ModelRequest(
            parts=[
                pm.UserPromptPart(
                    [
                        "look",
                        pm.ImageUrl("https://example.com/a.png"),
                        pm.BinaryContent(PNG, media_type="image/png"),
                        pm.BinaryContent(b"%PDF-1.4 x", media_type="application/pdf"),
                    ]
                )
            ]
        )
    ]
    yield "unicode and numbers", [
        pm.ModelRequest(parts=[pm.UserPromptPart("über 🙂 \u2028 \"quoted\" \\ back")]),
        pm.ModelResponse(parts=[pm.ToolCallPart("echo", {"x": 1.5, "y": None, "z": [True, {"k": "v"}]}, tool_call_id="c")]),
        pm.ModelRequest(parts=[pm.ToolReturnPart("echo", [1, 2.25, None, "s"], tool_call_id="c")]),
    ]


SETTINGS: list[ModelSettings] = [
    ModelSettings(max_tokens=100, max_retries=0),
    ModelSettings(
        max_tokens=5, temperature=0.3, top_p=0.9, seed=7, stop_sequences=["x"], parallel_tool_calls=False,
        presence_penalty=0.1, frequency_penalty=0.2, logit_bias={"50256": -100}, thinking="high", openai_user="u",
    ),
]


async def _sent(history: list[pm.ModelMessage], settings: ModelSettings, stream: bool, tools: list[ToolDefinition]) -> httpx2.Request:
    seen: list[httpx2.Request] = []

    def handle(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        if stream:
            return httpx2.Response(200, content=b"data: [DONE]\n\n", headers={"content-type": "text/event-stream"})
        return httpx2.Response(200, json=COMPLETION)

    http = httpx2.AsyncClient(transport=httpx2.MockTransport(handle))
    client = AsyncOpenAI(api_key="sk-test", base_url="http://llm.test/v1", http_client=http, max_retries=0)
    model = OpenAIChatModel("m", provider=OpenAIProvider(openai_client=client), profile=OpenAIModelProfile())
    merged, params = model.prepare_request(settings, ModelRequestParameters(function_tools=tools))
    response = await model._completions_create(history, stream, merged or {}, params)  # type: ignore[call-overload]
    if stream:
        await response.close()
    await http.aclose()
    (request,) = seen
    return request


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("settings", SETTINGS, ids=["defaults", "every setting"])
@pytest.mark.parametrize(("name", "history"), list(_histories()), ids=[n for n, _ in _histories()])
async def test_body_without_the_sdk_transform_is_the_sdk_body(
    monkeypatch: pytest.MonkeyPatch, name: str, history: list[pm.ModelMessage], settings: ModelSettings, stream: bool
) -> None:
    for tools in ([], TOOLS):
        monkeypatch.setattr(sdk_completions, "async_maybe_transform", async_maybe_transform)
        reference = await _sent(history, settings, stream, tools)
        monkeypatch.setattr(sdk_completions, "async_maybe_transform", openai_body.plain_or_transform)
        fast = await _sent(history, settings, stream, tools)
        assert fast.content == reference.content
        assert (fast.method, str(fast.url)) == (reference.method, str(reference.url))
        skip = {"x-stainless-retry-count", "x-stainless-read-timeout"}
        assert {k: v for k, v in fast.headers.items() if k not in skip} == {k: v for k, v in reference.headers.items() if k not in skip}


async def test_the_histories_pydantic_ai_builds_take_the_plain_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path is taken (not only correct by falling back): the body of a tool-calling
    history is plain JSON, and the SDK's transform is not called for it."""
    called: list[object] = []

    async def spy(data: object, expected_type: object) -> Any:
        called.append(expected_type)
        return await async_maybe_transform(data, expected_type)

    monkeypatch.setattr(openai_body, "async_maybe_transform", spy)
    monkeypatch.setattr(sdk_completions, "async_maybe_transform", openai_body.plain_or_transform)
    for name, history in _histories():
        await _sent(history, SETTINGS[0], True, TOOLS)
        assert called == [], name


async def test_a_body_that_is_not_plain_goes_through_the_sdk_transform() -> None:
    class Weird(str):
        pass

    params = completion_create_params.CompletionCreateParamsStreaming
    for data in (
        {"model": "m", "messages": ({"role": "user", "content": "x"},)},  # a tuple: the SDK makes it a list
        {"model": "m", "messages": [{"role": "user", "content": Weird("x")}]},
        {"model": "m", "messages": [{"role": "user", "content": "x", "name": sdk_completions.omit}]},
    ):
        assert await openai_body.plain_or_transform(data, params) == await async_maybe_transform(data, params)
    other = {"a": 1}
    assert await openai_body.plain_or_transform(other, dict) == await async_maybe_transform(other, dict)


def _property_infos(tp: object, seen: set[int]) -> Iterator[PropertyInfo]:
    if id(tp) in seen:
        return
    seen.add(id(tp))
    for meta in getattr(tp, "__metadata__", ()):
        if isinstance(meta, PropertyInfo):
            yield meta
    if typing.is_typeddict(tp):
        for hint in typing.get_type_hints(tp, include_extras=True).values():
            yield from _property_infos(hint, seen)
    for arg in typing.get_args(tp):
        yield from _property_infos(arg, seen)


def test_chat_parameters_declare_no_alias_and_no_format() -> None:
    """What makes a plain body its own transform: no key of any type reachable from the request
    parameters is renamed or formatted (an SDK upgrade that adds one fails here)."""
    for params in (completion_create_params.CompletionCreateParamsStreaming, completion_create_params.CompletionCreateParamsNonStreaming):
        infos = list(_property_infos(params, set()))
        assert [(i.alias, i.format) for i in infos if i.alias is not None or i.format is not None] == []


def test_install_replaces_only_the_create_call_site() -> None:
    openai_body.install()
    openai_body.install()
    assert openai_body.installed()
    assert sdk_completions.async_maybe_transform is openai_body.plain_or_transform
