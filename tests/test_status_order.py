"""Status notifications are published after commit, on other connections, so they can arrive out
of order (hardening issue, item 9). Each carries the chat's generation; a subscriber drops a status
older than one it has shown (`domain.chat.status_version`)."""

from __future__ import annotations

import asyncio
import uuid

from chatd.bootstrap import App
from chatd.domain.changes import QueueChanged, StatusChanged
from chatd.domain.chat import ChatStatus
from chatd.domain.events import QueueUpdateEvent, StatusEvent, StreamEvent
from chatd.domain.parts import TextPart
from chatd.store import turns
from chatd.streams.hub import Notification
from tests.conftest import People

WORKER = uuid.UUID(int=3)


async def test_a_late_running_notification_does_not_undo_the_interrupt_a_subscriber_has_seen(chatd: App, people: People) -> None:
    alice = people.alice.user
    chat = await chatd.service.create_chat(alice, content=[TextPart(text="hi")])
    [acquired] = await turns.acquire_chats(chatd.db, chatd.clock.now(), WORKER, 10)
    await chatd.service.interrupt(alice, chat.id)
    seen: list[StreamEvent] = []
    async with asyncio.timeout(20), chatd.hub.subscribe(chat.id, 0) as events:
        stream = aiter(events)
        first = await anext(stream)
        assert isinstance(first, StatusEvent) and first.status is ChatStatus.WAITING
        # The worker's `running`, committed before the interrupt, is delivered only now.
        late = StatusChanged(chat.id, alice.id, ChatStatus.RUNNING, acquired.generation, WORKER)
        await chatd.hub.notify(chat.id, Notification((late,)))
        await chatd.hub.notify(chat.id, Notification((QueueChanged(chat.id, alice.id),)))  # a marker after it
        while not isinstance(ev := await anext(stream), QueueUpdateEvent):
            seen.append(ev)
        assert not [e for e in seen if isinstance(e, StatusEvent)], seen
        # A newer change still comes through.
        await chatd.service.send_message(alice, chat.id, content=[TextPart(text="again")])
        while not isinstance(ev := await anext(stream), StatusEvent):
            pass
        assert ev.status is ChatStatus.PENDING


def test_a_notification_carries_the_generation_across_replicas() -> None:
    note = Notification((StatusChanged(uuid.uuid4(), uuid.uuid4(), ChatStatus.RUNNING, 7, WORKER),))
    assert Notification.from_payload(note.to_payload()) == note
    assert note.status is not None and note.status.generation == 7
