"""Races of SPEC §8 on the worker side: two workers, crash recovery, shutdown mid-turn, and a
heartbeat that matches no row."""

from __future__ import annotations

import asyncio
import uuid

from chatd.domain.chat import ChatStatus, Role
from chatd.domain.parts import TextPart
from chatd.store import turns
from tests.fakes.llm_server import Reply, ToolCall
from tests.worker.conftest import Gate, Rig


async def test_two_workers_racing_for_one_pending_chat_run_it_exactly_once(rig: Rig) -> None:
    rig.llm.script(Reply(text="only once"))
    chat = await rig.chat()
    a, b = rig.workers, rig.new_workers()
    barrier = asyncio.Barrier(2)

    async def contend(w: object) -> int:
        await barrier.wait()
        return len(await w.acquire_once())  # type: ignore[attr-defined]

    got = await asyncio.gather(contend(a), contend(b))
    assert sorted(got) == [0, 1]
    await a.drain()
    await b.drain()
    answers = [m for m in await rig.messages(chat.id) if m.role is Role.ASSISTANT]
    assert [m.content for m in answers] == [[TextPart(text="only once")]]
    assert len(rig.llm.requests) == 1
    await b.shutdown()


async def test_many_chats_over_two_workers_each_turn_runs_once(rig: Rig) -> None:
    n = 12
    rig.llm.script(*[Reply(text="done") for _ in range(n)])
    chats = [await rig.chat(f"chat {i}") for i in range(n)]
    a, b = rig.workers, rig.new_workers()
    for _ in range(5):
        await asyncio.gather(a.acquire_once(), b.acquire_once())
        await asyncio.gather(a.drain(), b.drain())
    for c in chats:
        assert (await rig.get(c.id)).status is ChatStatus.WAITING
        assert len([m for m in await rig.messages(c.id) if m.role is Role.ASSISTANT]) == 1
    assert len(rig.llm.requests) == n
    await b.shutdown()


async def test_a_crashed_workers_chat_is_recovered_after_stale_after_without_duplicates(rig: Rig) -> None:
    rig.llm.script(Reply(text="recovered answer"))
    chat = await rig.chat()
    dead = uuid.uuid4()
    # A worker that acquired the chat and then died: it never heartbeats again.
    [acquired] = await turns.acquire_chats(rig.app.db, rig.app.clock.now(), dead, 10)
    assert acquired.id == chat.id
    assert await rig.workers.recover_once() == []  # still fresh
    rig.app.clock.advance(rig.app.settings.stale_after + 1)  # type: ignore[attr-defined]
    recovered = await rig.workers.recover_once()
    assert [c.id for c in recovered] == [chat.id] and recovered[0].status is ChatStatus.PENDING
    await rig.run()
    msgs = [m for m in await rig.messages(chat.id) if m.role is not Role.SYSTEM]
    assert [m.role for m in msgs] == [Role.USER, Role.ASSISTANT]


async def test_a_fresh_heartbeat_wins_over_recovery(rig: Rig) -> None:
    chat = await rig.chat()
    w = uuid.uuid4()
    [acquired] = await turns.acquire_chats(rig.app.db, rig.app.clock.now(), w, 10)
    rig.app.clock.advance(rig.app.settings.stale_after + 1)  # type: ignore[attr-defined]
    assert await turns.heartbeat_many(rig.app.db, rig.app.clock.now(), {chat.id: acquired.generation}, w) == {chat.id}
    assert await rig.workers.recover_once() == []
    assert (await rig.get(chat.id)).status is ChatStatus.RUNNING


async def test_shutdown_mid_turn_gives_the_chat_back_and_another_worker_finishes_it(rig: Rig) -> None:
    gate = Gate()
    rig.tools = [gate.tool()]
    rig.llm.script(Reply(text="step one", tool_calls=[ToolCall("c1", "wait", {})]))
    chat = await rig.chat()
    await rig.workers.acquire_once()
    await asyncio.wait_for(gate.entered.wait(), 10)
    await rig.workers.shutdown()
    assert (await rig.get(chat.id)).status is ChatStatus.PENDING
    assert (await rig.get(chat.id)).worker_id is None
    # Nothing half-written: the interrupted step was not persisted.
    assert [m.role for m in await rig.messages(chat.id) if m.role is not Role.SYSTEM] == [Role.USER]
    gate.release.set()
    rig.llm.script(Reply(text="step one", tool_calls=[ToolCall("c1", "wait", {})]), Reply(text="finished"))
    other = rig.new_workers()
    await rig.run(other)
    msgs = [m for m in await rig.messages(chat.id) if m.role is not Role.SYSTEM]
    assert [m.role for m in msgs] == [Role.USER, Role.ASSISTANT, Role.TOOL, Role.ASSISTANT]
    await other.shutdown()


async def test_a_heartbeat_that_matches_no_row_stops_the_turn(rig: Rig) -> None:
    gate = Gate()
    rig.tools = [gate.tool()]
    rig.llm.script(Reply(text="mine", tool_calls=[ToolCall("c1", "wait", {})]))
    chat = await rig.chat()
    await rig.workers.acquire_once()
    await asyncio.wait_for(gate.entered.wait(), 10)
    # Another replica recovered the chat and took it (its notification was lost).
    from sqlalchemy import update

    from chatd.store.tables import chats

    thief = uuid.uuid4()
    async with rig.app.db.write() as conn:
        await conn.execute(update(chats).where(chats.c.id == chat.id).values(worker_id=thief))
    await rig.workers.heartbeat_once()
    await asyncio.wait_for(rig.workers.drain(), 10)
    current = await rig.get(chat.id)
    assert current.status is ChatStatus.RUNNING and current.worker_id == thief
    assert [m.role for m in await rig.messages(chat.id) if m.role is not Role.SYSTEM] == [Role.USER]


async def test_workers_run_loop_wakes_on_pending_and_stops_cleanly(rig: Rig) -> None:
    rig.app.settings.acquire_interval = 30  # only the pending notification can wake it in time
    rig.llm.script(Reply(text="woken"))
    stop = asyncio.Event()
    runner = asyncio.create_task(rig.workers.run(stop))
    await asyncio.sleep(0.1)
    chat = await rig.chat()
    done = await rig.wait_status(chat.id, ChatStatus.WAITING)
    assert done.status is ChatStatus.WAITING
    stop.set()
    await asyncio.wait_for(runner, 10)


async def test_a_replica_runs_at_most_its_cap_of_turns_and_takes_more_as_slots_free(rig: Rig) -> None:
    rig.app.settings.max_running_turns = 2
    gate = Gate()
    rig.tools = [gate.tool()]
    rig.llm.script(*[Reply(tool_calls=[ToolCall(f"c{i}", "wait", {})]) for i in range(3)], *[Reply(text="done")] * 3)
    chats = [await rig.chat(f"chat {i}") for i in range(3)]
    started = await rig.workers.acquire_once()
    assert len(started) == 2 and len(rig.workers.running) == 2
    assert await rig.workers.acquire_once() == []  # full: the third chat waits
    waiting = [c for c in chats if c.id not in rig.workers.running]
    assert len(waiting) == 1 and (await rig.get(waiting[0].id)).status is ChatStatus.PENDING
    gate.release.set()
    await asyncio.wait_for(rig.workers.drain(), 20)
    await rig.run()
    for c in chats:
        assert (await rig.get(c.id)).status is ChatStatus.WAITING


def test_the_default_cap_is_derived_from_the_connection_pool(rig: Rig) -> None:
    assert rig.app.settings.max_running_turns == 0
    assert rig.workers.turn_cap == 10 * rig.app.db.capacity > 0


async def test_a_loop_cancelled_as_it_is_woken_stops(rig: Rig) -> None:
    # Python 3.11's wait_for returned the wake-up and swallowed a cancel that came with it: the
    # acquire loop ran another round and waited its whole interval before stopping.
    wake = asyncio.Event()
    rounds: list[int] = []

    async def step() -> None:
        rounds.append(1)

    loop = asyncio.create_task(rig.workers._every(30, step, wake=wake))
    await asyncio.sleep(0.05)
    wake.set()
    loop.cancel()
    done, _ = await asyncio.wait({loop}, timeout=5)
    assert done and loop.cancelled() and len(rounds) == 1
