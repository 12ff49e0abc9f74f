"""Test doubles for the agent loop: a recording TurnSink, function tools, a recorded sleep."""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from chatd.domain.chat import Role
from chatd.domain.parts import Part, ReasoningPart, TextPart, ToolCallPart
from chatd.domain.tools import ToolContext, ToolResult
from chatd.loop import Compaction, Interrupted, PromptMessage, Step, TurnOptions
from chatd.providers import (
    ModelSpec,
    Pricing,
    ProviderConfig,
    ResolvedModel,
    RetryDecision,
    resolve_model,
)
from tests.fakes.llm_server import FakeLLMServer, Wire

CHAT_ID = uuid.UUID(int=1)
OWNER_ID = uuid.UUID(int=2)


class RecordingSink:
    def __init__(self) -> None:
        self.parts: list[tuple[Role, Part]] = []
        self.steps: list[Step] = []
        self.retries: list[tuple[int, float, RetryDecision]] = []
        self.compactions: list[Compaction] = []
        self.steer_queue: deque[list[PromptMessage]] = deque()
        self.steer_calls = 0
        self.lose_ownership = False
        self._changed = asyncio.Condition()

    async def publish_part(self, role: Role, part: Part) -> None:
        self.parts.append((role, part))
        await self._notify()

    async def persist_step(self, step: Step) -> None:
        if self.lose_ownership:
            raise Interrupted("chat is no longer ours")
        self.steps.append(step)
        await self._notify()

    async def on_retry(self, attempt: int, delay_s: float, error: RetryDecision) -> None:
        self.retries.append((attempt, delay_s, error))

    async def take_steered(self) -> list[PromptMessage]:
        self.steer_calls += 1
        return self.steer_queue.popleft() if self.steer_queue else []

    async def persist_compaction(self, compaction: Compaction) -> None:
        self.compactions.append(compaction)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    # -- views ------------------------------------------------------------------------------------

    def streamed_text(self) -> str:
        return "".join(p.text for _, p in self.parts if isinstance(p, TextPart))

    def streamed_reasoning(self) -> str:
        return "".join(p.text for _, p in self.parts if isinstance(p, ReasoningPart))

    def tool_call_parts(self) -> list[ToolCallPart]:
        return [p for _, p in self.parts if isinstance(p, ToolCallPart)]


@dataclass
class FnTool:
    name: str
    fn: Callable[[dict[str, Any], ToolContext], Awaitable[ToolResult]]
    description: str = "a test tool"
    parameters: dict[str, Any] = field(
        default_factory=lambda: {"type": "object", "properties": {"x": {"type": "integer"}}}
    )
    key: Callable[[dict[str, Any]], str | None] | None = None

    async def call(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        return await self.fn(args, ctx)


@dataclass
class KeyedTool(FnTool):
    def concurrency_key(self, args: dict[str, Any]) -> str | None:
        return self.key(args) if self.key else None


def echo_tool(name: str = "echo") -> FnTool:
    async def fn(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        return ToolResult({"echo": args})

    return FnTool(name, fn)


class RecordedSleep:
    """Stands in for asyncio.sleep: records the delay and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


class HeldSleep(RecordedSleep):
    """The wait before a retry lasts until the turn is cancelled: a test can act meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = asyncio.Event()

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self.waiting.set()
        await asyncio.Event().wait()


def options(sleep: RecordedSleep | None = None, **kw: Any) -> TurnOptions:
    return TurnOptions(
        chat_id=CHAT_ID,
        owner_id=OWNER_ID,
        sleep=sleep or RecordedSleep(),
        jitter=lambda: 0.5,  # the middle of the jitter band: delay == the nominal backoff
        **kw,
    )


def model_for(
    server: FakeLLMServer,
    wire: Wire,
    *,
    context_limit: int = 200_000,
    compression_threshold: int = 0,
    pricing: Pricing | None = None,
    model: str | None = None,
) -> ResolvedModel:
    if wire == "openai":
        provider = ProviderConfig("openai", "sk-test", server.openai_base_url)
        name = model or "gpt-4o-mini"
    else:
        provider = ProviderConfig("anthropic", "sk-ant-test", server.anthropic_base_url)
        name = model or "claude-sonnet-4-5"
    spec = ModelSpec(
        name,
        context_limit=context_limit,
        compression_threshold=compression_threshold,
        pricing=pricing or Pricing(),
    )
    return resolve_model(provider, spec)


def user(text: str) -> PromptMessage:
    return PromptMessage(Role.USER, [TextPart(text=text)])


def system(text: str) -> PromptMessage:
    return PromptMessage(Role.SYSTEM, [TextPart(text=text)])
