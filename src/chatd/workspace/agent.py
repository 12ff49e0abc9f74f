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

The work itself is in `files.py`, `processes.py` and `instructions.py`; this module is the HTTP
service around them and how it is run.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import os
import socket
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from chatd.workspace.errors import AgentError, bad
from chatd.workspace.files import (
    DEFAULT_READ_LINES,
    MAX_READ_LINES,
    Confinement,
    RunAs,
    edit_files,
    read_lines,
    write_file,
)
from chatd.workspace.instructions import InstructionFiles, os_description
from chatd.workspace.processes import MAX_WAIT, STOP_GRACE, ProcessTable, forbid_new_privileges

log = logging.getLogger(__name__)

COMMANDS_DISABLED = (
    "Commands are disabled on this server: no working sandbox (bubblewrap) is available, and running "
    "a chat's commands unsandboxed would let them read the server's data. An admin can install "
    "bubblewrap, or allow unsandboxed commands with CHATD_WORKSPACE_SANDBOX=none. The file tools "
    "(read_file, write_file, edit_files) still work."
)


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
        raise bad(f"invalid request: {problems}") from None


def _query_float(request: Request, name: str, default: float) -> float:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise bad(f"{name} must be a number") from None
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
