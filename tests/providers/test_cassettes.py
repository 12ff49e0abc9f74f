"""Recorded real traffic replayed through the loop: VCR cassettes from the langchain-anthropic and
langchain-openai source distributions (licenses beside them in tests/data/cassettes).

Each recorded response body is served verbatim by the fake server (`RawReply`), so the real SDKs
and pydantic-ai adapters parse bytes a real provider sent. What the loop reports is compared with
what an independent reading of the same recording says (tool calls, text, reasoning and its
signature, usage), and where the cassette also recorded the follow-up request, with what the real
client sent back.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from chatd.domain.chat import Role, Usage
from chatd.domain.parts import ReasoningPart, TextPart, ToolCallPart, ToolResultPart
from chatd.domain.tools import ToolContext, ToolResult
from chatd.loop import PromptMessage, generate_push_summary, run_turn
from tests.fakes.llm_server import FakeLLMServer, RawReply, Reply
from tests.fakes.turn_doubles import FnTool, RecordingSink, model_for, options, user

CASSETTES = Path(__file__).parent.parent / "data" / "cassettes"
# The recordings name dated models; the SDK warns that some of them are being retired.
pytestmark = pytest.mark.filterwarnings("ignore:The model 'claude-.*' is deprecated:DeprecationWarning")


# ------------------------------------------------------------------------------ the recordings


@dataclass(frozen=True)
class Interaction:
    request: dict[str, Any]
    status: int
    body: bytes


def load(name: str) -> list[Interaction]:
    with gzip.open(CASSETTES / f"{name}.yaml.gz") as f:
        data = yaml.safe_load(f)
    out: list[Interaction] = []
    for request, response in zip(data["requests"], data["responses"], strict=True):
        body = response["body"]["string"]
        out.append(
            Interaction(
                request=json.loads(request["body"]),
                status=response["status"]["code"],
                body=body if isinstance(body, bytes) else body.encode(),
            )
        )
    return out


def raw(interaction: Interaction) -> RawReply:
    # The recorded Content-Type header is redacted; the bodies say what they are.
    streaming = interaction.body.lstrip().startswith((b"event:", b"data:"))
    return RawReply(
        interaction.body,
        content_type="text/event-stream" if streaming else "application/json",
        status_code=interaction.status,
    )


@dataclass
class Expected:
    """What a recorded response contains, read without the SDKs."""

    calls: list[ToolCallPart] = field(default_factory=list)
    text: str = ""
    thinking: str = ""
    signature: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    model: str = ""
    finish_reason: str | None = None


def _sse_data(body: bytes) -> list[str]:
    return [line[5:].strip() for line in body.decode().splitlines() if line.startswith("data:")]


def read_anthropic(body: bytes) -> Expected:
    exp = Expected()
    blocks: dict[int, dict[str, Any]] = {}
    for data in _sse_data(body):
        ev = json.loads(data)
        kind = ev["type"]
        if kind == "message_start":
            exp.model = ev["message"]["model"]
            exp.input_tokens = ev["message"]["usage"]["input_tokens"]
        elif kind == "content_block_start":
            blocks[ev["index"]] = {**ev["content_block"], "json": "", "text_acc": "", "thinking_acc": "", "sig": ""}
        elif kind == "content_block_delta":
            block, delta = blocks[ev["index"]], ev["delta"]
            if delta["type"] == "input_json_delta":
                block["json"] += delta["partial_json"]
            elif delta["type"] == "text_delta":
                block["text_acc"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking_acc"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                block["sig"] += delta["signature"]
        elif kind == "message_delta":
            exp.output_tokens = ev["usage"]["output_tokens"]
            exp.finish_reason = ev["delta"]["stop_reason"]
    for _, block in sorted(blocks.items()):
        if block["type"] == "tool_use":
            exp.calls.append(ToolCallPart(tool_call_id=block["id"], tool_name=block["name"], args=json.loads(block["json"] or "{}")))
        elif block["type"] == "text":
            exp.text += block["text_acc"]
        elif block["type"] == "thinking":
            exp.thinking += block["thinking_acc"]
            exp.signature = block["sig"] or None
    return exp


def read_openai(body: bytes) -> Expected:
    exp = Expected()
    calls: dict[int, dict[str, str]] = {}
    for data in _sse_data(body):
        if data == "[DONE]":
            break
        chunk = json.loads(data)
        exp.model = chunk["model"]
        if chunk.get("usage"):
            exp.input_tokens = chunk["usage"]["prompt_tokens"]
            exp.output_tokens = chunk["usage"]["completion_tokens"]
        for choice in chunk["choices"]:
            delta = choice["delta"]
            exp.text += delta.get("content") or ""
            for tc in delta.get("tool_calls") or []:
                call = calls.setdefault(tc["index"], {"id": "", "name": "", "args": ""})
                call["id"] = tc.get("id") or call["id"]
                fn = tc.get("function") or {}
                call["name"] = fn.get("name") or call["name"]
                call["args"] += fn.get("arguments") or ""
            if choice.get("finish_reason"):
                exp.finish_reason = choice["finish_reason"]
    exp.calls = [
        ToolCallPart(tool_call_id=c["id"], tool_name=c["name"], args=json.loads(c["args"] or "{}")) for _, c in sorted(calls.items())
    ]
    return exp


def fixed_tool(name: str, result: Any) -> FnTool:
    async def fn(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        return ToolResult(result)

    return FnTool(name, fn)


# ----------------------------------------------------------------------------------- the tests


async def test_anthropic_agent_loop_replays_tool_call_then_answer(llm: FakeLLMServer, sink: RecordingSink) -> None:
    first, second = load("anthropic_agent_loop_streaming")
    exp1, exp2 = read_anthropic(first.body), read_anthropic(second.body)
    # The recording is what this test is about: a tool call, then a text answer.
    assert [c.tool_name for c in exp1.calls] == ["get_weather"] and exp2.text and not exp2.calls

    recorded_result = next(
        block["content"]
        for m in second.request["messages"]
        if isinstance(m["content"], list)
        for block in m["content"]
        if block.get("type") == "tool_result"
    )
    llm.script(raw(first), raw(second))
    model = model_for(llm, "anthropic", model=first.request["model"])
    question = first.request["messages"][0]["content"]
    outcome = await run_turn(model, [user(question)], [fixed_tool("get_weather", recorded_result)], options(), sink)

    assert outcome.reason == "completed" and outcome.steps == 2
    step1, step2 = sink.steps
    assert step1.assistant_parts == exp1.calls
    assert step1.assistant_parts == [
        ToolCallPart(tool_call_id="toolu_01DoxA6XXQEf12XZeM869dvZ", tool_name="get_weather", args={"location": "San Francisco, CA"})
    ]
    assert [r.model_copy(update={"duration_ms": None}) for r in step1.tool_results] == [
        ToolResultPart(tool_call_id=exp1.calls[0].tool_call_id, tool_name="get_weather", result=recorded_result)
    ]
    assert step1.usage == Usage(input_tokens=exp1.input_tokens, output_tokens=exp1.output_tokens, total_tokens=exp1.input_tokens + exp1.output_tokens)
    assert (step1.usage.input_tokens, step1.usage.output_tokens) == (567, 57)
    assert (step1.model_name, step1.finish_reason) == (exp1.model, "tool_call")
    assert step2.assistant_parts == [TextPart(text=exp2.text)]
    assert outcome.final_text == "The weather in San Francisco, CA is sunny."
    assert step2.usage == Usage(input_tokens=639, output_tokens=13, total_tokens=652)
    assert outcome.usage == step1.usage + step2.usage
    # The streamed deltas add up to what was recorded.
    assert sink.streamed_text() == exp2.text
    assert sink.tool_call_parts()[-1] == exp1.calls[0]

    # What the real client sent back is what the recorded client sent: the call and its result.
    sent = llm.requests[1].body["messages"]
    recorded = second.request["messages"]
    assert [m["role"] for m in sent] == [m["role"] for m in recorded]
    sent_use = next(b for b in sent[1]["content"] if b["type"] == "tool_use")
    rec_use = next(b for b in recorded[1]["content"] if b["type"] == "tool_use")
    assert {k: sent_use[k] for k in ("id", "name", "input")} == {k: rec_use[k] for k in ("id", "name", "input")}
    (sent_result,) = sent[2]["content"]
    (rec_result,) = recorded[2]["content"]
    assert sent_result["tool_use_id"] == rec_result["tool_use_id"]
    content = sent_result["content"]
    sent_text = content if isinstance(content, str) else "".join(c.get("text", "") for c in content)
    assert sent_text == rec_result["content"]


async def test_anthropic_thinking_keeps_the_recorded_signature_and_replays_it(llm: FakeLLMServer, sink: RecordingSink) -> None:
    interactions = load("anthropic_thinking")
    streamed = next(i for i in interactions if i.request.get("stream"))
    follow_up = interactions[-1]
    exp = read_anthropic(streamed.body)
    assert exp.thinking and exp.signature and exp.text

    llm.script(raw(streamed))
    model = model_for(llm, "anthropic", model=streamed.request["model"])
    await run_turn(model, [user(streamed.request["messages"][0]["content"])], [], options(), sink)

    (step,) = sink.steps
    assert step.assistant_parts == [
        ReasoningPart(text=exp.thinking, signature=exp.signature, provider="anthropic"),
        TextPart(text=exp.text),
    ]
    assert step.assistant_parts[0].signature.startswith("ErECCkYICRgCKkCrlDGITBnojhzN")  # type: ignore[union-attr]
    assert step.usage == Usage(input_tokens=36, output_tokens=49, total_tokens=85)
    assert sink.streamed_reasoning() == exp.thinking
    assert sink.streamed_text() == "Hello! How can I help you today?"

    # The next turn sends the signed thinking back exactly as the recorded client did.
    llm.script(Reply(text="Fine, thanks."))
    history = [
        user(follow_up.request["messages"][0]["content"]),
        PromptMessage(Role.ASSISTANT, step.assistant_parts),
        user(follow_up.request["messages"][2]["content"]),
    ]
    await run_turn(model, history, [], options(), RecordingSink())
    sent_assistant = llm.requests[1].body["messages"][1]
    recorded_assistant = follow_up.request["messages"][1]
    assert sent_assistant["role"] == recorded_assistant["role"] == "assistant"

    def blocks(content: list[dict[str, Any]]) -> list[dict[str, Any]]:
        keep = {"thinking": ("type", "thinking", "signature"), "text": ("type", "text")}
        return [{k: b[k] for k in keep[b["type"]]} for b in content]

    assert blocks(sent_assistant["content"]) == blocks(recorded_assistant["content"])


@pytest.mark.parametrize("index", [0, 1])
async def test_openai_streamed_tool_call_is_parsed_as_recorded(llm: FakeLLMServer, sink: RecordingSink, index: int) -> None:
    interaction = load("openai_streaming_tool_call")[index]
    exp = read_openai(interaction.body)
    # Forced tool choice: the recorded stream ends with finish_reason "stop", not "tool_calls".
    assert exp.finish_reason == "stop" and len(exp.calls) == 1

    tool = interaction.request["tools"][0]["function"]["name"]
    seen: list[dict[str, Any]] = []

    async def person(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        seen.append(args)
        return ToolResult({"saved": True})

    llm.script(raw(interaction), Reply(text="Saved."))
    model = model_for(llm, "openai", model=interaction.request["model"])
    outcome = await run_turn(model, [user(interaction.request["messages"][0]["content"])], [FnTool(tool, person)], options(), sink)

    first = sink.steps[0]
    assert first.assistant_parts == exp.calls
    assert first.assistant_parts == [
        ToolCallPart(tool_call_id=exp.calls[0].tool_call_id, tool_name="_Person", args={"name": "Erick", "age": 27})
    ]
    assert exp.calls[0].tool_call_id.startswith("call_")
    # The tool ran on the recorded arguments even though the finish reason was "stop".
    assert seen == [{"name": "Erick", "age": 27}]
    assert first.usage == Usage(input_tokens=78, output_tokens=10, total_tokens=88)
    assert (first.usage.input_tokens, first.usage.output_tokens) == (exp.input_tokens, exp.output_tokens)
    assert first.model_name == exp.model == "gpt-4o-mini-2024-07-18"
    assert first.context_tokens == 78
    assert outcome.reason == "completed" and outcome.final_text == "Saved."
    streamed_args = "".join(c.args_delta or "" for c in sink.tool_call_parts())
    assert json.loads(streamed_args) == exp.calls[0].args
    # The result went back to the model under the recorded call id.
    tool_messages = [m for m in llm.requests[1].body["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == [exp.calls[0].tool_call_id]


async def test_recorded_non_streaming_thinking_reply_makes_a_push_summary_of_its_text(llm: FakeLLMServer) -> None:
    """The side calls are non-streaming: a recorded Messages response with a thinking block gives
    its text, and only its text."""
    interactions = [i for i in load("anthropic_thinking") if not i.request.get("stream")]
    assert len(interactions) == 2
    for interaction in interactions:
        llm.script_side(raw(interaction))
        recorded = json.loads(interaction.body)
        text = "".join(b["text"] for b in recorded["content"] if b["type"] == "text")
        assert any(b["type"] == "thinking" for b in recorded["content"])
        model = model_for(llm, "anthropic", model=interaction.request["model"])
        summary = await generate_push_summary(model, "Greeting", "Said hello to the user.")
        assert summary == text
