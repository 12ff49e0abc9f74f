"""Races of SPEC §3/§8 at the mutation level: contenders released together on a barrier."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from chatd.bootstrap import App
from chatd.domain.chat import ChatStatus, Role
from chatd.domain.parts import TextPart
from chatd.errors import NotFound, QueueFull
from chatd.store import chats as chat_store
from chatd.store import turns
from tests.conftest import People

WORKER = uuid.UUID(int=1)


def text(s: str) -> list[TextPart]:
    return [TextPart(text=s)]


async def race(*contenders: Callable[[], Awaitable[Any]]) -> list[Any]:
    """Start every contender at once; return each result or exception."""
    barrier = asyncio.Barrier(len(contenders))

    async def run(fn: Callable[[], Awaitable[Any]]) -> Any:
        await barrier.wait()
        return await fn()

    return await asyncio.gather(*(run(c) for c in contenders), return_exceptions=True)


async def idle_chat(chatd: App, people: People) -> uuid.UUID:
    chat = await chatd.service.create_chat(people.alice.user, content=text("start"))
    (acquired,) = await turns.acquire_chats(chatd.db, chatd.clock.now(), WORKER, 10)
    await turns.finish_turn(chatd.db, chatd.clock.now(), chat.id, WORKER, acquired.generation, turns.TurnEnd.COMPLETED)
    return chat.id


async def test_two_sends_racing_on_an_idle_chat_one_runs_one_queues(chatd: App, people: People) -> None:
    chat_id = await idle_chat(chatd, people)
    results = await race(
        lambda: chatd.service.send_message(people.alice.user, chat_id, content=text("x")),
        lambda: chatd.service.send_message(people.alice.user, chat_id, content=text("y")),
    )
    assert not any(isinstance(r, BaseException) for r in results), results
    # Defined outcome: exactly one goes into the history, the other is queued behind it.
    assert sorted(r.queued for r in results) == [False, True]
    inserted = next(r for r in results if not r.queued)
    queued = next(r for r in results if r.queued)
    users = [m.content for m in await chat_store.all_messages(chatd.db, chat_id) if m.role is Role.USER]
    assert users == [text("start"), inserted.message.content]
    assert [q.content for q in await chat_store.list_queue(chatd.db, chat_id)] == [queued.queued_message.content]
    assert (await chat_store.get_chat(chatd.db, chat_id)).status is ChatStatus.PENDING


async def test_the_twenty_first_queued_message_is_refused_exactly_once(chatd: App, people: People) -> None:
    chat = await chatd.service.create_chat(people.alice.user, content=text("start"))
    for i in range(19):
        await chatd.service.send_message(people.alice.user, chat.id, content=text(f"q{i}"))
    results = await race(
        lambda: chatd.service.send_message(people.alice.user, chat.id, content=text("20th")),
        lambda: chatd.service.send_message(people.alice.user, chat.id, content=text("21st")),
    )
    assert sum(isinstance(r, QueueFull) for r in results) == 1
    assert sum(not isinstance(r, BaseException) and r.queued for r in results) == 1
    assert len(await chat_store.list_queue(chatd.db, chat.id)) == 20


async def test_interrupt_racing_a_send_never_loses_the_new_message(chatd: App, people: People) -> None:
    chat = await chatd.service.create_chat(people.alice.user, content=text("start"))
    (acquired,) = await turns.acquire_chats(chatd.db, chatd.clock.now(), WORKER, 10)
    results = await race(
        lambda: chatd.service.interrupt(people.alice.user, chat.id),
        lambda: chatd.service.send_message(people.alice.user, chat.id, content=text("next")),
    )
    assert not any(isinstance(r, BaseException) for r in results), results
    # Whichever order: the message is queued (the chat was running or waiting-with-backlog is
    # impossible here) and the running turn ends; finishing promotes it, so it runs.
    end = await turns.finish_turn(chatd.db, chatd.clock.now(), chat.id, WORKER, acquired.generation, turns.TurnEnd.INTERRUPTED)
    final = await chat_store.get_chat(chatd.db, chat.id)
    users = [m.content for m in await chat_store.all_messages(chatd.db, chat.id) if m.role is Role.USER]
    assert users == [text("start"), text("next")]
    assert final.status is ChatStatus.PENDING
    assert end.applied


async def test_interrupt_racing_pending_leaves_it_pending(chatd: App, people: People) -> None:
    chat_id = await idle_chat(chatd, people)
    results = await race(
        lambda: chatd.service.send_message(people.alice.user, chat_id, content=text("go")),
        lambda: chatd.service.interrupt(people.alice.user, chat_id),
    )
    assert not any(isinstance(r, BaseException) for r in results), results
    assert (await chat_store.get_chat(chatd.db, chat_id)).status is ChatStatus.PENDING


async def test_edit_racing_queued_sends_keeps_a_consistent_queue(chatd: App, people: People) -> None:
    chat = await chatd.service.create_chat(people.alice.user, content=text("start"))
    first = next(m for m in await chat_store.all_messages(chatd.db, chat.id) if m.role is Role.USER)
    results = await race(
        lambda: chatd.service.edit_message(people.alice.user, chat.id, first.id, text("edited")),
        lambda: chatd.service.send_message(people.alice.user, chat.id, content=text("q1")),
        lambda: chatd.service.send_message(people.alice.user, chat.id, content=text("q2")),
    )
    assert not any(isinstance(r, BaseException) for r in results), results
    queue = [q.content for q in await chat_store.list_queue(chatd.db, chat.id)]
    acked = [r.queued_message.content for r in results[1:]]
    # The edit clears what was queued before it; whatever was queued after it survives, in order.
    assert all(c in acked for c in queue)
    assert queue in ([], [text("q1")], [text("q2")], [text("q1"), text("q2")], [text("q2"), text("q1")])
    live = [m.content for m in await chat_store.all_messages(chatd.db, chat.id) if m.role is Role.USER]
    assert live == [text("edited")]
    assert (await chat_store.get_chat(chatd.db, chat.id)).status is ChatStatus.PENDING


async def test_promote_racing_delete_of_the_same_queued_message(chatd: App, people: People) -> None:
    chat = await chatd.service.create_chat(people.alice.user, content=text("start"))
    q = (await chatd.service.send_message(people.alice.user, chat.id, content=text("contested"))).queued_message
    assert q is not None
    results = await race(
        lambda: chatd.service.promote_queued(people.alice.user, chat.id, q.id),
        lambda: chatd.service.delete_queued(people.alice.user, chat.id, q.id),
    )
    assert sum(isinstance(r, NotFound) for r in results) == 1
    users = [m.content for m in await chat_store.all_messages(chatd.db, chat.id) if m.role is Role.USER]
    promoted = not isinstance(results[0], BaseException)
    assert users == ([text("start"), text("contested")] if promoted else [text("start")])
    assert await chat_store.list_queue(chatd.db, chat.id) == []


async def test_promote_racing_auto_promotion_runs_the_message_once(chatd: App, people: People) -> None:
    chat = await chatd.service.create_chat(people.alice.user, content=text("start"))
    q = (await chatd.service.send_message(people.alice.user, chat.id, content=text("once"))).queued_message
    assert q is not None
    (acquired,) = await turns.acquire_chats(chatd.db, chatd.clock.now(), WORKER, 10)
    await race(
        lambda: chatd.service.promote_queued(people.alice.user, chat.id, q.id),
        lambda: turns.finish_turn(chatd.db, chatd.clock.now(), chat.id, WORKER, acquired.generation, turns.TurnEnd.COMPLETED),
    )
    users = [m.content for m in await chat_store.all_messages(chatd.db, chat.id) if m.role is Role.USER]
    assert users == [text("start"), text("once")]
    assert (await chat_store.get_chat(chatd.db, chat.id)).status is ChatStatus.PENDING


async def test_two_workers_acquire_one_pending_chat_exactly_once(chatd: App, people: People) -> None:
    chats = [await chatd.service.create_chat(people.alice.user, content=text(f"c{i}")) for i in range(15)]
    a, b = uuid.uuid4(), uuid.uuid4()
    results = await race(
        lambda: turns.acquire_chats(chatd.db, chatd.clock.now(), a, 10),
        lambda: turns.acquire_chats(chatd.db, chatd.clock.now(), b, 10),
    )
    got_a, got_b = ({c.id for c in r} for r in results)
    assert not got_a & got_b
    assert got_a | got_b == {c.id for c in chats}
