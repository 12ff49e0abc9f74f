"""Streamed text deltas are merged into fewer `message_part` events for subscribers: the text is
the same, order against every other event is kept, and a late subscriber's snapshot plus what it
receives live is exactly the stream, nothing twice."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

from chatd.bootstrap import App
from chatd.domain.changes import StatusChanged
from chatd.domain.chat import ChatStatus, Role
from chatd.domain.events import MessageEvent, MessagePartEvent, StatusEvent, StreamEvent
from chatd.domain.parts import Part, ReasoningPart, TextPart, ToolCallPart
from chatd.streams.hub import Notification, StreamHub
from tests.conftest import People


async def next_event(events: AsyncIterator[StreamEvent]) -> StreamEvent:
    async with asyncio.timeout(10):
        return await anext(events)


async def parts(events: AsyncIterator[StreamEvent], count: int) -> list[tuple[Role, Part]]:
    out: list[tuple[Role, Part]] = []
    while len(out) < count:
        ev = await next_event(events)
        if isinstance(ev, MessagePartEvent):
            out.append((ev.role, ev.part))
    return out


async def running_chat(chatd: App, people: People, hub: StreamHub) -> uuid.UUID:
    chat = await chatd.service.create_chat(people.alice.user, content=[TextPart(text="hi")])
    hub.start_buffering(chat.id)  # as the worker does when it acquires the chat
    return chat.id


def text(t: str) -> TextPart:
    return TextPart(text=t)


async def test_deltas_are_merged_up_to_the_limit_and_before_any_other_part(chatd: App, people: People) -> None:
    hub = StreamHub(chatd.db, chatd.pubsub, coalesce_window=60, coalesce_parts=4)
    chat_id = await running_chat(chatd, people, hub)
    async with hub.subscribe(chat_id) as events:
        assert isinstance(await next_event(events), StatusEvent)
        for i in range(10):
            hub.publish_part(chat_id, Role.ASSISTANT, text(f"t{i} "))
        call = ToolCallPart(tool_call_id="c1", tool_name="echo", args_delta="{")
        hub.publish_part(chat_id, Role.ASSISTANT, call)
        hub.publish_part(chat_id, Role.ASSISTANT, text("after"))
        hub.flush_parts(chat_id)
        assert await parts(events, 5) == [
            (Role.ASSISTANT, text("t0 t1 t2 t3 ")),
            (Role.ASSISTANT, text("t4 t5 t6 t7 ")),
            (Role.ASSISTANT, text("t8 t9 ")),
            (Role.ASSISTANT, call),
            (Role.ASSISTANT, text("after")),
        ]


async def test_a_late_subscriber_gets_every_delta_exactly_once(chatd: App, people: People) -> None:
    hub = StreamHub(chatd.db, chatd.pubsub, coalesce_window=60, coalesce_parts=4)
    chat_id = await running_chat(chatd, people, hub)
    for i in range(6):  # four merged into the buffer, two still waiting
        hub.publish_part(chat_id, Role.ASSISTANT, text(f"a{i} "))
    async with hub.subscribe(chat_id) as events:
        hub.publish_part(chat_id, Role.ASSISTANT, text("a6"))
        assert isinstance(await next_event(events), StatusEvent)  # the snapshot is taken
        hub.clear_parts(chat_id)  # the step was persisted: waiting deltas go out first
        assert await parts(events, 2) == [(Role.ASSISTANT, text("a0 a1 a2 a3 ")), (Role.ASSISTANT, text("a4 a5 a6"))]
    async with hub.subscribe(chat_id) as events:
        # The step's parts are a message now: a new subscriber's snapshot holds none of them.
        assert isinstance(await next_event(events), StatusEvent)
        assert isinstance(await next_event(events), MessageEvent)


async def test_waiting_deltas_are_published_before_a_later_notification(chatd: App, people: People) -> None:
    hub = StreamHub(chatd.db, chatd.pubsub, coalesce_window=60, coalesce_parts=100)
    chat_id = await running_chat(chatd, people, hub)
    async with hub.subscribe(chat_id) as events:
        assert isinstance(await next_event(events), StatusEvent)
        assert isinstance(await next_event(events), MessageEvent)  # the snapshot: the user's message
        hub.publish_part(chat_id, Role.ASSISTANT, text("last words"))
        await hub.notify(chat_id, Notification((StatusChanged(chat_id, uuid.uuid4(), ChatStatus.WAITING, 99),)))
        first, second = await next_event(events), await next_event(events)
    assert first == MessagePartEvent(chat_id=chat_id, role=Role.ASSISTANT, part=text("last words"))
    assert isinstance(second, StatusEvent) and second.status is ChatStatus.WAITING


async def test_the_window_publishes_waiting_deltas_without_further_input(chatd: App, people: People) -> None:
    hub = StreamHub(chatd.db, chatd.pubsub, coalesce_window=0.01, coalesce_parts=100)
    chat_id = await running_chat(chatd, people, hub)
    async with hub.subscribe(chat_id) as events:
        assert isinstance(await next_event(events), StatusEvent)
        hub.publish_part(chat_id, Role.ASSISTANT, text("one "))
        hub.publish_part(chat_id, Role.ASSISTANT, text("two"))
        assert await parts(events, 1) == [(Role.ASSISTANT, text("one two"))]


async def test_only_deltas_of_one_kind_role_and_signature_are_merged(chatd: App, people: People) -> None:
    hub = StreamHub(chatd.db, chatd.pubsub, coalesce_window=60, coalesce_parts=100)
    chat_id = await running_chat(chatd, people, hub)
    async with hub.subscribe(chat_id) as events:
        assert isinstance(await next_event(events), StatusEvent)
        hub.publish_part(chat_id, Role.ASSISTANT, ReasoningPart(text="think "))
        hub.publish_part(chat_id, Role.ASSISTANT, ReasoningPart(text="more"))
        hub.publish_part(chat_id, Role.ASSISTANT, ReasoningPart(text="", signature="sig", provider="anthropic"))
        hub.publish_part(chat_id, Role.ASSISTANT, text("answer"))
        hub.publish_part(chat_id, Role.TOOL, text("tool output"))
        hub.flush_parts(chat_id)
        assert await parts(events, 4) == [
            (Role.ASSISTANT, ReasoningPart(text="think more")),
            (Role.ASSISTANT, ReasoningPart(text="", signature="sig", provider="anthropic")),
            (Role.ASSISTANT, text("answer")),
            (Role.TOOL, text("tool output")),
        ]


async def test_without_a_window_every_delta_is_its_own_part(chatd: App, people: People) -> None:
    hub = StreamHub(chatd.db, chatd.pubsub, coalesce_window=0)
    chat_id = await running_chat(chatd, people, hub)
    async with hub.subscribe(chat_id) as events:
        assert isinstance(await next_event(events), StatusEvent)
        hub.publish_part(chat_id, Role.ASSISTANT, text("a"))
        hub.publish_part(chat_id, Role.ASSISTANT, text("b"))
        assert await parts(events, 2) == [(Role.ASSISTANT, text("a")), (Role.ASSISTANT, text("b"))]
