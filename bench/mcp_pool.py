"""What MCP servers cost a turn: one chat, T turns, with five stdio servers on or none.

    uv run --frozen python -m bench.mcp_pool                 # T = 11 (the first is not counted)
    uv run --frozen python -m bench.mcp_pool --turns 21 --tool --server everything

Each turn is a plain "hello" answered by the scripted OpenAI-compatible server (its own process,
a short streamed text); with `--tool` each turn also calls one tool of one of the servers. Rows:

- `none`: no MCP servers;
- `tools`: no MCP servers, but the same tool definitions as the five servers' (in-process tools
  that answer at once): what offering that many tools to the model costs by itself;
- `pooled`: five `force_on` stdio servers, with the replica's warm sessions (the default);
- `per-turn`: the same five with `CHATD_MCP_IDLE_TIMEOUT=0`, i.e. every turn starts every server
  process again and closes it at the end (what chatd did before warm sessions).

Columns, per turn after the first (medians): wall time from acquire to settled; CPU of the chatd
process; CPU of its reaped child processes (stdio servers that ended: the per-turn cost of
starting them); processes started over all turns. `--server everything` uses npm's
@modelcontextprotocol/server-everything (tests/mcp/node, `npm ci` there first) instead of the
Python SDK's server from tests/mcp/mcp_test_servers.py.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.fakes.llm_server import Reply, ToolCall

from bench.turns import LLMProcess, Script

if TYPE_CHECKING:
    from chatd.bootstrap import App

ROOT = Path(__file__).resolve().parent.parent
PY_SERVER = ROOT / "tests" / "mcp" / "mcp_test_servers.py"
EVERYTHING = ROOT / "tests" / "mcp" / "node" / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
SERVERS = 5


@dataclass
class Row:
    mode: str
    turns: int
    wall_ms: float
    cpu_ms: float
    children_cpu_ms: float
    processes: int
    failed: int


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _server_command(kind: str, pid_file: Path) -> tuple[str, list[str]]:
    if kind == "everything":
        # The pid file is written by a shell that then becomes the server (exec).
        return "sh", ["-c", f'echo $$ >> "{pid_file}"; exec node "{EVERYTHING}" stdio']
    return sys.executable, [str(PY_SERVER), str(pid_file)]


async def _turns(app: App, mode: str, turns: int, tool: bool, kind: str, tmp: Path, llm: Any, profile: str | None) -> Row:
    from chatd.bootstrap import turn_deps
    from chatd.domain.chat import ChatStatus, UserRole
    from chatd.domain.config import ModelOptions, Pricing
    from chatd.domain.parts import TextPart
    from chatd.store import chats as chat_store
    from chatd.store import users as user_store
    from chatd.worker import Workers

    app.settings.generate_titles = False
    admin = await user_store.create_user(app.db, app.clock.now(), "bench-admin", UserRole.ADMIN)
    await app.service.create_provider(admin, provider="openai-compatible", display_name=None, api_key="sk-bench", base_url=llm, enabled=True)
    await app.service.create_model_config(
        admin, provider="openai-compatible", model="bench-model", display_name=None, context_limit=100_000,
        compression_threshold=0, is_default=True, options=ModelOptions(), pricing=Pricing(input=1_000_000, output=2_000_000),
    )
    pid_file = tmp / "pids"
    if mode in ("pooled", "per-turn"):
        for i in range(SERVERS):
            command, args = _server_command(kind, pid_file)
            await app.service.create_mcp_server(admin, {
                "slug": f"local{i}", "display_name": f"Local {i}", "transport": "stdio", "command": command,
                "args": args, "availability": "force_on", "enabled": True,
            })
    deps = turn_deps(app)
    deps.end_hooks = []
    if mode == "tools":
        local = await _local_copies(kind, tmp)

        async def provide(ctx: Any) -> tuple[list[Any], list[str]]:
            return local, []

        deps.tool_providers = [*deps.tool_providers, provide]
    workers = Workers(deps, worker_id=uuid.uuid4())
    walls: list[float] = []
    cpus: list[float] = []
    children: list[float] = []
    failed = 0
    try:
        chat = await app.service.create_chat(admin, content=[TextPart(text="hello")])
        profiler = cProfile.Profile(time.process_time) if profile else None
        for turn in range(turns):
            if turn == 1 and profiler is not None:
                profiler.enable()
            if turn:
                await app.service.send_message(admin, chat.id, content=[TextPart(text="hello")])
            start, cpu0, child0 = time.perf_counter(), time.process_time(), _children_cpu()
            if not await workers.acquire_once():  # the message made the chat pending
                raise RuntimeError("the chat was not pending")
            await workers.drain()
            walls.append(time.perf_counter() - start)
            cpus.append(time.process_time() - cpu0)
            children.append(_children_cpu() - child0)
            if (await chat_store.get_chat(app.db, chat.id)).status is not ChatStatus.WAITING:
                failed += 1
        if profiler is not None and profile:
            profiler.disable()
            profiler.dump_stats(profile)
    finally:
        await workers.shutdown()
    processes = len(pid_file.read_text().split()) if pid_file.exists() else 0
    ms = lambda xs: statistics.median(xs[1:]) * 1000 if len(xs) > 1 else 0.0  # noqa: E731 - after the first turn
    return Row(mode, turns, ms(walls), ms(cpus), ms(children), processes, failed)


async def _local_copies(kind: str, tmp: Path) -> list[Any]:
    """In-process tools with the five servers' names, descriptions and schemas."""
    from tests.fakes.turn_doubles import FnTool

    from chatd.domain.mcp import McpServerConfig, McpTransport
    from chatd.domain.tools import ToolContext, ToolResult
    from chatd.mcp import list_tools_check

    async def answer(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        return ToolResult(args.get("text", "ok"))

    command, args = _server_command(kind, tmp / "probe-pids")
    out: list[Any] = []
    for i in range(SERVERS):
        config = McpServerConfig(id=uuid.uuid4(), slug=f"local{i}", transport=McpTransport.STDIO, command=command, args=tuple(args))
        for info in await list_tools_check(config, None, stdio_connect_timeout=120):
            out.append(FnTool(info.name, answer, info.description, info.input_schema))
    return out


async def run(mode: str, turns: int, tool: bool, kind: str, token_delay: float, profile: str | None = None) -> Row:
    from cryptography.fernet import Fernet

    from chatd.bootstrap import build
    from chatd.settings import Settings

    script: Any = ToolScript() if tool and mode not in ("none",) else Script(1, 40)
    with tempfile.TemporaryDirectory(prefix="chatd-mcp-bench-") as tmp, LLMProcess(script, token_delay) as llm:
        data = Path(tmp)
        settings = Settings(
            data_dir=data, database_url=f"sqlite:///{data / 'chatd.db'}", run_workers=False,
            secret_key=Fernet.generate_key().decode(), mcp_idle_timeout=0.0 if mode == "per-turn" else 300.0,
        )
        app = await build(settings)
        try:
            return await _turns(app, mode, turns, tool, kind, data, llm, profile)
        finally:
            await app.close()


@dataclass(frozen=True)
class ToolScript:
    """Each turn: one call to the first server's `echo`, then a short text."""

    tool: str = "local0__echo"

    def respond(self, body: dict[str, Any]) -> Reply:
        # The step within this turn: tool results after the last user message.
        messages = body.get("messages", [])
        last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=0)
        if not any(m.get("role") == "tool" for m in messages[last_user:]):
            return Reply(text="", tool_calls=[ToolCall(f"call_{uuid.uuid4().hex[:8]}", self.tool, {"text": "hi"})])
        return Reply(text="done " * 8)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.mcp_pool", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--turns", type=int, default=11, help="turns of the one chat (the first is not counted)")
    p.add_argument("--modes", default="none,tools,pooled,per-turn")
    p.add_argument("--tool", action="store_true", help="each turn also calls one MCP tool")
    p.add_argument("--server", choices=["python", "everything"], default="python")
    p.add_argument("--token-delay", type=float, default=0.005, help="seconds before each streamed event")
    p.add_argument("--profile", metavar="FILE", help="with --modes of one mode: cProfile the turns after the first into FILE")
    p.add_argument("--one", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.one:
        row = asyncio.run(run(a.one, a.turns, a.tool, a.server, a.token_delay, a.profile))
        print(json.dumps(asdict(row)), flush=True)
        return
    print(f"{SERVERS} stdio servers ({a.server}), {a.turns} turns of one chat{' with a tool call each' if a.tool else ''}; medians after the first turn")
    print(f"{'mode':<10}{'wall ms/turn':>14}{'CPU ms/turn':>13}{'child CPU ms':>14}{'processes':>11}{'failed':>8}", flush=True)
    base: Row | None = None
    for mode in a.modes.split(","):
        cmd = [sys.executable, "-m", "bench.mcp_pool", "--one", mode, "--turns", str(a.turns), "--server", a.server, "--token-delay", str(a.token_delay)]
        if a.tool:
            cmd.append("--tool")
        if a.profile:
            cmd += ["--profile", f"{a.profile}.{mode}"]
        out = subprocess.run(cmd, check=False, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        if out.returncode != 0:
            print(f"{mode:<10} failed (exit {out.returncode})", flush=True)
            continue
        row = Row(**json.loads(out.stdout.strip().splitlines()[-1]))
        base = base or (row if mode == "none" else None)
        ratio = f"  ({row.wall_ms / base.wall_ms:.2f}x wall, {row.cpu_ms / base.cpu_ms:.2f}x CPU)" if base and row is not base else ""
        print(f"{row.mode:<10}{row.wall_ms:>14.1f}{row.cpu_ms:>13.1f}{row.children_cpu_ms:>14.1f}{row.processes:>11}{row.failed:>8}{ratio}", flush=True)


if __name__ == "__main__":
    main()
