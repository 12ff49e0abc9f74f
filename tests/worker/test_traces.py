"""Traces of real turns (issue 13 item 2), read from the SDK's in-memory exporter: one trace per
turn, GenAI attributes on model calls, the MCP server and tool on tool spans, persistence and
compaction spans, the trace id on the chat (admins' debug view) and in the turn's log lines, and
no prompt or tool content unless capture is on."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode, format_trace_id

from chatd import tracing
from chatd.domain.chat import ChatStatus
from tests.fakes.llm_server import Fault, Reply, TokenUsage, ToolCall
from tests.fakes.turn_doubles import echo_tool
from tests.mcp.mcp_test_servers import ServerState, build_server, serve
from tests.worker.conftest import Rig

PROMPT = "add 2 and 3 please"
CONTENT_KEYS = ("gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.tool.call.arguments", "gen_ai.tool.call.result")


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = tracing.new_provider(replica_id="test")
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracing.install(provider)
    try:
        yield memory
    finally:
        tracing.install(None)
        provider.shutdown()


@pytest.fixture
def mcp_server() -> Iterator[tuple[str, ServerState]]:
    state = ServerState()
    with serve(build_server(state).streamable_http_app()) as running:
        yield running.url, state


def named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def mcp_turn(rig: Rig, url: str) -> Any:
    server = await rig.app.service.create_mcp_server(rig.people.admin.user, {"slug": "calc", "display_name": "Calc", "url": url, "enabled": True})
    rig.llm.script(
        Reply(text="Adding.", tool_calls=[ToolCall("c1", "calc__add", {"a": 2, "b": 3})], usage=TokenUsage(input=40, output=7)),
        Reply(text="It is 5.", usage=TokenUsage(input=60, output=4)),
    )
    chat = await rig.chat(PROMPT, mcp_server_ids=[server.id])
    await rig.run()
    return chat


async def test_a_turn_with_an_mcp_tool_call_is_one_trace_of_model_tool_and_persistence_spans(
    rig: Rig, mcp_server: tuple[str, ServerState], exporter: InMemorySpanExporter, client: httpx.AsyncClient, captured: io.StringIO
) -> None:
    url, state = mcp_server
    chat = await mcp_turn(rig, url)
    assert state.calls == ["add"]
    spans = list(exporter.get_finished_spans())

    [turn] = named(spans, "invoke_agent chatd")
    assert turn.parent is None
    trace_id = turn.context.trace_id
    assert {s.context.trace_id for s in spans} == {trace_id}, "every span belongs to the turn's trace"
    assert attrs(turn)["gen_ai.conversation.id"] == str(chat.id)
    assert attrs(turn)["chatd.turn.end"] == "completed" and attrs(turn)["chatd.turn.steps"] == 2
    assert turn.status.status_code is StatusCode.UNSET

    first, second = named(spans, "chat fake-model")
    for span in (first, second):
        assert span.parent is not None and span.parent.span_id == turn.context.span_id
        assert attrs(span)["gen_ai.operation.name"] == "chat"
        assert attrs(span)["gen_ai.request.model"] == "fake-model"
        assert attrs(span)["gen_ai.provider.name"] == attrs(span)["gen_ai.system"] == "openai"
    assert (attrs(first)["gen_ai.usage.input_tokens"], attrs(first)["gen_ai.usage.output_tokens"]) == (40, 7)
    assert (attrs(second)["gen_ai.usage.input_tokens"], attrs(second)["gen_ai.usage.output_tokens"]) == (60, 4)
    assert list(attrs(first)["gen_ai.response.finish_reasons"]) == ["tool_call"]
    assert list(attrs(second)["gen_ai.response.finish_reasons"]) == ["stop"]
    assert (attrs(first)["chatd.step.index"], attrs(second)["chatd.step.index"]) == (0, 1)

    [tool] = named(spans, "execute_tool calc__add")
    assert tool.parent is not None and tool.parent.span_id == turn.context.span_id
    assert {k: attrs(tool)[k] for k in ("gen_ai.tool.name", "gen_ai.tool.call.id", "chatd.tool.source", "chatd.mcp.server", "chatd.mcp.tool")} == {
        "gen_ai.tool.name": "calc__add", "gen_ai.tool.call.id": "c1", "chatd.tool.source": "mcp", "chatd.mcp.server": "calc", "chatd.mcp.tool": "add",
    }
    assert tool.start_time is not None and first.end_time is not None and tool.start_time >= first.end_time
    assert len(named(spans, "chatd.persist_step")) == 2
    assert len(named(spans, "chatd.finish_turn")) == 1
    [connect] = named(spans, "chatd.mcp.connect")
    assert list(attrs(connect)["chatd.mcp.connected"]) == ["calc"]

    # Nothing the user or the tool said is in any span.
    for span in spans:
        assert not set(attrs(span)) & set(CONTENT_KEYS), span.name
        assert PROMPT not in json.dumps(attrs(span), default=str) and "It is 5" not in json.dumps(attrs(span), default=str)

    # The trace id is on the chat, for admins only, and on the turn's log lines.
    hex_id = format_trace_id(trace_id)
    assert (await rig.get(chat.id)).trace_id == hex_id
    r = await client.get(f"/api/v1/chats/{chat.id}/debug", headers=rig.people.admin.headers)
    assert r.status_code == 200, r.text
    debug = r.json()
    assert (debug["trace_id"], debug["status"], debug["generation"]) == (hex_id, "waiting", (await rig.get(chat.id)).generation)
    assert (await client.get(f"/api/v1/chats/{chat.id}/debug", headers=rig.people.alice.headers)).status_code == 403
    assert "trace_id" not in (await client.get(f"/api/v1/chats/{chat.id}", headers=rig.people.alice.headers)).json()
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    mine = [e for e in lines if e.get("chat_id") == str(chat.id)]
    assert mine and {e.get("trace_id") for e in mine} == {hex_id}


async def test_content_is_in_spans_only_when_capture_is_on(rig: Rig, mcp_server: tuple[str, ServerState], exporter: InMemorySpanExporter) -> None:
    tracing.install(tracing._state.provider, capture_content=True)
    url, _state = mcp_server
    await mcp_turn(rig, url)
    spans = list(exporter.get_finished_spans())
    first, second = named(spans, "chat fake-model")
    assert PROMPT in attrs(first)["gen_ai.input.messages"]
    assert "Adding." in attrs(first)["gen_ai.output.messages"] and "It is 5." in attrs(second)["gen_ai.output.messages"]
    [tool] = named(spans, "execute_tool calc__add")
    assert json.loads(attrs(tool)["gen_ai.tool.call.arguments"]) == {"a": 2, "b": 3}
    assert "5" in attrs(tool)["gen_ai.tool.call.result"]


async def test_compaction_and_a_built_in_tool_have_their_spans(rig: Rig, exporter: InMemorySpanExporter) -> None:
    rig.tools = [echo_tool()]
    rig.llm.script(
        # 80k context tokens cross the rig model's 70% of 100k: the summary call follows the step.
        Reply(text="Let me look.", tool_calls=[ToolCall("call_1", "echo", {"x": 1})], usage=TokenUsage(input=80_000, output=50)),
        Reply(text="A summary.", usage=TokenUsage(input=80_100, output=30)),
        Reply(text="x is 1.", usage=TokenUsage(input=300, output=10)),
    )
    await rig.chat("what is x?")
    await rig.run()
    spans = list(exporter.get_finished_spans())
    [echo] = named(spans, "execute_tool echo")
    assert (attrs(echo)["chatd.tool.source"], attrs(echo)["gen_ai.tool.type"]) == ("builtin", "function")
    assert "chatd.mcp.server" not in attrs(echo)
    [compaction] = named(spans, "chatd.compaction")
    assert attrs(compaction)["chatd.compaction.context_tokens"] >= 80_000
    inside = [s for s in spans if s.parent is not None and s.parent.span_id == compaction.context.span_id]
    assert sorted(s.name for s in inside) == ["chat fake-model", "chatd.persist_compaction"]
    [summary] = [s for s in inside if s.name == "chat fake-model"]
    assert attrs(summary)["chatd.model_call.purpose"] == "compaction"
    assert attrs(summary)["gen_ai.usage.input_tokens"] == 80_100
    assert len(named(spans, "chat fake-model")) == 3


async def test_a_failed_turn_marks_its_model_call_and_its_trace_as_errors(rig: Rig, exporter: InMemorySpanExporter) -> None:
    rig.llm.script(Reply(fault=Fault.status(401, message="bad key")))
    chat = await rig.chat("hello")
    await rig.run()
    assert (await rig.get(chat.id)).status is ChatStatus.ERROR
    spans = list(exporter.get_finished_spans())
    [call] = named(spans, "chat fake-model")
    assert call.status.status_code is StatusCode.ERROR and attrs(call)["error.type"] == "auth"
    [turn] = named(spans, "invoke_agent chatd")
    assert turn.status.status_code is StatusCode.ERROR
    assert (attrs(turn)["chatd.turn.end"], attrs(turn)["error.type"]) == ("error", "turn_error")


async def test_with_tracing_off_a_turn_records_no_trace(rig: Rig) -> None:
    assert not tracing.enabled()
    rig.llm.script(Reply(text="Hi."))
    chat = await rig.chat("hello")
    await rig.run()
    done = await rig.get(chat.id)
    assert done.status is ChatStatus.WAITING and done.trace_id is None
