"""chatd_relay_connections on two replicas sharing one PostgreSQL: while a turn streams on A and
someone follows the chat on B, B counts a relay in and A a relay out; both end with the turn."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from prometheus_client import REGISTRY

from chatd.bootstrap import App
from chatd.domain.chat import UserRole
from chatd.domain.parts import TextPart
from chatd.store import users as user_store
from chatd.worker import Workers
from tests.fakes.llm_server import FakeLLMServer, Fault, Reply
from tests.test_replicas import two

__all__ = ["two"]  # the fixture, shared with the replica tests


def relays(direction: str) -> float:
    return REGISTRY.get_sample_value("chatd_relay_connections", {"direction": direction}) or 0.0


async def until(condition: Callable[[], bool], timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - the gauges have no event to wait on
            await asyncio.sleep(0.02)


async def test_relay_connections_are_counted_on_both_replicas_while_a_turn_streams(two: tuple[App, Workers, App, Workers, FakeLLMServer]) -> None:
    a, wa, b, _wb, llm = two
    # The stream stalls mid-answer (held until released); the retry then answers.
    llm.script(Reply(text="streaming along " * 10, chunk_chars=3, fault=Fault.stall(after=5)), Reply(text="done"))
    owner = await user_store.create_user(a.db, a.clock.now(), "alice", UserRole.MEMBER)
    chat = await a.service.create_chat(owner, content=[TextPart(text="go")])
    before_in, before_out = relays("in"), relays("out")
    async with b.hub.subscribe(chat.id) as events:
        await anext(events)
        await wa.acquire_once()
        await asyncio.wait_for(llm.stalled.wait(), 20)
        await until(lambda: relays("in") - before_in == 1 and relays("out") - before_out == 1)
        llm.release_stalls()
        await wa.drain()
        await until(lambda: relays("in") == before_in and relays("out") == before_out)
