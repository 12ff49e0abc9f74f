"""A scripted model (and an MCP server) for load tests of a running deployment, on loopback.

    uv run --frozen python -m bench.llm --port 9100 --mcp-port 9101 [--token-delay 0.02]

Serves the OpenAI chat-completions and Anthropic messages wires of tests/fakes/llm_server.py at
http://127.0.0.1:PORT (OpenAI base URL: .../v1) and, with --mcp-port, the MCP test server of
tests/mcp/mcp_test_servers.py (tools `echo`, `add`, ...) at http://127.0.0.1:MCP_PORT/mcp.
Point a deployment at it with `python -m bench.load --setup-model http://127.0.0.1:9100/v1`
(or by hand: an `openai-compatible` provider with that base URL, any key, a model config for
model `bench-model`). The chats' first message tells the model what to do, one directive a line:

    TOKENS n          answer `tok0 … tok{n-1}`, one token per stream frame (`--token-delay` apart)
    PAD m             (with TOKENS) each token m characters longer: a bigger answer, same pace
    TOOL name {json}  first call the tool `name` (e.g. `bench__add {"a": 1, "b": 2}`), then answer
    FLAKY             the first request of this chat is refused with 529 overloaded (retried)
    anything else     `answer to: <the message>`

Each answer reports 10 input and 5 output tokens. Title requests (not streamed) are answered
`Title: <first words>`. Every reply is decided by the request alone (the FLAKY memory aside), so
any number of chats and replicas can share one server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import threading
from typing import Any

from tests.fakes.llm_server import FakeLLMServer, Fault, Reply, ToolCall, directive_reply


class LoadModel:
    def __init__(self) -> None:
        self.flaky_seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> Reply:
        messages = body.get("messages") or []
        text = _first_user_text(messages)
        if not body.get("stream"):
            return Reply(text="Title: " + " ".join(text.split()[:4]))
        lines = [line.strip() for line in text.splitlines()]
        if "FLAKY" in lines:
            with self._lock:
                first = text not in self.flaky_seen
                self.flaky_seen.add(text)
            if first:
                return Reply(fault=Fault.overloaded())
        called = any(_role(m) in ("tool", "tool_result") for m in messages) or any(
            isinstance(m.get("content"), list) and any(p.get("type") == "tool_result" for p in m["content"] if isinstance(p, dict))
            for m in messages
        )
        for line in lines:
            word, _, arg = line.partition(" ")
            if word == "TOOL" and not called:
                name, _, raw = arg.partition(" ")
                return Reply(text="Calling the tool. ", tool_calls=[ToolCall("call_1", name, json.loads(raw or "{}"))])
        pad = next((int(arg) for word, _, arg in (line.partition(" ") for line in lines) if word == "PAD" and arg.isdigit()), 0)
        tokens = next((int(arg) for word, _, arg in (line.partition(" ") for line in lines) if word == "TOKENS" and arg.isdigit()), None)
        if pad and tokens:
            words = [f"tok{i}" + "x" * pad for i in range(tokens)]
            return Reply(text=" ".join(words), chunk_chars=len(words[0]) + 1)
        return directive_reply({"messages": [{"role": "user", "content": "\n".join(lines)}]})


def _role(message: dict[str, Any]) -> str:
    return str(message.get("role", ""))


def _first_user_text(messages: list[dict[str, Any]]) -> str:
    for m in messages:
        if m.get("role") != "user":
            continue
        content = m.get("content")
        if isinstance(content, str):
            return content
        return "".join(p.get("text", "") for p in content or [] if isinstance(p, dict))
    return ""


async def main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with contextlib.ExitStack() as stack:
        if args.mcp_port is not None:
            stack.enter_context(_mcp_server(args.mcp_port))
            print(f"MCP server: http://127.0.0.1:{args.mcp_port}/mcp", flush=True)
        async with FakeLLMServer(token_delay=args.token_delay, responder=LoadModel(), models=("bench-model",), port=args.port) as llm:
            print(f"scripted model: {llm.openai_base_url} (OpenAI wire), {llm.anthropic_base_url} (Anthropic wire)", flush=True)
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 10)
                # The server records every request for tests; here nothing reads them.
                llm.requests.clear()


@contextlib.contextmanager
def _mcp_server(port: int) -> Any:
    import socket

    import uvicorn
    from tests.mcp.mcp_test_servers import ServerState, build_server

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    server = uvicorn.Server(uvicorn.Config(build_server(ServerState()).streamable_http_app(), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="mcp", daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--mcp-port", type=int, default=None)
    parser.add_argument("--token-delay", type=float, default=0.02, help="seconds between stream frames (default 0.02: 50 tokens/s)")
    asyncio.run(main(parser.parse_args()))
