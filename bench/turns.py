"""Turn throughput benchmark: N concurrent chats x K model steps against the scripted LLM.

    uv run --frozen python -m bench.turns                       # N = 10, 100 on SQLite and PostgreSQL
    uv run --frozen python -m bench.turns --n 100 --db sqlite --k 5
    uv run --frozen python -m bench.turns --baseline-src ../chatd-before/src   # before/after

Each chat runs K model steps: K-1 answer with a short text and one call to an in-process `echo`
tool, the last with text only. The scripted OpenAI-compatible server (tests/fakes/llm_server.py)
runs in its own process, so its streaming does not compete with the daemon for the event loop,
and sleeps `--token-delay` before every stream event. The model-only time is what one chat's K
streams take on their own (events x delay, summed over the steps).

Every row is its own process. For each N it runs, against the same scripted server settings:
- `bare`: a plain asyncio client (one shared httpx2 client, an SSE line parser, json) that plays
  the same conversations and persists nothing: the limit of this machine for this load;
- `chatd`: the worker pool, in-process, on SQLite or PostgreSQL (chats created beforehand);
- `before` (with `--baseline-src DIR`): the same chatd run with DIR (another checkout's `src`)
  first on the import path, to measure a change side by side in one run.

Each measured run follows one unmeasured chat in the same process (imports, first connection), then
settles the heap as `chatd serve` does after its preload (`chatd.server.settle_heap`, if the tree has it).
Columns: wall time (first acquire to the last chat settled) and its ratio to `bare` in the same
run; CPU of the measuring process over the run (the scripted server and PostgreSQL's backends are
not counted) per streamed event (N x events per chat); `fixed ms/turn`: CPU per turn of a second
run with K = 1 and a one-token answer (4 stream events), i.e. what a turn costs outside the model
stream; peak RSS; failed chats (not `waiting` at the end).

PostgreSQL: `--database-url` (or CHATD_BENCH_DATABASE_URL) is an administrative URL; a fresh
database is created for the run and dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx2
from tests.fakes.llm_server import FakeLLMServer, Reply, ToolCall, _openai_events

if TYPE_CHECKING:
    from chatd.bootstrap import App
    from chatd.domain.tools import Tool, ToolContext, ToolResult
    from chatd.worker import TurnContext

# chatd is imported where it is used: the scripted LLM's process (spawned, so it re-imports this
# module) and the bare client never load it, and `before` runs load the baseline's.

DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


# --- the scripted LLM, in a child process ----------------------------------------------------


@dataclass(frozen=True)
class Script:
    k: int
    text_chars: int  # streamed 4 characters per event

    def reply(self, step: int) -> Reply:
        text = ("lorem ipsum dolor sit amet " * (self.text_chars // 27 + 1))[: self.text_chars]
        if step < self.k - 1:
            return Reply(text=text, tool_calls=[ToolCall(f"call_{step}", "echo", {"x": step})])
        return Reply(text=text)

    def respond(self, body: dict[str, Any]) -> Reply:
        # The step is how many tool results the conversation already holds.
        done = sum(1 for m in body.get("messages", []) if m.get("role") == "tool")
        return self.reply(done)

    def events(self) -> int:
        """Stream events (each preceded by one token delay) over one chat's K steps."""
        return sum(len(list(_openai_events(self.reply(i), "m"))) for i in range(self.k))


def _serve_llm(script: Script, token_delay: float, conn: Connection) -> None:
    async def main() -> None:
        async with FakeLLMServer(token_delay=token_delay, responder=script.respond) as server:
            conn.send(server.openai_base_url)
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)

    asyncio.run(main())


class LLMProcess:
    def __init__(self, script: Script, token_delay: float) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve_llm, args=(script, token_delay, child), daemon=True)

    def __enter__(self) -> str:
        self._proc.start()
        return str(self._conn.recv())

    def __exit__(self, *exc: object) -> None:
        self._conn.send("stop")
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()


# --- databases ---------------------------------------------------------------------------------


async def _pg_admin(admin_url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


# --- one run -----------------------------------------------------------------------------------


@dataclass
class Result:
    system: str  # bare | chatd | before
    db: str
    n: int
    k: int
    wall: float
    cpu: float  # CPU seconds of this process over the run
    events: int  # stream events over all chats
    failed: int  # chats not `waiting` at the end (a failed turn leaves them `error`)
    rss_mb: float = 0.0

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu / self.events * 1e6


def _echo() -> Tool:
    from tests.fakes.turn_doubles import FnTool

    from chatd.domain.tools import ToolResult

    async def fn(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        return ToolResult({"echo": args})

    return FnTool("echo", fn)


async def _run(app: App, base_url: str, n: int, k: int) -> tuple[float, float, int]:
    from sqlalchemy import func, select

    from chatd.bootstrap import turn_deps
    from chatd.domain.chat import ChatStatus, UserRole
    from chatd.domain.config import ModelOptions, Pricing
    from chatd.domain.parts import TextPart
    from chatd.store import users as user_store
    from chatd.store.tables import chats as chats_table
    from chatd.worker import Workers

    app.settings.generate_titles = False
    app.settings.acquire_batch = n
    admin = await user_store.create_user(app.db, app.clock.now(), "bench-admin", UserRole.ADMIN)
    await app.service.create_provider(admin, provider="openai-compatible", display_name=None, api_key="sk-bench", base_url=base_url, enabled=True)
    await app.service.create_model_config(
        admin, provider="openai-compatible", model="bench-model", display_name=None, context_limit=100_000,
        compression_threshold=70, is_default=True, options=ModelOptions(), pricing=Pricing(input=1_000_000, output=2_000_000),
    )
    tools = [_echo()]

    async def provider(ctx: TurnContext) -> tuple[list[Tool], list[str]]:
        return tools, []

    deps = turn_deps(app)
    deps.tool_providers = [provider]
    deps.end_hooks = []
    workers = Workers(deps, worker_id=uuid.uuid4())
    try:
        # One chat first, not measured: the process imports the provider SDK and opens its first
        # connection on the first turn (1.5-3 s of CPU once per process, which at N = 10 was
        # most of what used to be reported per event).
        await app.service.create_chat(admin, content=[TextPart(text="go")])
        await workers.acquire_once()
        await workers.drain()
        # What `chatd serve` does once it has preloaded the SDKs (a tree without it: nothing).
        settle = getattr(importlib.import_module("chatd.server"), "settle_heap", None)
        if settle is not None:
            settle()
        for _ in range(n):
            await app.service.create_chat(admin, content=[TextPart(text="go")])
        start, cpu0 = time.perf_counter(), time.process_time()
        started = 0
        while started < n:
            if taken := await workers.acquire_once():
                started += len(taken)
            else:
                # The pool is full (N above its turn cap: 600 on SQLite, 300 on PostgreSQL by
                # default): acquire_once returns at once without yielding, so wait for turns to end
                # as the pool's own acquire interval would, without spinning.
                await asyncio.sleep(0.05)
        await workers.drain()
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    finally:
        await workers.shutdown()
    async with app.db.read() as conn:
        statuses: dict[str, int] = dict((await conn.execute(select(chats_table.c.status, func.count()).group_by(chats_table.c.status))).all())
    failed = n + 1 - statuses.get(ChatStatus.WAITING.value, 0)
    if failed:
        print(f"  {failed} of {n} chats did not end waiting: {statuses}", file=sys.stderr)
    return wall, cpu, failed


async def run_chatd(system: str, db: str, n: int, k: int, token_delay: float, text_chars: int, admin_url: str) -> Result:
    from cryptography.fernet import Fernet

    from chatd.bootstrap import build
    from chatd.settings import Settings

    script = Script(k, text_chars)
    with tempfile.TemporaryDirectory(prefix="chatd-bench-") as tmp, LLMProcess(script, token_delay) as base_url:
        data = Path(tmp)
        name = f"chatd_bench_{uuid.uuid4().hex[:12]}"
        if db == "postgres":
            await _pg_admin(admin_url, f'CREATE DATABASE "{name}"')
            url = admin_url.rsplit("/", 1)[0] + f"/{name}"
        else:
            url = f"sqlite:///{data / 'chatd.db'}"
        try:
            settings = Settings(data_dir=data, database_url=url, run_workers=False, secret_key=Fernet.generate_key().decode())
            app = await build(settings)
            try:
                wall, cpu, failed = await _run(app, base_url, n, k)
            finally:
                await app.close()
        finally:
            if db == "postgres":
                await _pg_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return Result(system, db, n, k, wall, cpu, n * script.events(), failed)


# --- the limit: a bare client that plays the same conversations -------------------------------


async def _bare_chat(client: httpx2.AsyncClient, base_url: str, k: int) -> tuple[int, bool]:
    """One conversation: stream each step, run the echo tool, send its result back. Returns the
    stream events seen and whether the last step ended with `stop`."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": "go"}]
    tools = [{"type": "function", "function": {"name": "echo", "description": "echo", "parameters": {"type": "object"}}}]
    events, finish = 0, None
    for _ in range(k):
        body = {"model": "bench-model", "messages": messages, "tools": tools, "stream": True, "stream_options": {"include_usage": True}}
        text: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        async with client.stream("POST", f"{base_url}/chat/completions", json=body, headers={"Authorization": "Bearer sk-bench"}) as r:
            r.raise_for_status()
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                events += 1
                data = line[6:]
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                for choice in chunk.get("choices", ()):
                    delta = choice.get("delta", {})
                    if delta.get("content"):
                        text.append(delta["content"])
                    for tc in delta.get("tool_calls") or ():
                        call = calls.setdefault(tc["index"], {"id": "", "name": "", "arguments": ""})
                        call["id"] = tc.get("id") or call["id"]
                        fn = tc.get("function") or {}
                        call["name"] = fn.get("name") or call["name"]
                        call["arguments"] += fn.get("arguments") or ""
                    finish = choice.get("finish_reason") or finish
        assistant: dict[str, Any] = {"role": "assistant", "content": "".join(text)}
        if calls:
            assistant["tool_calls"] = [
                {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}} for c in calls.values()
            ]
        messages.append(assistant)
        for c in calls.values():
            messages.append({"role": "tool", "tool_call_id": c["id"], "content": json.dumps({"echo": json.loads(c["arguments"] or "{}")})})
        if not calls:
            break
    return events, finish == "stop"


async def run_bare(n: int, k: int, token_delay: float, text_chars: int) -> Result:
    script = Script(k, text_chars)
    with LLMProcess(script, token_delay) as base_url:
        limits = httpx2.Limits(max_connections=n, max_keepalive_connections=n)
        async with httpx2.AsyncClient(limits=limits, timeout=httpx2.Timeout(600, connect=5)) as client:
            await _bare_chat(client, base_url, k)  # warm-up, as for chatd
            start, cpu0 = time.perf_counter(), time.process_time()
            results = await asyncio.gather(*(_bare_chat(client, base_url, k) for _ in range(n)), return_exceptions=True)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    failed = sum(1 for r in results if isinstance(r, BaseException) or not r[1])
    events = sum(r[0] for r in results if not isinstance(r, BaseException))
    return Result("bare", "-", n, k, wall, cpu, events, failed)


def peak_rss_mb() -> float:
    # ru_maxrss is KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- the side-by-side table --------------------------------------------------------------------


def _child(system: str, db: str, n: int, a: argparse.Namespace) -> tuple[Result, Result | None] | None:
    """One row in its own process: the K-step run, then (same process, so a warmed-up replica)
    the K = 1 one-token run for the fixed cost per turn."""
    env = dict(os.environ)
    if system == "before":
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(a.baseline_src).resolve()), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "bench.turns", "--one", system, "--n", str(n), "--k", str(a.k), "--db", db,
           "--token-delay", str(a.token_delay), "--text-chars", str(a.text_chars), "--database-url", a.database_url]
    if a.no_fixed:
        cmd.append("--no-fixed")
    out = subprocess.run(cmd, check=False, env=env, stdout=subprocess.PIPE, text=True)
    if out.returncode != 0:
        print(f"  run {system} {db} N={n} failed (exit {out.returncode})", file=sys.stderr)
        return None
    runs = [Result(**r) for r in json.loads(out.stdout.strip().splitlines()[-1])]
    return runs[0], (runs[1] if len(runs) > 1 else None)


async def _one(a: argparse.Namespace) -> list[Result]:
    n = int(a.n)
    shapes = [(a.k, a.text_chars)] + ([] if a.no_fixed else [(1, 4)])
    out: list[Result] = []
    for k, chars in shapes:
        if a.one == "bare":
            out.append(await run_bare(n, k, a.token_delay, chars))
        else:
            out.append(await run_chatd(a.one, a.db, n, k, a.token_delay, chars, a.database_url))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.turns", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", default="10,100", help="concurrent chats, comma-separated (default 10,100)")
    p.add_argument("--k", type=int, default=5, help="model steps per chat (the first K-1 call a tool)")
    p.add_argument("--db", default="sqlite,postgres", help="sqlite, postgres or both (comma-separated)")
    p.add_argument("--token-delay", type=float, default=0.02, help="seconds before each streamed event (default 20 ms: 50 tokens/s)")
    p.add_argument("--text-chars", type=int, default=100, help="text per step, streamed 4 characters per event")
    p.add_argument("--no-fixed", action="store_true", help="skip the K = 1 runs that measure the fixed CPU per turn")
    p.add_argument("--baseline-src", help="another checkout's src/ directory, run as `before` next to this one")
    p.add_argument("--database-url", default=os.environ.get("CHATD_BENCH_DATABASE_URL", DEFAULT_PG))
    p.add_argument("--one", choices=["bare", "chatd", "before"], help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.one:
        done = asyncio.run(_one(a))
        for r in done:
            r.rss_mb = peak_rss_mb()
        print(json.dumps([asdict(r) for r in done]), flush=True)
        return
    systems = ["chatd"] + (["before"] if a.baseline_src else [])
    dbs = [d.strip() for d in a.db.split(",") if d.strip()]
    model_only = Script(a.k, a.text_chars).events() * a.token_delay
    print(f"K = {a.k}, model-only {model_only:.2f} s per chat ({Script(a.k, a.text_chars).events()} events, {a.token_delay * 1000:g} ms each)")
    print(f"{'system':<8}{'db':<10}{'N':>6}{'wall s':>9}{'ratio':>8}{'CPU s':>8}{'CPU us/event':>14}{'fixed ms/turn':>15}{'peak RSS MB':>13}{'failed':>8}", flush=True)
    for n in (int(x) for x in a.n.split(",")):
        bare_runs = _child("bare", "-", n, a)
        bare = bare_runs[0] if bare_runs else None
        rows: list[tuple[Result, Result | None]] = [bare_runs] if bare_runs else []
        for db in dbs:
            for system in systems:
                if (runs := _child(system, db, n, a)) is not None:
                    rows.append(runs)
        for r, f in rows:
            ratio = f"{r.wall / bare.wall:8.2f}" if bare else f"{'-':>8}"
            fixed_ms = f"{f.cpu / f.n * 1000:15.1f}" if f else f"{'-':>15}"
            print(f"{r.system:<8}{r.db:<10}{r.n:>6}{r.wall:>9.2f}{ratio}{r.cpu:>8.2f}{r.cpu_us_per_event:>14.0f}{fixed_ms}{r.rss_mb:>13.0f}{r.failed:>8}", flush=True)


if __name__ == "__main__":
    main()
