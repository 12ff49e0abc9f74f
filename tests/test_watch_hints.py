"""A chat watch re-reads the hints that arrived together in one database read, and reports each
in its order as it did one read at a time."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from chatd.bootstrap import App
from chatd.domain.chat import Chat
from chatd.domain.parts import TextPart
from chatd.pubsub.base import owner_channel
from chatd.store import chats as chat_store
from chatd.streams import watch
from chatd.streams.outbox import owner_hint
from tests.conftest import People


async def test_hints_that_arrive_together_are_read_in_one_read_each_reported_in_order(
    chatd: App, people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = people.alice.user
    first = await chatd.service.create_chat(alice, content=[TextPart(text="one")])
    second = await chatd.service.create_chat(alice, content=[TextPart(text="two")])
    bobs = await chatd.service.create_chat(people.bob.user, content=[TextPart(text="bob's")])
    reads: list[list[uuid.UUID]] = []
    real = chat_store.get_chats

    async def counted(db: Any, chat_ids: Any) -> dict[uuid.UUID, Chat]:
        ids = list(chat_ids)
        reads.append(ids)
        return await real(db, ids)

    monkeypatch.setattr(chat_store, "get_chats", counted)
    async with watch.watch_owner(chatd.db, chatd.pubsub, chatd.clock, alice.id) as changes:
        channel = owner_channel(alice.id)
        for kind, chat_id in [("status_change", first.id), ("title_change", second.id), ("status_change", bobs.id),
                              ("queue_change", first.id), ("status_change", uuid.uuid4())]:
            await chatd.pubsub.publish(channel, owner_hint(kind, chat_id))
        async with asyncio.timeout(10):
            got = [await anext(changes) for _ in range(3)]
    assert [(c.kind, c.chat.id) for c in got] == [("status_change", first.id), ("title_change", second.id), ("queue_change", first.id)]
    assert len(reads) == 1
