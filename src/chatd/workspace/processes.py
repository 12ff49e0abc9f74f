"""The workspace agent's processes: `sh -c` commands in their own process groups, their output
kept in memory (head and tail), waited on with a timeout, listed and signalled; the environment
a command gets (non-interactive, scrubbed of chatd's own settings)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatd.workspace.errors import AgentError, bad
from chatd.workspace.files import RunAs, utf8_end, utf8_start

# Commands must never wait for a person: no editors, pagers, credential prompts or colours.
NON_INTERACTIVE_ENV: dict[str, str] = {
    "CHATD_CHAT_AGENT": "true",
    "GIT_EDITOR": "true",
    "GIT_SEQUENCE_EDITOR": "true",
    "EDITOR": "true",
    "VISUAL": "true",
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_ASKPASS": "true",
    "SSH_ASKPASS": "true",
    "PAGER": "cat",
    "GIT_PAGER": "cat",
    "MANPAGER": "cat",
    "LESS": "-FRX",
    "NO_COLOR": "1",
    "TERM": "dumb",
    "CI": "true",
    "DEBIAN_FRONTEND": "noninteractive",
    "PIP_NO_INPUT": "1",
    "NPM_CONFIG_YES": "true",
}

OUTPUT_HEAD = 256 * 1024  # per process: the first bytes are kept...
OUTPUT_TAIL = 1024 * 1024  # ...and the last ones; the middle of a huge output is dropped
MAX_WAIT = 600.0
MAX_FINISHED = 200  # finished processes remembered for process_output/process_list
STOP_GRACE = 3.0  # SIGTERM -> SIGKILL on shutdown

# Variables of the agent's own environment a command inherits. The provisioner already starts the
# agent with a scrubbed environment; this second filter keeps chatd's settings (CHATD_*), keys and
# database URLs out of commands even when the agent is started some other way.
COMMAND_ENV = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "PYTHONPATH")

def command_environment(extra: dict[str, str], *, home: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in COMMAND_ENV or k.startswith("LC_")}
    env.setdefault("PATH", os.defpath)
    if home is not None:
        # The agent's HOME is not the command user's to read or write.
        env["HOME"] = str(home)
        env.pop("USER", None)
        env.pop("LOGNAME", None)
    return {**env, **NON_INTERACTIVE_ENV, **extra}


def forbid_new_privileges() -> bool:
    """`prctl(PR_SET_NO_NEW_PRIVS)`: nothing this process or its children exec can gain privileges
    (setuid binaries, file capabilities). Inherited across fork and exec; Linux only."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(38, 1, 0, 0, 0)) == 0  # PR_SET_NO_NEW_PRIVS
    except (OSError, AttributeError):
        return False


@dataclass
class Process:
    id: str
    command: str
    workdir: str
    background: bool
    proc: asyncio.subprocess.Process
    started_at: float
    head: bytearray = field(default_factory=bytearray)
    tail: bytearray = field(default_factory=bytearray)
    total: int = 0
    exit_code: int | None = None
    ended_at: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def append(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = OUTPUT_HEAD - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            if len(self.tail) > OUTPUT_TAIL:
                del self.tail[: len(self.tail) - OUTPUT_TAIL]

    def render(self, max_bytes: int) -> tuple[str, dict[str, Any] | None]:
        max_bytes = max(1024, min(max_bytes, OUTPUT_HEAD))
        data = bytes(self.head) + bytes(self.tail)
        dropped = self.total - len(data)
        if dropped == 0 and len(data) <= max_bytes:
            return data.decode("utf-8", errors="replace"), None
        # Keep both ends: a command's first lines say what it is doing, its last lines how it ended.
        half = max_bytes // 2
        first = data[: utf8_end(data, half)]
        last = data[utf8_start(data, len(data) - half) :]
        omitted = self.total - len(first) - len(last)
        text = (
            first.decode("utf-8", errors="replace")
            + f"\n\n… [{omitted} bytes of output omitted] …\n\n"
            + last.decode("utf-8", errors="replace")
        )
        note = (
            f"Output truncated: showing the first {len(first)} and the last {len(last)} of {self.total} bytes. "
            "Redirect the output to a file and read it with read_file, or filter it (grep, head, tail)."
        )
        return text, {"original_bytes": self.total, "shown_bytes": len(first) + len(last), "note": note}

    def state(self, max_bytes: int | None = None, *, with_output: bool = True) -> dict[str, Any]:
        output, truncated = self.render(max_bytes or OUTPUT_HEAD) if with_output else ("", None)
        end = self.ended_at if self.ended_at is not None else time.time()
        return {
            "id": self.id,
            "command": self.command,
            "workdir": self.workdir,
            "pid": self.proc.pid,
            "running": self.exit_code is None,
            "exit_code": self.exit_code,
            "output": output,
            "truncated": truncated,
            "background": self.background,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "wall_duration_ms": int((end - self.started_at) * 1000),
        }


class ProcessTable:
    """The agent's processes. Owns a reader and a waiter task per process; `close` ends them all.

    Each command runs in its own process group, so a signal reaches the whole pipeline
    (`sh -c "a | b"`), and the agent can clean up everything it started on shutdown.
    """

    def __init__(self, root: Path, *, run_as: RunAs | None = None) -> None:
        self.root = root
        self.run_as = run_as
        self._procs: dict[str, Process] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self, command: str, workdir: Path, env: dict[str, str], background: bool) -> Process:
        if self._closing:
            raise AgentError(503, "shutting_down", "the agent is shutting down")
        if not command.strip():
            raise bad("command is required")
        if not await asyncio.to_thread(workdir.is_dir):
            raise bad(f"working directory does not exist: {workdir}")
        run_as = self.run_as
        full_env = command_environment(env, home=self.root if run_as is not None else None)
        # Without a sandbox, a command under chatd's own uid could read the server's files and
        # /proc/<pid>/environ; as root, chatd runs it under the workspace's own unprivileged uid
        # (cwd is entered before the uid changes). close_fds (the default) keeps the agent's
        # sockets and files out of it.
        identity: dict[str, Any] = (
            {"user": run_as.uid, "group": run_as.gid, "extra_groups": []} if run_as is not None else {}
        )
        try:
            proc = await asyncio.create_subprocess_exec(
                "sh",
                "-c",
                command,
                cwd=workdir,
                env=full_env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                process_group=0,
                close_fds=True,
                **identity,
            )
        except FileNotFoundError:
            raise bad(
                "`sh` was not found in this workspace; install a POSIX shell (e.g. busybox) to run commands",
                "no_shell",
            ) from None
        except OSError as exc:
            raise bad(f"cannot start the command: {exc.strerror}") from exc
        p = Process(
            id=f"proc-{secrets.token_hex(4)}",
            command=command,
            workdir=str(workdir),
            background=background,
            proc=proc,
            started_at=time.time(),
        )
        self._procs[p.id] = p
        self._forget_old()
        self._spawn(self._watch(p), f"process:{p.id}")
        return p

    async def _watch(self, p: Process) -> None:
        assert p.proc.stdout is not None
        stdout = p.proc.stdout

        async def read() -> None:
            while chunk := await stdout.read(65536):
                p.append(chunk)

        reader = asyncio.ensure_future(read())
        reader.set_name(f"process-output:{p.id}")
        try:
            code = await p.proc.wait()
            # The shell is gone, but a child it left behind (`cmd &`) can hold the pipe open for
            # ever: give the rest of the output a moment, then report the exit anyway (the reader
            # keeps collecting in the background until the pipe closes).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(reader), 0.5)
            p.exit_code = 128 - code if code < 0 else code  # killed by signal N -> 128+N, as sh reports it
            p.ended_at = time.time()
            p.done.set()
            await reader
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    def _forget_old(self) -> None:
        finished = [p for p in self._procs.values() if p.exit_code is not None]
        for p in sorted(finished, key=lambda p: p.ended_at or 0)[: max(0, len(finished) - MAX_FINISHED)]:
            del self._procs[p.id]

    def get(self, process_id: str) -> Process:
        p = self._procs.get(process_id)
        if p is None:
            raise AgentError(404, "not_found", f"no process with id {process_id!r}")
        return p

    def list(self) -> list[Process]:
        return sorted(self._procs.values(), key=lambda p: p.started_at)

    @staticmethod
    async def wait(p: Process, timeout: float) -> None:
        if timeout > 0 and not p.done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(p.done.wait(), min(timeout, MAX_WAIT))

    @staticmethod
    def signal(p: Process, sig: str) -> str:
        if p.exit_code is not None:
            return f"process {p.id} has already exited with code {p.exit_code}"
        signum = signal.SIGTERM if sig == "terminate" else signal.SIGKILL
        try:
            os.killpg(p.proc.pid, signum)
        except ProcessLookupError:
            return f"process {p.id} has already exited"
        return f"sent {signal.Signals(signum).name} to process {p.id}"

    async def close(self) -> None:
        """Terminate every running process group, then kill what is left after a grace period."""
        self._closing = True
        running = [p for p in self._procs.values() if p.exit_code is None]
        for p in running:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.proc.pid, signal.SIGTERM)
        if running:
            await asyncio.wait([asyncio.ensure_future(p.done.wait()) for p in running], timeout=STOP_GRACE)
        for p in self._procs.values():
            # Also reaches children a finished shell left behind in its group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.proc.pid, signal.SIGKILL)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
