"""A scripted LLM server on 127.0.0.1 speaking the real OpenAI Chat Completions and Anthropic
Messages streaming wire formats, so tests drive the real SDKs and pydantic-ai adapters over HTTP.

    async with FakeLLMServer() as server:
        server.script(Reply(tool_calls=[ToolCall("call_1", "echo", {"x": 1})]), Reply(text="done"))
        provider = ProviderConfig("openai", "k", server.openai_base_url)

Each request pops the next scripted `Reply` (OpenAI at /v1/chat/completions, Anthropic at
/v1/messages); `server.requests` records what the client sent. Faults: `Fault.status(429,
retry_after=7)`, `Fault.overloaded()` (Anthropic 529), `Fault.drop(after=n)` (connection cut
mid-stream), `Fault.truncate(after=n)` (clean end without the terminal event), `Fault.stall(after=n)`
(hang until the client gives up or the server closes). `RawReply` serves recorded bytes verbatim.
`FakeLLMServer(responder=fn)` answers streaming requests with `fn(request_body)` once the script is
empty, so many concurrent chats can each get the reply their own conversation calls for (bench).
`directive_reply` is such a responder: the last user message's lines `TOKENS n` (answer
`tok0 … tok{n-1}`, one token per frame) and `SLOW ms` (a delay per frame) shape the answer; any
other message is answered `answer to: <its text>`.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.loopback import LoopbackServer

Wire = Literal["openai", "anthropic"]


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    args: dict[str, Any] = field(default_factory=dict)
    # How many pieces the JSON arguments are streamed in.
    pieces: int = 3


@dataclass(frozen=True)
class TokenUsage:
    input: int = 10
    output: int = 5
    cache_read: int = 0
    cache_write: int = 0
    reasoning: int = 0


@dataclass(frozen=True)
class Fault:
    kind: Literal["status", "drop", "truncate", "stall"]
    status_code: int = 500
    retry_after: float | None = None
    error_type: str | None = None
    message: str = "fault injected"
    # Number of stream events sent before the fault strikes.
    after: int = 0

    @classmethod
    def status(cls, code: int, *, retry_after: float | None = None, error_type: str | None = None, message: str = "fault injected") -> Fault:
        return cls("status", status_code=code, retry_after=retry_after, error_type=error_type, message=message)

    @classmethod
    def overloaded(cls) -> Fault:
        return cls("status", status_code=529, error_type="overloaded_error", message="Overloaded")

    @classmethod
    def drop(cls, after: int = 2) -> Fault:
        return cls("drop", after=after)

    @classmethod
    def truncate(cls, after: int = 2) -> Fault:
        return cls("truncate", after=after)

    @classmethod
    def stall(cls, after: int = 1) -> Fault:
        return cls("stall", after=after)


@dataclass(frozen=True)
class Reply:
    text: str | None = None
    thinking: str | None = None
    thinking_signature: str = "sig-1"
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: TokenUsage = field(default_factory=TokenUsage)
    fault: Fault | None = None
    # Text is streamed in chunks of this many characters.
    chunk_chars: int = 4
    model: str | None = None
    # Seconds between stream frames (a slow model), on top of the server's `token_delay`.
    frame_delay: float = 0.0


@dataclass(frozen=True)
class RawReply:
    """Recorded response bytes served as they are (cassette replay)."""

    body: bytes
    content_type: str = "text/event-stream"
    status_code: int = 200
    # Sent in pieces of this many bytes (0 = at once), each its own write: reads split anywhere.
    chunk_bytes: int = 0


@dataclass
class RecordedRequest:
    wire: Wire
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    # The client's (address, port): one per TCP connection, so tests can count connections.
    peer: tuple[str, int] | None = None


class ScriptExhausted(AssertionError):
    pass


def _chunks(text: str, size: int) -> Iterator[str]:
    for i in range(0, len(text), max(size, 1)):
        yield text[i : i + size]


def _pieces(s: str, n: int) -> list[str]:
    size = max(1, -(-len(s) // max(n, 1)))
    return [s[i : i + size] for i in range(0, len(s), size)] or [""]


# ---------------------------------------------------------------------------- OpenAI wire format


def _openai_events(reply: Reply, model: str) -> Iterator[str]:
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000, "model": model}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        return json.dumps({**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]})

    yield chunk({"role": "assistant", "content": ""})
    if reply.thinking:
        # The field OpenAI-compatible servers (vLLM, DeepSeek, llama.cpp) use for reasoning.
        for piece in _chunks(reply.thinking, reply.chunk_chars):
            yield chunk({"reasoning_content": piece})
    if reply.text:
        for piece in _chunks(reply.text, reply.chunk_chars):
            yield chunk({"content": piece})
    for index, call in enumerate(reply.tool_calls):
        yield chunk({"tool_calls": [{"index": index, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}]})
        for piece in _pieces(json.dumps(call.args), call.pieces):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield chunk({}, "tool_calls" if reply.tool_calls else "stop")
    u = reply.usage
    prompt = u.input + u.cache_read + u.cache_write
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": u.output,
        "total_tokens": prompt + u.output,
        "prompt_tokens_details": {"cached_tokens": u.cache_read},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning},
    }
    yield json.dumps({**base, "choices": [], "usage": usage})
    yield "[DONE]"


def _openai_frame(data: str) -> bytes:
    return f"data: {data}\n\n".encode()


def _openai_error(fault: Fault) -> Response:
    types = {429: ("rate_limit_exceeded", "requests"), 401: ("invalid_api_key", "invalid_request_error"), 400: ("invalid_request", "invalid_request_error")}
    code, etype = types.get(fault.status_code, ("server_error", "server_error"))
    body = {"error": {"message": fault.message, "type": fault.error_type or etype, "param": None, "code": code}}
    headers = {"retry-after": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
    # The SDKs retry on their own when told so; the loop owns retries.
    headers["x-should-retry"] = "false"
    return JSONResponse(body, status_code=fault.status_code, headers=headers)


# ------------------------------------------------------------------------- Anthropic wire format


def _anthropic_events(reply: Reply, model: str) -> Iterator[tuple[str, dict[str, Any]]]:
    u = reply.usage
    yield "message_start", {
        "type": "message_start",
        "message": {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": u.input,
                "output_tokens": 1,
                "cache_creation_input_tokens": u.cache_write,
                "cache_read_input_tokens": u.cache_read,
            },
        },
    }
    index = 0
    if reply.thinking:
        yield "content_block_start", {"type": "content_block_start", "index": index, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}
        for piece in _chunks(reply.thinking, reply.chunk_chars):
            yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": {"type": "thinking_delta", "thinking": piece}}
        yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": {"type": "signature_delta", "signature": reply.thinking_signature}}
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
        index += 1
    if reply.text:
        yield "content_block_start", {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
        for piece in _chunks(reply.text, reply.chunk_chars):
            yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}}
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
        index += 1
    for call in reply.tool_calls:
        yield "content_block_start", {"type": "content_block_start", "index": index, "content_block": {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}}
        for piece in _pieces(json.dumps(call.args), call.pieces):
            yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": piece}}
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
        index += 1
    stop = "tool_use" if reply.tool_calls else "end_turn"
    yield "message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None}, "usage": {"output_tokens": u.output}}
    yield "message_stop", {"type": "message_stop"}


def _anthropic_frame(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _anthropic_error(fault: Fault) -> Response:
    types = {429: "rate_limit_error", 529: "overloaded_error", 401: "authentication_error", 400: "invalid_request_error", 404: "not_found_error"}
    etype = fault.error_type or types.get(fault.status_code, "api_error")
    body = {"type": "error", "error": {"type": etype, "message": fault.message}, "request_id": "req_fake"}
    headers = {"retry-after": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
    headers["x-should-retry"] = "false"
    return JSONResponse(body, status_code=fault.status_code, headers=headers)


# ---------------------------------------------------------------------------------- the server


def _raw(reply: RawReply) -> Response:
    if not reply.chunk_bytes:
        return Response(reply.body, status_code=reply.status_code, media_type=reply.content_type)
    size, body = reply.chunk_bytes, reply.body

    async def pieces() -> AsyncIterator[bytes]:
        for i in range(0, len(body), size):
            yield body[i : i + size]
            # A write per piece: the client reads them apart (most of the time) instead of at once.
            await asyncio.sleep(0)

    return StreamingResponse(pieces(), status_code=reply.status_code, media_type=reply.content_type)


class _DropConnection(Exception):
    """Raised inside a streaming body: uvicorn then aborts the connection mid-response."""


class FakeLLMServer:
    def __init__(
        self,
        *,
        token_delay: float = 0.0,
        responder: Callable[[dict[str, Any]], Reply] | None = None,
        models: tuple[str, ...] = ("fake-large", "fake-small"),
        port: int = 0,
    ) -> None:
        self.token_delay = token_delay
        # What the models endpoints list (each wire's format); `models_key`, when set, is the only
        # key they accept (a wrong one gets the provider's real 401 body).
        self.models = models
        self.models_key: str | None = None
        self.responder = responder
        self.requests: list[RecordedRequest] = []
        self._replies: deque[Reply | RawReply] = deque()
        # Non-streaming side calls (titles, push summaries) take these first when scripted.
        self._side: deque[Reply | RawReply] = deque()
        self._release = asyncio.Event()
        # Set each time a stream starts stalling, so tests can wait for it without sleeping.
        self.stalled = asyncio.Event()
        self._http: LoopbackServer | None = None
        self.port = port

    # -- script -------------------------------------------------------------------------------

    def script(self, *replies: Reply | RawReply) -> None:
        self._replies.extend(replies)

    def script_side(self, *replies: Reply | RawReply) -> None:
        """Replies for non-streaming requests (side calls), kept apart from the turn's script."""
        self._side.extend(replies)

    def clear_script(self) -> None:
        """Drop the replies no request has taken yet."""
        self._replies.clear()

    @property
    def pending(self) -> int:
        return len(self._replies)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.base_url

    def release_stalls(self) -> None:
        self._release.set()

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> FakeLLMServer:
        app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._openai, methods=["POST"]),
                Route("/v1/messages", self._anthropic, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/v1beta/models", self._google_models, methods=["GET"]),
            ]
        )
        self._http = LoopbackServer(app, "fake-llm-server", port=self.port, timeout_graceful_shutdown=1)
        self._http.start()
        self.port = self._http.port
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._release.set()
        if self._http is not None:
            await self._http.stop()

    # -- handlers -----------------------------------------------------------------------------

    async def _record(self, wire: Wire, request: Request) -> dict[str, Any]:
        body = await request.json()
        peer = (request.client.host, request.client.port) if request.client else None
        self.requests.append(RecordedRequest(wire, request.url.path, dict(request.headers), body, peer))
        return body  # type: ignore[no-any-return]

    def _next(self, body: dict[str, Any] | None = None) -> Reply | RawReply:
        if body is not None and not body.get("stream") and self._side:
            return self._side.popleft()
        if not self._replies and self.responder is not None and body is not None:
            return self.responder(body)
        if not self._replies:
            raise ScriptExhausted("the fake LLM server received more requests than were scripted")
        return self._replies.popleft()

    async def _openai(self, request: Request) -> Response:
        body = await self._record("openai", request)
        reply = self._next(body)
        if isinstance(reply, RawReply):
            return _raw(reply)
        if reply.fault and reply.fault.kind == "status":
            return _openai_error(reply.fault)
        model = reply.model or body.get("model", "gpt-fake")
        if not body.get("stream"):
            return JSONResponse(_openai_completion(reply, model))
        frames = (_openai_frame(data) for data in _openai_events(reply, model))
        return StreamingResponse(self._stream(frames, reply.fault, reply.frame_delay), media_type="text/event-stream")

    async def _anthropic(self, request: Request) -> Response:
        body = await self._record("anthropic", request)
        reply = self._next(body)
        if isinstance(reply, RawReply):
            return _raw(reply)
        if reply.fault and reply.fault.kind == "status":
            return _anthropic_error(reply.fault)
        model = reply.model or body.get("model", "claude-fake")
        if not body.get("stream"):
            return JSONResponse(_anthropic_message(reply, model))
        frames = (_anthropic_frame(event, data) for event, data in _anthropic_events(reply, model))
        return StreamingResponse(self._stream(frames, reply.fault, reply.frame_delay), media_type="text/event-stream")

    def _key_refused(self, request: Request) -> bool:
        if self.models_key is None:
            return False
        sent = {
            request.headers.get("authorization", "").removeprefix("Bearer ").strip(),
            request.headers.get("x-api-key", ""),
            request.headers.get("x-goog-api-key", ""),
            request.query_params.get("key", ""),
        }
        return self.models_key not in sent

    async def _models(self, request: Request) -> Response:
        """GET /v1/models: Anthropic's list when the Anthropic SDK asks (it sends anthropic-version),
        else OpenAI's (also what Ollama, vLLM and llama.cpp serve)."""
        anthropic = "anthropic-version" in request.headers
        if self._key_refused(request):
            if anthropic:
                body = {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}
            else:
                body = {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}
            return JSONResponse(body, status_code=401)
        if anthropic:
            data = [
                {"type": "model", "id": m, "display_name": m.replace("-", " ").title(), "created_at": "2026-01-01T00:00:00Z", "max_input_tokens": 200_000}
                for m in self.models
            ]
            return JSONResponse({"data": data, "has_more": False, "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None})
        return JSONResponse({"object": "list", "data": [{"id": m, "object": "model", "created": 1700000000, "owned_by": "fake"} for m in self.models]})

    async def _google_models(self, request: Request) -> Response:
        if self._key_refused(request):
            error = {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT"}
            return JSONResponse({"error": error}, status_code=400)
        models = [
            {"name": f"models/{m}", "displayName": m.title(), "inputTokenLimit": 1_048_576, "supportedGenerationMethods": ["generateContent", "countTokens"]}
            for m in self.models
        ]
        models.append({"name": "models/fake-embedding", "displayName": "Embedding", "supportedGenerationMethods": ["embedContent"]})
        return JSONResponse({"models": models})

    async def _stream(self, frames: Iterator[bytes], fault: Fault | None, frame_delay: float = 0.0) -> AsyncIterator[bytes]:
        for sent, frame in enumerate(frames):
            if fault is not None and sent == fault.after:
                if fault.kind == "drop":
                    raise _DropConnection("connection dropped by the fake server")
                if fault.kind == "truncate":
                    return
                if fault.kind == "stall":
                    self.stalled.set()
                    await self._release.wait()
                    return
            if self.token_delay or frame_delay:
                await asyncio.sleep(self.token_delay + frame_delay)
            yield frame


def _last_user_text(body: dict[str, Any]) -> str:
    for m in reversed(body.get("messages") or []):
        if m.get("role") != "user":
            continue
        content = m.get("content")
        if isinstance(content, str):
            return content
        return "".join(p.get("text", "") for p in content or [] if isinstance(p, dict))
    return ""


def directive_reply(body: dict[str, Any]) -> Reply:
    """Answer the last user message as its directives say (see the module docstring)."""
    text = _last_user_text(body)
    tokens: int | None = None
    delay = 0.0
    for line in text.splitlines():
        word, _, arg = line.strip().partition(" ")
        if word == "TOKENS" and arg.isdigit():
            tokens = int(arg)
        elif word == "SLOW" and arg.isdigit():
            delay = int(arg) / 1000
    if tokens is None:
        return Reply(text=f"answer to: {text}", frame_delay=delay)
    answer = " ".join(f"tok{i}" for i in range(tokens))
    # One token (and its separator) per frame, so an interrupt lands between tokens.
    return Reply(text=answer, chunk_chars=len("tok0 "), frame_delay=delay)


def _openai_completion(reply: Reply, model: str) -> dict[str, Any]:
    u = reply.usage
    prompt = u.input + u.cache_read + u.cache_write
    message: dict[str, Any] = {"role": "assistant", "content": reply.text}
    if reply.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.args)}} for c in reply.tool_calls
        ]
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1700000000,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if reply.tool_calls else "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": u.output, "total_tokens": prompt + u.output, "prompt_tokens_details": {"cached_tokens": u.cache_read}},
    }


def _anthropic_message(reply: Reply, model: str) -> dict[str, Any]:
    u = reply.usage
    content: list[dict[str, Any]] = []
    if reply.thinking:
        content.append({"type": "thinking", "thinking": reply.thinking, "signature": reply.thinking_signature})
    if reply.text:
        content.append({"type": "text", "text": reply.text})
    content.extend({"type": "tool_use", "id": c.id, "name": c.name, "input": c.args} for c in reply.tool_calls)
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": "tool_use" if reply.tool_calls else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": u.input, "output_tokens": u.output, "cache_creation_input_tokens": u.cache_write, "cache_read_input_tokens": u.cache_read},
    }
