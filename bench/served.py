"""chatd as users run it, next to LangGraph Server: issue 15's side-by-side run, one command.

    uv run --frozen --with 'langgraph-cli[inmem]' --with langchain-openai python -m bench.served
    uv run --frozen python -m bench.served --n 10 --systems bare,served-sqlite,served-postgres

The conversations are bench/turns.py's: N chats at once, K = 5 model steps each (four stream some
text and call `echo`, the last streams text only), against the scripted OpenAI-compatible server
in its own process with 20 ms before every stream event. Every row runs in its own processes,
one after the other, for each N:

- `bare`: bench/turns.py's plain asyncio client, which persists nothing (the limit of the machine);
- `inproc-sqlite`, `inproc-postgres`: bench/turns.py's chatd rows (the worker pool in-process);
- `served-sqlite`, `served-postgres`, `served-postgres-w2`: `chatd serve` (`--workers 2` for the
  last) as a user runs it, set up and driven over the HTTP API only: an admin (the data
  directory's `admin-token`) adds the provider (the scripted server), a default model and the MCP
  server; a member creates the N chats (`POST /api/v1/chats`, the MCP server named), follows
  each chat's stream to the end and learns from its `/chats/watch` when each is idle again. The
  tool is the MCP test server's `echo` over streamable HTTP, in a process of its own, so the model
  calls `bench__echo` (the server's slug + `__` + the tool);
- `langgraph-inproc`: bench/langgraph_turns.py (`create_react_agent`, no server in front);
- `langgraph-server`: `langgraph dev` (langgraph-cli[inmem]: LangGraph Server with its in-memory
  runtime, `--n-jobs-per-worker` max(N, 10), no reload, no browser) serving bench/langgraph_graph.py
  (`create_react_agent`, a streaming `ChatOpenAI`, an in-process `echo` tool), driven over its
  HTTP API: a thread per chat, its run followed with `POST /threads/{id}/runs/stream`
  (`messages-tuple`), the run's status read afterwards.

For the served rows the scripted server logs every request, and the row fails loudly (`calls`
column) unless each system made the same model calls: N x K streamed requests, each step's
request offering the tool and holding every earlier step's tool result (`echo-<step>`), and for
chatd N x (K-1) calls on the MCP server. chatd's titles and `ask_user_question` are turned off
(`CHATD_GENERATE_TITLES=false`, `CHATD_ASK_USER_QUESTION=false`) so that both offer one tool and
make no side calls; every other setting is the default.

Columns: wall time (the first create to the last chat idle) and its ratio to `bare` in the same
run; CPU per streamed event = the server's CPU (the process tree of `chatd serve` or `langgraph
dev`; the measuring process for the in-process rows) / (N x events per chat); `fixed ms/turn`,
the CPU of a second run (same server) of N one-step, one-token chats, per turn; `PG µs/event`,
the CPU of the PostgreSQL backends connected to the row's database over the run (sampled from
/proc, so PostgreSQL must run on this machine), per event; `idle ms/s`, the server's and its
backends' CPU per second over 5 s after the runs; peak RSS (the server's process tree, each
process's high-water mark added up); failed chats. The driving client, the scripted server and
the MCP server are never counted. Each served run follows one unmeasured chat first (imports, the
first connections), as bench/turns.py does.

PostgreSQL: `--database-url` (or CHATD_BENCH_DATABASE_URL) is an administrative URL; a fresh
database is created for each row and dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
from tests.fakes.llm_server import FakeLLMServer, Reply, ToolCall

from bench import turns
from bench.load import ChatRun, Watch

SYSTEMS = (
    "bare", "inproc-sqlite", "inproc-postgres", "served-sqlite", "served-postgres", "served-postgres-w2",
    "langgraph-inproc", "langgraph-server",
)
# The first user message of a run's chats says which conversation the scripted server plays.
GO, FIXED = "go", "fixed"
REPO = Path(__file__).resolve().parent.parent


# --- the scripted model and the MCP server, each in its own process -----------------------------


@dataclass(frozen=True)
class Conversation(turns.Script):
    """bench.turns' conversation with the tool's name and arguments of the served systems: the
    MCP test server's `echo(text)`. The arguments stream in as many events as turns.py's, so the
    events per chat are the same. A chat whose first message is `fixed` gets one step of one
    token instead (turns.py's K = 1 run)."""

    tool: str = "echo"

    def reply(self, step: int) -> Reply:
        text = ("lorem ipsum dolor sit amet " * (self.text_chars // 27 + 1))[: self.text_chars]
        if step < self.k - 1:
            return Reply(text=text, tool_calls=[ToolCall(f"call_{step}", self.tool, {"text": f"echo-{step}"})])
        return Reply(text=text)

    def respond(self, body: dict[str, Any]) -> Reply:
        if _first_user_text(body) == FIXED:
            return Reply(text="lore")
        return super().respond(body)


@dataclass(frozen=True)
class Request:
    """What the scripted server's log keeps of one request: enough to tell that two systems made
    the same calls."""

    first_user: str
    stream: bool
    tools: tuple[str, ...]
    tool_results: tuple[str, ...]


def _first_user_text(body: dict[str, Any]) -> str:
    for m in body.get("messages") or ():
        if m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, str):
                return content
            return "".join(p.get("text", "") for p in content or () if isinstance(p, dict))
    return ""


def _logged(body: dict[str, Any]) -> Request:
    results = []
    for m in body.get("messages") or ():
        if m.get("role") == "tool":
            content = m.get("content")
            results.append(content if isinstance(content, str) else json.dumps(content))
    tools = tuple(t.get("function", {}).get("name", "") for t in body.get("tools") or ())
    return Request(_first_user_text(body), bool(body.get("stream")), tools, tuple(results))


def _serve_llm(script: Conversation, token_delay: float, conn: Connection) -> None:
    log: list[Request] = []

    def respond(body: dict[str, Any]) -> Reply:
        log.append(_logged(body))
        return script.respond(body)

    async def main() -> None:
        async with FakeLLMServer(token_delay=token_delay, responder=respond, models=("bench-model",)) as server:
            conn.send(server.openai_base_url)
            loop = asyncio.get_running_loop()
            while (command := await loop.run_in_executor(None, conn.recv)) != "stop":
                if command == "log":
                    conn.send(list(log))
                log.clear()
                # The server keeps every body for tests; nothing here reads them.
                server.requests.clear()

    asyncio.run(main())


def _serve_mcp(conn: Connection) -> None:
    import logging

    import uvicorn
    from tests.mcp.mcp_test_servers import ServerState, build_server

    # The SDK logs each session's start and end at INFO, into the table's output.
    logging.getLogger("mcp").setLevel(logging.WARNING)

    async def main() -> None:
        state = ServerState()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(build_server(state).streamable_http_app(), log_level="warning", lifespan="on")
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        conn.send(f"http://127.0.0.1:{sock.getsockname()[1]}/mcp")
        loop = asyncio.get_running_loop()
        while (command := await loop.run_in_executor(None, conn.recv)) != "stop":
            if command == "calls":
                conn.send(state.calls.count("echo"))
            state.calls.clear()
        server.should_exit = True
        await serving

    asyncio.run(main())


class Child:
    """A spawned process answering commands on a pipe (`stop` ends it); its first message is its URL."""

    def __init__(self, target: Callable[..., None], *args: Any) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=target, args=(*args, child), daemon=True)

    def __enter__(self) -> Child:
        self._proc.start()
        self.url = str(self._conn.recv())
        return self

    def ask(self, command: str) -> Any:
        self._conn.send(command)
        return self._conn.recv()

    def reset(self) -> None:
        self._conn.send("reset")

    def __exit__(self, *exc: object) -> None:
        self._conn.send("stop")
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()


def check_calls(log: list[Request], n: int, k: int, tool: str) -> str:
    """'ok', or what differs from N chats of K steps each making bench.turns' calls."""
    problems: list[str] = []
    if others := [r for r in log if r.first_user != GO or not r.stream]:
        problems.append(f"{len(others)} other requests ({Counter((r.first_user[:20], r.stream) for r in others).most_common(3)})")
    go = [r for r in log if r.first_user == GO and r.stream]
    steps = Counter(len(r.tool_results) for r in go)
    if steps != Counter({i: n for i in range(k)}):
        problems.append(f"requests by step {dict(sorted(steps.items()))}, expected {n} for each of 0..{k - 1}")
    if missing := sum(1 for r in go if tool not in r.tools):
        problems.append(f"{missing} requests without the tool {tool}")
    if wrong := sum(1 for r in go if any(f"echo-{i}" not in result for i, result in enumerate(r.tool_results))):
        problems.append(f"{wrong} requests without their tool results")
    return "; ".join(problems) or "ok"


# --- measuring processes from /proc ---------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields from the state on (field 3), or None if the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _pids() -> Iterator[int]:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            yield int(entry.name)


def tree(root: int) -> list[int]:
    """The process and all its descendants alive now (`chatd serve --workers 2` is three)."""
    children: dict[int, list[int]] = {}
    for pid in _pids():
        if (fields := _stat(pid)) is not None:
            children.setdefault(int(fields[1]), []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def tree_cpu(root: int) -> tuple[float, float]:
    """User and system CPU seconds of the tree: the live processes' own, and what the root's
    children that ended used (cutime, cstime)."""
    user = system = 0
    for pid in tree(root):
        if (fields := _stat(pid)) is not None:
            user += int(fields[11]) + (int(fields[13]) if pid == root else 0)
            system += int(fields[12]) + (int(fields[14]) if pid == root else 0)
    return user / TICK, system / TICK


def tree_peak_rss_mb(root: int) -> float:
    total = 0
    for pid in tree(root):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
    return total / 1024


class Backends:
    """CPU of the PostgreSQL backends connected to one database, sampled from /proc: a backend's
    process title names its database (`postgres: 15/main: postgres <db> 127.0.0.1(port) idle`).
    A backend that ends between two samples loses what it used since the last one."""

    def __init__(self, database: str) -> None:
        self._mark = f" {database} ".encode()
        self._base: dict[int, float] = {}
        self._last: dict[int, float] = {}

    def _sample(self) -> dict[int, float]:
        found = {}
        for pid in _pids():
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if title.startswith(b"postgres: ") and self._mark in title and (fields := _stat(pid)) is not None:
                found[pid] = (int(fields[11]) + int(fields[12])) / TICK
        return found

    @contextlib.asynccontextmanager
    async def measure(self) -> Any:
        """Sample every 0.25 s while the block runs; `cpu` is what the backends used in it."""
        self._base = self._sample()
        self._last = dict(self._base)

        async def sampling() -> None:
            while True:
                await asyncio.sleep(0.25)
                self._last.update(self._sample())

        task = asyncio.create_task(sampling(), name="pg-backend-sampler")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self._last.update(self._sample())

    @property
    def cpu(self) -> float:
        return sum(cpu - self._base.get(pid, 0.0) for pid, cpu in self._last.items())


# --- a row's figures ------------------------------------------------------------------------------


@dataclass
class Row:
    system: str
    db: str
    n: int
    wall: float
    cpu: float
    events: int
    failed: int
    rss_mb: float
    fixed_cpu: float | None = None  # CPU of the N one-token chats
    pg_cpu: float | None = None
    idle_ms_per_s: tuple[float, float | None] | None = None  # the server's, its backends'
    calls: str = "-"  # the request log's verdict (served rows)
    notes: list[str] = field(default_factory=list)


@dataclass
class Run:
    """One measured run against a served system."""

    wall: float
    cpu: float
    system_cpu: float  # of `cpu`, in the kernel (sockets, epoll, ...)
    failed: int
    pg_cpu: float | None


@contextlib.asynccontextmanager
async def profiled(pid: int, out: Path | None) -> Any:
    """py-spy (`--gil`, raw collapsed stacks) on the server while the block runs, if asked
    (`--profile DIR`; run with `uv run --with py-spy`). It slows the server: figures of a profiled
    run are not comparable."""
    if out is None:
        yield
        return
    spy = await asyncio.create_subprocess_exec(
        "py-spy", "record", "--gil", "--format", "raw", "--rate", "100", "-o", str(out), "-p", str(pid),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    await asyncio.sleep(1)  # attaching takes a moment; nothing runs yet
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        await asyncio.wait_for(spy.wait(), 30)


async def measured(pid: int, backends: Backends | None, run: Callable[[], Awaitable[int]], profile: Path | None = None) -> Run:
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(profiled(pid, profile))
        user0, system0 = tree_cpu(pid)
        start = time.perf_counter()
        if backends is not None:
            await stack.enter_async_context(backends.measure())
        failed = await run()
        wall = time.perf_counter() - start
        user, system = tree_cpu(pid)
    return Run(wall, user - user0 + system - system0, system - system0, failed, backends.cpu if backends is not None else None)


async def idle(pid: int, backends: Backends | None, seconds: float = 5.0) -> tuple[float, float | None]:
    """The server's and its backends' CPU per second, in ms, while nothing happens."""
    run = await measured(pid, backends, lambda: asyncio.sleep(seconds, result=0))
    return run.cpu / run.wall * 1000, None if run.pg_cpu is None else run.pg_cpu / run.wall * 1000


def _profile(a: argparse.Namespace, phase: str) -> Path | None:
    return Path(a.profile) / f"{a.one}-{a.n}-{phase}.txt" if a.profile else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


async def until_up(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    async with httpx.AsyncClient() as client:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"the server exited ({proc.returncode}):\n{tail(log)}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url, timeout=2)).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise SystemExit(f"the server did not answer {url} within {timeout:g} s:\n{tail(log)}")


@contextlib.contextmanager
def server_process(cmd: list[str], env: dict[str, str], cwd: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        # Its own session, so that a server which ignores SIGTERM can be killed with its children.
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def _client(base_url: str, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    # Every chat's stream holds a connection for the whole run.
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    return httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits, timeout=httpx.Timeout(60.0, read=None))


async def _ok(response: Awaitable[httpx.Response]) -> Any:
    r = await response
    if r.status_code >= 400:
        raise SystemExit(f"{r.request.method} {r.request.url.path}: HTTP {r.status_code} {r.text[:300]}")
    return r.json()


# --- chatd serve ----------------------------------------------------------------------------------


async def _chatd_setup(base_url: str, token: str, llm_url: str, mcp_url: str) -> tuple[str, str]:
    """What an admin does once: the provider, the default model, the MCP server, a member.
    Returns the member's token and the MCP server's id."""
    async with _client(base_url, token) as admin:
        await _ok(admin.post("/api/v1/providers", json={"provider": "openai-compatible", "base_url": llm_url, "api_key": "sk-bench"}))
        await _ok(admin.post("/api/v1/model-configs", json={
            "provider": "openai-compatible", "model": "bench-model", "display_name": "Bench model", "context_limit": 100_000,
            "is_default": True, "pricing": {"input": 1_000_000, "output": 2_000_000},
        }))
        server = await _ok(admin.post("/api/v1/mcp-servers", json={"slug": "bench", "display_name": "bench", "url": mcp_url, "enabled": True}))
        user = await _ok(admin.post("/api/v1/users", json={"username": "bench-member", "role": "member"}))
        member = await _ok(admin.post(f"/api/v1/users/{user['id']}/tokens", json={"name": "bench"}))
    return str(member["token"]), str(server["id"])


async def _chatd_chats(api: httpx.AsyncClient, watch: Watch, n: int, text: str, mcp_id: str, timeout: float) -> int:
    """N chats created at once, each followed on its stream (as an open page reads it) until the
    watch says it is idle again. Returns how many did not end `waiting`."""

    async def follow(chat_id: str) -> None:
        async with api.stream("GET", f"/api/v1/chats/{chat_id}/stream", headers={"Accept": "text/event-stream"}) as r:
            async for _ in r.aiter_lines():
                pass

    async def one(i: int) -> bool:
        c = ChatRun(i)
        started = time.monotonic()
        r = await api.post("/api/v1/chats", json={"content": text, "mcp_server_ids": [mcp_id]})
        if r.status_code != 201:
            print(f"  create: HTTP {r.status_code} {r.text[:200]}", file=sys.stderr)
            return False
        c.chat_id = r.json()["id"]
        stream = asyncio.create_task(follow(c.chat_id), name=f"stream-{i}")
        try:
            async with asyncio.timeout(timeout):
                await watch.until_done(c, started, started)
        except TimeoutError:
            c.error = "timeout"
        finally:
            stream.cancel()
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                await stream
        if c.error:
            print(f"  chat {c.chat_id}: {c.error}", file=sys.stderr)
        return c.error is None

    done = await asyncio.gather(*(one(i) for i in range(n)))
    return sum(1 for ok in done if not ok)


async def run_chatd_served(db: str, workers: int, n: int, a: argparse.Namespace) -> Row:
    script = Conversation(a.k, a.text_chars, tool="bench__echo")
    system = "served" if workers == 1 else f"served --workers {workers}"
    chatd = Path(sys.executable).with_name("chatd")
    with tempfile.TemporaryDirectory(prefix="chatd-served-") as tmp, Child(_serve_llm, script, a.token_delay) as llm, Child(_serve_mcp) as mcp:
        data = Path(tmp)
        port = free_port()
        env = {
            **os.environ, "CHATD_DATA_DIR": str(data), "CHATD_HOST": "127.0.0.1", "CHATD_PORT": str(port),
            "CHATD_GENERATE_TITLES": "false", "CHATD_ASK_USER_QUESTION": "false",
        }
        name = f"chatd_served_{uuid.uuid4().hex[:12]}"
        backends = None
        if db == "postgres":
            await turns._pg_admin(a.database_url, f'CREATE DATABASE "{name}"')
            server_url = a.database_url.replace("postgresql+asyncpg://", "postgresql://", 1).rsplit("/", 1)[0]
            env["CHATD_DATABASE_URL"] = f"{server_url}/{name}"
            backends = Backends(name)
        cmd = [str(chatd), "serve"] + (["--workers", str(workers)] if workers > 1 else [])
        base = f"http://127.0.0.1:{port}"
        try:
            with server_process(cmd, env, data, data / "serve.log") as proc:
                await until_up(f"{base}/healthz", proc, data / "serve.log")
                admin_token = (data / "admin-token").read_text().strip()
                token, mcp_id = await _chatd_setup(base, admin_token, llm.url, mcp.url)
                async with _client(base, token) as api:
                    watch = Watch()
                    watching = asyncio.create_task(watch.run(api), name="watch")
                    try:
                        await asyncio.wait_for(watch.connected.wait(), 30)
                        # Not measured: the first turn's imports and connections.
                        if await _chatd_chats(api, watch, 1, GO, mcp_id, a.timeout):
                            raise SystemExit(f"the warm-up chat failed:\n{tail(data / 'serve.log')}")
                        llm.reset()
                        mcp.reset()
                        run = await measured(proc.pid, backends, lambda: _chatd_chats(api, watch, n, GO, mcp_id, a.timeout), _profile(a, "run"))
                        calls = check_calls(llm.ask("log"), n, a.k, script.tool)
                        if (tool_calls := mcp.ask("calls")) != n * (a.k - 1):
                            calls = f"{calls}; MCP echo calls {tool_calls}, expected {n * (a.k - 1)}".removeprefix("ok; ")
                        fixed = None
                        if not a.no_fixed:
                            fixed = await measured(proc.pid, backends, lambda: _chatd_chats(api, watch, n, FIXED, mcp_id, a.timeout), _profile(a, "fixed"))
                        idle_ms = await idle(proc.pid, backends)
                    finally:
                        watching.cancel()
                        with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                            await watching
                rss = tree_peak_rss_mb(proc.pid)
        finally:
            if db == "postgres":
                await turns._pg_admin(a.database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return Row(
        system, db, n, run.wall, run.cpu, n * script.events(), run.failed, rss, fixed.cpu if fixed else None, run.pg_cpu, idle_ms, calls,
        notes=[f"system CPU {run.system_cpu / run.cpu:.0%}"] + ([f"{fixed.failed} one-token chats failed"] if fixed and fixed.failed else []),
    )


# --- LangGraph Server -----------------------------------------------------------------------------


async def _langgraph_runs(api: httpx.AsyncClient, n: int, text: str) -> tuple[list[str], int]:
    """N threads, each with one run streamed to its end. Returns the threads and the chunks seen."""

    async def one() -> tuple[str, int]:
        thread = (await _ok(api.post("/threads", json={})))["thread_id"]
        body = {"assistant_id": "agent", "input": {"messages": [{"role": "user", "content": text}]}, "stream_mode": ["messages-tuple"]}
        chunks = 0
        async with api.stream("POST", f"/threads/{thread}/runs/stream", json=body) as r:
            r.raise_for_status()
            async for line in r.aiter_lines():
                chunks += line.startswith("data:")
        return str(thread), chunks

    done = await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
    threads = [d[0] for d in done if not isinstance(d, BaseException)]
    for d in done:
        if isinstance(d, BaseException):
            print(f"  a run failed: {d!r}", file=sys.stderr)
    return threads, sum(d[1] for d in done if not isinstance(d, BaseException))


async def _langgraph_failed(api: httpx.AsyncClient, threads: list[str], n: int) -> int:
    """Runs that did not end `success` (a lost stream counts as failed too)."""
    statuses: Counter[str] = Counter()
    for thread in threads:
        runs = await _ok(api.get(f"/threads/{thread}/runs"))
        statuses.update(r["status"] for r in runs)
    failed = n - statuses.get("success", 0)
    if failed:
        print(f"  {failed} of {n} runs did not succeed: {dict(statuses)}", file=sys.stderr)
    return failed


async def run_langgraph_server(n: int, a: argparse.Namespace) -> Row:
    langgraph = shutil.which("langgraph", path=str(Path(sys.executable).parent)) or shutil.which("langgraph")
    if langgraph is None:
        raise SystemExit("langgraph-cli is not installed: run with `uv run --frozen --with 'langgraph-cli[inmem]' --with langchain-openai ...`")
    script = Conversation(a.k, a.text_chars, tool="echo")
    with tempfile.TemporaryDirectory(prefix="langgraph-served-") as tmp, Child(_serve_llm, script, a.token_delay) as llm:
        cwd = Path(tmp)
        config = {"dependencies": [str(REPO)], "graphs": {"agent": f"{REPO / 'bench' / 'langgraph_graph.py'}:graph"}}
        (cwd / "langgraph.json").write_text(json.dumps(config))
        port = free_port()
        env = {**os.environ, "BENCH_LLM_URL": llm.url, "LANGSMITH_TRACING": "false", "LANGCHAIN_TRACING_V2": "false"}
        cmd = [langgraph, "dev", "--no-browser", "--no-reload", "--port", str(port), "--n-jobs-per-worker", str(max(n, 10)), "--config", str(cwd / "langgraph.json")]
        base = f"http://127.0.0.1:{port}"
        with server_process(cmd, env, cwd, cwd / "server.log") as proc:
            await until_up(f"{base}/ok", proc, cwd / "server.log")
            async with _client(base) as api:
                threads, _ = await _langgraph_runs(api, 1, GO)
                if await _langgraph_failed(api, threads, 1):
                    raise SystemExit(f"the warm-up run failed:\n{tail(cwd / 'server.log')}")
                llm.reset()
                notes: list[str] = []
                followed: dict[str, tuple[list[str], int]] = {}

                async def runs(text: str) -> int:
                    followed[text] = await _langgraph_runs(api, n, text)
                    return 0

                run = await measured(proc.pid, None, lambda: runs(GO), _profile(a, "run"))
                failed = await _langgraph_failed(api, followed[GO][0], n)
                calls = check_calls(llm.ask("log"), n, a.k, script.tool)
                fixed = None
                if not a.no_fixed:
                    fixed = await measured(proc.pid, None, lambda: runs(FIXED), _profile(a, "fixed"))
                    if fixed_failed := await _langgraph_failed(api, followed[FIXED][0], n):
                        notes.append(f"{fixed_failed} one-token runs failed")
                idle_ms = await idle(proc.pid, None)
            rss = tree_peak_rss_mb(proc.pid)
    notes += [f"system CPU {run.system_cpu / run.cpu:.0%}", f"{followed[GO][1] / n:.0f} stream chunks per run"]
    return Row("langgraph server", "memory", n, run.wall, run.cpu, n * script.events(), failed, rss, fixed.cpu if fixed else None, None, idle_ms, calls, notes)


# --- the side-by-side table -----------------------------------------------------------------------


def _turns_row(system: str, db: str, n: int, a: argparse.Namespace) -> Row | None:
    """bench/turns.py's row (its own process), with its fixed run unless --no-fixed."""
    ns = argparse.Namespace(k=a.k, token_delay=a.token_delay, text_chars=a.text_chars, database_url=a.database_url, no_fixed=a.no_fixed, baseline_src=None)
    runs = turns._child(system, db, n, ns)
    if runs is None:
        return None
    r, f = runs
    name = "bare" if system == "bare" else "in-process"
    return Row(name, db, n, r.wall, r.cpu, r.events, r.failed, r.rss_mb, f.cpu if f else None)


def _langgraph_inproc_row(n: int, a: argparse.Namespace) -> Row | None:
    cmd = [sys.executable, "-m", "bench.langgraph_turns", "--one", "langgraph", "--n", str(n), "--k", str(a.k),
           "--token-delay", str(a.token_delay), "--text-chars", str(a.text_chars)]
    out = subprocess.run(cmd, check=False, stdout=subprocess.PIPE, text=True)
    if out.returncode != 0:
        print(f"  langgraph in-process N={n} failed (exit {out.returncode})", file=sys.stderr)
        return None
    r = json.loads(out.stdout.strip().splitlines()[-1])
    events = n * turns.Script(a.k, a.text_chars).events()
    return Row("langgraph in-process", "memory", n, r["wall"], r["cpu"], events, r["failed"], r["rss_mb"])


def _served_row(system: str, n: int, a: argparse.Namespace) -> Row | None:
    cmd = [sys.executable, "-m", "bench.served", "--one", system, "--n", str(n), "--k", str(a.k), "--token-delay", str(a.token_delay),
           "--text-chars", str(a.text_chars), "--database-url", a.database_url, "--timeout", str(a.timeout)]
    if a.no_fixed:
        cmd.append("--no-fixed")
    if a.profile:
        cmd += ["--profile", a.profile]
    out = subprocess.run(cmd, check=False, stdout=subprocess.PIPE, text=True)
    if out.returncode != 0:
        print(f"  {system} N={n} failed (exit {out.returncode})", file=sys.stderr)
        return None
    return Row(**json.loads(out.stdout.strip().splitlines()[-1]))


def row(system: str, n: int, a: argparse.Namespace) -> Row | None:
    if system == "bare":
        return _turns_row("bare", "-", n, a)
    if system.startswith("inproc-"):
        return _turns_row("chatd", system.removeprefix("inproc-"), n, a)
    if system == "langgraph-inproc":
        return _langgraph_inproc_row(n, a)
    return _served_row(system, n, a)


async def _one(system: str, n: int, a: argparse.Namespace) -> Row:
    if system == "langgraph-server":
        return await run_langgraph_server(n, a)
    db, _, workers = system.removeprefix("served-").partition("-w")
    return await run_chatd_served(db, int(workers or 1), n, a)


HEADER = ("| system | db | N | wall s | ratio | CPU µs/event | fixed ms/turn | PG µs/event | idle ms/s (server + PG) | peak RSS MB | failed | calls |\n"
          "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")


def markdown(r: Row, bare: Row | None) -> str:
    def opt(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    per_event = r.cpu / r.events * 1e6 if r.events else None
    cells = [
        r.system, r.db, str(r.n), f"{r.wall:.2f}", opt(r.wall / bare.wall if bare else None, ".2f"), opt(per_event, ".0f"),
        opt(r.fixed_cpu / r.n * 1000 if r.fixed_cpu is not None else None, ".1f"),
        opt(r.pg_cpu / r.events * 1e6 if r.pg_cpu is not None and r.events else None, ".0f"),
        "-" if r.idle_ms_per_s is None else " + ".join(opt(x, ".0f") for x in r.idle_ms_per_s if x is not None), f"{r.rss_mb:.0f}", str(r.failed), r.calls,
    ]
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.served", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", default="10,100,1000", help="concurrent chats, comma-separated (default 10,100,1000)")
    p.add_argument("--systems", default=",".join(SYSTEMS), help=f"rows, comma-separated, from: {', '.join(SYSTEMS)}")
    p.add_argument("--k", type=int, default=5, help="model steps per chat (the first K-1 call the tool)")
    p.add_argument("--token-delay", type=float, default=0.02, help="seconds before each streamed event (default 20 ms)")
    p.add_argument("--text-chars", type=int, default=100, help="text per step, streamed 4 characters per event")
    p.add_argument("--no-fixed", action="store_true", help="skip the one-token runs (fixed CPU per turn)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds a chat may take")
    p.add_argument("--database-url", default=os.environ.get("CHATD_BENCH_DATABASE_URL", turns.DEFAULT_PG))
    p.add_argument("--profile", metavar="DIR", help="py-spy each served run into DIR/<system>-<N>-<run|fixed>.txt (needs `--with py-spy`)")
    p.add_argument("--one", choices=["served-sqlite", "served-postgres", "served-postgres-w2", "langgraph-server"], help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.profile:
        Path(a.profile).mkdir(parents=True, exist_ok=True)
    if a.one:
        print(json.dumps(asdict(asyncio.run(_one(a.one, int(a.n), a)))), flush=True)
        return
    systems = [s.strip() for s in a.systems.split(",") if s.strip()]
    if unknown := set(systems) - set(SYSTEMS):
        p.error(f"unknown systems: {', '.join(sorted(unknown))}")
    if any(s.startswith("langgraph") for s in systems) and shutil.which("langgraph", path=str(Path(sys.executable).parent)) is None:
        print("LangGraph rows left out: add `--with 'langgraph-cli[inmem]' --with langchain-openai` to `uv run`", file=sys.stderr)
        systems = [s for s in systems if not s.startswith("langgraph")]
    script = turns.Script(a.k, a.text_chars)
    print(f"K = {a.k}, {script.events()} stream events per chat, {a.token_delay * 1000:g} ms each "
          f"(model-only {script.events() * a.token_delay:.2f} s per chat); load average {os.getloadavg()[0]:.1f}", flush=True)
    table: list[str] = []
    for n in (int(x) for x in a.n.split(",")):
        bare: Row | None = None
        for system in systems:
            r = row(system, n, a)
            if r is None:
                continue
            bare = r if system == "bare" else bare
            if r.calls not in ("ok", "-"):
                print(f"  {r.system} {r.db} N={n}: NOT THE SAME CALLS: {r.calls}", file=sys.stderr)
            table.append(markdown(r, bare))
            print(f"  {table[-1]}  {'; '.join(r.notes)}  (load average {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
    print(HEADER)
    print("\n".join(table), flush=True)


if __name__ == "__main__":
    main()
