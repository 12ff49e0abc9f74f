"""Real workspace agents for the tests: a child process per test, real files in tmp_path."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from chatd.workspace.client import AgentClient


@dataclass
class RunningAgent:
    url: str
    token: str
    directory: Path
    proc: asyncio.subprocess.Process
    client: AgentClient


@asynccontextmanager
async def start_agent(
    directory: Path, *, allow_outside: bool = False, env: dict[str, str] | None = None
) -> AsyncIterator[RunningAgent]:
    """`python -m chatd.cli workspace-agent` on a free loopback port, as the provisioner runs it."""
    os.makedirs(directory, exist_ok=True)
    token = secrets.token_urlsafe(32)
    token_file = directory.parent / f".token-{secrets.token_hex(4)}"
    token_file.write_text(token)
    token_file.chmod(0o600)
    argv = [sys.executable, "-m", "chatd.cli", "workspace-agent", "--dir", str(directory), "--token-file", str(token_file)]
    if allow_outside:
        argv.append("--allow-outside")
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    url = json.loads(line)["url"]
    client = AgentClient(url, token)
    try:
        yield RunningAgent(url, token, directory, proc, client)
    finally:
        await client.aclose()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[RunningAgent]:
    async with start_agent(tmp_path / "ws") as a:
        yield a


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


async def wait_until_dead(pid: int, timeout: float = 10.0) -> bool:
    """Wait for a process that is not our child to exit: a pidfd becomes readable when it does."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[None] = loop.create_future()
    loop.add_reader(fd, lambda: exited.done() or exited.set_result(None))
    try:
        await asyncio.wait_for(exited, timeout)
        return True
    except TimeoutError:
        return not alive(pid)
    finally:
        loop.remove_reader(fd)
        os.close(fd)
