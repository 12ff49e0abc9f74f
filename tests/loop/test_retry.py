"""Transient provider failures are retried with backoff; the rest fail the turn readably."""

from __future__ import annotations

import asyncio

import pytest

from chatd.domain.parts import TextPart
from chatd.loop import RetriesExhausted, TurnControl, run_turn
from tests.fakes.llm_server import FakeLLMServer, Fault, Reply
from tests.fakes.turn_doubles import (
    HeldSleep,
    RecordedSleep,
    RecordingSink,
    model_for,
    options,
    user,
)


async def test_rate_limit_honours_retry_after(llm: FakeLLMServer, wire: str, sink: RecordingSink, sleep: RecordedSleep) -> None:
    llm.script(Reply(fault=Fault.status(429, retry_after=7)), Reply(text="finally"))
    outcome = await run_turn(model_for(llm, wire), [user("hi")], [], options(sleep), sink)

    assert outcome.reason == "completed"
    assert sleep.delays == [7.0]
    ((attempt, delay, decision),) = sink.retries
    assert (attempt, delay, decision.kind, decision.status_code, decision.retry_after_s) == (1, 7.0, "rate_limit", 429, 7.0)
    assert len(llm.requests) == 2
    assert sink.steps[0].assistant_parts == [TextPart(text="finally")]


async def test_a_stop_while_waiting_to_retry_persists_an_empty_stopped_answer(llm: FakeLLMServer, wire: str, sink: RecordingSink) -> None:
    llm.script(Reply(fault=Fault.status(500)), Reply(text="never asked for"))
    control, held = TurnControl(), HeldSleep()
    turn = asyncio.create_task(run_turn(model_for(llm, wire), [user("hi")], [], options(held), sink, control))
    await asyncio.wait_for(held.waiting.wait(), 10)
    control.interrupt()
    outcome = await asyncio.wait_for(turn, 10)
    assert (outcome.reason, outcome.steps, len(llm.requests)) == ("interrupted", 1, 1)
    ((step,),) = [sink.steps]
    assert (step.assistant_parts, step.tool_results, step.interrupted, step.usage.total_tokens) == ([], [], True, 0)


async def test_anthropic_overloaded_529_is_retried(llm: FakeLLMServer, sink: RecordingSink, sleep: RecordedSleep) -> None:
    llm.script(Reply(fault=Fault.overloaded()), Reply(fault=Fault.overloaded()), Reply(text="ok"))
    outcome = await run_turn(model_for(llm, "anthropic"), [user("hi")], [], options(sleep), sink)
    assert outcome.reason == "completed"
    assert [(a, d.kind, d.status_code) for a, _, d in sink.retries] == [(1, "overloaded", 529), (2, "overloaded", 529)]
    # 1 s then 2 s: exponential, at the middle of the jitter band.
    assert sleep.delays == [1.0, 2.0]


async def test_server_error_500_is_retried(llm: FakeLLMServer, wire: str, sink: RecordingSink, sleep: RecordedSleep) -> None:
    llm.script(Reply(fault=Fault.status(500)), Reply(text="ok"))
    outcome = await run_turn(model_for(llm, wire), [user("hi")], [], options(sleep), sink)
    assert outcome.reason == "completed"
    assert [(d.kind, d.status_code) for _, _, d in sink.retries] == [("server_error", 500)]


async def test_dropped_connection_mid_stream_is_retried(llm: FakeLLMServer, wire: str, sink: RecordingSink, sleep: RecordedSleep) -> None:
    llm.script(Reply(text="partial answer that will be cut", fault=Fault.drop(after=3)), Reply(text="whole answer"))
    outcome = await run_turn(model_for(llm, wire), [user("hi")], [], options(sleep), sink)
    assert outcome.reason == "completed"
    assert [d.kind for _, _, d in sink.retries] == ["connection"]
    # Only the retried answer is persisted; the cut one was streamed (the sink clears it on retry).
    assert sink.steps[0].assistant_parts == [TextPart(text="whole answer")]


async def test_truncated_stream_is_not_a_complete_answer(llm: FakeLLMServer, wire: str, sink: RecordingSink, sleep: RecordedSleep) -> None:
    llm.script(Reply(text="this answer stops halfway", fault=Fault.truncate(after=3)), Reply(text="complete"))
    outcome = await run_turn(model_for(llm, wire), [user("hi")], [], options(sleep), sink)
    assert outcome.reason == "completed"
    assert [(d.kind, d.retryable) for _, _, d in sink.retries] == [("truncated", True)]
    assert sink.steps[0].assistant_parts == [TextPart(text="complete")]


async def test_stall_is_retried_then_reported_clearly(llm: FakeLLMServer, wire: str, sink: RecordingSink, sleep: RecordedSleep) -> None:
    # The stall timeout itself is what is under test, so it has to elapse; keep it short.
    llm.script(Reply(text="slow", fault=Fault.stall(after=2)), Reply(text="never", fault=Fault.stall(after=0)))
    with pytest.raises(RetriesExhausted) as err:
        await run_turn(model_for(llm, wire), [user("hi")], [], options(sleep, stall_timeout=0.3, max_attempts=2), sink)
    assert err.value.decision is not None
    assert err.value.decision.kind == "stall"
    assert err.value.attempts == 2
    assert err.value.message == (
        "The model's response stream stalled: model stream stalled: no data for 0.3s (gave up after 2 attempts)"
    )
    assert [d.kind for _, _, d in sink.retries] == ["stall"]
    assert sink.steps == []


async def test_stall_then_success(llm: FakeLLMServer, sink: RecordingSink, sleep: RecordedSleep) -> None:
    llm.script(Reply(text="slow", fault=Fault.stall(after=1)), Reply(text="fast"))
    outcome = await run_turn(model_for(llm, "openai"), [user("hi")], [], options(sleep, stall_timeout=0.3), sink)
    assert outcome.reason == "completed"
    assert [d.kind for _, _, d in sink.retries] == ["stall"]


async def test_an_answer_streaming_for_longer_than_the_stall_timeout_is_no_stall(llm: FakeLLMServer, wire: str, sink: RecordingSink, sleep: RecordedSleep) -> None:
    # Frames 0.08 s apart under a 0.6 s stall timeout, ~1.5 s in all: the deadline moves with the
    # stream (the frames that publish nothing, such as a stream's last few, count as silence).
    llm.script(Reply(text="a steady answer, word after word", chunk_chars=2, frame_delay=0.08))
    outcome = await run_turn(model_for(llm, wire), [user("hi")], [], options(sleep, stall_timeout=0.6), sink)
    assert outcome.reason == "completed"
    assert sink.retries == []
    assert sink.steps[0].assistant_parts == [TextPart(text="a steady answer, word after word")]


async def test_attempts_are_capped(llm: FakeLLMServer, wire: str, sink: RecordingSink, sleep: RecordedSleep) -> None:
    llm.script(*[Reply(fault=Fault.status(503)) for _ in range(3)])
    with pytest.raises(RetriesExhausted) as err:
        await run_turn(model_for(llm, wire), [user("hi")], [], options(sleep, max_attempts=3), sink)
    assert err.value.attempts == 3
    assert err.value.decision is not None
    assert (err.value.decision.kind, err.value.decision.status_code) == ("unavailable", 503)
    assert sleep.delays == [1.0, 2.0]
    assert len(llm.requests) == 3
    assert llm.pending == 0
