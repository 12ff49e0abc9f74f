"""Two replicas in one process on one PostgreSQL, each with its own HTTP server, pubsub
connection and worker pool: parts of a chat running on A reach a subscriber on B through the
relay, interrupts sent to B stop the turn on A, and a replica that stops heartbeating has its
chats recovered without waiting for the per-chat staleness."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from chatd.bootstrap import App, build, make_workers, turn_deps
from chatd.domain.changes import StatusChanged
from chatd.domain.chat import ChatStatus, Role, UserRole
from chatd.domain.clock import ManualClock
from chatd.domain.config import ModelOptions, Pricing
from chatd.domain.events import MessageEvent, MessagePartEvent, StatusEvent, StreamEvent
from chatd.domain.parts import TextPart
from chatd.settings import Settings
from chatd.store import chats as chat_store
from chatd.store import users as user_store
from chatd.streams.hub import Notification
from chatd.worker import Workers
from tests.conftest import serve_http
from tests.fakes.llm_server import FakeLLMServer, Reply
from tests.fakes.turn_doubles import RecordedSleep


@contextlib.asynccontextmanager
async def replica(url: str, tmp: Path, key: str, clock: ManualClock) -> AsyncIterator[tuple[App, Workers]]:
    settings = Settings(data_dir=tmp, database_url=url, secret_key=key, run_workers=False, generate_titles=False)
    app = await build(settings, clock=clock)
    try:
        async with serve_http(app) as base:
            settings.internal_url = base
            deps = turn_deps(app)
            deps.sleep = RecordedSleep()
            workers = make_workers(app, deps)
            await workers.replica_heartbeat_once()
            try:
                yield app, workers
            finally:
                await workers.shutdown()
    finally:
        await app.close()


async def collect(app: App, chat_id: uuid.UUID, n_parts_or_until: object, timeout: float = 20) -> list[StreamEvent]:
    out: list[StreamEvent] = []
    async with asyncio.timeout(timeout), app.hub.subscribe(chat_id) as events:
        async for ev in events:
            out.append(ev)
            if isinstance(ev, StatusEvent) and ev.status in (ChatStatus.WAITING, ChatStatus.ERROR):
                return out
    return out


@pytest.fixture
async def two(pg_url: str, tmp_path: Path) -> AsyncIterator[tuple[App, Workers, App, Workers, FakeLLMServer]]:
    key = Fernet.generate_key().decode()
    clock = ManualClock()
    async with FakeLLMServer(token_delay=0.01) as llm, replica(pg_url, tmp_path / "a", key, clock) as (a, wa), replica(pg_url, tmp_path / "b", key, clock) as (b, wb):
        admin = await user_store.create_user(a.db, clock.now(), "admin", UserRole.ADMIN)
        await a.service.create_provider(admin, provider="openai-compatible", display_name=None, api_key="k", base_url=llm.openai_base_url, enabled=True)
        await a.service.create_model_config(
            admin, provider="openai-compatible", model="m", display_name=None, context_limit=100_000, compression_threshold=0,
            is_default=True, options=ModelOptions(), pricing=Pricing(),
        )
        yield a, wa, b, wb, llm


async def test_a_subscriber_on_another_replica_gets_the_same_parts_and_events(two: tuple[App, Workers, App, Workers, FakeLLMServer]) -> None:
    a, wa, b, _wb, llm = two
    text = "The quick brown fox jumps over the lazy dog, " * 8
    llm.script(Reply(text=text, chunk_chars=3))
    owner = await user_store.create_user(a.db, a.clock.now(), "alice", UserRole.MEMBER)
    chat = await a.service.create_chat(owner, content=[TextPart(text="tell me")])
    on_a = asyncio.create_task(collect(a, chat.id, None))
    on_b = asyncio.create_task(collect(b, chat.id, None))
    await asyncio.sleep(0.3)
    await wa.acquire_once()
    await wa.drain()
    ea, eb = await on_a, await on_b

    def parts(evs: list[StreamEvent]) -> str:
        return "".join(e.part.text for e in evs if isinstance(e, MessagePartEvent) and isinstance(e.part, TextPart))

    def durable(evs: list[StreamEvent]) -> list[object]:
        return [(e.type, e.message.id if isinstance(e, MessageEvent) else getattr(e, "status", None)) for e in evs if not isinstance(e, MessagePartEvent)]

    assert parts(ea) == text
    assert parts(eb) == text  # relayed from A, none lost, none twice
    assert durable(ea) == durable(eb)
    assert [e.message.role for e in eb if isinstance(e, MessageEvent)][-1] is Role.ASSISTANT


async def test_interrupt_sent_to_the_other_replica_stops_the_turn(two: tuple[App, Workers, App, Workers, FakeLLMServer]) -> None:
    a, wa, b, _wb, llm = two
    llm.token_delay = 0.05
    llm.script(Reply(text="word " * 400, chunk_chars=5))
    owner = await user_store.create_user(a.db, a.clock.now(), "alice", UserRole.MEMBER)
    chat = await a.service.create_chat(owner, content=[TextPart(text="talk")])
    seen = asyncio.Event()

    async def watch() -> None:
        async with b.hub.subscribe(chat.id) as events:
            async for ev in events:
                if isinstance(ev, MessagePartEvent):
                    seen.set()
                    return

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.2)
    await wa.acquire_once()
    await asyncio.wait_for(seen.wait(), 20)
    await b.service.interrupt(owner, chat.id)
    await asyncio.wait_for(wa.drain(), 20)
    await watcher
    done = await chat_store.get_chat(a.db, chat.id)
    assert done.status is ChatStatus.WAITING
    partial = [m for m in await chat_store.all_messages(a.db, chat.id) if m.role is Role.ASSISTANT]
    assert len(partial) == 1
    saved = "".join(p.text for p in partial[0].content if isinstance(p, TextPart))
    assert 0 < len(saved) < len("word " * 400)


async def test_a_replica_that_stops_heartbeating_has_its_chats_recovered_fast(two: tuple[App, Workers, App, Workers, FakeLLMServer]) -> None:
    a, wa, b, wb, llm = two
    owner = await user_store.create_user(a.db, a.clock.now(), "alice", UserRole.MEMBER)
    chat = await a.service.create_chat(owner, content=[TextPart(text="hi")])
    from chatd.store import turns

    # A acquires the chat and "dies": no more heartbeats from it (its turn never starts here).
    await turns.acquire_chats(a.db, a.clock.now(), wa.worker_id, 10)
    a.clock.advance(b.settings.replica_stale_after - 1)  # type: ignore[attr-defined]
    await wb.replica_heartbeat_once()
    assert await wb.recover_once() == []
    a.clock.advance(2)  # type: ignore[attr-defined]
    await wb.replica_heartbeat_once()
    recovered = await wb.recover_once()
    assert [c.id for c in recovered] == [chat.id]
    assert b.settings.replica_stale_after < b.settings.stale_after
    llm.script(Reply(text="resumed on B"))
    await wb.acquire_once()
    await wb.drain()
    msgs = [m for m in await chat_store.all_messages(b.db, chat.id) if m.role is Role.ASSISTANT]
    assert [m.content for m in msgs] == [[TextPart(text="resumed on B")]]


async def test_a_late_pending_note_neither_stops_the_turn_nor_cuts_the_relay(two: tuple[App, Workers, App, Workers, FakeLLMServer]) -> None:
    # Notes are published after commit from different connections, so a `pending` (of the send or
    # recovery that made the chat pending) can arrive after the worker that acquired the chat
    # started its turn. The worker and the relaying replica check the database instead.
    a, wa, b, _wb, llm = two
    text = "tick " * 60
    llm.token_delay = 0.01
    llm.script(Reply(text=text, chunk_chars=5))
    owner = await user_store.create_user(a.db, a.clock.now(), "alice", UserRole.MEMBER)
    chat = await a.service.create_chat(owner, content=[TextPart(text="go")])
    seen: list[StreamEvent] = []
    flowing = asyncio.Event()

    async def watch() -> None:
        async with b.hub.subscribe(chat.id) as events:
            async for ev in events:
                seen.append(ev)
                if isinstance(ev, MessagePartEvent):
                    flowing.set()
                if isinstance(ev, StatusEvent) and ev.status is ChatStatus.WAITING:
                    return

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.2)
    await wa.acquire_once()
    await asyncio.wait_for(flowing.wait(), 20)
    # A stale `pending` (published before the acquire, delivered after it).
    await a.hub.notify(chat.id, Notification((StatusChanged(chat.id, chat.owner_id, ChatStatus.PENDING, 0),)))
    await asyncio.wait_for(wa.drain(), 20)
    await asyncio.wait_for(watcher, 20)
    msgs = [m for m in await chat_store.all_messages(a.db, chat.id) if m.role is Role.ASSISTANT]
    assert [m.content for m in msgs] == [[TextPart(text=text)]]
    assert "".join(e.part.text for e in seen if isinstance(e, MessagePartEvent) and isinstance(e.part, TextPart)) == text


async def test_after_a_database_outage_no_replica_is_judged_dead_before_it_could_heartbeat_again(
    two: tuple[App, Workers, App, Workers, FakeLLMServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, wa, b, wb, _llm = two
    from chatd.store import replicas, turns

    owner = await user_store.create_user(a.db, a.clock.now(), "alice", UserRole.MEMBER)
    chat = await a.service.create_chat(owner, content=[TextPart(text="hi")])
    await turns.acquire_chats(a.db, a.clock.now(), wa.worker_id, 10)
    stale = b.settings.replica_stale_after

    async def unreachable(*_args: object) -> None:
        raise OSError("connection refused")

    # The database is away for longer than the replica stale period: every heartbeat fails.
    monkeypatch.setattr(replicas, "heartbeat", unreachable)
    with pytest.raises(OSError):
        await wb.replica_heartbeat_once()
    a.clock.advance(stale + 1)  # type: ignore[attr-defined]
    monkeypatch.undo()
    # Back: B's heartbeat goes through before A's. A is alive, only late: nothing is recovered.
    await wb.replica_heartbeat_once()
    assert await wb.recover_once() == []
    # A full period later A has still not written one: now it is dead.
    a.clock.advance(stale + 1)  # type: ignore[attr-defined]
    await wb.replica_heartbeat_once()
    assert [c.id for c in await wb.recover_once()] == [chat.id]
