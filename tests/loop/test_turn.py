"""The agent loop driving the real pydantic-ai OpenAI and Anthropic models over HTTP."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from chatd.domain.chat import Role, Usage
from chatd.domain.parts import ReasoningPart, TextPart, ToolCallPart, ToolResultPart
from chatd.domain.tools import ToolContext, ToolResult
from chatd.loop import (
    INTERRUPTED_TOOL_RESULT,
    ModelCallFailed,
    TurnControl,
    TurnOutcome,
    run_turn,
)
from chatd.providers import Pricing
from tests.fakes.llm_server import FakeLLMServer, Reply, TokenUsage, ToolCall
from tests.fakes.turn_doubles import (
    FnTool,
    KeyedTool,
    RecordedSleep,
    RecordingSink,
    echo_tool,
    model_for,
    options,
    system,
    user,
)


def untimed(results: list[ToolResultPart]) -> list[ToolResultPart]:
    """Tool results without their duration (measured, so different in every run)."""
    return [r.model_copy(update={"duration_ms": None}) for r in results]


def _tool_messages(wire: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The tool results a request carried, normalised across wire formats."""
    out: list[dict[str, Any]] = []
    for message in body["messages"]:
        if wire == "openai" and message["role"] == "tool":
            out.append({"id": message["tool_call_id"], "content": message["content"]})
        if wire == "anthropic" and isinstance(message["content"], list):
            for block in message["content"]:
                if block.get("type") == "tool_result":
                    content = block["content"]
                    text = content if isinstance(content, str) else "".join(c.get("text", "") for c in content)
                    out.append({"id": block["tool_use_id"], "content": text, "is_error": block.get("is_error", False)})
    return out


async def test_multi_step_tool_turn_persists_each_step(llm: FakeLLMServer, wire: str, sink: RecordingSink) -> None:
    llm.script(
        Reply(text="Let me check.", tool_calls=[ToolCall("call_1", "echo", {"x": 1})]),
        Reply(text="All done."),
    )
    outcome = await run_turn(model_for(llm, wire), [system("be brief"), user("hi")], [echo_tool()], options(), sink)

    assert outcome.reason == "completed"
    assert outcome.steps == 2
    assert outcome.final_text == "All done."
    first, second = sink.steps
    assert first.assistant_parts == [
        TextPart(text="Let me check."),
        ToolCallPart(tool_call_id="call_1", tool_name="echo", args={"x": 1}),
    ]
    assert untimed(first.tool_results) == [ToolResultPart(tool_call_id="call_1", tool_name="echo", result={"echo": {"x": 1}})]
    assert second.assistant_parts == [TextPart(text="All done.")]
    assert second.tool_results == []
    # The second request carried the tool result back to the model.
    results = _tool_messages(wire, llm.requests[1].body)
    assert [r["id"] for r in results] == ["call_1"]
    assert json.loads(results[0]["content"]) == {"echo": {"x": 1}}
    assert llm.pending == 0


async def test_streamed_parts_are_published_as_deltas(llm: FakeLLMServer, wire: str, sink: RecordingSink) -> None:
    llm.script(
        Reply(thinking="think about it", text="Hello there, friend", tool_calls=[ToolCall("call_9", "echo", {"x": 42}, pieces=4)]),
        Reply(text="ok"),
    )
    await run_turn(model_for(llm, wire), [user("hi")], [echo_tool()], options(), sink)

    text_parts = [p for role, p in sink.parts if isinstance(p, TextPart)]
    assert len(text_parts) > 2, "text arrives as several deltas"
    assert sink.streamed_text() == "Hello there, friendok"
    assert sink.streamed_reasoning() == "think about it"
    calls = sink.tool_call_parts()
    deltas = [c for c in calls if c.args_delta is not None]
    assert "".join(c.args_delta or "" for c in deltas) == json.dumps({"x": 42})
    assert all(c.tool_call_id == "call_9" and c.tool_name == "echo" for c in deltas)
    assert calls[-1] == ToolCallPart(tool_call_id="call_9", tool_name="echo", args={"x": 42})
    assert [(r, untimed([p])[0]) for r, p in sink.parts if isinstance(p, ToolResultPart)] == [
        (Role.TOOL, ToolResultPart(tool_call_id="call_9", tool_name="echo", result={"echo": {"x": 42}}))
    ]
    reasoning = [p for p in sink.steps[0].assistant_parts if isinstance(p, ReasoningPart)]
    assert [p.text for p in reasoning] == ["think about it"]
    if wire == "anthropic":
        assert reasoning[0].signature == "sig-1"
        assert reasoning[0].provider == "anthropic"


async def test_anthropic_thinking_signature_is_replayed_on_the_next_step(llm: FakeLLMServer, sink: RecordingSink) -> None:
    llm.script(
        Reply(thinking="plan", thinking_signature="sig-xyz", tool_calls=[ToolCall("toolu_1", "echo", {"x": 1})]),
        Reply(text="ok"),
    )
    await run_turn(model_for(llm, "anthropic"), [user("hi")], [echo_tool()], options(), sink)
    assistant = next(m for m in llm.requests[1].body["messages"] if m["role"] == "assistant")
    assert assistant["content"][0] == {"type": "thinking", "thinking": "plan", "signature": "sig-xyz"}


async def test_usage_and_cost_are_reported_per_step(llm: FakeLLMServer, wire: str, sink: RecordingSink) -> None:
    llm.script(Reply(text="priced", usage=TokenUsage(input=1000, output=500, cache_read=10_000)))
    pricing = Pricing(input=3_000_000, output=15_000_000, cache_read=300_000)
    outcome = await run_turn(model_for(llm, wire, pricing=pricing), [user("hi")], [], options(), sink)

    (step,) = sink.steps
    assert step.usage == Usage(
        input_tokens=1000, output_tokens=500, total_tokens=11_500, cache_read_tokens=10_000
    )
    assert step.context_tokens == 11_000
    assert step.cost_micros == 3000 + 7500 + 3000
    assert outcome.cost_micros == 13_500
    assert outcome.usage == step.usage
    assert step.context_limit == 200_000


async def test_unpriced_model_has_no_cost(llm: FakeLLMServer, sink: RecordingSink) -> None:
    llm.script(Reply(text="free"))
    outcome = await run_turn(model_for(llm, "openai"), [user("hi")], [], options(), sink)
    assert sink.steps[0].cost_micros is None
    assert outcome.cost_micros is None


async def test_parallel_tool_calls_run_concurrently_and_report_in_call_order(
    llm: FakeLLMServer, wire: str, sink: RecordingSink
) -> None:
    barrier = asyncio.Barrier(2)

    async def meet(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        # Returns only when both calls are in flight at once.
        async with asyncio.timeout(5):
            await barrier.wait()
        return ToolResult(args["x"])

    llm.script(
        Reply(tool_calls=[ToolCall("call_a", "meet", {"x": 1}), ToolCall("call_b", "meet", {"x": 2})]),
        Reply(text="done"),
    )
    await run_turn(model_for(llm, wire), [user("go")], [FnTool("meet", meet)], options(), sink)
    assert [r.result for r in sink.steps[0].tool_results] == [1, 2]
    assert [r.tool_call_id for r in sink.steps[0].tool_results] == ["call_a", "call_b"]


async def test_calls_sharing_a_concurrency_key_run_one_at_a_time(llm: FakeLLMServer, sink: RecordingSink) -> None:
    running = 0
    peak = 0
    order: list[int] = []

    async def write(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        for _ in range(3):
            await asyncio.sleep(0)  # yield so an unserialised sibling would overlap
        order.append(args["x"])
        running -= 1
        return ToolResult("ok")

    tool = KeyedTool("write", write, key=lambda args: "same-file")
    llm.script(
        Reply(tool_calls=[ToolCall(f"call_{i}", "write", {"x": i}) for i in range(3)]),
        Reply(text="done"),
    )
    await run_turn(model_for(llm, "openai"), [user("go")], [tool], options(), sink)
    assert peak == 1
    assert order == [0, 1, 2]


async def test_a_tool_result_keeps_how_long_the_tool_ran_and_the_model_never_sees_it(llm: FakeLLMServer, wire: str, sink: RecordingSink) -> None:
    async def slow(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        await asyncio.sleep(0.05)
        return ToolResult({"done": True})

    llm.script(Reply(tool_calls=[ToolCall("call_1", "slow", {})]), Reply(text="ok"))
    await run_turn(model_for(llm, wire), [user("go")], [FnTool("slow", slow)], options(), sink)
    (result,) = sink.steps[0].tool_results
    # The page shows it after a reload; a 50 ms sleep cannot take less than 50 ms.
    assert result.duration_ms is not None and result.duration_ms >= 50
    assert "duration" not in json.dumps(llm.requests[1].body)


async def test_unknown_tool_and_failing_tool_become_error_results(llm: FakeLLMServer, wire: str, sink: RecordingSink) -> None:
    async def boom(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        raise RuntimeError("disk on fire")

    llm.script(
        Reply(tool_calls=[ToolCall("call_1", "missing", {}), ToolCall("call_2", "boom", {})]),
        Reply(text="sorry"),
    )
    outcome = await run_turn(model_for(llm, wire), [user("go")], [FnTool("boom", boom)], options(), sink)
    assert outcome.reason == "completed"
    assert untimed(sink.steps[0].tool_results) == [
        ToolResultPart(tool_call_id="call_1", tool_name="missing", result={"error": "Tool not found: missing"}, is_error=True),
        ToolResultPart(tool_call_id="call_2", tool_name="boom", result={"error": "disk on fire"}, is_error=True),
    ]
    if wire == "anthropic":
        assert [r["is_error"] for r in _tool_messages(wire, llm.requests[1].body)] == [True, True]


async def test_steered_message_is_applied_at_the_tool_boundary(llm: FakeLLMServer, wire: str, sink: RecordingSink) -> None:
    sink.steer_queue.append([user("also mention the weather")])
    llm.script(Reply(tool_calls=[ToolCall("call_1", "echo", {"x": 1})]), Reply(text="done, and it is sunny"))
    outcome = await run_turn(model_for(llm, wire), [user("hi")], [echo_tool()], options(), sink)

    assert outcome.reason == "completed"
    # Asked once, after the tool batch; not again after the final answer.
    assert sink.steer_calls == 1
    second = json.dumps(llm.requests[1].body["messages"])
    assert "also mention the weather" in second
    assert second.index("also mention the weather") > second.index("call_1")
    assert "also mention the weather" not in json.dumps(llm.requests[0].body["messages"])


async def test_lost_ownership_stops_the_turn_without_more_calls(llm: FakeLLMServer, sink: RecordingSink) -> None:
    sink.lose_ownership = True
    llm.script(Reply(tool_calls=[ToolCall("call_1", "echo", {"x": 1})]), Reply(text="never asked"))
    outcome = await run_turn(model_for(llm, "openai"), [user("hi")], [echo_tool()], options(), sink)
    assert outcome.reason == "lost_ownership"
    assert len(llm.requests) == 1
    assert sink.steps == []


async def test_max_steps_caps_a_tool_loop(llm: FakeLLMServer, sink: RecordingSink) -> None:
    llm.script(*[Reply(tool_calls=[ToolCall(f"call_{i}", "echo", {"x": i})]) for i in range(2)])
    outcome = await run_turn(model_for(llm, "openai"), [user("loop")], [echo_tool()], options(max_steps=2), sink)
    assert outcome == TurnOutcome(
        reason="max_steps", steps=2, usage=outcome.usage, cost_micros=None, final_text="", compactions=0
    )


async def test_non_retryable_error_fails_the_turn_readably(llm: FakeLLMServer, wire: str, sink: RecordingSink, sleep: RecordedSleep) -> None:
    from tests.fakes.llm_server import Fault

    llm.script(Reply(fault=Fault.status(401, message="invalid x-api-key")))
    with pytest.raises(ModelCallFailed) as err:
        await run_turn(model_for(llm, wire), [user("hi")], [], options(sleep), sink)
    assert err.value.decision is not None
    assert (err.value.decision.kind, err.value.decision.status_code) == ("auth", 401)
    assert err.value.message.startswith("The model provider rejected the credentials (HTTP 401)")
    assert sleep.delays == []
    assert sink.retries == []


async def test_tool_results_keep_interrupted_marker_text() -> None:
    # The synthetic result text is part of the contract with the UI and the reference.
    assert INTERRUPTED_TOOL_RESULT == "tool call was interrupted before it produced a result"


async def test_control_interrupt_before_start_ends_at_once(llm: FakeLLMServer, sink: RecordingSink) -> None:
    control = TurnControl()
    control.interrupt()
    outcome = await run_turn(model_for(llm, "openai"), [user("hi")], [], options(), sink, control)
    assert outcome.reason == "interrupted"
    assert llm.requests == []


async def test_a_turn_whose_history_already_ends_with_the_answer_calls_no_model(
    llm: FakeLLMServer, wire: str, sink: RecordingSink
) -> None:
    # A chat given back after its answer was saved but before the turn settled (the database
    # went away in between) is run again; it must not answer the same question twice.
    from chatd.loop.types import PromptMessage

    llm.script(Reply(text="a second answer"))
    answered = PromptMessage(Role.ASSISTANT, [TextPart(text="the answer")])
    outcome = await run_turn(model_for(llm, wire), [system("be brief"), user("hi"), answered], [echo_tool()], options(), sink)

    assert (outcome.reason, outcome.steps) == ("completed", 0)
    assert sink.steps == []
    assert llm.requests == []


async def test_a_turn_whose_history_ends_with_tool_results_continues(
    llm: FakeLLMServer, wire: str, sink: RecordingSink
) -> None:
    from chatd.loop.types import PromptMessage

    llm.script(Reply(text="done"))
    history = [
        user("hi"),
        PromptMessage(Role.ASSISTANT, [ToolCallPart(tool_call_id="c1", tool_name="echo", args={"x": 1})]),
        PromptMessage(Role.TOOL, [ToolResultPart(tool_call_id="c1", tool_name="echo", result={"echo": {"x": 1}})]),
    ]
    outcome = await run_turn(model_for(llm, wire), history, [echo_tool()], options(), sink)

    assert (outcome.reason, outcome.steps, outcome.final_text) == ("completed", 1, "done")
    assert len(llm.requests) == 1
