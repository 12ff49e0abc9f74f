"""The provider clients' network backend (`chatd.providers.network`, asyncio's streams) against
httpcore's own (anyio's), which it replaces on the streaming path: the same requests to the same
servers give the same bytes, the same exceptions, and the same reuse or replacement of kept-alive
connections, over plain TCP and TLS."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpcore2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from httpcore2._backends.anyio import AnyIOBackend

from chatd.providers.network import AsyncioBackend
from tests.fakes.llm_server import FakeLLMServer, Fault, RawReply, Reply, ToolCall

BACKENDS = {"anyio": AnyIOBackend, "asyncio": AsyncioBackend}


def _pool(backend: str, ssl_context: ssl.SSLContext | None = None) -> httpcore2.AsyncConnectionPool:
    return httpcore2.AsyncConnectionPool(ssl_context=ssl_context, max_connections=4, network_backend=BACKENDS[backend]())


async def _outcome(pool: httpcore2.AsyncConnectionPool, url: str, *, read_timeout: float = 5) -> tuple[Any, ...]:
    """What one streamed POST gives: the status, the body's bytes in order, or the error's type."""
    body = b'{"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}'
    chunks: list[bytes] = []
    try:
        async with pool.stream(
            "POST", url, content=body, headers={"Content-Type": "application/json", "Host": "x"},
            extensions={"timeout": {"connect": 5, "read": read_timeout, "write": 5, "pool": 5}},
        ) as response:
            async for chunk in response.aiter_stream():
                chunks.append(chunk)
            return ("ok", response.status, b"".join(chunks))
    except Exception as exc:
        return ("error", type(exc), b"".join(chunks))


REPLIES: list[Reply | RawReply] = [
    Reply(text="hello there, a streamed answer"),
    Reply(text="calling", tool_calls=[ToolCall("call_1", "echo", {"x": 1}), ToolCall("call_2", "echo", {"y": [1, 2]})]),
    Reply(text="x" * 200_000, chunk_chars=70_000),  # frames larger than one read
    RawReply(b"data: {\"choices\": []}\n\n" * 50 + b"data: [DONE]\n\n", chunk_bytes=7),  # reads split anywhere
    Reply(fault=Fault.status(429, retry_after=1)),
    Reply(text="cut off mid-answer", fault=Fault.drop(after=2)),
    Reply(text="ends without its end", fault=Fault.truncate(after=2)),
]


async def test_the_asyncio_backend_reads_the_same_bytes_and_errors_as_anyios() -> None:
    outcomes: dict[str, list[tuple[Any, ...]]] = {}
    for backend in BACKENDS:
        async with FakeLLMServer() as server:
            server.script(*REPLIES)
            async with _pool(backend) as pool:
                outcomes[backend] = [await _outcome(pool, f"{server.openai_base_url}/chat/completions") for _ in REPLIES]
            peers = {r.peer for r in server.requests}
        # Kept-alive connections are reused the same way (a dropped one is replaced).
        outcomes[backend].append(("connections", len(peers)))
    # The generated ids and timestamps differ between servers' runs: compare with them masked.
    assert _masked(outcomes["asyncio"]) == _masked(outcomes["anyio"])
    assert [o[0] for o in outcomes["asyncio"][:4]] == ["ok"] * 4


def _masked(outcomes: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    import re

    return [tuple(re.sub(rb'"(id|created|system_fingerprint)": ?("[^"]*"|\d+)', b"", v) if isinstance(v, bytes) else v for v in o) for o in outcomes]


async def test_the_asyncio_backend_times_out_a_silent_stream_and_refuses_like_anyios() -> None:
    results: dict[str, list[Any]] = {}
    for backend in BACKENDS:
        async with FakeLLMServer() as server:
            server.script(Reply(text="then silence", fault=Fault.stall(after=1)))
            async with _pool(backend) as pool:
                stalled = await _outcome(pool, f"{server.openai_base_url}/chat/completions", read_timeout=0.3)
                # Nobody listens on port 9 of this host.
                refused = await _outcome(pool, "http://127.0.0.1:9/v1/chat/completions")
        results[backend] = [stalled[:2], refused]
    assert results["asyncio"] == results["anyio"]
    assert results["asyncio"][0] == ("error", httpcore2.ReadTimeout)
    assert results["asyncio"][1][:2] == ("error", httpcore2.ConnectError)


async def test_a_read_timeout_bounds_each_wait_not_the_whole_stream() -> None:
    """A stream slower overall than the read timeout, each gap within it, reads to the end; on a
    kept-alive connection a later request's shorter timeout is the one kept (the asyncio
    backend's timer was set for the longer one)."""
    results: dict[str, list[Any]] = {}
    for backend in BACKENDS:
        async with FakeLLMServer() as server:
            server.script(
                Reply(text="fine"),
                Reply(text="then silence", fault=Fault.stall(after=1)),
                Reply(text="slow but steady " * 3, frame_delay=0.1),
            )
            async with _pool(backend) as pool:
                url = f"{server.openai_base_url}/chat/completions"
                fine = await _outcome(pool, url, read_timeout=60)
                # Generous: a timer left at the previous request's 60 s would not fire within it.
                stalled = await asyncio.wait_for(_outcome(pool, url, read_timeout=0.3), 20)
                slow = await _outcome(pool, url, read_timeout=0.35)
        results[backend] = [fine[:2], stalled[:2], slow[:2]]
    assert results["asyncio"] == results["anyio"]
    assert results["asyncio"] == [("ok", 200), ("error", httpcore2.ReadTimeout), ("ok", 200)]


# ------------------------------------------------------------------------------- TLS, closes


def _certificate(tmp: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for 127.0.0.1: the server's context and a client's trusting it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    client = ssl.create_default_context(cafile=str(tmp / "cert.pem"))
    return server, client


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def _server(handler: Handler, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[tuple[int, list[int]]]:
    """A raw HTTP/1.1 server; yields its port and the number of each request's connection."""
    connections: list[int] = []
    count = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal count
        count += 1
        mine = count
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0)
                await reader.readexactly(length)
                connections.append(mine)
                await handler(reader, writer)
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=ssl_context)
    try:
        yield server.sockets[0].getsockname()[1], connections
    finally:
        server.close()


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    body = b"data: {}\n\n" * 3 + b"data: [DONE]\n\n"
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    await writer.drain()


async def _answer_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _answer(reader, writer)
    await asyncio.sleep(0.05)
    writer.close()  # a keep-alive connection the server ends while the client holds it idle


@pytest.mark.parametrize("handler", [_answer, _answer_then_close], ids=["kept", "closed-by-server"])
async def test_the_asyncio_backend_speaks_tls_and_replaces_connections_the_server_closed_like_anyios(handler: Handler, tmp_path: Path) -> None:
    server_tls, client_tls = _certificate(tmp_path)
    results: dict[str, list[Any]] = {}
    for backend in BACKENDS:
        async with _server(handler, server_tls) as (port, connections), _pool(backend, client_tls) as pool:
            outcomes = []
            for _ in range(3):
                outcomes.append(await _outcome(pool, f"https://127.0.0.1:{port}/v1/chat/completions"))
                await asyncio.sleep(0.2)  # the server's close arrives while the connection is idle
            results[backend] = [outcomes, list(connections)]
    assert results["asyncio"] == results["anyio"]
    assert all(o[0] == "ok" for o in results["asyncio"][0])
    assert results["asyncio"][1] == ([1, 1, 1] if handler is _answer else [1, 2, 3])


async def test_the_asyncio_backend_refuses_a_certificate_it_does_not_trust_like_anyios(tmp_path: Path) -> None:
    server_tls, _ = _certificate(tmp_path)
    results = {}
    for backend in BACKENDS:
        async with _server(_answer, server_tls) as (port, _), _pool(backend, ssl.create_default_context()) as pool:
            results[backend] = await _outcome(pool, f"https://127.0.0.1:{port}/v1/chat/completions")
    assert results["asyncio"] == results["anyio"] == ("error", httpcore2.ConnectError, b"")
