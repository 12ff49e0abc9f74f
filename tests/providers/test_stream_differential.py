"""chatd's own stream readers against pydantic-ai's stream, on the same bytes.

Every stream here is served twice by the scripted server and read once through each path
(`loop.stream.open_stream(fast=False | True)`): the parts published per event, the final (or, after
an error, partial) `ModelResponse`, the error raised (type, text, cause chain and how
`providers/retry.py` classifies it) and the request sent must all be the same. The streams are
the recorded OpenAI cassettes, the scripted server's own replies (text, reasoning, tool calls split
across chunks, parallel calls, usage, faults) and hand-written wire bytes for what the scripted
server does not produce (refusals, think tags, mid-stream error objects, malformed chunks, CRLF,
reads split anywhere).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_ai import messages as pm
from pydantic_ai.models import ModelRequestParameters
from pydantic_ai.tools import ToolDefinition

from chatd.domain.chat import Role
from chatd.domain.parts import Part, ToolResultPart
from chatd.loop import Step, run_turn
from chatd.loop.stream import PydanticStream, open_stream
from chatd.providers import classify
from chatd.providers.streams.anthropic_messages import MessagesReader
from chatd.providers.streams.openai_chat import ChatCompletionsReader
from tests.fakes.llm_server import FakeLLMServer, Fault, RawReply, Reply, TokenUsage, ToolCall, Wire
from tests.fakes.turn_doubles import RecordingSink, echo_tool, model_for, options, system, user

CASSETTES = Path(__file__).parent.parent / "data" / "cassettes"
# The recordings name dated models; the SDK warns that some of them are being retired.
pytestmark = pytest.mark.filterwarnings("ignore:The model 'claude-.*' is deprecated:DeprecationWarning")
TOOLS = [
    ToolDefinition(name="echo", description="echo", parameters_json_schema={"type": "object", "properties": {"x": {"type": "integer"}}}),
    ToolDefinition(name="_Person", description="a person", parameters_json_schema={"type": "object"}),
]
HISTORY: list[pm.ModelMessage] = [pm.ModelRequest.user_text_prompt("hi")]


@dataclasses.dataclass
class Outcome:
    path: str
    batches: list[list[tuple[Role, Part]]]
    response: pm.ModelResponse | None
    error: tuple[Any, ...] | None
    request: dict[str, Any]

    @property
    def published(self) -> list[tuple[Role, Part]]:
        return [p for batch in self.batches for p in batch]


def _error(exc: BaseException) -> tuple[Any, ...]:
    chain: list[tuple[str, str]] = []
    current: BaseException | None = exc
    while current is not None:
        chain.append((type(current).__name__, str(current)))
        current = current.__cause__
    return (chain, classify(exc))


def _normalised(response: pm.ModelResponse) -> pm.ModelResponse:
    # The only field that differs by construction: when the stream object was made.
    return dataclasses.replace(response, timestamp=datetime(2000, 1, 1, tzinfo=UTC))


async def _read(
    llm: FakeLLMServer, wire_reply: Reply | RawReply, *, fast: bool, model: str = "gpt-4o-mini", wire: Wire = "openai"
) -> Outcome:
    llm.script(wire_reply)
    resolved = model_for(llm, wire, model=model)
    params = ModelRequestParameters(function_tools=TOOLS)
    batches: list[list[tuple[Role, Part]]] = []
    response: pm.ModelResponse | None = None
    error = None
    stream = None
    try:
        async with open_stream(resolved, HISTORY, params, fast=fast) as stream:
            reader = ChatCompletionsReader if wire == "openai" else MessagesReader
            assert isinstance(stream, reader if fast else PydanticStream)
            async for batch in stream:
                batches.append(batch)
            response = stream.get()
    except Exception as exc:
        error = _error(exc)
        if stream is not None:
            response = stream.get()
    return Outcome("fast" if fast else "pydantic-ai", batches, response and _normalised(response), error, llm.requests[-1].body)


_GENERATED_ID = re.compile(r"pyd_ai_[0-9a-f]+")


def _same(fast: Any, reference: Any) -> None:
    """Equal, except for the random id pydantic-ai gives a call that came without one."""
    if _GENERATED_ID.search(repr(reference)):
        assert _GENERATED_ID.sub("pyd_ai_*", repr(fast)) == _GENERATED_ID.sub("pyd_ai_*", repr(reference))
    else:
        assert fast == reference


async def _both(llm: FakeLLMServer, wire_reply: Reply | RawReply, **kw: Any) -> tuple[Outcome, Outcome]:
    reference = await _read(llm, wire_reply, fast=False, **kw)
    fast = await _read(llm, wire_reply, fast=True, **kw)
    assert fast.request == reference.request
    assert fast.error == reference.error
    # Batches are per event on one path and per chunk on the other; what is published, in order, is the same.
    _same(fast.published, reference.published)
    _same(fast.response, reference.response)
    return reference, fast


def _sse(*chunks: Any, done: bool = True, eol: str = "\n") -> bytes:
    frames = [f"data: {c if isinstance(c, str) else json.dumps(c)}{eol}{eol}" for c in chunks]
    if done:
        frames.append(f"data: [DONE]{eol}{eol}")
    return "".join(frames).encode()


def _chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **top: Any) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "delta": delta if delta is not None else {}, "logprobs": None, "finish_reason": finish}
    return {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1700000000, "model": "m-1", "choices": [choice], **top}


USAGE = {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19, "prompt_tokens_details": {"cached_tokens": 2}}


def _usage_only(usage: dict[str, Any] = USAGE) -> dict[str, Any]:
    return {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1700000000, "model": "m-1", "choices": [], "usage": usage}


def _raw(body: bytes, **kw: Any) -> RawReply:
    return RawReply(body, **kw)


# ------------------------------------------------------------------------------ scripted replies

SCRIPTED: dict[str, Reply] = {
    "text": Reply(text="Hello there, how are you doing today?"),
    "one character per chunk": Reply(text="streamed one by one", chunk_chars=1),
    "reasoning, text and a call": Reply(thinking="let me think", text="Checking.", tool_calls=[ToolCall("call_1", "echo", {"x": 1})]),
    "parallel calls split across chunks": Reply(
        tool_calls=[ToolCall("call_a", "echo", {"x": 1}, pieces=4), ToolCall("call_b", "echo", {"x": 22}, pieces=2), ToolCall("call_c", "echo", {}, pieces=1)]
    ),
    "usage with cache and reasoning": Reply(text="priced", usage=TokenUsage(input=1000, output=500, cache_read=300, reasoning=40)),
    "dropped before the first chunk": Reply(text="never", fault=Fault.drop(after=0)),
    "dropped mid-stream": Reply(text="partial answer that will be cut", fault=Fault.drop(after=3)),
    "empty stream": Reply(text="never", fault=Fault.truncate(after=0)),
    "truncated before the finish reason": Reply(text="this answer stops halfway", fault=Fault.truncate(after=3)),
    "truncated in a tool call": Reply(tool_calls=[ToolCall("call_1", "echo", {"x": 1}, pieces=3)], fault=Fault.truncate(after=3)),
    "rate limited": Reply(fault=Fault.status(429, retry_after=7)),
    "server error": Reply(fault=Fault.status(500)),
    "bad key": Reply(fault=Fault.status(401, message="Incorrect API key provided")),
}


# A closed model, and an open-weight one whose answers pydantic-ai restores chat-template tokens in.
MODELS = ["gpt-4o-mini", "qwen3:8b"]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("name", list(SCRIPTED))
async def test_scripted_replies_read_the_same(llm: FakeLLMServer, name: str, model: str) -> None:
    reference, _ = await _both(llm, SCRIPTED[name], model=model)
    # The cases are what they say (not, say, all failing the same way before the stream).
    if name.startswith(("dropped", "empty", "truncated", "rate", "server", "bad")):
        assert reference.error is not None
    else:
        assert reference.error is None and reference.batches


# ----------------------------------------------------------------------------- recorded streams


def _cassette(name: str) -> list[dict[str, Any]]:
    with gzip.open(CASSETTES / f"{name}.yaml.gz") as f:
        data = yaml.safe_load(f)
    return [{"request": json.loads(q["body"]), "body": r["body"]["string"]} for q, r in zip(data["requests"], data["responses"], strict=True)]


@pytest.mark.parametrize("index", [0, 1])
@pytest.mark.parametrize("chunk_bytes", [0, 7])
async def test_recorded_openai_streams_read_the_same(llm: FakeLLMServer, index: int, chunk_bytes: int) -> None:
    interaction = _cassette("openai_streaming_tool_call")[index]
    body = interaction["body"] if isinstance(interaction["body"], bytes) else interaction["body"].encode()
    reference, _ = await _both(llm, _raw(body, chunk_bytes=chunk_bytes), model=interaction["request"]["model"])
    assert reference.error is None
    assert reference.response is not None and reference.response.finish_reason == "stop"
    assert [p.part_kind for p in reference.response.parts] == ["tool-call"]


# ------------------------------------------------------------------------------ wire bytes by hand

CALL = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "echo", "arguments": ""}}

RAW: dict[str, bytes] = {
    "refusal": _sse(
        _chunk({"role": "assistant", "content": None, "refusal": ""}),
        _chunk({"refusal": "I can't "}),
        _chunk({"refusal": "help with that."}),
        _chunk({}, "stop"),
        _usage_only(),
    ),
    "think tags in the content": _sse(
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"content": "<think>"}),
        _chunk({"content": "weighing it"}),
        _chunk({"content": " up"}),
        _chunk({"content": "</think>"}),
        _chunk({"content": "The answer"}),
        _chunk({"content": " is 4."}, "stop"),
        _usage_only(),
    ),
    "reasoning field (Ollama, OpenRouter)": _sse(
        _chunk({"role": "assistant", "reasoning": "first "}),
        _chunk({"reasoning": "thoughts"}),
        _chunk({"content": "text"}),
        _chunk({"reasoning": "more thinking after text"}),
        _chunk({"content": "more text"}, "stop"),
        _usage_only(),
    ),
    "reasoning not a string": _sse(_chunk({"reasoning_content": {"a": 1}}), _chunk({"content": "ok"}, "stop")),
    "usage on the last content chunk and a usage-only chunk": _sse(
        _chunk({"content": "a"}),
        _chunk({"content": "b"}, "stop", usage=USAGE),
        _usage_only({"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3, "completion_tokens_details": {"reasoning_tokens": 1}}),
    ),
    "no usage at all": _sse(_chunk({"content": "a"}, "stop")),
    "error object mid-stream": _sse(
        _chunk({"content": "partial"}),
        {"error": {"message": "The server had an error while processing your request.", "type": "server_error", "code": None}},
    ),
    "rate-limit error object mid-stream": _sse(
        _chunk({"content": "partial"}),
        {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}},
    ),
    "error object without a message first": _sse({"error": {"code": 503}}),
    "invalid JSON mid-stream": _sse(_chunk({"content": "partial"}), "{not json"),
    "invalid JSON first": _sse("{not json"),
    "invalid UTF-8 in a chunk": _sse(_chunk({"content": "ok"})).replace(b'"ok"', b'"o\xffk"'),
    "NaN, which only the json module reads": _sse(_chunk({"content": "a"}), '{"id": "x", "choices": [], "x": NaN}', _chunk({}, "stop")),
    "null chunk": _sse(_chunk({"content": "a"}), "null"),
    "no [DONE]": _sse(_chunk({"content": "a"}), _chunk({}, "stop"), done=False),
    "unknown finish reason": _sse(_chunk({"content": "a"}), _chunk({}, "eos")),
    "no finish reason, then [DONE]": _sse(_chunk({"content": "a"}), _usage_only()),
    "CRLF, comments and event names": b": keep-alive\r\n\r\nevent: message\r\n"
    + _sse(_chunk({"content": "one"}), _chunk({"content": " two"}, "stop"), eol="\r\n"),
    "CR line ends": _sse(_chunk({"content": "one"}), _chunk({"content": " two"}, "stop"), eol="\r"),
    "multi-line data": b'data: {"id": "x", "created": 1700000000, "model": "m",\ndata: "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]}\n\n'
    + b"data: [DONE]\n\n",
    "an id line, then an empty event": b"id: 1\n" + _sse(_chunk({"content": "a"}), done=False) + b"\n" + _sse(_chunk({}, "stop")),
    "content as a list of parts": _sse(
        _chunk({"content": [{"type": "text", "text": "from "}, {"type": "text", "text": "parts"}, {"type": "image"}]}),
        _chunk({"content": []}),
        _chunk({}, "stop"),
    ),
    "Azure-style first chunk without choices or model": _sse(
        {"id": "", "object": "", "created": 0, "model": "", "choices": [], "prompt_filter_results": []},
        _chunk({"content": "hello"}),
        _chunk({}, "stop"),
    ),
    "null delta and missing delta": _sse({**_chunk(), "choices": [{"index": 0, "delta": None}]}, _chunk({"content": "x"}, "stop")),
    "service tier, fingerprint, obfuscation": _sse(
        _chunk({"content": "x"}, service_tier="default", system_fingerprint="fp_1", obfuscation="abc"),
        _chunk({}, "stop", service_tier="priority"),
    ),
    "a call without an id, its name repeated": _sse(
        _chunk({"tool_calls": [{"index": 0, "type": "function", "function": {"name": "echo", "arguments": '{"x"'}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"name": "echo", "arguments": ": 5}"}}]}),
        _chunk({}, "tool_calls"),
    ),
    "a call whose name arrives after its arguments": _sse(
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"x": '}}]}),
        _chunk({"tool_calls": [{"index": 0, "id": "call_late", "function": {"name": "echo", "arguments": "3}"}}]}),
        _chunk({}, "tool_calls"),
    ),
    "calls without an index": _sse(
        _chunk({"tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "echo", "arguments": '{"x": 1}'}}]}),
        _chunk({"tool_calls": [{"id": "call_2", "type": "function", "function": {"name": "echo", "arguments": ""}}]}),
        _chunk({"tool_calls": [{"function": {"arguments": '{"x": 2}'}}]}),
        _chunk({}, "tool_calls"),
    ),
    "interleaved parallel calls with text after them": _sse(
        _chunk({"content": "Two calls:"}),
        _chunk({"tool_calls": [CALL, {**CALL, "index": 1, "id": "call_2"}]}),
        _chunk({"tool_calls": [{"index": 1, "function": {"arguments": '{"x": 2}'}}, {"index": 0, "function": {"arguments": '{"x": 1}'}}]}),
        _chunk({"content": " done."}),
        _chunk({}, "tool_calls"),
        _usage_only(),
    ),
    "invalid call arguments": _sse(
        _chunk({"tool_calls": [CALL]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"x": '}}]}),
        _chunk({}, "tool_calls"),
    ),
    "Gemini thought signature on a call": _sse(
        _chunk({"tool_calls": [{**CALL, "extra_content": {"google": {"thought_signature": "c2ln"}}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
        _chunk({}, "tool_calls"),
    ),
    "logprobs": _sse(
        {
            **_chunk(),
            "choices": [
                {
                    "index": 0,
                    "delta": {"content": "Hi"},
                    "logprobs": {"content": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": []}]},
                    "finish_reason": None,
                }
            ],
        },
        _chunk({}, "stop"),
    ),
    "url citations": _sse(
        _chunk({"content": "See the docs."}),
        _chunk(
            {"annotations": [{"type": "url_citation", "url_citation": {"start_index": 4, "end_index": 12, "url": "https://example.com/docs", "title": "Docs"}}]},
            "stop",
        ),
    ),
    "leading whitespace": _sse(_chunk({"content": "\n\n"}), _chunk({"content": "  text"}, "stop")),
    "garbage after [DONE]": _sse(_chunk({"content": "a"}, "stop")) + b"data: {not json\n\n",
    "moderation": _sse(_chunk({"content": "a"}, "stop", moderation={"flagged": False, "categories": {}})),
    # A joiner inside a chat-template token (what pydantic-ai puts there on the way out) comes
    # back: restored for open-weight models, split across chunks, in text and in call arguments.
    "special tokens in text": _sse(
        _chunk({"content": "a <\u200d|im_"}),
        _chunk({"content": "start|> b [\u200d"}),
        _chunk({"content": "INST] c <\u200d"}),
        _chunk({"content": "x"}),
        _chunk({}, "stop"),
    ),
    "special token held at a part boundary": _sse(
        _chunk({"content": "before <\u200d"}),
        _chunk({"tool_calls": [CALL]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"x": "<\\u200d|im'}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '_end|>"}'}}]}),
        _chunk({}, "tool_calls"),
    ),
    "special token held at the end": _sse(_chunk({"content": "tail <\u200d|eot"}), _chunk({}, "stop")),
}


@pytest.mark.filterwarnings("ignore:Unexpected non-string value for 'reasoning_content'")
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("name", list(RAW))
async def test_wire_bytes_read_the_same(llm: FakeLLMServer, name: str, model: str) -> None:
    await _both(llm, _raw(RAW[name]), model=model)


SPLIT = ["think tags in the content", "interleaved parallel calls with text after them", "CRLF, comments and event names", "multi-line data", "special tokens in text"]


@pytest.mark.parametrize("name", SPLIT)
@pytest.mark.parametrize("chunk_bytes", [1, 5, 64])
async def test_reads_split_anywhere_read_the_same(llm: FakeLLMServer, name: str, chunk_bytes: int) -> None:
    await _both(llm, _raw(RAW[name], chunk_bytes=chunk_bytes), model="qwen3:8b")


async def test_special_tokens_are_restored_for_open_weight_models(llm: FakeLLMServer) -> None:
    """The case above is what it says: the joiners go on one model and stay on the other."""
    _, restored = await _both(llm, _raw(RAW["special tokens in text"]), model="qwen3:8b")
    _, kept = await _both(llm, _raw(RAW["special tokens in text"]), model="gpt-4o-mini")
    assert restored.response is not None and kept.response is not None
    assert restored.response.parts == [pm.TextPart("a <|im_start|> b [INST] c <\u200dx")]
    assert kept.response.parts == [pm.TextPart("a <\u200d|im_start|> b [\u200dINST] c <\u200dx")]


# ------------------------------------------------------------------------------- whole turns


def _turn_script() -> Sequence[Reply]:
    return [
        Reply(thinking="plan", text="Let me check.", tool_calls=[ToolCall("call_1", "echo", {"x": 1}), ToolCall("call_2", "echo", {"x": 2})]),
        Reply(text="halfway", fault=Fault.drop(after=2)),
        Reply(tool_calls=[ToolCall("call_3", "echo", {"x": 3}, pieces=5)], usage=TokenUsage(input=50, output=9, cache_read=20)),
        Reply(text="All done."),
    ]


def _untimed(part: Part) -> Part:
    return part.model_copy(update={"duration_ms": None}) if isinstance(part, ToolResultPart) else part


def _untimed_parts(parts: list[tuple[Role, Part]]) -> list[tuple[Role, Part]]:
    return [(role, _untimed(part)) for role, part in parts]


def _untimed_steps(steps: list[Step]) -> list[Step]:
    # How long a step or a tool took is the only thing that may differ.
    return [
        dataclasses.replace(s, runtime_ms=0, tool_results=[r.model_copy(update={"duration_ms": None}) for r in s.tool_results])
        for s in steps
    ]


async def test_a_whole_turn_persists_and_sends_the_same(llm: FakeLLMServer) -> None:
    """Steps (parts, usage, finish reasons, cost), published parts, retries, and every request
    the turn sent (built from the previous responses) are the same on both paths."""
    runs: list[tuple[RecordingSink, list[dict[str, Any]]]] = []
    for fast in (False, True):
        llm.script(*_turn_script())
        sink = RecordingSink()
        first = len(llm.requests)
        outcome = await run_turn(model_for(llm, "openai"), [system("be brief"), user("hi")], [echo_tool()], options(fast_streams=fast), sink)
        assert (outcome.reason, outcome.steps) == ("completed", 3)
        runs.append((sink, [r.body for r in llm.requests[first:]]))
    (ref_sink, ref_requests), (fast_sink, fast_requests) = runs
    assert fast_requests == ref_requests and len(ref_requests) == 4
    assert _untimed_parts(fast_sink.parts) == _untimed_parts(ref_sink.parts)
    assert _untimed_steps(fast_sink.steps) == _untimed_steps(ref_sink.steps)
    assert [(a, d, e.kind) for a, d, e in fast_sink.retries] == [(a, d, e.kind) for a, d, e in ref_sink.retries] == [(1, 1.0, "connection")]


async def test_the_setting_turns_the_reader_off(llm: FakeLLMServer) -> None:
    resolved = model_for(llm, "openai")
    llm.script(Reply(text="a"), Reply(text="b"))
    async with open_stream(resolved, HISTORY, ModelRequestParameters(), fast=False) as stream:
        assert isinstance(stream, PydanticStream)
        [b async for b in stream]
    async with open_stream(resolved, HISTORY, ModelRequestParameters(), fast=True) as stream:
        assert isinstance(stream, ChatCompletionsReader)
        [b async for b in stream]


@pytest.mark.parametrize("kind", ["openai", "openai-compatible"])
@pytest.mark.parametrize("name", ["gpt-4o-mini", "qwen3:8b", "bench-model"])
async def test_chat_completions_models_as_chatd_builds_them_get_the_reader(llm: FakeLLMServer, kind: str, name: str) -> None:
    from chatd.providers import ModelSpec, ProviderConfig, resolve_model
    from chatd.providers.streams import fast_stream

    resolved = resolve_model(ProviderConfig(kind, "sk-test", llm.openai_base_url), ModelSpec(name, context_limit=100_000))  # type: ignore[arg-type]
    assert fast_stream(resolved.model, resolved.settings, ModelRequestParameters()) is not None


async def test_settings_that_change_the_stream_leave_it_to_pydantic_ai(llm: FakeLLMServer) -> None:
    resolved = model_for(llm, "openai")
    resolved = dataclasses.replace(resolved, settings={**resolved.settings, "openai_continuous_usage_stats": True})  # type: ignore[typeddict-unknown-key]
    llm.script(Reply(text="a"))
    async with open_stream(resolved, HISTORY, ModelRequestParameters(), fast=True) as stream:
        assert isinstance(stream, PydanticStream)
        [b async for b in stream]


# ------------------------------------------------------------------------------ Anthropic Messages

ANTHROPIC_SCRIPTED: dict[str, Reply] = {
    "text": Reply(text="Hello there, how are you doing today?"),
    "thinking with a signature, text and a call": Reply(
        thinking="let me think", thinking_signature="sig-9", text="Checking.", tool_calls=[ToolCall("toolu_1", "echo", {"x": 1})]
    ),
    "parallel calls split across chunks": Reply(tool_calls=[ToolCall("toolu_a", "echo", {"x": 1}, pieces=4), ToolCall("toolu_b", "echo", {"x": 2}, pieces=2)]),
    "usage with cache": Reply(text="priced", usage=TokenUsage(input=1000, output=500, cache_read=300, cache_write=20)),
    "dropped mid-stream": Reply(text="partial answer that will be cut", fault=Fault.drop(after=3)),
    "truncated": Reply(text="this answer stops halfway", fault=Fault.truncate(after=3)),
    "empty stream": Reply(text="never", fault=Fault.truncate(after=0)),
    "overloaded": Reply(fault=Fault.overloaded()),
    "rate limited": Reply(fault=Fault.status(429, retry_after=7)),
    "bad key": Reply(fault=Fault.status(401, message="invalid x-api-key")),
}


@pytest.mark.parametrize("name", list(ANTHROPIC_SCRIPTED))
async def test_anthropic_scripted_replies_read_the_same(llm: FakeLLMServer, name: str) -> None:
    reference, _ = await _both(llm, ANTHROPIC_SCRIPTED[name], model="claude-sonnet-4-5", wire="anthropic")
    if name in ("dropped mid-stream", "empty stream", "overloaded", "rate limited", "bad key"):
        assert reference.error is not None
    else:
        assert reference.error is None and reference.published


@pytest.mark.parametrize(("cassette", "index"), [("anthropic_agent_loop_streaming", 0), ("anthropic_agent_loop_streaming", 1), ("anthropic_thinking", 1)])
@pytest.mark.parametrize("chunk_bytes", [0, 7])
async def test_recorded_anthropic_streams_read_the_same(llm: FakeLLMServer, cassette: str, index: int, chunk_bytes: int) -> None:
    interaction = _cassette(cassette)[index]
    body = interaction["body"] if isinstance(interaction["body"], bytes) else interaction["body"].encode()
    assert body.startswith(b"event:")
    reference, _ = await _both(llm, _raw(body, chunk_bytes=chunk_bytes), model=interaction["request"]["model"], wire="anthropic")
    assert reference.error is None and reference.response is not None and reference.response.finish_reason is not None


def _anthropic_sse(*events: dict[str, Any]) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


START = {
    "type": "message_start",
    "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "content": [], "stop_reason": None,
                "stop_sequence": None, "usage": {"input_tokens": 12, "output_tokens": 1}},
}  # fmt: skip
TEXT_START = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}


def _text(t: str, index: int = 0) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": t}}


STOP0 = {"type": "content_block_stop", "index": 0}
END = [{"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": 7}}, {"type": "message_stop"}]

ANTHROPIC_RAW: dict[str, bytes] = {
    "pings between events": b"event: ping\ndata: {\"type\": \"ping\"}\n\n".join(
        [_anthropic_sse(START), _anthropic_sse(TEXT_START, _text("a"), _text("b"), STOP0, *END)]
    ),
    "error event mid-stream": _anthropic_sse(START, TEXT_START, _text("partial"))
    + b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n',
    "error event first": b'event: error\ndata: {"type": "error", "error": {"type": "api_error", "message": "Internal server error"}}\n\n',
    "invalid JSON mid-stream": _anthropic_sse(START, TEXT_START, _text("partial")) + b"event: content_block_delta\ndata: {not json\n\n",
    "refusal": _anthropic_sse(
        START, TEXT_START, _text("I can't"), STOP0,
        {"type": "message_delta", "delta": {"stop_reason": "refusal", "stop_sequence": None}, "usage": {"output_tokens": 3}},
        {"type": "message_stop"},
    ),
    "max tokens": _anthropic_sse(
        START, TEXT_START, _text("cut"), STOP0,
        {"type": "message_delta", "delta": {"stop_reason": "max_tokens", "stop_sequence": None}, "usage": {"output_tokens": 3}},
        {"type": "message_stop"},
    ),
    "redacted thinking": _anthropic_sse(
        START, {"type": "content_block_start", "index": 0, "content_block": {"type": "redacted_thinking", "data": "opaque"}}, STOP0,
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}, _text("ok", 1), {"type": "content_block_stop", "index": 1},
        *END,
    ),
    "data without an event name is skipped": _anthropic_sse(START, TEXT_START, _text("a"))
    + b'data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "ignored"}}\n\n'
    + _anthropic_sse(_text("b"), STOP0, *END),
}


@pytest.mark.parametrize("name", list(ANTHROPIC_RAW))
async def test_anthropic_wire_bytes_read_the_same(llm: FakeLLMServer, name: str) -> None:
    await _both(llm, _raw(ANTHROPIC_RAW[name]), model="claude-sonnet-4-5", wire="anthropic")


async def test_an_anthropic_turn_persists_and_sends_the_same(llm: FakeLLMServer) -> None:
    runs: list[tuple[RecordingSink, list[dict[str, Any]]]] = []
    for fast in (False, True):
        llm.script(
            Reply(thinking="plan", text="Let me check.", tool_calls=[ToolCall("toolu_1", "echo", {"x": 1}), ToolCall("toolu_2", "echo", {"x": 2})]),
            Reply(fault=Fault.overloaded()),
            Reply(text="All done.", usage=TokenUsage(input=50, output=9, cache_read=20)),
        )
        sink = RecordingSink()
        first = len(llm.requests)
        outcome = await run_turn(model_for(llm, "anthropic"), [system("be brief"), user("hi")], [echo_tool()], options(fast_streams=fast), sink)
        assert (outcome.reason, outcome.steps) == ("completed", 2)
        runs.append((sink, [r.body for r in llm.requests[first:]]))
    (ref_sink, ref_requests), (fast_sink, fast_requests) = runs
    assert fast_requests == ref_requests and len(ref_requests) == 3
    assert _untimed_parts(fast_sink.parts) == _untimed_parts(ref_sink.parts)
    assert _untimed_steps(fast_sink.steps) == _untimed_steps(ref_sink.steps)
    assert [(a, e.kind) for a, _, e in fast_sink.retries] == [(a, e.kind) for a, _, e in ref_sink.retries] == [(1, "overloaded")]
