"""Compaction through the real worker and store (SPEC §5.9): the summary rows land in the
database (a hidden summary, a visible chat_summarized call and result), clients see only the
visible ones, and the next turn's prompt starts from the summary with the system rows kept."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from chatd.domain.chat import ChatStatus, Role, Visibility
from chatd.domain.events import MessageEvent, StatusEvent
from chatd.domain.parts import TextPart, ToolCallPart, ToolResultPart
from chatd.loop import SUMMARY_TOOL_NAME, Compaction
from chatd.loop.prompts import SUMMARY_PREFIX, SUMMARY_PROMPT
from chatd.worker.sink import StoreSink
from tests.fakes.llm_server import Reply, TokenUsage, ToolCall
from tests.fakes.turn_doubles import echo_tool
from tests.worker.conftest import Rig, collect

SUMMARY = "Alice asked for x; echo said 1; the answer is being reported."


def _content_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "".join(str(b.get("text", b)) for b in content)
    return str(content or "") + str(message.get("tool_calls") or "")


async def test_compaction_stores_a_hidden_summary_and_the_next_turn_starts_from_it(rig: Rig) -> None:
    rig.tools = [echo_tool()]
    rig.llm.script(
        # The rig's model has a 100k window and a 70% threshold: 80k context tokens cross it.
        Reply(text="Let me look.", tool_calls=[ToolCall("call_1", "echo", {"x": 1})], usage=TokenUsage(input=80_000, output=50)),
        # The summary call (non-streaming on this wire).
        Reply(text=SUMMARY, usage=TokenUsage(input=80_100, output=30)),
        Reply(text="x is 1.", usage=TokenUsage(input=300, output=10)),
    )
    chat = await rig.chat("what is x?", system_prompt="You are terse.")
    events = asyncio.create_task(collect(rig.app, chat.id, lambda e: isinstance(e, StatusEvent) and e.status is ChatStatus.WAITING))
    await asyncio.sleep(0.05)
    await rig.run()
    streamed = await events

    assert (await rig.get(chat.id)).status is ChatStatus.WAITING
    assert not rig.llm.requests[1].body["stream"]
    assert rig.llm.requests[1].body["messages"][-1] == {"role": "user", "content": SUMMARY_PROMPT}

    msgs = [m for m in await rig.messages(chat.id) if m.role is not Role.SYSTEM]
    assert [(m.role, m.visibility, m.compressed) for m in msgs] == [
        (Role.USER, Visibility.BOTH, False),  # what is x?
        (Role.ASSISTANT, Visibility.BOTH, False),  # the call
        (Role.TOOL, Visibility.BOTH, False),  # its result
        (Role.USER, Visibility.MODEL, True),  # the summary: hidden, the new prompt boundary
        (Role.ASSISTANT, Visibility.USER, True),  # chat_summarized call
        (Role.TOOL, Visibility.USER, True),  # chat_summarized result
        (Role.ASSISTANT, Visibility.BOTH, False),  # the answer after the summary
    ]
    summary_row, call_row, result_row, answer = msgs[3:]
    assert summary_row.content == [TextPart(text=f"{SUMMARY_PREFIX}\n\n{SUMMARY}")]
    (call,) = call_row.content
    (result,) = result_row.content
    assert isinstance(call, ToolCallPart) and isinstance(result, ToolResultPart)
    assert call.tool_name == result.tool_name == SUMMARY_TOOL_NAME
    assert call.tool_call_id == result.tool_call_id and call.tool_call_id.startswith(f"{SUMMARY_TOOL_NAME}_")
    assert call.args == {"source": "automatic", "threshold_percent": 70}
    assert result.result == {
        "summary": SUMMARY,
        "source": "automatic",
        "threshold_percent": 70,
        "usage_percent": 80.0,
        "context_tokens": 80_000,
        "context_limit_tokens": 100_000,
    }
    # The summary call is paid for: its usage and cost sit on the visible call row.
    assert call_row.usage is not None and (call_row.usage.input_tokens, call_row.usage.output_tokens) == (80_100, 30)
    assert call_row.total_cost_micros == 80_100 + 60 and call_row.model_config_id == rig.model_config_id
    assert answer.content == [TextPart(text="x is 1.")]

    # Clients never see the hidden summary, over the API or the stream; they see the call/result.
    visible, _queue = await rig.app.service.list_messages(rig.people.alice.user, chat.id, 0)
    assert summary_row.id not in {m.id for m in visible}
    assert {call_row.id, result_row.id} <= {m.id for m in visible}
    streamed_ids = {e.message.id for e in streamed if isinstance(e, MessageEvent)}
    assert summary_row.id not in streamed_ids and {call_row.id, result_row.id, answer.id} <= streamed_ids

    # Within the turn the step after the summary already started from it.
    after = rig.llm.requests[2].body["messages"]
    assert [m["role"] for m in after if m["role"] != "system"] == ["user"]
    assert after[-1]["content"] == f"{SUMMARY_PREFIX}\n\n{SUMMARY}"

    # The next turn: system rows kept, then the summary, then only what came after it.
    first_system = [m for m in rig.llm.requests[0].body["messages"] if m["role"] == "system"]
    assert any("You are terse." in _content_text(m) for m in first_system)
    rig.llm.script(Reply(text="Still 1."))
    await rig.app.service.send_message(rig.people.alice.user, chat.id, content=[TextPart(text="and now?")])
    await rig.run()
    sent = rig.llm.requests[3].body["messages"]
    assert [m for m in sent if m["role"] == "system"] == first_system
    rest = [(m["role"], _content_text(m)) for m in sent if m["role"] != "system"]
    assert rest == [
        ("user", f"{SUMMARY_PREFIX}\n\n{SUMMARY}"),
        ("assistant", "x is 1."),
        ("user", "and now?"),
    ]
    everything = " ".join(_content_text(m) for m in sent)
    assert "what is x?" not in everything and "call_1" not in everything and SUMMARY_TOOL_NAME not in everything


async def test_an_edit_before_the_summary_is_written_stores_no_summary_and_ends_quietly(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The summary call can take a while; an edit meanwhile takes the chat away. The summary rows
    must not be written after the edit, and the turn ends as lost ownership, not as a failure."""
    rig.tools = [echo_tool()]
    rig.llm.script(
        Reply(tool_calls=[ToolCall("call_1", "echo", {"x": 1})], usage=TokenUsage(input=90_000)),
        Reply(text=SUMMARY),
        Reply(text="answer to the edit"),
    )
    chat = await rig.chat("original")
    alice = rig.people.alice.user
    user_msg = next(m for m in await rig.messages(chat.id) if m.role is Role.USER)
    edited = asyncio.Event()
    original = StoreSink.persist_compaction

    async def edit_first(self: StoreSink, compaction: Compaction) -> None:
        # The user edits while the summary was being generated, just before it is stored.
        await rig.app.service.edit_message(alice, chat.id, user_msg.id, [TextPart(text="edited")])
        edited.set()
        await original(self, compaction)

    monkeypatch.setattr(StoreSink, "persist_compaction", edit_first)
    with caplog.at_level(logging.WARNING, logger="chatd"):
        await rig.workers.acquire_once()
        await rig.workers.drain()
    assert edited.is_set()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    msgs = [m for m in await rig.messages(chat.id) if m.role is not Role.SYSTEM]
    assert [m.content for m in msgs] == [[TextPart(text="edited")]]
    chat_now = await rig.get(chat.id)
    assert chat_now.status is ChatStatus.PENDING and chat_now.last_error is None
    monkeypatch.undo()
    await rig.run()
    msgs = [m for m in await rig.messages(chat.id) if m.role is not Role.SYSTEM]
    assert [m.content for m in msgs] == [[TextPart(text="edited")], [TextPart(text="answer to the edit")]]
