"""Fan-out benchmark: one chat, 100 SSE subscribers split over two `chatd serve` replicas.

    uv run --frozen python -m bench.fanout [--subscribers 100] [--tokens 1000] [--rates 50,200]

Replica A runs the chat (workers on); replica B serves the API without workers, so B's
subscribers receive every part through the internal relay from A while A's get them from its own
hub. A scripted OpenAI-compatible LLM in this process streams the answer one token per chunk, each
token carrying the monotonic time (CLOCK_MONOTONIC, shared by every process on the machine) at
which it was written to the socket. Latency is the time from there to a subscriber parsing the
token out of its SSE stream: model HTTP hop, worker, hub, relay (B only), SSE framing, client.

Runs: `paced N/s` emits N tokens per second (50/s is a fast model) and measures latency; `burst`
emits as fast as the model socket takes them. Each row also gives the events per second that
replica delivered to its subscribers (SSE events, first to last part), and how many of the
parts reached them: a subscriber that falls 128 events behind loses parts by design, it never
slows the chat down. The subscribers of each replica run in their own client process, so
that parsing 100 streams does not compete with the LLM's clock on one event loop.

PostgreSQL: `--database-url` (or CHATD_BENCH_DATABASE_URL) is an administrative URL; a fresh
database is created for the run and dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import uvicorn
from cryptography.fernet import Fernet
from sqlalchemy.engine import make_url
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

TOKEN = re.compile(rb"<(\d+):(\d+)>")
START_TIMEOUT = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the scripted LLM ----------------------------------------------------------------------------


@dataclass
class TimestampLLM:
    """OpenAI Chat Completions streaming; each request streams the next scripted answer.
    An answer is either fixed text or `tokens` timestamped tokens at `rate` per second (0: as fast
    as possible)."""

    answers: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None
    _sock: socket.socket | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def __aenter__(self) -> TimestampLLM:
        app = Starlette(routes=[Route("/v1/chat/completions", self._complete, methods=["POST"])])
        sock = socket.socket()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        sock.setblocking(False)
        self._sock, self.port = sock, sock.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="critical", lifespan="off", access_log=False))
        self._task = asyncio.create_task(self._server._serve([sock]), name="bench-llm")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.should_exit = self._server.force_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, 5)
        if self._sock is not None:
            self._sock.close()

    async def _complete(self, request: Request) -> StreamingResponse:
        body = await request.json()
        answer = self.answers.pop(0) if self.answers else {"text": "(unscripted)"}
        base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000, "model": body.get("model", "m")}

        def frame(delta: dict[str, Any], finish: str | None = None) -> bytes:
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"

        async def stream() -> AsyncIterator[bytes]:
            yield frame({"role": "assistant", "content": ""})
            if "text" in answer:
                yield frame({"content": answer["text"]})
            else:
                n, rate = int(answer["tokens"]), float(answer["rate"])
                start = time.monotonic()
                for i in range(n):
                    if rate:
                        # Paced against the start, so a late frame does not shift the rest.
                        delay = start + i / rate - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    elif i % 50 == 0:
                        await asyncio.sleep(0)  # let the socket drain and other tasks run
                    yield frame({"content": f"<{i}:{time.monotonic_ns()}> "})
            yield frame({}, "stop")
            usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
            yield b"data: " + json.dumps({**base, "choices": [], "usage": usage}).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")


# --- replicas ------------------------------------------------------------------------------------


@dataclass
class Replica:
    name: str
    root: Path
    database_url: str
    env: dict[str, str]
    extra: tuple[str, ...] = ()
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        args = [
            sys.executable, "-m", "chatd.cli", "serve", "--database-url", self.database_url,
            "--data-dir", str(self.root / self.name), "--host", "127.0.0.1", "--port", str(self.port), *self.extra,
        ]  # fmt: skip
        with (self.root / f"{self.name}.log").open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@contextlib.contextmanager
def replicas(database_url: str, root: Path) -> Iterator[tuple[Replica, Replica]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATD_")}
    env.update(
        CHATD_SECRET_KEY=Fernet.generate_key().decode(), CHATD_GENERATE_TITLES="false", CHATD_ACQUIRE_INTERVAL="0.2",
        CHATD_LOG_LEVEL="warning", PYTHONUNBUFFERED="1",
    )  # fmt: skip
    a = Replica("a", root, database_url, env)
    b = Replica("b", root, database_url, env, extra=("--no-workers",))
    try:
        # One at a time: A migrates the empty database and makes the first admin.
        a.start()
        wait_healthy(a)
        b.start()
        wait_healthy(b)
        yield a, b
    finally:
        b.stop()
        a.stop()


def wait_healthy(r: Replica) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if r.proc is not None and r.proc.poll() is not None:
            raise SystemExit(f"replica {r.name} exited; see {r.root / (r.name + '.log')}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{r.url}/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise SystemExit(f"replica {r.name} did not become healthy")


@contextlib.asynccontextmanager
async def fresh_database(admin_url: str) -> AsyncIterator[str]:
    name = f"chatd_bench_{uuid.uuid4().hex[:10]}"
    dsn = admin_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


# --- subscribers (a client process per replica) ---------------------------------------------------


async def subscribe_all(base: str, token: str, chat_id: str, n: int) -> dict[str, Any]:
    """`n` SSE subscribers of one chat; prints `ready` once every snapshot arrived, then records
    token latencies until the turn ends."""
    latencies: list[int] = []
    counts = {"events": 0, "tokens": 0, "first": 0, "last": 0}
    ready = 0
    all_ready = asyncio.Event()
    limits = httpx.Limits(max_connections=n + 4, max_keepalive_connections=n + 4)

    async def one(http: httpx.AsyncClient) -> None:
        nonlocal ready
        seen_running, first = False, True
        url = f"{base}/api/v1/chats/{chat_id}/stream"
        async with http.stream("GET", url, headers={"Authorization": f"Bearer {token}"}) as resp:
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                now = time.monotonic_ns()
                raw = line.encode()
                if first:
                    first = False
                    ready += 1
                    if ready == n:
                        all_ready.set()
                counts["events"] += 1
                if b'"message_part"' in raw:
                    marks = TOKEN.findall(raw)
                    if marks:
                        counts["first"] = counts["first"] or now
                        counts["last"] = now
                    for _seq, at in marks:
                        latencies.append(now - int(at))
                        counts["tokens"] += 1
                elif b'"type": "status"' in raw:
                    status = json.loads(line[5:])["status"]
                    if status == "running":
                        seen_running = True
                    elif seen_running and status in ("waiting", "error"):
                        return

    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=None), limits=limits) as http:
        tasks = [asyncio.create_task(one(http)) for _ in range(n)]
        await asyncio.wait_for(all_ready.wait(), 60)
        print("ready", flush=True)
        await asyncio.wait_for(asyncio.gather(*tasks), 600)
    return {"latencies_ns": latencies, **counts}


async def run_clients(replica_urls: list[str], token: str, chat_id: str, per_replica: int) -> list[asyncio.subprocess.Process]:
    procs = []
    for url in replica_urls:
        p = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.fanout", "--client", url, token, chat_id, str(per_replica),
            stdout=asyncio.subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        procs.append(p)
    for p in procs:
        assert p.stdout is not None
        line = await asyncio.wait_for(p.stdout.readline(), 90)
        if line.strip() != b"ready":
            raise SystemExit(f"a client failed to subscribe: {line!r}")
    return procs


# --- the run -------------------------------------------------------------------------------------


@dataclass
class Result:
    run: str
    replica: str
    subscribers: int
    expected: int
    got: int
    events: int
    seconds: float
    latencies_ms: list[float]

    def pct(self, p: float) -> float:
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else float("nan")


async def one_run(
    http: httpx.AsyncClient, llm: TimestampLLM, a: Replica, b: Replica, headers: dict[str, str], run: str, args: argparse.Namespace, rate: float
) -> list[Result]:
    chat = (await http.post(f"{a.url}/api/v1/chats", headers=headers, json={"content": f"{run}: warm up"})).json()
    await wait_status(http, a, headers, chat["id"])
    token = headers["Authorization"].removeprefix("Bearer ")
    per = args.subscribers // 2
    procs = await run_clients([a.url, b.url], token, chat["id"], per)
    try:
        llm.answers.append({"tokens": args.tokens, "rate": rate})
        r = await http.post(f"{b.url}/api/v1/chats/{chat['id']}/messages", headers=headers, json={"content": "go"})
        r.raise_for_status()
        outs = []
        for p in procs:
            assert p.stdout is not None
            outs.append(json.loads(await asyncio.wait_for(p.stdout.read(), 600)))
            await p.wait()
    finally:
        for p in procs:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                await p.wait()
    results = []
    for name, out in zip(("A (runs the chat)", "B (relayed)"), outs, strict=True):
        secs = max((out["last"] - out["first"]) / 1e9, 1e-9)
        results.append(
            Result(run, name, per, per * args.tokens, out["tokens"], out["events"], secs, [x / 1e6 for x in out["latencies_ns"]])
        )
    return results


async def wait_status(http: httpx.AsyncClient, r: Replica, headers: dict[str, str], chat_id: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        chat = (await http.get(f"{r.url}/api/v1/chats/{chat_id}", headers=headers)).json()
        if chat["status"] in ("waiting", "error"):
            return
        await asyncio.sleep(0.1)
    raise SystemExit(f"chat {chat_id} did not finish its turn")


def table(results: list[Result]) -> str:
    head = ("run", "replica", "subs", "parts delivered", "p50 ms", "p90 ms", "p99 ms", "max ms", "events/s")
    rows = [head]
    for r in results:
        rows.append((
            r.run, r.replica, str(r.subscribers), f"{r.got}/{r.expected} ({100 * r.got / r.expected:.1f}%)",
            f"{r.pct(50):.1f}", f"{r.pct(90):.1f}", f"{r.pct(99):.1f}", f"{max(r.latencies_ms, default=float('nan')):.1f}",
            f"{r.events / r.seconds:,.0f}",
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="chatd-bench-"))
    async with fresh_database(args.database_url) as url, TimestampLLM() as llm:
        with replicas(url, root) as (a, b):
            async with httpx.AsyncClient(timeout=30) as http:
                admin = {"Authorization": f"Bearer {(root / 'a' / 'admin-token').read_text().strip()}"}
                for path, body in (
                    ("providers", {"provider": "openai-compatible", "api_key": "k", "base_url": llm.base_url}),
                    ("model-configs", {"provider": "openai-compatible", "model": "m", "context_limit": 1_000_000, "compression_threshold": 0, "is_default": True}),
                ):
                    (await http.post(f"{a.url}/api/v1/{path}", headers=admin, json=body)).raise_for_status()
                user = (await http.post(f"{a.url}/api/v1/users", headers=admin, json={"username": "bench"})).json()
                tok = (await http.post(f"{a.url}/api/v1/users/{user['id']}/tokens", headers=admin, json={"name": "bench"})).json()
                headers = {"Authorization": f"Bearer {tok['token']}"}
                results: list[Result] = []
                rates = [float(x) for x in args.rates.split(",") if x]
                for run, rate in [*((f"paced {r:g}/s", r) for r in rates), ("burst", 0.0)]:
                    llm.answers.append({"text": "ready"})  # the warm-up turn
                    results += await one_run(http, llm, a, b, headers, run, args, rate)
    print(
        f"\n{args.subscribers} SSE subscribers of one chat ({args.subscribers // 2} on each replica), "
        f"{args.tokens} tokens per run; "
        f"{os.cpu_count()} CPUs shared by PostgreSQL, both replicas, the LLM and the clients.\n"
    )
    print(table(results))
    for r in results:
        if r.latencies_ms:
            print(f"  {r.run} {r.replica}: mean {statistics.fmean(r.latencies_ms):.1f} ms over {len(r.latencies_ms)} deliveries")
    if args.keep_logs:
        print(f"\nreplica logs: {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)


def cli() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        base, token, chat_id, n = sys.argv[2:6]
        out = asyncio.run(subscribe_all(base, token, chat_id, int(n)))
        sys.stdout.write(json.dumps(out))
        return
    p = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database-url", default=os.environ.get("CHATD_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    p.add_argument("--subscribers", type=int, default=100)
    p.add_argument("--tokens", type=int, default=1000)
    p.add_argument("--rates", default="50,200", help="tokens per second of the paced runs (comma-separated)")
    p.add_argument("--keep-logs", action="store_true", help="keep the replicas' data directories and logs")
    asyncio.run(main(p.parse_args()))


if __name__ == "__main__":
    cli()
