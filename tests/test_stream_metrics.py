"""Stream metrics: a subscriber that does not read loses message parts (counted as dropped) and,
when a durable change finds its queue full, re-reads from the database (counted as a resync)."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from chatd.bootstrap import App
from chatd.domain.changes import StatusChanged
from chatd.domain.chat import ChatStatus, Role
from chatd.domain.events import MessageEvent, StatusEvent
from chatd.domain.parts import TextPart, ToolCallPart
from chatd.streams.hub import Notification
from tests.conftest import People


def value(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def test_a_slow_subscriber_is_counted_as_dropping_parts_then_resyncing(chatd: App, people: People) -> None:
    chat = await chatd.service.create_chat(people.alice.user, content=[TextPart(text="hi")])
    chatd.hub.subscriber_queue = 2
    dropped, resyncs, subscribers = value("chatd_stream_dropped_parts_total"), value("chatd_stream_resyncs_total"), value("chatd_stream_subscribers")
    async with chatd.hub.subscribe(chat.id) as events:
        assert isinstance(await anext(events), StatusEvent)
        assert isinstance(await anext(events), MessageEvent)  # the snapshot: "hi"
        assert value("chatd_stream_subscribers") - subscribers == 1
        chatd.hub.start_buffering(chat.id)
        # Tool-call parts: text deltas may be merged into fewer parts (the hub's coalescing).
        for i in range(10):
            chatd.hub.publish_part(chat.id, Role.ASSISTANT, ToolCallPart(tool_call_id=f"c{i}", tool_name="echo"))
        assert value("chatd_stream_dropped_parts_total") - dropped == 8
        # The note must reach the hub while the queue is still full (PostgreSQL delivers NOTIFY
        # a round trip later): wait for its delivery before reading.
        state = chatd.hub._chats[chat.id]
        seen = state.notes_seen
        running = StatusChanged(chat.id, chat.owner_id, ChatStatus.RUNNING, chat.generation)
        await chatd.hub.notify(chat.id, Notification((running,)))

        async def delivered() -> None:
            while state.notes_seen == seen:  # noqa: ASYNC110 - the hub has no event for a delivered note
                await asyncio.sleep(0.01)

        await asyncio.wait_for(delivered(), 10)
        # The next read notices the lost notification and re-reads from the database.
        await asyncio.wait_for(anext(events), 10)
        assert value("chatd_stream_resyncs_total") - resyncs == 1
    assert value("chatd_stream_subscribers") == subscribers
