"""A step a worker of this replica writes reaches this replica's subscribers without reading it
back: the step's transaction also reads the newest message a stream shows below the step, so its
messages are known to be all that is new above that one. A subscriber that is further behind (or
a notification of another replica's write) still reads the database; nothing is skipped."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from chatd.bootstrap import App
from chatd.domain.chat import Chat, Message, NewMessage, Role, Usage
from chatd.domain.events import MessageEvent, StreamEvent
from chatd.domain.parts import TextPart, ToolCallPart, ToolResultPart
from chatd.loop import Step
from chatd.store import chats as chat_store
from chatd.store import turns
from chatd.store.machine import insert_messages
from chatd.worker.sink import StoreSink
from tests.conftest import People

WORKER = uuid.UUID(int=7)
# The steps are written without a model config (the column is nullable; none exists here).
NO_MODEL_CONFIG = cast(uuid.UUID, None)


async def messages_until(events: AsyncIterator[StreamEvent], last_id: int) -> list[Message]:
    out: list[Message] = []
    async with asyncio.timeout(10):
        while not out or out[-1].id < last_id:
            ev = await anext(events)
            if isinstance(ev, MessageEvent):
                out.append(ev.message)
    return out


def count_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    reads: list[int] = []
    real = chat_store.visible_messages

    async def counted(conn: Any, chat_id: uuid.UUID, after_id: int = 0) -> list[Message]:
        reads.append(after_id)
        return await real(conn, chat_id, after_id)

    monkeypatch.setattr(chat_store, "visible_messages", counted)
    return reads


async def running_sink(chatd: App, chat: Chat) -> StoreSink:
    (acquired,) = await turns.acquire_chats(chatd.db, chatd.clock.now(), WORKER, 1)
    assert acquired.id == chat.id
    return StoreSink(chatd.db, chatd.hub, chatd.service.outbox, chatd.clock, acquired, WORKER, NO_MODEL_CONFIG)


def step(i: int) -> Step:
    call = ToolCallPart(tool_call_id=f"c{i}", tool_name="echo", args={"x": i})
    return Step(
        index=i, assistant_parts=[TextPart(text=f"step {i}"), call],
        tool_results=[ToolResultPart(tool_call_id=f"c{i}", tool_name="echo", result={"x": i})],
        usage=Usage(), cost_micros=None, context_tokens=0, context_limit=1000, runtime_ms=1,
        model_name=None, provider_name=None, finish_reason="tool_calls",
    )


async def test_a_step_written_here_reaches_this_replicas_subscribers_as_a_read_would_give_it(
    chatd: App, people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat = await chatd.service.create_chat(people.alice.user, content=[TextPart(text="hi")])
    sink = await running_sink(chatd, chat)
    async with chatd.hub.subscribe(chat.id) as events:
        (user,) = await messages_until(events, 1)
        reads = count_reads(monkeypatch)
        got: list[Message] = []
        for i in range(3):
            await sink.persist_step(step(i))
            async with chatd.db.read() as conn:
                newest = (await chat_store.visible_messages(conn, chat.id))[-1].id
            reads.clear()  # the test's own read
            got += await messages_until(events, newest)
        assert reads == []
    async with chatd.db.read() as conn:
        assert got == await chat_store.visible_messages(conn, chat.id, user.id)
    assert [m.role for m in got] == [Role.ASSISTANT, Role.TOOL] * 3


async def test_a_subscriber_behind_the_step_reads_what_it_has_not_got(
    chatd: App, people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message committed before the step whose notification this subscriber has not handled
    yet (here: never announced) lies between what it has and the step: it reads, and gets both."""
    chat = await chatd.service.create_chat(people.alice.user, content=[TextPart(text="hi")])
    sink = await running_sink(chatd, chat)
    async with chatd.hub.subscribe(chat.id) as events:
        (user,) = await messages_until(events, 1)
        async with chatd.db.write() as conn:
            (unannounced,) = await insert_messages(conn, chat.id, [NewMessage(Role.USER, [TextPart(text="also")])], chatd.clock.now())
        reads = count_reads(monkeypatch)
        await sink.persist_step(step(0))
        got = await messages_until(events, unannounced.id + 2)
        assert reads == [user.id]
    assert [m.id for m in got] == [unannounced.id, unannounced.id + 1, unannounced.id + 2]


async def test_a_step_is_read_back_when_nobody_here_followed_the_chat_as_it_was_written(chatd: App, people: People) -> None:
    chat = await chatd.service.create_chat(people.alice.user, content=[TextPart(text="hi")])
    sink = await running_sink(chatd, chat)
    await sink.persist_step(step(0))  # no subscriber yet: the step's transaction reads nothing more
    async with chatd.hub.subscribe(chat.id) as events:
        got = await messages_until(events, 1)
        await sink.persist_step(step(1))
        async with chatd.db.read() as conn:
            shown = await chat_store.visible_messages(conn, chat.id)
        got += await messages_until(events, shown[-1].id)
    assert [m.id for m in got] == [m.id for m in shown]
