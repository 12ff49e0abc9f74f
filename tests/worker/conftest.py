"""A worker rig: the composed app, a scripted LLM server speaking the real wire formats, a
configured provider + default model, and a worker pool whose retry waits are recorded, not slept."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from chatd.bootstrap import App, turn_deps
from chatd.domain.chat import Chat, ChatStatus, Message
from chatd.domain.config import ModelOptions, Pricing
from chatd.domain.events import StreamEvent
from chatd.domain.parts import TextPart
from chatd.domain.tools import Tool, ToolContext, ToolResult
from chatd.store import chats as chat_store
from chatd.worker import TurnContext, Workers
from tests.conftest import People
from tests.fakes.llm_server import FakeLLMServer
from tests.fakes.turn_doubles import FnTool, RecordedSleep


@dataclass
class Gate:
    """A tool that blocks until released, so a test can act while a turn is mid-step."""

    entered: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    calls: int = 0

    def tool(self, name: str = "wait") -> FnTool:
        async def fn(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
            self.calls += 1
            self.entered.set()
            await self.release.wait()
            return ToolResult({"waited": True})

        return FnTool(name, fn)


@dataclass
class Rig:
    app: App
    llm: FakeLLMServer
    people: People
    workers: Workers
    sleep: RecordedSleep
    model_config_id: uuid.UUID
    tools: list[Tool] = field(default_factory=list)

    def new_workers(self) -> Workers:
        deps = turn_deps(self.app)
        deps.sleep = self.sleep
        deps.tool_providers = [self._tools]
        return Workers(deps, worker_id=uuid.uuid4())

    async def _tools(self, ctx: TurnContext) -> tuple[list[Tool], list[str]]:
        return list(self.tools), []

    async def chat(self, text: str = "hello", **kw: Any) -> Chat:
        return await self.app.service.create_chat(self.people.alice.user, content=[TextPart(text=text)], **kw)

    async def run(self, workers: Workers | None = None) -> None:
        """Run turns until nothing is pending."""
        w = workers or self.workers
        for _ in range(20):
            await w.acquire_once()
            await w.drain()
            if not await self._any_pending():
                return
        raise AssertionError("chats still pending after 20 rounds")

    async def _any_pending(self) -> bool:
        from sqlalchemy import select

        from chatd.store.tables import chats

        async with self.app.db.read() as conn:
            return (await conn.execute(select(chats.c.id).where(chats.c.status == ChatStatus.PENDING.value))).first() is not None

    async def get(self, chat_id: uuid.UUID) -> Chat:
        return await chat_store.get_chat(self.app.db, chat_id)

    async def titled(self, chat_id: uuid.UUID, title: str) -> None:
        """Wait (5 s at most) for the chat's title, which a task beside the turn writes."""
        for _ in range(500):
            if (await self.get(chat_id)).title == title:
                return
            await asyncio.sleep(0.01)
        assert (await self.get(chat_id)).title == title

    async def messages(self, chat_id: uuid.UUID) -> list[Message]:
        return await chat_store.all_messages(self.app.db, chat_id)

    async def wait_status(self, chat_id: uuid.UUID, *statuses: ChatStatus, timeout: float = 10) -> Chat:
        async with asyncio.timeout(timeout):
            while (c := await self.get(chat_id)).status not in statuses:  # noqa: ASYNC110 - polls the database
                await asyncio.sleep(0.01)
        return c


async def collect(app: App, chat_id: uuid.UUID, until: Callable[[StreamEvent], bool], after_id: int = 0, timeout: float = 10) -> list[StreamEvent]:
    out: list[StreamEvent] = []
    async with asyncio.timeout(timeout), app.hub.subscribe(chat_id, after_id) as events:
        async for ev in events:
            out.append(ev)
            if until(ev):
                return out
    return out


@pytest.fixture
async def rig(chatd: App, people: People) -> AsyncIterator[Rig]:
    chatd.settings.generate_titles = False
    chatd.settings.max_retry_attempts = 4
    async with FakeLLMServer() as llm:
        admin = people.admin.user
        await chatd.service.create_provider(admin, provider="openai-compatible", display_name=None, api_key="sk-test", base_url=llm.openai_base_url, enabled=True)
        cfg = await chatd.service.create_model_config(
            admin, provider="openai-compatible", model="fake-model", display_name=None, context_limit=100_000,
            compression_threshold=70, is_default=True, options=ModelOptions(),
            pricing=Pricing(input=1_000_000, output=2_000_000),
        )
        sleep = RecordedSleep()
        rig = Rig(chatd, llm, people, None, sleep, cfg.id)  # type: ignore[arg-type]
        rig.workers = rig.new_workers()
        try:
            yield rig
        finally:
            await rig.workers.shutdown()
