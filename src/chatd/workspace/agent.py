"""The workspace agent: a small HTTP service that runs inside a workspace and does the work.

`chatd workspace-agent --dir DIR --listen 127.0.0.1:PORT --token-file F` serves, under `/v1`:
reading files by lines, writing files, atomic multi-file search/replace edits, running `sh -c`
processes (output kept in memory, waited on with a timeout, listed, signalled) and reading the
instruction files. Every request needs `Authorization: Bearer <token>`.

What the path checks are for: they keep the *file tools* inside DIR, so a model cannot read or
overwrite files elsewhere by accident or by a prompt injection through a file tool. They are not a
sandbox: `execute` runs arbitrary commands with the agent's rights. Isolation of commands is the
provisioner's job (bubblewrap for `local`). A path is resolved with symlinks followed before the
check; a symlink swapped in between the check and the open (a TOCTOU race) is possible only for a
process that can already run commands. When commands run under another uid than the agent
(`--run-as`), that process would gain the agent's rights, so the file tools also check the file
they opened against what the command user may read (`check_readable_by`).

With port 0 the agent binds a free port; it prints one JSON line `{"url", "pid"}` on stdout once
the socket listens, which is how the provisioner learns the address without a port race.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import os
import platform
import secrets
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

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

DEFAULT_READ_LINES = 2000  # REFERENCE §7.2
MAX_READ_LINES = 10_000
MAX_READ_BYTES = 256 * 1024  # per read_file call; the model paginates with offset
MAX_LINE_CHARS = 2000  # minified files would otherwise fill a whole page with one line
INSTRUCTION_CAP = 64 * 1024  # REFERENCE §12.2
OUTPUT_HEAD = 256 * 1024  # per process: the first bytes are kept...
OUTPUT_TAIL = 1024 * 1024  # ...and the last ones; the middle of a huge output is dropped
MAX_WAIT = 600.0
MAX_FINISHED = 200  # finished processes remembered for process_output/process_list
STOP_GRACE = 3.0  # SIGTERM -> SIGKILL on shutdown
BINARY_SNIFF = 8192

# Variables of the agent's own environment a command inherits. The provisioner already starts the
# agent with a scrubbed environment; this second filter keeps chatd's settings (CHATD_*), keys and
# database URLs out of commands even when the agent is started some other way.
COMMAND_ENV = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "PYTHONPATH")

COMMANDS_DISABLED = (
    "Commands are disabled on this server: no working sandbox (bubblewrap) is available, and running "
    "a chat's commands unsandboxed would let them read the server's data. An admin can install "
    "bubblewrap, or allow unsandboxed commands with CHATD_WORKSPACE_SANDBOX=none. The file tools "
    "(read_file, write_file, edit_files) still work."
)


@dataclass(frozen=True, slots=True)
class RunAs:
    """The unprivileged user and group commands run as (the agent itself stays who it is)."""

    uid: int
    gid: int


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


def give_to(path: Path, owner: RunAs | None) -> None:
    """Files the agent (running as chatd's user) writes belong to the command user, so commands
    can change them too."""
    if owner is not None:
        with contextlib.suppress(OSError):
            os.chown(path, owner.uid, owner.gid, follow_symlinks=False)


class AgentError(Exception):
    """A request the agent refuses; becomes `{"error", "code"}` with an HTTP status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _bad(message: str, code: str = "invalid") -> AgentError:
    return AgentError(400, code, message)


# --- paths ----------------------------------------------------------------------------------------


class Confinement:
    """Resolves request paths against the workspace directory and keeps them inside it."""

    def __init__(self, root: Path, *, allow_outside: bool = False) -> None:
        self.root = Path(os.path.realpath(root))
        self.allow_outside = allow_outside

    def resolve(self, path: str) -> Path:
        if not path or not path.strip():
            raise _bad("path is required")
        if "\0" in path:
            raise _bad("path contains a NUL byte")
        p = Path(path)
        if not p.is_absolute():
            p = self.root / p
        # realpath follows every symlink that exists, so `link -> /etc` and `a/../../x` both land
        # where they really point before the check.
        real = Path(os.path.realpath(p))
        if not self.allow_outside and not (real == self.root or self.root in real.parents):
            raise AgentError(
                403,
                "outside_workspace",
                f"path {path!r} resolves to {real}, outside the workspace directory {self.root}",
            )
        return real


# --- files ----------------------------------------------------------------------------------------


def _number(n: int, text: str) -> str:
    if len(text) > MAX_LINE_CHARS:
        text = f"{text[:MAX_LINE_CHARS]}… [line truncated: {len(text)} characters]"
    return f"{n:>6}\t{text}"


def check_readable_by(fd: int, owner: RunAs | None, display: str) -> None:
    """With commands under another uid, the file tools (running as chatd's user) read only what
    that uid could read itself: a command could otherwise plant a hard link to, or race a symlink
    towards, a file only chatd may read. Checked on the opened file, so no swap gets past it."""
    if owner is None:
        return
    st = os.fstat(fd)
    if st.st_uid == owner.uid or st.st_mode & 0o004 or (st.st_gid == owner.gid and st.st_mode & 0o040):
        return
    raise AgentError(403, "not_readable", f"{display} is not readable by the workspace's user")


def read_lines(path: Path, display: str, offset: int, limit: int, owner: RunAs | None = None) -> dict[str, Any]:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise AgentError(404, "not_found", f"file not found: {display}") from None
    except OSError as exc:
        raise _bad(f"cannot read {display}: {exc.strerror}") from exc
    if path.is_dir():
        raise _bad(f"{display} is a directory; use execute with `ls` to list it", "is_directory")
    out: list[str] = []
    used = 0
    total = 0
    stopped_at: int | None = None  # first line not returned because of the byte budget
    try:
        with path.open("rb") as f:
            check_readable_by(f.fileno(), owner, display)
            if b"\0" in f.read(BINARY_SNIFF):
                raise _bad(f"{display} looks like a binary file; it cannot be read as text", "binary")
            f.seek(0)
            for raw in f:
                total += 1
                if total < offset or len(out) >= limit or stopped_at is not None:
                    continue
                line = _number(total, raw.decode("utf-8", errors="replace").rstrip("\r\n"))
                if used + len(line) + 1 > MAX_READ_BYTES and out:
                    stopped_at = total
                    continue
                out.append(line)
                used += len(line) + 1
    except OSError as exc:
        raise _bad(f"cannot read {display}: {exc.strerror}") from exc
    if offset > 1 and offset > total:
        raise _bad(f"offset {offset} is past the end of {display} ({total} lines)")
    result: dict[str, Any] = {
        "content": "\n".join(out),
        "file_size": st.st_size,
        "total_lines": total,
        "lines_read": len(out),
    }
    last = offset + len(out) - 1
    if last < total:
        why = f"the {MAX_READ_BYTES // 1024} KiB per-call limit" if stopped_at is not None else "the line limit"
        result["note"] = (
            f"Showing lines {offset}-{last} of {total} ({why}); call read_file with offset={last + 1} to read more."
        )
    return result


def _file_mode(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o644


def _write_temp(path: Path, data: bytes) -> Path:
    """Write `data` next to `path` (same filesystem, so the rename is atomic); return the temp."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".chatd-tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, _file_mode(path))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return Path(tmp)


def _make_parents(path: Path, owner: RunAs | None) -> None:
    missing = [p for p in reversed(path.parents) if not p.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    for p in missing:
        give_to(p, owner)


def write_file(path: Path, display: str, content: str, owner: RunAs | None = None) -> None:
    if path.is_dir():
        raise _bad(f"{display} is a directory", "is_directory")
    try:
        _make_parents(path, owner)
        tmp = _write_temp(path, content.encode("utf-8"))
        give_to(tmp, owner)
        os.replace(tmp, path)
    except OSError as exc:
        raise _bad(f"cannot write {display}: {exc.strerror}") from exc


def _apply(text: str, display: str, index: int, search: str, replace: str) -> str:
    if not search:
        raise _bad(f"edit {index} for {display}: search text is empty", "edit_failed")
    count = text.count(search)
    if count == 0 and "\r\n" in text and "\r\n" not in search:
        # A model writes LF; keep a CRLF file CRLF.
        search, replace = search.replace("\n", "\r\n"), replace.replace("\n", "\r\n")
        count = text.count(search)
    if count == 0:
        raise AgentError(409, "edit_failed", f"edit {index} for {display}: search text not found")
    if count > 1:
        raise AgentError(
            409,
            "edit_failed",
            f"edit {index} for {display}: search text occurs {count} times; include more surrounding lines so it matches once",
        )
    return text.replace(search, replace, 1)


def edit_files(confine: Confinement, files: list[dict[str, Any]], owner: RunAs | None = None) -> None:
    """Apply every edit in memory first; write only if all of them apply (all or nothing)."""
    originals: dict[Path, bytes] = {}
    updated: dict[Path, str] = {}
    order: list[tuple[Path, str]] = []
    for f in files:
        display = f["path"]
        path = confine.resolve(display)
        if path not in updated:
            try:
                with path.open("rb") as fh:
                    check_readable_by(fh.fileno(), owner, display)
                    raw = fh.read()
            except FileNotFoundError:
                raise AgentError(404, "not_found", f"file not found: {display}") from None
            except IsADirectoryError:
                raise _bad(f"{display} is a directory", "is_directory") from None
            except OSError as exc:
                raise _bad(f"cannot read {display}: {exc.strerror}") from exc
            try:
                updated[path] = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise _bad(f"{display} is not UTF-8 text; it cannot be edited", "binary") from None
            originals[path] = raw
            order.append((path, display))
        text = updated[path]
        for i, e in enumerate(f["edits"], start=1):
            text = _apply(text, display, i, e["search"], e["replace"])
        updated[path] = text
    temps: dict[Path, Path] = {}
    try:
        for path, display in order:
            try:
                temps[path] = _write_temp(path, updated[path].encode("utf-8"))
                give_to(temps[path], owner)
            except OSError as exc:
                raise _bad(f"cannot write {display}: {exc.strerror}") from exc
        done: list[Path] = []
        try:
            for path, _ in order:
                os.replace(temps.pop(path), path)
                done.append(path)
        except OSError as exc:
            # A rename failed half-way (rare: the directory changed under us); put back what we changed.
            for path in done:
                with contextlib.suppress(OSError):
                    os.replace(_write_temp(path, originals[path]), path)
            raise _bad(f"edit could not be applied and was rolled back: {exc.strerror}") from exc
    finally:
        for tmp in temps.values():
            with contextlib.suppress(OSError):
                os.unlink(tmp)


# --- processes ------------------------------------------------------------------------------------


def _utf8_end(data: bytes, cut: int) -> int:
    while 0 < cut < len(data) and (data[cut] & 0xC0) == 0x80:
        cut -= 1
    return cut


def _utf8_start(data: bytes, cut: int) -> int:
    while 0 < cut < len(data) and (data[cut] & 0xC0) == 0x80:
        cut += 1
    return cut


@dataclass
class _Process:
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
        first = data[: _utf8_end(data, half)]
        last = data[_utf8_start(data, len(data) - half) :]
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
        self._procs: dict[str, _Process] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self, command: str, workdir: Path, env: dict[str, str], background: bool) -> _Process:
        if self._closing:
            raise AgentError(503, "shutting_down", "the agent is shutting down")
        if not command.strip():
            raise _bad("command is required")
        if not await asyncio.to_thread(workdir.is_dir):
            raise _bad(f"working directory does not exist: {workdir}")
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
            raise _bad(
                "`sh` was not found in this workspace; install a POSIX shell (e.g. busybox) to run commands",
                "no_shell",
            ) from None
        except OSError as exc:
            raise _bad(f"cannot start the command: {exc.strerror}") from exc
        p = _Process(
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

    async def _watch(self, p: _Process) -> None:
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

    def get(self, process_id: str) -> _Process:
        p = self._procs.get(process_id)
        if p is None:
            raise AgentError(404, "not_found", f"no process with id {process_id!r}")
        return p

    def list(self) -> list[_Process]:
        return sorted(self._procs.values(), key=lambda p: p.started_at)

    @staticmethod
    async def wait(p: _Process, timeout: float) -> None:
        if timeout > 0 and not p.done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(p.done.wait(), min(timeout, MAX_WAIT))

    @staticmethod
    def signal(p: _Process, sig: str) -> str:
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


# --- instructions ---------------------------------------------------------------------------------


def os_description() -> str:
    name = f"{platform.system()} {platform.release()}".strip()
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return f"{line.split('=', 1)[1].strip(chr(34))} ({name}, {platform.machine()})"
    return f"{name} ({platform.machine()})"


class InstructionFiles:
    """`~/.chatd/AGENTS.md` and `<dir>/AGENTS.md`, re-read only when their stat changes, so a
    changed file is seen on the next request and an unchanged one costs one `stat`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[Path, tuple[tuple[int, int, int], dict[str, Any]]] = {}

    def _home_file(self) -> Path | None:
        home = Path(os.path.expanduser("~")) / ".chatd"
        try:
            names = sorted(os.listdir(home))
        except OSError:
            return None
        # Case-insensitive, as the reference matches `agents.md` in the home directory.
        return next((home / n for n in names if n.lower() == "agents.md"), None)

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            st = path.stat()
        except OSError:
            return None
        if not path.is_file():
            return None
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        cached = self._cache.get(path)
        if cached and cached[0] == key:
            return cached[1]
        try:
            with path.open("rb") as f:
                raw = f.read(INSTRUCTION_CAP + 1)
        except OSError:
            return None
        truncated = len(raw) > INSTRUCTION_CAP
        raw = raw[: _utf8_end(raw, INSTRUCTION_CAP)] if truncated else raw
        entry = {"path": str(path), "content": raw.decode("utf-8", errors="replace"), "truncated": truncated}
        self._cache[path] = (key, entry)
        return entry

    def read(self) -> dict[str, Any]:
        files = []
        for path in (self._home_file(), self.root / "AGENTS.md"):
            entry = self._read(path) if path is not None else None
            if entry is not None:
                files.append(entry)
        return {"os": os_description(), "directory": str(self.root), "files": files}


# --- HTTP -----------------------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReadBody(_Body):
    path: str
    offset: int = Field(default=1, ge=1)
    limit: int = Field(default=DEFAULT_READ_LINES, ge=1, le=MAX_READ_LINES)


class WriteBody(_Body):
    path: str
    content: str


class EditBody(_Body):
    class File(BaseModel):
        model_config = ConfigDict(extra="forbid")

        class Edit(BaseModel):
            model_config = ConfigDict(extra="forbid")
            search: str
            replace: str

        path: str
        edits: list[Edit] = Field(min_length=1)

    files: list[File] = Field(min_length=1)


class StartBody(_Body):
    command: str
    workdir: str | None = None
    background: bool = False
    wait: float = Field(default=0.0, ge=0, le=MAX_WAIT)
    max_output_bytes: int | None = Field(default=None, ge=1)
    env: dict[str, str] = Field(default_factory=dict)


class SignalBody(_Body):
    signal: str = Field(pattern="^(terminate|kill)$")


async def _json(request: Request, model: type[Any]) -> Any:
    try:
        raw = await request.body()
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())
        raise _bad(f"invalid request: {problems}") from None


def _query_float(request: Request, name: str, default: float) -> float:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise _bad(f"{name} must be a number") from None
    return max(0.0, min(value, MAX_WAIT))


class BearerAuth:
    """Refuse every request without the agent's token (constant-time comparison)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                response = JSONResponse(
                    {"error": "missing or invalid agent token", "code": "unauthorized"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


Handler = Callable[[Request], Awaitable[Any]]


def _endpoint(fn: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def wrapped(request: Request) -> Response:
        try:
            result = await fn(request)
        except AgentError as exc:
            return JSONResponse({"error": exc.message, "code": exc.code}, status_code=exc.status)
        return JSONResponse(result)

    return wrapped


def create_app(
    root: Path, token: str, *, allow_outside: bool = False, commands: bool = True, run_as: RunAs | None = None
) -> ASGIApp:
    """`commands=False` refuses every process request (403 `commands_disabled`); `run_as` runs
    commands under that uid/gid and gives files the agent writes to it."""
    if len(token) < 16:
        raise ValueError("the agent token must be at least 16 characters")
    confine = Confinement(root, allow_outside=allow_outside)
    processes = ProcessTable(confine.root, run_as=run_as)
    instructions = InstructionFiles(confine.root)
    # File mutations run in worker threads; one lock makes each write/edit atomic with respect to
    # the others, so two edits of one file never interleave their read-modify-write.
    file_lock = threading.Lock()

    def locked(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            with file_lock:
                fn()

        return run

    async def health(_: Request) -> Any:
        return {"ok": True}

    async def info(_: Request) -> Any:
        return {
            "os": os_description(), "directory": str(confine.root), "allow_outside": allow_outside, "pid": os.getpid(),
            "commands": commands,
        }  # fmt: skip

    async def read(request: Request) -> Any:
        body: ReadBody = await _json(request, ReadBody)
        path = confine.resolve(body.path)
        return await asyncio.to_thread(read_lines, path, body.path, body.offset, body.limit, run_as)

    async def write(request: Request) -> Any:
        body: WriteBody = await _json(request, WriteBody)
        path = confine.resolve(body.path)
        await asyncio.to_thread(locked(lambda: write_file(path, body.path, body.content, run_as)))
        return {"ok": True}

    async def edit(request: Request) -> Any:
        body: EditBody = await _json(request, EditBody)
        files = body.model_dump()["files"]
        await asyncio.to_thread(locked(lambda: edit_files(confine, files, run_as)))
        return {"ok": True}

    def commands_allowed() -> None:
        if not commands:
            raise AgentError(403, "commands_disabled", COMMANDS_DISABLED)

    async def start(request: Request) -> Any:
        commands_allowed()
        body: StartBody = await _json(request, StartBody)
        workdir = confine.resolve(body.workdir) if body.workdir else confine.root
        p = await processes.start(body.command, workdir, body.env, body.background)
        await processes.wait(p, body.wait)
        return p.state(body.max_output_bytes)

    async def list_all(_: Request) -> Any:
        commands_allowed()
        return {"processes": [p.state(with_output=False) for p in processes.list()]}

    async def output(request: Request) -> Any:
        commands_allowed()
        p = processes.get(request.path_params["process_id"])
        await processes.wait(p, _query_float(request, "wait", 0.0))
        raw_max = request.query_params.get("max_bytes")
        return p.state(int(raw_max) if raw_max and raw_max.isdigit() else None)

    async def send_signal(request: Request) -> Any:
        commands_allowed()
        body: SignalBody = await _json(request, SignalBody)
        p = processes.get(request.path_params["process_id"])
        message = processes.signal(p, body.signal)
        return {"message": message, "process": p.state(with_output=False)}

    async def read_instructions(_: Request) -> Any:
        return await asyncio.to_thread(instructions.read)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await processes.close()

    routes = [
        Route("/v1/health", _endpoint(health), methods=["GET"]),
        Route("/v1/info", _endpoint(info), methods=["GET"]),
        Route("/v1/files/read", _endpoint(read), methods=["POST"]),
        Route("/v1/files/write", _endpoint(write), methods=["POST"]),
        Route("/v1/files/edit", _endpoint(edit), methods=["POST"]),
        Route("/v1/processes", _endpoint(start), methods=["POST"]),
        Route("/v1/processes", _endpoint(list_all), methods=["GET"]),
        Route("/v1/processes/{process_id}", _endpoint(output), methods=["GET"]),
        Route("/v1/processes/{process_id}/signal", _endpoint(send_signal), methods=["POST"]),
        Route("/v1/instructions", _endpoint(read_instructions), methods=["GET"]),
    ]
    return BearerAuth(Starlette(routes=routes, lifespan=lifespan), token)


# --- running it -----------------------------------------------------------------------------------


def parse_listen(listen: str, *, allow_remote: bool) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--listen must be HOST:PORT, got {listen!r}")
    host = host.strip("[]") or "127.0.0.1"
    if not allow_remote:
        loopback = host == "localhost"
        with contextlib.suppress(ValueError):
            loopback = loopback or ipaddress.ip_address(host).is_loopback
        if not loopback:
            raise ValueError(f"refusing to listen on non-loopback address {host!r} without --allow-remote")
    return host, int(port)


def read_token(token_file: Path) -> str:
    token = token_file.read_text().strip()
    if len(token) < 16:
        raise ValueError(f"the token in {token_file} is missing or shorter than 16 characters")
    if token_file.stat().st_mode & 0o077:
        log.warning("token file %s is readable by other users; it should be mode 0600", token_file)
    return token


def parse_run_as(value: str | None) -> RunAs | None:
    if not value:
        return None
    uid, sep, gid = value.partition(":")
    if not uid.isdigit() or (sep and not gid.isdigit()):
        raise ValueError(f"--run-as must be UID or UID:GID, got {value!r}")
    return RunAs(int(uid), int(gid or uid))


def run(
    directory: Path,
    listen: str,
    token_file: Path,
    *,
    allow_outside: bool = False,
    allow_remote: bool = False,
    commands: bool = True,
    run_as: RunAs | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT; then stop every process this agent started."""
    import uvicorn

    if not directory.is_dir():
        raise ValueError(f"workspace directory does not exist: {directory}")
    if run_as is not None and os.geteuid() != 0:
        raise ValueError("--run-as needs the agent to run as root")
    host, port = parse_listen(listen, allow_remote=allow_remote)
    # Before any command exists, so every one of them inherits it.
    if commands and not forbid_new_privileges():
        log.warning("could not set no_new_privs: commands may gain privileges through setuid programs")
    app = create_app(directory, read_token(token_file), allow_outside=allow_outside, commands=commands, run_as=run_as)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    bound_port = sock.getsockname()[1]
    url_host = f"[{host}]" if ":" in host else host
    # The socket already queues connections, so the address can be announced before uvicorn runs.
    print(json.dumps({"url": f"http://{url_host}:{bound_port}", "pid": os.getpid()}), flush=True)
    if not sys.stdout.isatty():
        # Nothing else goes to stdout: the reader of the ready line may have closed its end.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=int(STOP_GRACE),
        ws="none",
    )
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))
