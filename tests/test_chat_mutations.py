"""Chat mutations of SPEC §3 on both databases, through the service."""

from __future__ import annotations

import uuid

import pytest

from chatd.bootstrap import App
from chatd.domain.chat import BusyBehavior, ChatStatus, Role, Visibility
from chatd.domain.clock import ManualClock
from chatd.domain.parts import TextPart
from chatd.errors import ChatBusy, InvalidInput, NotFound, QueueFull, UsageLimitExceeded
from chatd.store import chats as chat_store
from chatd.store import turns
from tests.conftest import People


def text(s: str) -> list[TextPart]:
    return [TextPart(text=s)]


WORKER = uuid.UUID(int=1)


async def make_running(chatd: App, chat_id: uuid.UUID) -> int:
    """Acquire the chat as WORKER; returns the turn generation it runs under."""
    acquired = {c.id: c.generation for c in await turns.acquire_chats(chatd.db, chatd.clock.now(), WORKER, 10)}
    assert chat_id in acquired
    return acquired[chat_id]


async def test_create_chat_is_pending_with_awareness_and_user_message(chatd: App, people: People) -> None:
    chat = await chatd.service.create_chat(people.alice.user, content=text("Hello there, how are you today my friend?"), system_prompt="Be brief.")
    assert chat.status is ChatStatus.PENDING
    assert chat.root_chat_id == chat.id
    assert chat.title == "Hello there, how are you today…"
    msgs = await chat_store.all_messages(chatd.db, chat.id)
    assert [(m.role, m.visibility) for m in msgs] == [
        (Role.SYSTEM, Visibility.MODEL),
        (Role.SYSTEM, Visibility.MODEL),
        (Role.USER, Visibility.BOTH),
    ]
    assert msgs[0].content == text("Be brief.")
    assert "create_workspace" in msgs[1].content[0].text  # type: ignore[union-attr]
    # Clients only see what is meant for them.
    visible, queue = await chatd.service.list_messages(people.alice.user, chat.id, 0)
    assert [m.id for m in visible] == [msgs[2].id] and queue == []


async def test_create_chat_rejects_blank_content_and_title(chatd: App, people: People) -> None:
    with pytest.raises(InvalidInput):
        await chatd.service.create_chat(people.alice.user, content=text("   "))
    with pytest.raises(InvalidInput):
        await chatd.service.create_chat(people.alice.user, content=text("hi"), title="  ")
    with pytest.raises(InvalidInput):
        await chatd.service.create_chat(people.alice.user, content=text("hi"), model_config_id=uuid.uuid4())
    assert await chat_store.list_chats(chatd.db, people.alice.user.id) == []


async def test_send_to_idle_chat_inserts_and_makes_it_pending(chatd: App, people: People) -> None:
    chat = await chatd.service.create_chat(people.alice.user, content=text("one"))
    gen = await make_running(chatd, chat.id)
    await turns.finish_turn(chatd.db, chatd.clock.now(), chat.id, WORKER, gen, turns.TurnEnd.COMPLETED)
    out = await chatd.service.send_message(people.alice.user, chat.id, content=text("two"))
    assert not out.queued and out.message is not None and out.chat.status is ChatStatus.PENDING


async def test_send_while_busy_queues_fifo_and_turn_end_promotes_oldest(chatd: App, people: People) -> None:
    chat = await chatd.service.create_chat(people.alice.user, content=text("one"))
    a = await chatd.service.send_message(people.alice.user, chat.id, content=text("a"))
    b = await chatd.service.send_message(people.alice.user, chat.id, content=text("b"))
    assert a.queued and b.queued and a.chat.status is ChatStatus.PENDING
    gen = await make_running(chatd, chat.id)
    res = await turns.finish_turn(chatd.db, chatd.clock.now(), chat.id, WORKER, gen, turns.TurnEnd.COMPLETED)
    assert res.promoted is not None and res.promoted.content == text("a")
    assert [q.content for q in res.queue] == [text("b")]
    assert res.chat.status is ChatStatus.PENDING


async def test_idle_chat_with_backlog_still_queues_and_promotes_the_head(chatd: App, people: People, clock: ManualClock) -> None:
    chat = await chatd.service.create_chat(people.alice.user, content=text("one"))
    await chatd.service.send_message(people.alice.user, chat.id, content=text("queued-1"))
    await make_running(chatd, chat.id)
    await chatd.service.interrupt(people.alice.user, chat.id)
    # The worker vanished without promoting: the chat is waiting with a backlog.
    out = await chatd.service.send_message(people.alice.user, chat.id, content=text("queued-2"))
    assert out.queued and out.chat.status is ChatStatus.PENDING
    users = [m.content for m in await chat_store.all_messages(chatd.db, chat.id) if m.role is Role.USER]
    assert users == [text("one"), text("queued-1")]
    assert [q.content for q in await chat_store.list_queue(chatd.db, chat.id)] == [text("queued-2")]


async def test_queueing_to_a_pending_chat_keeps_its_place_in_the_line(chatd: App, people: People, clock: ManualClock) -> None:
    """Workers take pending chats oldest update first: a message queued to a chat that already
    waits for a worker (its count goes up) must not send it behind chats that came later."""
    first = await chatd.service.create_chat(people.alice.user, content=text("first"))
    clock.advance(1)
    second = await chatd.service.create_chat(people.bob.user, content=text("second"))
    clock.advance(1)
    out = await chatd.service.send_message(people.alice.user, first.id, content=text("more"))
    assert out.queued and out.chat.queued_count == 1
    (taken,) = await turns.acquire_chats(chatd.db, clock.now(), WORKER, 1)
    assert taken.id == first.id and taken.id != second.id


async def test_queue_is_limited_to_twenty(chatd: App, people: People) -> None:
    chat = await chatd.service.create_chat(people.alice.user, content=text("one"))
    for i in range(20):
        await chatd.service.send_message(people.alice.user, chat.id, content=text(f"q{i}"))
    with pytest.raises(QueueFull):
        await chatd.service.send_message(people.alice.user, chat.id, content=text("q20"))
    assert len(await chat_store.list_queue(chatd.db, chat.id)) == 20


async def test_reject_while_busy_is_a_conflict_and_changes_nothing(chatd: App, people: People) -> None:
    chat = await chatd.service.create_chat(people.alice.user, content=text("one"))
    with pytest.raises(ChatBusy):
        await chatd.service.send_message(people.alice.user, chat.id, content=text("x"), busy_behavior=BusyBehavior.REJECT)
    assert await chat_store.list_queue(chatd.db, chat.id) == []


async def test_interrupt_stops_running_but_pending_wins(chatd: App, people: People) -> None:
    chat = await chatd.service.create_chat(people.alice.user, content=text("one"))
    assert (await chatd.service.interrupt(people.alice.user, chat.id)).status is ChatStatus.PENDING
    await make_running(chatd, chat.id)
    stopped = await chatd.service.interrupt(people.alice.user, chat.id)
    assert stopped.status is ChatStatus.WAITING and stopped.worker_id is None and stopped.started_at is None


async def test_send_with_interrupt_queues_then_interrupts(chatd: App, people: People) -> None:
    chat = await chatd.service.create_chat(people.alice.user, content=text("one"))
    gen = await make_running(chatd, chat.id)
    out = await chatd.service.send_message(people.alice.user, chat.id, content=text("stop, do this"), busy_behavior=BusyBehavior.INTERRUPT)
    assert out.queued and out.chat.status is ChatStatus.WAITING
    # The worker saves its partial answer, then the queued message is promoted after it.
    await turns.persist_step(chatd.db, chatd.clock.now(), chat.id, WORKER, gen, [turns.NewMessage(Role.ASSISTANT, text("partial"))])
    res = await turns.finish_turn(chatd.db, chatd.clock.now(), chat.id, WORKER, gen, turns.TurnEnd.INTERRUPTED)
    assert res.promoted is not None and res.chat.status is ChatStatus.PENDING
    tail = [(m.role, m.content) for m in await chat_store.all_messages(chatd.db, chat.id)][-2:]
    assert tail == [(Role.ASSISTANT, text("partial")), (Role.USER, text("stop, do this"))]


async def test_edit_soft_deletes_later_history_clears_queue_and_goes_pending(chatd: App, people: People) -> None:
    chat = await chatd.service.create_chat(people.alice.user, content=text("one"))
    gen = await make_running(chatd, chat.id)
    await turns.persist_step(chatd.db, chatd.clock.now(), chat.id, WORKER, gen, [turns.NewMessage(Role.ASSISTANT, text("answer"))])
    await chatd.service.send_message(people.alice.user, chat.id, content=text("queued"))
    first_user = next(m for m in await chat_store.all_messages(chatd.db, chat.id) if m.role is Role.USER)
    msg, edited = await chatd.service.edit_message(people.alice.user, chat.id, first_user.id, text("one, edited"))
    assert edited.status is ChatStatus.PENDING and edited.worker_id is None
    live = await chat_store.all_messages(chatd.db, chat.id)
    assert [m.content for m in live if m.role is not Role.SYSTEM] == [text("one, edited")]
    assert msg.id > first_user.id
    assert await chat_store.list_queue(chatd.db, chat.id) == []
    # The running worker may not write after the edit.
    with pytest.raises(turns.LostOwnership):
        await turns.persist_step(chatd.db, chatd.clock.now(), chat.id, WORKER, gen, [turns.NewMessage(Role.ASSISTANT, text("late"))])


async def test_edit_refuses_missing_and_non_user_messages(chatd: App, people: People) -> None:
    chat = await chatd.service.create_chat(people.alice.user, content=text("one"))
    system = (await chat_store.all_messages(chatd.db, chat.id))[0]
    with pytest.raises(InvalidInput):
        await chatd.service.edit_message(people.alice.user, chat.id, system.id, text("x"))
    with pytest.raises(NotFound):
        await chatd.service.edit_message(people.alice.user, chat.id, 10_000_000, text("x"))


async def test_archive_covers_the_tree_and_stops_busy_chats(chatd: App, people: People) -> None:
    root = await chatd.service.create_chat(people.alice.user, content=text("root"))
    child = await chatd.service.create_chat(people.alice.user, content=text("child"), parent_chat_id=root.id)
    assert child.root_chat_id == root.id
    await chatd.service.set_archived(people.alice.user, root.id, True)
    for cid in (root.id, child.id):
        c = await chat_store.get_chat(chatd.db, cid)
        assert c.archived and c.status is ChatStatus.WAITING
    assert await chatd.service.list_chats(people.alice.user, False) == []
    await chatd.service.set_archived(people.alice.user, root.id, False)
    assert {c.id for c in await chatd.service.list_chats(people.alice.user, False)} == {root.id, child.id}


async def test_delete_and_promote_queued(chatd: App, people: People) -> None:
    chat = await chatd.service.create_chat(people.alice.user, content=text("one"))
    a = await chatd.service.send_message(people.alice.user, chat.id, content=text("a"))
    b = await chatd.service.send_message(people.alice.user, chat.id, content=text("b"))
    assert a.queued_message and b.queued_message
    await chatd.service.delete_queued(people.alice.user, chat.id, a.queued_message.id)
    promoted = await chatd.service.promote_queued(people.alice.user, chat.id, b.queued_message.id)
    assert promoted.content == text("b")
    assert await chat_store.list_queue(chatd.db, chat.id) == []
    with pytest.raises(NotFound):
        await chatd.service.promote_queued(people.alice.user, chat.id, b.queued_message.id)


async def test_spend_limit_blocks_create_send_and_edit_but_not_promotion(chatd: App, people: People) -> None:
    chat = await chatd.service.create_chat(people.alice.user, content=text("one"))
    queued = await chatd.service.send_message(people.alice.user, chat.id, content=text("queued before the limit"))
    gen = await make_running(chatd, chat.id)
    await turns.persist_step(
        chatd.db, chatd.clock.now(), chat.id, WORKER, gen, [turns.NewMessage(Role.ASSISTANT, text("costly"), total_cost_micros=5_000_000)]
    )
    await chatd.service.set_usage_limit(people.admin.user, scope="user", user_id=people.alice.user.id, period="day", limit_micros=5_000_000)
    with pytest.raises(UsageLimitExceeded) as info:
        await chatd.service.create_chat(people.alice.user, content=text("two"))
    assert (info.value.limit_micros, info.value.spent_micros) == (5_000_000, 5_000_000)
    with pytest.raises(UsageLimitExceeded):
        await chatd.service.send_message(people.alice.user, chat.id, content=text("more"))
    first_user = next(m for m in await chat_store.all_messages(chatd.db, chat.id) if m.role is Role.USER)
    with pytest.raises(UsageLimitExceeded):
        await chatd.service.edit_message(people.alice.user, chat.id, first_user.id, text("x"))
    assert queued.queued_message is not None
    await chatd.service.promote_queued(people.alice.user, chat.id, queued.queued_message.id)
    # Bob has no limit of his own and there is no global one.
    await chatd.service.create_chat(people.bob.user, content=text("fine"))
    status = await chatd.service.usage(people.alice.user)
    assert (status.spent_micros, status.limit_micros, status.period) == (5_000_000, 5_000_000, "day")


async def test_other_users_chats_are_not_found(chatd: App, people: People) -> None:
    chat = await chatd.service.create_chat(people.alice.user, content=text("private"))
    for call in (
        chatd.service.get_chat(people.bob.user, chat.id),
        chatd.service.send_message(people.bob.user, chat.id, content=text("x")),
        chatd.service.interrupt(people.bob.user, chat.id),
        chatd.service.list_messages(people.bob.user, chat.id, 0),
        chatd.service.get_chat(people.admin.user, chat.id),
    ):
        with pytest.raises(NotFound):
            await call


async def test_a_step_of_several_messages_is_stored_in_order_in_one_statement(chatd: App, people: People) -> None:
    from sqlalchemy import event

    chat = await chatd.service.create_chat(people.alice.user, content=text("one"))
    gen = await make_running(chatd, chat.id)
    step = [turns.NewMessage(Role.ASSISTANT, text("calls"))] + [turns.NewMessage(Role.TOOL, text(f"result {i}")) for i in range(5)]
    inserts: list[str] = []

    def seen(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.startswith("INSERT INTO messages"):
            inserts.append(statement)

    event.listen(chatd.db.engine.sync_engine, "before_cursor_execute", seen)
    try:
        written = await turns.persist_step(chatd.db, chatd.clock.now(), chat.id, WORKER, gen, step)
    finally:
        event.remove(chatd.db.engine.sync_engine, "before_cursor_execute", seen)
    assert len(inserts) == 1
    assert [m.content for m in written.messages] == [m.content for m in step]
    ids = [m.id for m in written.messages]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    stored = [m for m in await chat_store.all_messages(chatd.db, chat.id) if m.id in set(ids)]
    assert [(m.id, m.content) for m in stored] == [(m.id, m.content) for m in written.messages]


async def test_a_step_peeks_for_steered_messages_only_behind_a_queue(chatd: App, people: People) -> None:
    chat = await chatd.service.create_chat(people.alice.user, content=text("one"))
    gen = await make_running(chatd, chat.id)
    step = [turns.NewMessage(Role.ASSISTANT, text("answer"))]
    now = chatd.clock.now()
    assert not (await turns.persist_step(chatd.db, now, chat.id, WORKER, gen, step, peek_steered=True)).steered
    await chatd.service.send_message(people.alice.user, chat.id, content=text("queued"))
    assert not (await turns.persist_step(chatd.db, now, chat.id, WORKER, gen, step, peek_steered=True)).steered
    await chatd.service.send_message(people.alice.user, chat.id, content=text("steer"), busy_behavior=BusyBehavior.STEER)
    assert (await turns.persist_step(chatd.db, now, chat.id, WORKER, gen, step, peek_steered=True)).steered
    moved, queue = await turns.take_steered(chatd.db, now, chat.id, WORKER, gen)
    assert [m.content for m in moved] == [text("steer")] and [q.content for q in queue] == [text("queued")]
    assert not (await turns.persist_step(chatd.db, now, chat.id, WORKER, gen, step, peek_steered=True)).steered
