"""Workers running real turns: the real OpenAI SDK (through pydantic-ai) against the scripted
server, persisted on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from chatd.domain.chat import BusyBehavior, ChatStatus, Role, Usage, Visibility
from chatd.domain.config import UsageLimit
from chatd.domain.events import ErrorEvent, MessageEvent, MessagePartEvent, RetryEvent, StatusEvent
from chatd.domain.parts import TextPart, ToolCallPart, ToolResultPart
from chatd.errors import UsageLimitExceeded
from chatd.pubsub.base import chat_channel
from chatd.store import usage as usage_store
from tests.fakes.llm_server import Fault, Reply, TokenUsage, ToolCall
from tests.fakes.turn_doubles import HeldSleep, echo_tool
from tests.worker.conftest import Gate, Rig, collect


async def test_a_turn_with_a_tool_call_persists_every_step_with_usage_and_cost(rig: Rig) -> None:
    rig.tools = [echo_tool()]
    rig.llm.script(
        Reply(text="Checking.", tool_calls=[ToolCall("call_1", "echo", {"x": 7})], usage=TokenUsage(input=100, output=10)),
        Reply(text="The answer is 7.", usage=TokenUsage(input=150, output=20)),
    )
    chat = await rig.chat("what is x?")
    await rig.run()

    done = await rig.get(chat.id)
    assert done.status is ChatStatus.WAITING and done.worker_id is None and done.last_error is None
    msgs = [m for m in await rig.messages(chat.id) if m.role is not Role.SYSTEM]
    assert [m.role for m in msgs] == [Role.USER, Role.ASSISTANT, Role.TOOL, Role.ASSISTANT]
    first, tool, last = msgs[1], msgs[2], msgs[3]
    assert any(isinstance(p, ToolCallPart) and p.tool_name == "echo" for p in first.content)
    result = tool.content[0]
    assert isinstance(result, ToolResultPart) and result.result == {"echo": {"x": 7}}
    assert last.content == [TextPart(text="The answer is 7.")]
    assert first.usage is not None and first.usage.input_tokens == 100 and first.usage.output_tokens == 10
    # input 1 $/Mtok, output 2 $/Mtok, in micro-dollars: 100*1 + 10*2.
    assert first.total_cost_micros == 120 and last.total_cost_micros == 190
    assert first.model_config_id == rig.model_config_id and first.context_limit == 100_000
    # The tool result reached the model on the second request.
    second = rig.llm.requests[1].body["messages"]
    assert any(m["role"] == "tool" and "7" in m["content"] for m in second)


async def test_subscriber_sees_running_parts_messages_then_waiting(rig: Rig) -> None:
    rig.llm.script(Reply(text="Hello there, friend."))
    chat = await rig.chat()
    task = asyncio.create_task(collect(rig.app, chat.id, lambda e: isinstance(e, StatusEvent) and e.status is ChatStatus.WAITING))
    await asyncio.sleep(0.05)
    await rig.run()
    events = await task
    kinds = [e.type for e in events]
    assert kinds[0] == "status" and events[0].status is ChatStatus.PENDING  # type: ignore[union-attr]
    running = kinds.index("status", 1)
    assert events[running].status is ChatStatus.RUNNING  # type: ignore[union-attr]
    parts = [e for e in events if isinstance(e, MessagePartEvent)]
    assert "".join(p.part.text for p in parts if isinstance(p.part, TextPart)) == "Hello there, friend."
    assert running < kinds.index("message_part")
    assistant = [e for e in events if isinstance(e, MessageEvent) and e.message.role is Role.ASSISTANT]
    assert len(assistant) == 1 and kinds.index("message_part") < events.index(assistant[0])
    assert isinstance(events[-1], StatusEvent) and events[-1].status is ChatStatus.WAITING


async def test_429_with_retry_after_is_retried_and_announced(rig: Rig) -> None:
    rig.llm.script(Reply(fault=Fault.status(429, retry_after=7)), Reply(text="ok"))
    chat = await rig.chat()
    task = asyncio.create_task(collect(rig.app, chat.id, lambda e: isinstance(e, StatusEvent) and e.status is ChatStatus.WAITING))
    await asyncio.sleep(0.05)
    await rig.run()
    events = await task
    retries = [e for e in events if isinstance(e, RetryEvent)]
    assert len(retries) == 1 and retries[0].attempt == 1 and retries[0].delay_ms >= 7000
    assert "429" in retries[0].error
    assert rig.sleep.delays and rig.sleep.delays[0] >= 7
    assert (await rig.get(chat.id)).status is ChatStatus.WAITING


async def test_overloaded_500_and_dropped_streams_are_retried_until_an_answer(rig: Rig) -> None:
    rig.llm.script(
        Reply(fault=Fault.status(500)),
        Reply(text="partial answer that is cut", fault=Fault.drop(after=2)),
        Reply(text="never finished", fault=Fault.truncate(after=2)),
        Reply(text="complete"),
    )
    chat = await rig.chat()
    await rig.run()
    done = await rig.get(chat.id)
    assert done.status is ChatStatus.WAITING
    answers = [m for m in await rig.messages(chat.id) if m.role is Role.ASSISTANT]
    assert [m.content for m in answers] == [[TextPart(text="complete")]]


async def test_retries_exhausted_end_in_error_never_running(rig: Rig) -> None:
    rig.llm.script(*[Reply(fault=Fault.truncate(after=1), text="abc") for _ in range(rig.app.settings.max_retry_attempts)])
    chat = await rig.chat()
    task = asyncio.create_task(collect(rig.app, chat.id, lambda e: isinstance(e, StatusEvent) and e.status is ChatStatus.ERROR))
    await asyncio.sleep(0.05)
    await rig.run()
    events = await task
    done = await rig.get(chat.id)
    assert done.status is ChatStatus.ERROR and done.worker_id is None
    assert done.last_error and "stream" in done.last_error.lower()
    assert any(isinstance(e, ErrorEvent) for e in events)
    assert not [m for m in await rig.messages(chat.id) if m.role is Role.ASSISTANT]


async def test_auth_failure_is_not_retried_and_reads_well(rig: Rig) -> None:
    rig.llm.script(Reply(fault=Fault.status(401, message="Incorrect API key provided")))
    chat = await rig.chat()
    await rig.run()
    done = await rig.get(chat.id)
    assert done.status is ChatStatus.ERROR
    assert done.last_error is not None and "credentials" in done.last_error and "401" in done.last_error
    assert rig.sleep.delays == [] and len(rig.llm.requests) == 1


async def test_no_model_configured_is_a_readable_error(rig: Rig) -> None:
    await rig.app.service.delete_model_config(rig.people.admin.user, rig.model_config_id)
    chat = await rig.chat()
    await rig.run()
    done = await rig.get(chat.id)
    assert done.status is ChatStatus.ERROR and done.last_error is not None and "No model is configured" in done.last_error


async def test_interrupt_mid_step_keeps_the_partial_answer_and_promotes_the_queue_after_it(rig: Rig) -> None:
    gate = Gate()
    rig.tools = [gate.tool()]
    rig.llm.script(Reply(text="Working on it.", tool_calls=[ToolCall("c1", "wait", {})]), Reply(text="second turn"))
    chat = await rig.chat("first")
    await rig.workers.acquire_once()
    await asyncio.wait_for(gate.entered.wait(), 10)
    alice = rig.people.alice.user
    queued = await rig.app.service.send_message(alice, chat.id, content=[TextPart(text="next please")])
    assert queued.queued
    await rig.app.service.interrupt(alice, chat.id)
    await rig.workers.drain()
    msgs = [m for m in await rig.messages(chat.id) if m.role is not Role.SYSTEM]
    roles = [m.role for m in msgs]
    # first, partial assistant (text + call), synthetic interrupted tool result, then the promoted message.
    assert roles == [Role.USER, Role.ASSISTANT, Role.TOOL, Role.USER]
    assert any(isinstance(p, TextPart) and p.text == "Working on it." for p in msgs[1].content)
    assert msgs[3].content == [TextPart(text="next please")]
    assert (await rig.get(chat.id)).status is ChatStatus.PENDING
    gate.release.set()
    await rig.run()
    assert (await rig.get(chat.id)).status is ChatStatus.WAITING
    assert [m.role for m in await rig.messages(chat.id) if m.role is not Role.SYSTEM][-1] is Role.ASSISTANT


async def test_a_stop_while_a_failed_call_waits_to_retry_leaves_a_stopped_answer_as_a_stop_mid_stream_does(rig: Rig) -> None:
    await rig.workers.shutdown()
    rig.sleep = held = HeldSleep()
    rig.workers = rig.new_workers()
    rig.llm.script(Reply(fault=Fault.status(500)), Reply(text="the next answer"))
    chat = await rig.chat("first")
    await rig.workers.acquire_once()
    await asyncio.wait_for(held.waiting.wait(), 10)
    alice = rig.people.alice.user
    await rig.app.service.interrupt(alice, chat.id)
    await rig.workers.drain()
    assert (await rig.get(chat.id)).status is ChatStatus.WAITING
    msgs = [m for m in await rig.messages(chat.id) if m.role is not Role.SYSTEM]
    # What a stop mid-stream leaves (the partial answer, here none: the failed call's parts were
    # dropped for the retry), without usage: the web UI reads it as "stopped".
    assert [(m.role, m.content) for m in msgs] == [(Role.USER, [TextPart(text="first")]), (Role.ASSISTANT, [])]
    assert msgs[1].usage in (None, Usage()) and msgs[1].model_config_id == rig.model_config_id

    # The next turn's model does not see the empty answer.
    await rig.app.service.send_message(alice, chat.id, content=[TextPart(text="again")])
    await rig.run()
    assert [m["role"] for m in rig.llm.requests[-1].body["messages"] if m["role"] != "system"] == ["user", "user"]
    assert (await rig.messages(chat.id))[-1].content == [TextPart(text="the next answer")]


async def test_edit_while_a_step_runs_writes_nothing_after_the_edit(rig: Rig) -> None:
    gate = Gate()
    rig.tools = [gate.tool()]
    rig.llm.script(Reply(text="Old answer.", tool_calls=[ToolCall("c1", "wait", {})]), Reply(text="answer to the edit"))
    chat = await rig.chat("original")
    await rig.workers.acquire_once()
    await asyncio.wait_for(gate.entered.wait(), 10)
    alice = rig.people.alice.user
    user_msg = next(m for m in await rig.messages(chat.id) if m.role is Role.USER)
    await rig.app.service.edit_message(alice, chat.id, user_msg.id, [TextPart(text="edited")])
    gate.release.set()
    await rig.workers.drain()
    msgs = [m for m in await rig.messages(chat.id) if m.role is not Role.SYSTEM]
    assert [m.role for m in msgs] == [Role.USER]
    assert msgs[0].content == [TextPart(text="edited")]
    await rig.run()
    msgs = [m for m in await rig.messages(chat.id) if m.role is not Role.SYSTEM]
    assert [m.content for m in msgs] == [[TextPart(text="edited")], [TextPart(text="answer to the edit")]]


async def test_steer_lands_after_the_tool_batch_before_the_next_model_call(rig: Rig) -> None:
    gate = Gate()
    rig.tools = [gate.tool()]
    rig.llm.script(Reply(tool_calls=[ToolCall("c1", "wait", {})]), Reply(text="steered answer"))
    chat = await rig.chat("start")
    await rig.workers.acquire_once()
    await asyncio.wait_for(gate.entered.wait(), 10)
    sent = await rig.app.service.send_message(rig.people.alice.user, chat.id, content=[TextPart(text="also do Y")], busy_behavior=BusyBehavior.STEER)
    assert sent.queued
    gate.release.set()
    await rig.workers.drain()
    msgs = [m for m in await rig.messages(chat.id) if m.role is not Role.SYSTEM]
    assert [m.role for m in msgs] == [Role.USER, Role.ASSISTANT, Role.TOOL, Role.USER, Role.ASSISTANT]
    assert msgs[3].content == [TextPart(text="also do Y")]
    second = rig.llm.requests[1].body["messages"]
    assert second[-1]["role"] == "user" and "also do Y" in str(second[-1]["content"])
    assert (await rig.get(chat.id)).status is ChatStatus.WAITING
    assert (await rig.app.service.list_messages(rig.people.alice.user, chat.id, 0))[1] == []


async def test_reject_while_busy_is_a_conflict_and_stores_nothing(rig: Rig) -> None:
    gate = Gate()
    rig.tools = [gate.tool()]
    rig.llm.script(Reply(tool_calls=[ToolCall("c1", "wait", {})]), Reply(text="done"))
    chat = await rig.chat()
    await rig.workers.acquire_once()
    await asyncio.wait_for(gate.entered.wait(), 10)
    from chatd.errors import ChatBusy

    before = len(await rig.messages(chat.id))
    try:
        await rig.app.service.send_message(rig.people.alice.user, chat.id, content=[TextPart(text="x")], busy_behavior=BusyBehavior.REJECT)
        raise AssertionError("reject while busy must raise")
    except ChatBusy:
        pass
    gate.release.set()
    await rig.workers.drain()
    assert len(await rig.messages(chat.id)) == before + 3


async def test_spend_limit_blocks_sends_after_a_priced_turn(rig: Rig) -> None:
    rig.llm.script(Reply(text="priced", usage=TokenUsage(input=1000, output=0)))
    alice = rig.people.alice.user
    now = rig.app.clock.now()
    await usage_store.set_limit(rig.app.db, UsageLimit("user", alice.id, "month", 500), now)
    chat = await rig.chat()
    await rig.run()
    try:
        await rig.app.service.send_message(alice, chat.id, content=[TextPart(text="more")])
        raise AssertionError("over the limit must be refused")
    except UsageLimitExceeded as exc:
        assert exc.detail is not None and exc.detail["spent_micros"] == 1000 and exc.detail["limit_micros"] == 500
    assert [m.role for m in await rig.messages(chat.id)][-1] is Role.ASSISTANT


async def test_title_is_generated_after_the_first_turn(rig: Rig) -> None:
    rig.app.settings.generate_titles = True
    rig.llm.script(Reply(text="Sure."))
    rig.llm.script_side(Reply(text='"Plan a trip to Lisbon"'))
    chat = await rig.chat("can you help me plan a trip to lisbon next month")
    await rig.run()
    await rig.titled(chat.id, "Plan a trip to Lisbon")


async def test_a_title_is_generated_when_the_answer_is_written_before_the_title_task_reads(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The title task runs beside the turn; a fast model's answer may be written before the task
    reads the chat. It must still see the chat as it was when the turn began (this raced in the
    browser tests: a page kept its provisional title for good)."""
    from chatd.store import turns as turn_store

    real = turn_store.has_model_turns

    async def after_the_answer(db: Any, chat_id: Any, *args: Any) -> tuple[int, bool]:
        for _ in range(500):
            if any(m.role is Role.ASSISTANT for m in await rig.messages(chat_id)):
                break
            await asyncio.sleep(0.01)
        return await real(db, chat_id, *args)

    monkeypatch.setattr(turn_store, "has_model_turns", after_the_answer)
    rig.app.settings.generate_titles = True
    rig.llm.script(Reply(text="Sure."))
    rig.llm.script_side(Reply(text='"Plan a trip to Lisbon"'))
    chat = await rig.chat("can you help me plan a trip to lisbon next month")
    await rig.run()
    await rig.titled(chat.id, "Plan a trip to Lisbon")


async def test_a_later_turn_makes_no_title_request(rig: Rig) -> None:
    rig.app.settings.generate_titles = True
    rig.llm.script(Reply(text="Sure."), Reply(text="Again."))
    rig.llm.script_side(Reply(text='"Lisbon trip"'), Reply(text='"A second title"'))
    chat = await rig.chat("can you help me plan a trip to lisbon next month")
    await rig.run()
    await rig.titled(chat.id, "Lisbon trip")
    await rig.app.service.send_message(rig.people.alice.user, chat.id, content=[TextPart(text="and porto?")])
    await rig.run()
    await asyncio.sleep(0.3)  # a title task the second turn wrongly started would have asked by now
    assert (await rig.get(chat.id)).title == "Lisbon trip"
    assert len([r for r in rig.llm.requests if not r.body.get("stream")]) == 1


async def test_hidden_system_rows_and_custom_prompt_reach_the_model(rig: Rig) -> None:
    from chatd.store import users as user_store

    await user_store.set_custom_prompt(rig.app.db, rig.people.alice.user.id, "Answer in French.")
    rig.llm.script(Reply(text="Bonjour"))
    chat = await rig.chat("hi", system_prompt="You are terse.")
    await rig.run()
    sent = rig.llm.requests[0].body["messages"]
    system_text = " ".join(str(m["content"]) for m in sent if m["role"] == "system")
    assert "You are terse." in system_text and "<user-instructions>\nAnswer in French.\n</user-instructions>" in system_text
    assert sent[-1]["role"] == "user"
    visible = (await rig.app.service.list_messages(rig.people.alice.user, chat.id, 0))[0]
    assert all(m.visibility is not Visibility.MODEL for m in visible)


async def test_a_finished_turn_does_not_re_read_its_chat_on_its_own_status(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker checks its ownership on a stopping status (an interrupt or edit from elsewhere);
    the `waiting` its own finished turn announces is not one (a database read per turn for nothing)."""
    from chatd.worker import pool

    reads: list[object] = []
    real = pool.chat_store.get_chat

    async def counted(db: object, chat_id: object) -> object:
        reads.append(chat_id)
        return await real(db, chat_id)  # type: ignore[arg-type]

    turns: list[object] = []
    rig.workers.on_started = turns.append
    rig.llm.script(Reply(text="hi"))
    chat = await rig.chat()
    monkeypatch.setattr(pool.chat_store, "get_chat", counted)
    await rig.run()
    (turn,) = turns
    # Whatever ownership check the last notification started has run by now.
    await asyncio.gather(*turn.background)  # type: ignore[attr-defined]
    for _ in range(3):
        await asyncio.sleep(0)
    monkeypatch.undo()
    assert (await rig.get(chat.id)).status is ChatStatus.WAITING
    # None: the check for an interrupt between acquire and subscribe is the turn's first read.
    assert reads == []


async def test_a_tool_boundary_without_steered_messages_takes_no_second_transaction(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each step with tool calls is written in one transaction, which also looks for steered
    messages; the separate `take_steered` transaction runs only when one is waiting."""
    from chatd.store import turns as turn_store

    taken: list[object] = []
    real = turn_store.take_steered

    async def counted(*args: object) -> object:
        taken.append(args)
        return await real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(turn_store, "take_steered", counted)
    rig.tools = [echo_tool()]
    rig.llm.script(
        Reply(tool_calls=[ToolCall("c1", "echo", {"x": 1})]), Reply(tool_calls=[ToolCall("c2", "echo", {"x": 2})]), Reply(text="done")
    )
    chat = await rig.chat()
    await rig.run()
    msgs = [m for m in await rig.messages(chat.id) if m.role is not Role.SYSTEM]
    assert [m.role for m in msgs] == [Role.USER, Role.ASSISTANT, Role.TOOL, Role.ASSISTANT, Role.TOOL, Role.ASSISTANT]
    assert taken == []


async def test_the_step_transaction_sees_steered_messages_only_while_the_turn_holds_its_lease(rig: Rig) -> None:
    """`persist_step(peek_steered=True)` says whether `take_steered` would find something, under
    the same lease check: nothing queued, a steered message, and an interrupted chat."""
    import uuid

    from chatd.domain.chat import NewMessage
    from chatd.store import turns as turn_store

    chat = await rig.chat()
    me = uuid.uuid4()
    (held,) = await turn_store.acquire_chats(rig.app.db, rig.app.clock.now(), me, 1)
    now, gen = rig.app.clock.now(), held.generation

    async def step() -> bool:
        new = [NewMessage(Role.ASSISTANT, [TextPart(text="step")])]
        written = await turn_store.persist_step(rig.app.db, now, chat.id, me, gen, new, peek_steered=True)
        return written.steered

    assert await step() is False
    alice = rig.people.alice.user
    await rig.app.service.send_message(alice, chat.id, content=[TextPart(text="steer")], busy_behavior=BusyBehavior.STEER)
    assert await step() is True
    assert [m.content for m in (await turn_store.take_steered(rig.app.db, now, chat.id, me, gen))[0]] == [[TextPart(text="steer")]]
    assert await step() is False
    await rig.app.service.send_message(alice, chat.id, content=[TextPart(text="steer 2")], busy_behavior=BusyBehavior.STEER)
    await rig.app.service.interrupt(alice, chat.id)
    # Interrupted: the step is still ours to write, the steered message is not ours to take.
    assert await step() is False
    assert await turn_store.take_steered(rig.app.db, now, chat.id, me, gen) == ([], [])


async def test_an_interrupt_between_the_acquire_and_the_workers_subscription_stops_the_turn_before_the_model(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig.llm.script(Reply(text="never asked"))
    chat = await rig.chat("hi")
    pubsub = rig.workers.deps.pubsub
    subscribe = pubsub.subscribe

    async def interrupted_first(channel: str, callback: Any) -> Any:
        if channel == chat_channel(chat.id):
            # The notification goes out before anyone listens: only the database tells.
            await rig.app.service.interrupt(rig.people.alice.user, chat.id)
        return await subscribe(channel, callback)

    monkeypatch.setattr(pubsub, "subscribe", interrupted_first)
    assert [t.chat.id for t in await rig.workers.acquire_once()] == [chat.id]
    await rig.workers.drain()
    assert rig.llm.requests == []
    assert (await rig.get(chat.id)).status is ChatStatus.WAITING
    assert Role.ASSISTANT not in {m.role for m in await rig.messages(chat.id)}
