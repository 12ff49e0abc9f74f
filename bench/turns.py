"""Turn throughput benchmark: N concurrent chats x K model steps against the scripted LLM.

    uv run --frozen python -m bench.turns --n 100 --k 5 --db sqlite|postgres
    uv run --frozen python -m bench.turns --all        # N = 100 and 1000, both databases

Each chat runs K model steps: K-1 answer with a short text and one call to an in-process `echo`
tool, the last with text only. The scripted OpenAI-compatible server (tests/fakes/llm_server.py)
runs in its own process, so its streaming does not compete with the daemon for the event loop,
and sleeps `--token-delay` before every stream event. The model-only time is what one chat's K
streams take on their own (events x delay, summed over the steps): the wall time if the daemon
added nothing, since the chats run concurrently.

Measured: from the first acquire to the last chat settled (`waiting`), with the chats created
beforehand. Ratio = wall / model-only; per-step overhead = (wall - model-only) / K; peak RSS of
this process (the daemon side; the LLM runs elsewhere); failed = chats that did not end `waiting`
(their turn failed). The daemon's CPU time over the run goes to stderr.

PostgreSQL: `--database-url` (or CHATD_BENCH_DATABASE_URL) is an administrative URL; a fresh
database is created for the run and dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import asyncpg
from cryptography.fernet import Fernet
from sqlalchemy import func, select
from tests.fakes.llm_server import FakeLLMServer, Reply, ToolCall, _openai_events
from tests.fakes.turn_doubles import FnTool

from chatd.bootstrap import App, build, turn_deps
from chatd.domain.chat import ChatStatus, UserRole
from chatd.domain.config import ModelOptions, Pricing
from chatd.domain.parts import TextPart
from chatd.domain.tools import Tool, ToolContext, ToolResult
from chatd.settings import Settings
from chatd.store import users as user_store
from chatd.store.tables import chats as chats_table
from chatd.worker import TurnContext, Workers

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
    conn = await asyncpg.connect(admin_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


# --- one run -----------------------------------------------------------------------------------


@dataclass
class Result:
    db: str
    n: int
    k: int
    wall: float
    model_only: float
    failed: int  # chats not `waiting` at the end (a failed turn leaves them `error`)

    @property
    def ratio(self) -> float:
        return self.wall / self.model_only

    @property
    def overhead_ms(self) -> float:
        return (self.wall - self.model_only) / self.k * 1000


def _echo() -> Tool:
    async def fn(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        return ToolResult({"echo": args})

    return FnTool("echo", fn)


async def _run(app: App, base_url: str, n: int, k: int) -> tuple[float, int]:
    app.settings.generate_titles = False
    app.settings.acquire_batch = n
    admin = await user_store.create_user(app.db, app.clock.now(), "bench-admin", UserRole.ADMIN)
    await app.service.create_provider(admin, provider="openai-compatible", display_name=None, api_key="sk-bench", base_url=base_url, enabled=True)
    await app.service.create_model_config(
        admin, provider="openai-compatible", model="bench-model", display_name=None, context_limit=100_000,
        compression_threshold=70, is_default=True, options=ModelOptions(), pricing=Pricing(input=1_000_000, output=2_000_000),
    )
    for _ in range(n):
        await app.service.create_chat(admin, content=[TextPart(text="go")])

    tools = [_echo()]

    async def provider(ctx: TurnContext) -> tuple[list[Tool], list[str]]:
        return tools, []

    deps = turn_deps(app)
    deps.tool_providers = [provider]
    deps.end_hooks = []
    workers = Workers(deps, worker_id=uuid.uuid4())
    try:
        start, cpu0 = time.perf_counter(), time.process_time()
        started = 0
        while started < n:
            started += len(await workers.acquire_once())
        await workers.drain()
        wall = time.perf_counter() - start
        print(f"  (daemon CPU {time.process_time() - cpu0:.2f} s over {wall:.2f} s wall)", file=sys.stderr)
    finally:
        await workers.shutdown()
    async with app.db.read() as conn:
        statuses = dict((await conn.execute(select(chats_table.c.status, func.count()).group_by(chats_table.c.status))).all())
    failed = n - statuses.get(ChatStatus.WAITING.value, 0)
    if failed:
        print(f"  {failed} of {n} chats did not end waiting: {statuses}", file=sys.stderr)
    return wall, failed


async def run_one(db: str, n: int, k: int, token_delay: float, text_chars: int, admin_url: str) -> Result:
    script = Script(k, text_chars)
    model_only = script.events() * token_delay
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
                wall, failed = await _run(app, base_url, n, k)
            finally:
                await app.close()
        finally:
            if db == "postgres":
                await _pg_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return Result(db, n, k, wall, model_only, failed)


def peak_rss_mb() -> float:
    # ru_maxrss is KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.turns", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100, help="concurrent chats")
    p.add_argument("--k", type=int, default=5, help="model steps per chat (the first K-1 call a tool)")
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--all", action="store_true", help="N = 100 and 1000 on SQLite and PostgreSQL, each in its own process")
    p.add_argument("--token-delay", type=float, default=0.02, help="seconds before each streamed event (default 20 ms: 50 tokens/s)")
    p.add_argument("--text-chars", type=int, default=100, help="text per step, streamed 4 characters per event")
    p.add_argument("--database-url", default=os.environ.get("CHATD_BENCH_DATABASE_URL", DEFAULT_PG))
    p.add_argument("--no-header", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    header = f"{'db':<9}{'N':>6}{'K':>4}{'model-only s':>14}{'wall s':>9}{'ratio':>8}{'overhead ms/step':>18}{'peak RSS MB':>13}{'failed':>8}"
    if a.all:
        # One process per run, so each peak RSS is its own.
        print(header, flush=True)
        for db in ("sqlite", "postgres"):
            for n in (100, 1000):
                cmd = [sys.executable, "-m", "bench.turns", "--n", str(n), "--k", str(a.k), "--db", db, "--token-delay", str(a.token_delay),
                       "--text-chars", str(a.text_chars), "--database-url", a.database_url, "--no-header"]
                subprocess.run(cmd, check=False)
        return
    r = asyncio.run(run_one(a.db, a.n, a.k, a.token_delay, a.text_chars, a.database_url))
    if not a.no_header:
        print(header)
    print(f"{r.db:<9}{r.n:>6}{r.k:>4}{r.model_only:>14.2f}{r.wall:>9.2f}{r.ratio:>8.3f}{r.overhead_ms:>18.1f}{peak_rss_mb():>13.0f}{r.failed:>8}", flush=True)


if __name__ == "__main__":
    main()
