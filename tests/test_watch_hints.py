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


async def test_a_watch_that_fell_behind_reports_every_chat_changed_even_beyond_one_page(
    chatd: App, people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After its queue overflows a watch re-reads the owner's changed chats; more of them than one
    page must all be reported (the newest changes were the ones left out: a chat's end, never
    shown, at 1,000 chats in the served benchmark)."""
    monkeypatch.setattr(watch, "QUEUE", 2)
    monkeypatch.setattr(watch, "RESYNC_PAGE", 3)
    alice = people.alice.user
    made = [await chatd.service.create_chat(alice, content=[TextPart(text=f"chat {i}")]) for i in range(10)]
    pages: list[int] = []
    real = chat_store.chats_updated_since

    async def counted(*args: Any, **kwargs: Any) -> list[Chat]:
        page = await real(*args, **kwargs)
        pages.append(len(page))
        return page

    monkeypatch.setattr(chat_store, "chats_updated_since", counted)
    async with watch.watch_owner(chatd.db, chatd.pubsub, chatd.clock, alice.id) as changes:
        for chat in made:
            await chatd.service.set_archived(alice, chat.id, True)
        await asyncio.sleep(0.5)  # every hint has arrived: the queue of 2 overflowed
        last: dict[uuid.UUID, Chat] = {}
        async with asyncio.timeout(10):
            while len([c for c in last.values() if c.archived]) < len(made):
                change = await anext(changes)
                last[change.chat.id] = change.chat
    assert set(last) == {c.id for c in made}
    assert len(pages) >= 4 and pages[0] == 3  # the re-sync read page after page


async def test_changed_chats_are_paged_exactly_once_across_equal_change_times(chatd: App, people: People) -> None:
    from sqlalchemy import update

    from chatd.store.tables import chats

    alice = people.alice.user
    made = {(await chatd.service.create_chat(alice, content=[TextPart(text=f"chat {i}")])).id for i in range(7)}
    at = chatd.clock.now()
    async with chatd.db.write() as conn:
        await conn.execute(update(chats).where(chats.c.owner_id == alice.id).values(updated_at=at))
    got: list[uuid.UUID] = []
    after: Chat | None = None
    while True:
        page = await chat_store.chats_updated_since(chatd.db, alice.id, at, after=after, limit=3)
        got += [c.id for c in page]
        if len(page) < 3:
            break
        after = page[-1]
    assert sorted(got) == sorted(made) and len(got) == len(made)
