"""Compaction in the loop (reference §5.7): a step whose context crosses the model's threshold
makes a summary call; the sink receives the summary rows; the next model call starts from the
summary. Real SDKs over HTTP against the scripted server, on both wire formats.

The summary call is a non-streaming request, but the Anthropic SDK refuses those above ~21k
max_tokens and pydantic-ai then streams it: each test scripts the summary reply in the turn's own
order, which serves both (the fake server hands a non-streaming request the next scripted reply).
"""

from __future__ import annotations

import json
from typing import Any

from chatd.domain.chat import Role, Usage
from chatd.domain.parts import TextPart, ToolCallPart, ToolResultPart
from chatd.loop import SUMMARY_TOOL_NAME, Compaction, Interrupted, run_turn
from chatd.loop.prompts import SUMMARY_PREFIX, SUMMARY_PROMPT
from chatd.providers import Pricing
from tests.fakes.llm_server import (
    FakeLLMServer,
    Fault,
    RecordedRequest,
    Reply,
    TokenUsage,
    ToolCall,
)
from tests.fakes.turn_doubles import RecordingSink, echo_tool, model_for, options, system, user

SUMMARY = "The user asked for x; echo returned 1; next: report it."


def _texts(wire: str, request: RecordedRequest) -> list[tuple[str, str]]:
    """(role, text) of every message of a request, system prompt first, across wire formats."""
    body = request.body
    out: list[tuple[str, str]] = []
    if wire == "anthropic" and body.get("system"):
        sys = body["system"]
        out.append(("system", sys if isinstance(sys, str) else "".join(b.get("text", "") for b in sys)))
    for m in body["messages"]:
        content = m.get("content")
        if isinstance(content, list) and all(b.get("type") == "text" for b in content):
            content = "".join(b["text"] for b in content)
        text = content if isinstance(content, str) else json.dumps(content) if content else ""
        if m.get("tool_calls"):
            text += json.dumps(m["tool_calls"])
        out.append((m["role"], text))
    return out


def _tool_choice_none(wire: str, body: dict[str, Any]) -> bool:
    return body.get("tool_choice") == ("none" if wire == "openai" else {"type": "none"})


async def test_a_step_over_the_threshold_is_summarised_and_the_next_call_starts_from_the_summary(
    llm: FakeLLMServer, wire: str, sink: RecordingSink
) -> None:
    llm.script(
        # 600 of 1000 context tokens after the first step: over the 50% threshold.
        Reply(text="Checking.", tool_calls=[ToolCall("call_1", "echo", {"x": 1})], usage=TokenUsage(input=600, output=20)),
        Reply(text=f"  {SUMMARY}  ", usage=TokenUsage(input=700, output=40)),
        Reply(text="x is 1.", usage=TokenUsage(input=120, output=5)),
    )
    pricing = Pricing(input=1_000_000, output=2_000_000)
    model = model_for(llm, wire, context_limit=1000, compression_threshold=50, pricing=pricing)
    outcome = await run_turn(model, [system("be brief"), user("what is x?")], [echo_tool()], options(), sink)

    assert outcome.reason == "completed" and outcome.steps == 2 and outcome.compactions == 1
    assert len(llm.requests) == 3
    # The summary call: the whole history so far plus the summary prompt, no tool calls allowed.
    summary_call = llm.requests[1]
    assert summary_call.body["stream"] is (wire == "anthropic")
    assert _tool_choice_none(wire, summary_call.body)
    texts = _texts(wire, summary_call)
    assert texts[0] == ("system", "be brief")
    assert texts[1] == ("user", "what is x?")
    assert any("call_1" in t for _, t in texts[2:])
    assert texts[-1][0] == "user" and SUMMARY_PROMPT in texts[-1][1]

    (compaction,) = sink.compactions
    call_id = compaction.tool_call_id
    assert call_id.startswith(f"{SUMMARY_TOOL_NAME}_")
    args = {"source": "automatic", "threshold_percent": 50}
    assert compaction == Compaction(
        summary=SUMMARY,
        summary_prompt_text=f"{SUMMARY_PREFIX}\n\n{SUMMARY}",
        tool_call_id=call_id,
        call=ToolCallPart(tool_call_id=call_id, tool_name=SUMMARY_TOOL_NAME, args=args),
        result=ToolResultPart(
            tool_call_id=call_id,
            tool_name=SUMMARY_TOOL_NAME,
            result={
                **args,
                "summary": SUMMARY,
                "usage_percent": 60.0,
                "context_tokens": 600,
                "context_limit_tokens": 1000,
            },
        ),
        threshold_percent=50,
        usage_percent=60.0,
        context_tokens=600,
        context_limit=1000,
        usage=Usage(input_tokens=700, output_tokens=40, total_tokens=740),
        cost_micros=700 + 80,
    )
    # The UI saw "Summarizing…" then "Summarized", in that order, after the first step's parts.
    summary_parts = [(role, p) for role, p in sink.parts if getattr(p, "tool_call_id", None) == call_id]
    assert summary_parts == [(Role.ASSISTANT, compaction.call), (Role.TOOL, compaction.result)]

    # The next model call starts from the summary: system prompt kept, old turns gone.
    assert _texts(wire, llm.requests[2]) == [("system", "be brief"), ("user", compaction.summary_prompt_text)]
    # Both steps were persisted as usual; the summary is not a step.
    assert [s.assistant_parts[-1] for s in sink.steps] == [
        ToolCallPart(tool_call_id="call_1", tool_name="echo", args={"x": 1}),
        TextPart(text="x is 1."),
    ]


async def test_a_step_under_the_threshold_makes_no_summary_call(llm: FakeLLMServer, wire: str, sink: RecordingSink) -> None:
    # 420 of 1000 after the step, plus the small tool result: under 50% before the next step too.
    llm.script(
        Reply(tool_calls=[ToolCall("call_1", "echo", {"x": 1})], usage=TokenUsage(input=400, output=20)),
        Reply(text="done", usage=TokenUsage(input=450, output=5)),
    )
    model = model_for(llm, wire, context_limit=1000, compression_threshold=50)
    outcome = await run_turn(model, [user("hi")], [echo_tool()], options(), sink)
    assert outcome.compactions == 0 and sink.compactions == []
    assert len(llm.requests) == 2 and all(r.body.get("stream") for r in llm.requests)


async def test_threshold_zero_never_compacts(llm: FakeLLMServer, sink: RecordingSink) -> None:
    llm.script(Reply(tool_calls=[ToolCall("call_1", "echo", {"x": 1})], usage=TokenUsage(input=5000)), Reply(text="done"))
    model = model_for(llm, "openai", context_limit=1000, compression_threshold=0)
    outcome = await run_turn(model, [user("hi")], [echo_tool()], options(), sink)
    assert outcome.compactions == 0 and len(llm.requests) == 2


async def test_cache_tokens_count_toward_the_context(llm: FakeLLMServer, sink: RecordingSink) -> None:
    # 100 fresh + 500 cache-read input tokens: 60% of the window even though input_tokens is small.
    llm.script(
        Reply(tool_calls=[ToolCall("call_1", "echo", {"x": 1})], usage=TokenUsage(input=100, cache_read=500)),
        Reply(text=SUMMARY),
        Reply(text="done"),
    )
    model = model_for(llm, "anthropic", context_limit=1000, compression_threshold=50)
    await run_turn(model, [user("hi")], [echo_tool()], options(), sink)
    (compaction,) = sink.compactions
    assert (compaction.context_tokens, compaction.usage_percent) == (600, 60.0)


async def test_a_prompt_estimated_over_the_threshold_is_compacted_before_the_first_call(
    llm: FakeLLMServer, wire: str, sink: RecordingSink
) -> None:
    """Beyond the reference: the history is estimated before a step, so a prompt that would
    overflow the window is summarised before it is sent, not after a failed call."""
    long = "lorem ipsum " * 400  # ~1200 estimated tokens, over 50% of 1000
    llm.script(Reply(text=SUMMARY), Reply(text="continuing"))
    model = model_for(llm, wire, context_limit=1000, compression_threshold=50)
    prompt = [system("sys"), user(long), user("and now?")]
    outcome = await run_turn(model, prompt, [], options(), sink)

    assert outcome.compactions == 1
    first, second = llm.requests
    assert _texts(wire, first)[1] == ("user", long)
    assert _texts(wire, first)[-1] == ("user", SUMMARY_PROMPT)
    assert _texts(wire, second) == [("system", "sys"), ("user", f"{SUMMARY_PREFIX}\n\n{SUMMARY}")]
    assert sink.compactions[0].context_tokens >= 1000 // 2


async def test_a_failed_summary_leaves_the_history_whole_and_the_turn_going(
    llm: FakeLLMServer, wire: str, sink: RecordingSink
) -> None:
    llm.script(
        Reply(tool_calls=[ToolCall("call_1", "echo", {"x": 1})], usage=TokenUsage(input=900)),
        Reply(fault=Fault.status(500, message="summariser down")),
        Reply(text="done anyway"),
    )
    model = model_for(llm, wire, context_limit=1000, compression_threshold=50)
    outcome = await run_turn(model, [user("what is x?")], [echo_tool()], options(), sink)

    assert outcome.reason == "completed" and outcome.compactions == 0
    assert sink.compactions == []
    errors = [p for _, p in sink.parts if isinstance(p, ToolResultPart) and p.tool_name == SUMMARY_TOOL_NAME]
    assert len(errors) == 1 and errors[0].is_error
    assert str(errors[0].result["error"]).startswith("generate summary text:")
    # The next call still carries the original question and the tool round.
    texts = _texts(wire, llm.requests[2])
    assert ("user", "what is x?") in texts and any("call_1" in t for _, t in texts)


async def test_an_empty_summary_is_an_error_not_a_compaction(llm: FakeLLMServer, sink: RecordingSink) -> None:
    llm.script(Reply(tool_calls=[ToolCall("call_1", "echo", {"x": 1})], usage=TokenUsage(input=900)), Reply(text="   "), Reply(text="done"))
    model = model_for(llm, "openai", context_limit=1000, compression_threshold=50)
    outcome = await run_turn(model, [user("what is x?")], [echo_tool()], options(), sink)
    assert outcome.compactions == 0 and sink.compactions == []
    errors = [p for _, p in sink.parts if isinstance(p, ToolResultPart) and p.tool_name == SUMMARY_TOOL_NAME]
    assert [e.result for e in errors] == [{"error": "generate summary text: compaction produced an empty summary"}]


class _TakenAwaySink(RecordingSink):
    """The chat is edited (or taken over) while its summary is generated: the write is refused."""

    async def persist_compaction(self, compaction: Compaction) -> None:
        raise Interrupted("chat is no longer ours")


async def test_a_refused_summary_write_ends_the_turn_as_lost_ownership(llm: FakeLLMServer) -> None:
    sink = _TakenAwaySink()
    llm.script(
        Reply(tool_calls=[ToolCall("call_1", "echo", {"x": 1})], usage=TokenUsage(input=900)),
        Reply(text=SUMMARY),
        Reply(text="never asked"),
    )
    model = model_for(llm, "openai", context_limit=1000, compression_threshold=50)
    outcome = await run_turn(model, [user("what is x?")], [echo_tool()], options(), sink)
    assert outcome.reason == "lost_ownership" and outcome.steps == 1 and outcome.compactions == 0
    assert len(llm.requests) == 2
    assert [p for _, p in sink.parts if isinstance(p, ToolResultPart) and p.tool_name == SUMMARY_TOOL_NAME] == []
