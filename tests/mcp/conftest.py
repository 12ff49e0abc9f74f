from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mcp_test_servers import RunningServer, ServerState, build_server, serve

from chatd.domain.mcp import McpServerConfig
from chatd.domain.parts import Part
from chatd.domain.tools import ToolContext

HERE = Path(__file__).parent
NODE_DIR = HERE / "node"


def make_config(url: str = "", slug: str = "test", **overrides: Any) -> McpServerConfig:
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "slug": slug,
        "display_name": slug.title(),
        "url": url,
    }
    values.update(overrides)
    return McpServerConfig(**values)


@dataclass
class FileStore:
    """An in-memory stand-in for the files table."""

    files: dict[str, tuple[bytes, str, str]] = field(default_factory=dict)

    async def __call__(self, data: bytes, media_type: str, name: str) -> str:
        file_id = str(uuid.uuid4())
        self.files[file_id] = (data, media_type, name)
        return file_id


@dataclass
class Emitted:
    parts: list[Part] = field(default_factory=list)

    async def __call__(self, part: Part) -> None:
        self.parts.append(part)


def make_ctx(emit: Emitted | None = None) -> ToolContext:
    return ToolContext(
        chat_id=uuid.uuid4(), owner_id=uuid.uuid4(), tool_call_id="call-1", emit=emit
    )


@dataclass
class PyServer:
    url: str
    state: ServerState
    running: RunningServer


@pytest.fixture
def py_server() -> Iterator[PyServer]:
    """The Python SDK's MCPServer over streamable HTTP on 127.0.0.1."""
    state = ServerState()
    srv = build_server(state)
    with serve(srv.streamable_http_app()) as running:
        yield PyServer(running.url, state, running)


@pytest.fixture
def py_sse_server() -> Iterator[PyServer]:
    state = ServerState()
    srv = build_server(state)
    with serve(srv.sse_app(), path="/sse") as running:
        yield PyServer(running.url, state, running)


@pytest.fixture
def file_store() -> FileStore:
    return FileStore()


@pytest.fixture
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail the test if it leaves asyncio tasks behind (checked after the test body)."""
    before = set(asyncio.all_tasks())
    yield
    left = {
        t for t in asyncio.all_tasks() - before if not t.done() and t is not asyncio.current_task()
    }
    assert not left, f"tasks left behind: {[t.get_name() for t in left]}"


# -- the npm reference server ---------------------------------------------------------------


@pytest.fixture(scope="session")
def everything_entry() -> Path:
    """node_modules for @modelcontextprotocol/server-everything, installed from the lock file."""
    node = shutil.which("node")
    npm = shutil.which("npm")
    if node is None or npm is None:
        pytest.fail(
            "node/npm not installed: the @modelcontextprotocol/server-everything tests need Node 20+"
        )
    entry = NODE_DIR / "node_modules/@modelcontextprotocol/server-everything/dist/index.js"
    if not entry.exists():
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, timeout=300
        )
    return entry


@dataclass
class NodeServer:
    url: str
    process: subprocess.Popen[bytes]


def _node_env() -> dict[str, str]:
    env = dict(os.environ)
    # The reference server listens on every interface; the preload pins it to 127.0.0.1 and
    # reports the port the kernel gave it (PORT=0).
    env["NODE_OPTIONS"] = f"--require {NODE_DIR / 'loopback.cjs'}"
    env["PORT"] = "0"
    return env


@pytest.fixture(scope="session")
def start_everything(everything_entry: Path) -> Iterator[Callable[[str], NodeServer]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(mode: str) -> NodeServer:
        proc = subprocess.Popen(
            ["node", str(everything_entry), mode],
            cwd=NODE_DIR,
            env=_node_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        started.append(proc)
        assert proc.stderr is not None
        # The preload prints one line when the server listens; readline blocks until then, and
        # a crashed server closes stderr, which ends the loop.
        port = None
        lines: list[bytes] = []
        while port is None:
            line = proc.stderr.readline()
            if not line:
                raise RuntimeError(f"everything server ({mode}) exited: {b''.join(lines)!r}")
            lines.append(line)
            if line.startswith(b"CHATD_LISTENING "):
                host, port_text = line.decode().split()[1:3]
                assert host == "127.0.0.1", host
                port = int(port_text)
        # Keep draining stderr so the server never blocks on a full pipe.
        drain = subprocess.Popen(["cat"], stdin=proc.stderr, stdout=subprocess.DEVNULL)
        started.append(drain)
        path = "/mcp" if mode == "streamableHttp" else "/sse"
        return NodeServer(f"http://127.0.0.1:{port}{path}", proc)

    yield start
    for proc in started:
        proc.terminate()
    for proc in started:
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def stdio_python_command() -> tuple[str, list[str]]:
    return sys.executable, [str(HERE / "mcp_test_servers.py")]
