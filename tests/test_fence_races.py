"""The turn generation fence at the store level (hardening issue, item 1): an edit, an interrupt
and a promote race a step being persisted, then the same worker re-acquires the chat at once.
Whatever the order, the old turn's writes never land after the change, and the new turn answers."""

from __future__ import annotations

import uuid

from chatd.bootstrap import App
from chatd.domain.chat import ChatStatus, Role
from chatd.domain.config import User
from chatd.domain.parts import TextPart, text_of
from chatd.store import chats as chat_store
from chatd.store import tool_calls, turns
from chatd.store.tool_calls import ToolStart
from tests.conftest import People
from tests.test_chat_races import race

WORKER = uuid.UUID(int=7)
ROUNDS = 12


def text(s: str) -> list[TextPart]:
    return [TextPart(text=s)]


def step(s: str) -> list[turns.NewMessage]:
    return [turns.NewMessage(Role.ASSISTANT, text(s))]


async def acquire(chatd: App, chat_id: uuid.UUID) -> int:
    acquired = {c.id: c.generation for c in await turns.acquire_chats(chatd.db, chatd.clock.now(), WORKER, 10)}
    assert chat_id in acquired
    return acquired[chat_id]


async def history(chatd: App, chat_id: uuid.UUID) -> list[tuple[Role, str]]:
    return [(m.role, text_of(m.content)) for m in await chat_store.all_messages(chatd.db, chat_id) if m.role is not Role.SYSTEM]


async def assert_fenced(chatd: App, chat_id: uuid.UUID, old: int) -> None:
    """Every worker write under the old generation changes nothing and says it lost."""
    db, now = chatd.db, chatd.clock.now()
    before = await history(chatd, chat_id)
    chat = await chat_store.get_chat(db, chat_id)
    try:
        await turns.persist_step(db, now, chat_id, WORKER, old, step("late"))
    except turns.LostOwnership:
        pass
    else:
        raise AssertionError("a step of the old turn was written")
    assert await turns.take_steered(db, now, chat_id, WORKER, old) == ([], [])
    assert await turns.heartbeat_many(db, now, {chat_id: old}, WORKER) == set()
    assert await turns.release_chats(db, now, {chat_id: old}, WORKER) == []
    start = await tool_calls.start_tool_call(
        db, now, chat_id=chat_id, worker_id=WORKER, generation=old, run_id=uuid.uuid4(),
        tool_call_id="c", tool_name="t", args_sha256="0",
    )  # fmt: skip
    assert start is ToolStart.NOT_OURS
    assert not (await turns.finish_turn(db, now, chat_id, WORKER, old, turns.TurnEnd.COMPLETED)).applied
    after = await chat_store.get_chat(db, chat_id)
    assert (after.status, after.generation, after.worker_id) == (chat.status, chat.generation, chat.worker_id)
    assert await history(chatd, chat_id) == before


async def answer(chatd: App, chat_id: uuid.UUID, gen: int, reply: str) -> None:
    await turns.persist_step(chatd.db, chatd.clock.now(), chat_id, WORKER, gen, step(reply))
    res = await turns.finish_turn(chatd.db, chatd.clock.now(), chat_id, WORKER, gen, turns.TurnEnd.COMPLETED)
    assert res.applied and res.chat.status is ChatStatus.WAITING


async def test_an_edit_racing_a_step_then_an_at_once_reacquire_is_answered_and_fences_the_old_turn(chatd: App, people: People) -> None:
    for n in range(ROUNDS):
        await edit_round(chatd, people.alice.user, n)


async def edit_round(chatd: App, alice: User, n: int) -> None:
    chat = await chatd.service.create_chat(alice, content=text("orig"))
    old = await acquire(chatd, chat.id)
    [user] = [m for m in await chat_store.all_messages(chatd.db, chat.id) if m.role is Role.USER]
    results = await race(
        lambda: turns.persist_step(chatd.db, chatd.clock.now(), chat.id, WORKER, old, step(f"old answer {n}")),
        lambda: chatd.service.edit_message(alice, chat.id, user.id, text(f"edit {n}")),
    )
    # The step either landed first (and the edit deleted it) or was refused.
    assert results[0] is not None and (isinstance(results[0], turns.LostOwnership) or not isinstance(results[0], BaseException))
    assert not isinstance(results[1], BaseException), results[1]
    new = await acquire(chatd, chat.id)  # the same worker, at once
    assert new > old
    await assert_fenced(chatd, chat.id, old)
    await answer(chatd, chat.id, new, f"answer {n}")
    assert await history(chatd, chat.id) == [(Role.USER, f"edit {n}"), (Role.ASSISTANT, f"answer {n}")], f"round {n}"


async def test_an_interrupt_racing_a_step_keeps_the_partial_answer_and_fences_it_once_the_chat_moves_on(
    chatd: App, people: People
) -> None:
    for n in range(ROUNDS):
        await interrupt_round(chatd, people.alice.user, n)


async def interrupt_round(chatd: App, alice: User, n: int) -> None:
    chat = await chatd.service.create_chat(alice, content=text("start"))
    expected: list[tuple[Role, str]] = [(Role.USER, "start")]
    old = await acquire(chatd, chat.id)
    results = await race(
        lambda: turns.persist_step(chatd.db, chatd.clock.now(), chat.id, WORKER, old, step(f"partial {n}")),
        lambda: chatd.service.interrupt(alice, chat.id),
    )
    # An interrupt keeps the partial answer, whichever came first.
    assert not any(isinstance(r, BaseException) for r in results), results
    assert (await chat_store.get_chat(chatd.db, chat.id)).status is ChatStatus.WAITING
    sent = await chatd.service.send_message(alice, chat.id, content=text(f"next {n}"))
    assert not sent.queued and sent.chat.status is ChatStatus.PENDING
    new = await acquire(chatd, chat.id)
    await assert_fenced(chatd, chat.id, old)
    await answer(chatd, chat.id, new, f"answer {n}")
    expected += [(Role.ASSISTANT, f"partial {n}"), (Role.USER, f"next {n}"), (Role.ASSISTANT, f"answer {n}")]
    assert await history(chatd, chat.id) == expected, f"round {n}"


async def test_a_promote_racing_a_step_runs_the_promoted_message_and_fences_the_old_turn(chatd: App, people: People) -> None:
    for n in range(ROUNDS):
        await promote_round(chatd, people.alice.user, n)


async def promote_round(chatd: App, alice: User, n: int) -> None:
    chat = await chatd.service.create_chat(alice, content=text("start"))
    expected: list[tuple[Role, str]] = [(Role.USER, "start")]
    old = await acquire(chatd, chat.id)
    queued = (await chatd.service.send_message(alice, chat.id, content=text(f"promoted {n}"))).queued_message
    assert queued is not None
    results = await race(
        lambda: turns.persist_step(chatd.db, chatd.clock.now(), chat.id, WORKER, old, step(f"step {n}")),
        lambda: chatd.service.promote_queued(alice, chat.id, queued.id),
    )
    assert not isinstance(results[1], BaseException), results[1]
    step_landed = not isinstance(results[0], BaseException)
    assert step_landed or isinstance(results[0], turns.LostOwnership)
    new = await acquire(chatd, chat.id)
    await assert_fenced(chatd, chat.id, old)
    await answer(chatd, chat.id, new, f"answer {n}")
    # A step that landed first stays before the promoted message; nothing of the old turn after it.
    expected += [(Role.ASSISTANT, f"step {n}")] if step_landed else []
    expected += [(Role.USER, f"promoted {n}"), (Role.ASSISTANT, f"answer {n}")]
    assert await history(chatd, chat.id) == expected, f"round {n}"
