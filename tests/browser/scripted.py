"""The scripted model the browser tests chat with: the last user message's lines say what to do.

    TOKENS n          answer `tok0 … tok{n-1}`, one token per stream frame
    SLOW ms           wait this long before each stream frame (a slow model: time to queue, stop)
    TOOL name {json}  call the tool `name` with these arguments, then answer `The tool said: …`
                      (several TOOL lines: several calls in one step)
    FAIL              the provider answers 400 (not retried) the first time: the turn fails;
                      the same message again (a retry) is answered `recovered: <the message>`
    FLAKY             the provider answers 503 once, then the answer comes (a retry is shown)
    MARKDOWN          a markdown answer with a heading, a list, code, and HTML that must not run
    THINK             reasoning first (`Let me think about: …`), then `Thought it through.`
                      (the Anthropic wire carries reasoning; the OpenAI one drops it)
    anything else     `answer to: <the message>`

Title requests (not streamed) are answered `Title: "About <first words>"` (as models do: the server
strips the label and the quotes).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from typing import Any

from tests.fakes.llm_server import FakeLLMServer, Fault, Reply, ToolCall

MARKDOWN_ANSWER = (
    "# Shopping list\n\n"
    "- **apples**\n- pears\n\n"
    "```python\nprint('hello')\n```\n\n"
    '<img src="x" onerror="window.__injected = true"> <script>window.__injected = true</script>'
    "[click](javascript:window.__injected=true)\n"
)


def _user_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content or [] if isinstance(p, dict))


class ScriptedModel:
    def __init__(self, server: FakeLLMServer) -> None:
        self.server = server
        self.flaky_seen: set[str] = set()
        self.failed: set[str] = set()

    def __call__(self, body: dict[str, Any]) -> Reply:
        reply, delay = self._reply(body)
        # The delay is this answer's own: a chat an earlier test left running (its queued messages
        # have no SLOW) must not speed up another test's slow answer, as a server-wide delay did.
        return dataclasses.replace(reply, frame_delay=delay)

    def _reply(self, body: dict[str, Any]) -> tuple[Reply, float]:
        messages = body.get("messages") or []
        users = [m for m in messages if m.get("role") == "user"]
        text = _user_text(users[-1]) if users else ""
        if not body.get("stream"):
            return Reply(text='Title: "About ' + " ".join(text.split()[:4]) + '"'), 0.0
        last = messages[-1] if messages else {}
        delay = 0.0
        tokens: int | None = None
        for line in text.splitlines():
            word, _, arg = line.strip().partition(" ")
            if word == "SLOW" and arg.isdigit():
                delay = int(arg) / 1000
            elif word == "TOKENS" and arg.isdigit():
                tokens = int(arg)
        if last.get("role") == "tool":
            return Reply(text="The tool said: " + str(last.get("content"))[:200]), delay
        for line in text.splitlines():
            word, _, arg = line.strip().partition(" ")
            if word == "TOOL":
                # Every TOOL line is a call of the same step (several approvals at once).
                calls = [line.strip().partition(" ")[2] for line in text.splitlines() if line.strip().startswith("TOOL ")]
                return Reply(tool_calls=[
                    ToolCall(f"call_{i}", c.partition(" ")[0], json.loads(c.partition(" ")[2] or "{}")) for i, c in enumerate(calls, 1)
                ]), delay
            if word == "FAIL":
                if text in self.failed:
                    return Reply(text=f"recovered: {text}"), delay
                self.failed.add(text)
                return Reply(fault=Fault.status(400, message="The scripted model refuses this request.")), delay
            if word == "FLAKY" and text not in self.flaky_seen:
                self.flaky_seen.add(text)
                # Retry-After 3 s: long enough for a page that opens the chat meanwhile to see the wait.
                return Reply(fault=Fault.status(503, retry_after=3, message="The scripted model is overloaded.")), delay
            if word == "THINK":
                return Reply(thinking=f"Let me think about: {text}", text="Thought it through."), delay
            if word == "MARKDOWN":
                return Reply(text=MARKDOWN_ANSWER, chunk_chars=12), delay
        if tokens is not None:
            return Reply(text=" ".join(f"tok{i}" for i in range(tokens)), chunk_chars=len("tok0 ")), delay
        return Reply(text=f"answer to: {text}"), delay


class ModelThread:
    """The fake model server on its own event loop in a thread, for `chatd serve` processes."""

    def __init__(self) -> None:
        self.server = FakeLLMServer(responder=None)
        self.server.responder = ScriptedModel(self.server)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fake-llm", daemon=True)

    def __enter__(self) -> FakeLLMServer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.__aenter__(), self.loop).result(30)
        return self.server

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.__aexit__(None, None, None), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
