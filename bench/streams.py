"""CPU per streamed event of the two stream paths (pydantic-ai's, chatd's), on the same bytes.

    uv run --frozen python -m bench.streams            # 400-token and 20-token answers

The scripted server's streams (text, then one tool call split over three chunks, usage: OpenAI
Chat Completions and Anthropic Messages) are served by an in-process `httpx2.MockTransport`, one read per frame as a live
stream arrives, so only the client side is measured: building the request, reading the body,
and turning it into chatd's parts and the final response. `pydantic-ai` is its stream (the openai
SDK's `AsyncStream` and pydantic-ai's `StreamedResponse`), `chatd` is `chatd.providers.streams`,
the same choice `CHATD_FAST_STREAMS` makes. For Chat Completions two model names: a closed one,
and an open-weight one whose answers have chat-template tokens restored.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator

import httpx2
from pydantic_ai import messages as pm
from pydantic_ai.models import ModelRequestParameters
from tests.fakes.llm_server import (
    Reply,
    ToolCall,
    _anthropic_events,
    _anthropic_frame,
    _openai_events,
    _openai_frame,
)

from chatd.loop.stream import open_stream
from chatd.providers import (
    ModelSpec,
    ProviderConfig,
    ResolvedModel,
    build_model,
    build_provider,
    resolve_model,
)


class _Frames(httpx2.AsyncByteStream):
    def __init__(self, frames: list[bytes]) -> None:
        self.frames = frames

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for frame in self.frames:
            yield frame


async def measure(tokens: int, rounds: int) -> None:
    reply = Reply(text=("lorem ipsum dolor sit amet " * (tokens // 6 + 1))[: tokens * 4], tool_calls=[ToolCall("c1", "echo", {"x": 1})])
    wires = {
        "chat": [_openai_frame(d) for d in _openai_events(reply, "m")],
        "messages": [_anthropic_frame(e, d) for e, d in _anthropic_events(reply, "claude-sonnet-4-5")],
    }

    def handler(request: httpx2.Request) -> httpx2.Response:
        frames = wires["messages" if request.url.path.endswith("/messages") else "chat"]
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, stream=_Frames(frames))

    async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as client:
        chat = ProviderConfig("openai-compatible", "sk-bench", "http://llm.test/v1")
        messages = ProviderConfig("anthropic", "sk-bench", "http://llm.test")
        for config, name in ((chat, "gpt-4o-mini"), (chat, "qwen3:8b"), (messages, "claude-sonnet-4-5")):
            frames = wires["chat" if config is chat else "messages"]
            model = resolve_model(config, ModelSpec(name, context_limit=100_000), model=build_model(config, name, build_provider(config, client)))
            history: list[pm.ModelMessage] = [pm.ModelRequest.user_text_prompt("hi")]
            for fast in (False, True):

                async def once(model: ResolvedModel = model, history: list[pm.ModelMessage] = history, fast: bool = fast) -> None:
                    async with open_stream(model, history, ModelRequestParameters(), fast=fast) as stream:
                        async for _ in stream:
                            pass
                        stream.get()

                for _ in range(3):
                    await once()
                start = time.thread_time()
                for _ in range(rounds):
                    await once()
                per_stream = (time.thread_time() - start) / rounds
                path = "chatd" if fast else "pydantic-ai"
                print(f"{tokens:>7} {name:<18} {path:<12} {len(frames):>7} {per_stream * 1e6 / len(frames):>12.1f} {per_stream * 1e3:>10.2f}", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.streams", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", default="400,20", help="answer lengths in stream events, comma-separated")
    p.add_argument("--rounds", type=int, default=20)
    a = p.parse_args(argv)
    print(f"{'tokens':>7} {'model':<18} {'path':<12} {'events':>7} {'CPU us/event':>12} {'ms/stream':>10}")
    for tokens in (int(t) for t in a.tokens.split(",")):
        asyncio.run(measure(tokens, a.rounds))


if __name__ == "__main__":
    main()
