"""A subscriber joining a running turn (a page opened mid-answer) gets the history, then the parts
of the step under way, then the live parts: rendered in that order, the whole answer shows, from
its first token, even when the history holds earlier answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from chatd.bootstrap import App
from chatd.domain.chat import ChatStatus, NewMessage, Role
from chatd.domain.events import MessageEvent, MessagePartEvent, StatusEvent, StreamEvent
from chatd.domain.parts import TextPart
from chatd.store.machine import insert_messages
from chatd.streams.hub import StreamHub
from tests.conftest import People


async def take(events: AsyncIterator[StreamEvent], count: int) -> list[StreamEvent]:
    out: list[StreamEvent] = []
    async with asyncio.timeout(10):
        while len(out) < count:
            out.append(await anext(events))
    return out


def kinds(evs: list[StreamEvent]) -> list[str]:
    return [type(e).__name__ for e in evs]


async def test_a_late_subscriber_gets_the_history_before_the_parts_in_flight(chatd: App, people: People) -> None:
    hub = StreamHub(chatd.db, chatd.pubsub)
    chat = await chatd.service.create_chat(people.alice.user, content=[TextPart(text="hi")])
    hub.start_buffering(chat.id)
    for i in range(3):
        hub.publish_part(chat.id, Role.ASSISTANT, TextPart(text=f"tok{i} "))
    async with hub.subscribe(chat.id) as events:
        snapshot = await take(events, 1 + 1 + 3)  # status, the user message, three parts
        hub.publish_part(chat.id, Role.ASSISTANT, TextPart(text="tok3"))
        live = await take(events, 1)
    assert kinds(snapshot) == ["StatusEvent", "MessageEvent", "MessagePartEvent", "MessagePartEvent", "MessagePartEvent"]
    assert isinstance(snapshot[0], StatusEvent) and snapshot[0].status is ChatStatus.PENDING
    assert isinstance(snapshot[1], MessageEvent) and snapshot[1].message.role is Role.USER
    texts = [e.part.text for e in [*snapshot[2:], *live] if isinstance(e, MessagePartEvent) and isinstance(e.part, TextPart)]
    assert "".join(texts) == "tok0 tok1 tok2 tok3"


async def test_parts_captured_before_their_step_was_persisted_are_not_sent(chatd: App, people: People) -> None:
    """The snapshot's parts are captured when the subscriber registers and the messages read a
    moment later: a step persisted (and its parts cleared) in between is in the messages (or
    comes live), so the stale parts would show it twice."""
    hub = StreamHub(chatd.db, chatd.pubsub)
    chat = await chatd.service.create_chat(people.alice.user, content=[TextPart(text="hi")])
    hub.start_buffering(chat.id)
    hub.publish_part(chat.id, Role.ASSISTANT, TextPart(text="old step"))
    async with hub.subscribe(chat.id) as events:
        hub.clear_parts(chat.id)  # before the snapshot's read: the step is a message now
        hub.publish_part(chat.id, Role.ASSISTANT, TextPart(text="next step"))
        evs = await take(events, 3)
    assert kinds(evs) == ["StatusEvent", "MessageEvent", "MessagePartEvent"]
    assert isinstance(evs[2], MessagePartEvent) and evs[2].part == TextPart(text="next step")


async def test_parts_queued_before_the_read_that_finds_their_message_are_not_sent(chatd: App, people: People) -> None:
    """Parts published once the subscriber registered wait in its queue while the snapshot reads
    the messages. A step persisted before that read is among the messages read, so its queued
    parts, sent after them, would show it twice: `chatd chat` printed a short answer twice, whose
    deltas, still being merged, were published when the worker dropped the step's parts."""
    hub = StreamHub(chatd.db, chatd.pubsub, coalesce_window=60)
    chat = await chatd.service.create_chat(people.alice.user, content=[TextPart(text="hi")])
    hub.start_buffering(chat.id)
    hub.publish_part(chat.id, Role.ASSISTANT, TextPart(text="The answer"))  # waits to be merged
    async with hub.subscribe(chat.id) as events:
        hub.publish_part(chat.id, Role.ASSISTANT, TextPart(text=" is 42."))
        # The worker persists the step: its parts are dropped (the waiting ones published first),
        # then the message is committed; the snapshot's read comes after.
        hub.clear_parts(chat.id)
        async with chatd.db.write() as conn:
            await insert_messages(conn, chat.id, [NewMessage(Role.ASSISTANT, [TextPart(text="The answer is 42.")])], chatd.clock.now())
        hub.publish_part(chat.id, Role.ASSISTANT, TextPart(text="Next step"))
        hub.flush_parts(chat.id)
        evs = await take(events, 4)
    assert kinds(evs) == ["StatusEvent", "MessageEvent", "MessageEvent", "MessagePartEvent"]
    assert isinstance(evs[2], MessageEvent) and evs[2].message.content == [TextPart(text="The answer is 42.")]
    assert isinstance(evs[3], MessagePartEvent) and evs[3].part == TextPart(text="Next step")


async def test_stopping_a_subscribers_events_ends_them_at_their_next_read(chatd: App, people: People) -> None:
    """What a chat stream's guard does when its token is revoked or the process stops: the reader
    waiting for the next event returns, with nothing more, and the subscriber is gone."""
    hub = StreamHub(chatd.db, chatd.pubsub)
    chat = await chatd.service.create_chat(people.alice.user, content=[TextPart(text="hi")])
    hub.start_buffering(chat.id)
    async with hub.subscribe(chat.id) as events:
        await take(events, 2)  # status, the user message
        waiting = asyncio.ensure_future(anext(events))
        await asyncio.sleep(0)
        events.stop()
        with pytest.raises(StopAsyncIteration):
            async with asyncio.timeout(10):
                await waiting
        hub.publish_part(chat.id, Role.ASSISTANT, TextPart(text="late"))
        with pytest.raises(StopAsyncIteration):
            await anext(events)
    assert not hub.has_subscribers(chat.id)
