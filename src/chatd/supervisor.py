"""`chatd serve --workers N`: N processes on one machine, each a whole replica (API and workers),
sharing one listening socket and one PostgreSQL database, so that one box's cores all run chats.

The supervisor (the process started) binds the public port, migrates, makes the first admin and
prints the start-up lines once; then it starts N worker processes (`python -m chatd.supervisor`).
Each inherits the shared listening socket (the kernel hands each connection to one of them, as
with gunicorn or `uvicorn --workers`) and a relay socket of its own on a free port, which becomes
its `internal_url`: other replicas fetch a chat's streamed parts from the process that runs it.
Between them the processes coordinate exactly as replicas on several hosts do: acquire with
`FOR UPDATE SKIP LOCKED`, NOTIFY, replica heartbeats, the relay. SQLite is refused: its
notifications stay inside one process (docs/deployment.md#several-processes-on-one-machine).

A worker process that dies after it was ready is reported and replaced (a new replica id; the
others recover its chats when its heartbeat goes stale); one that dies before it is ready stops
everything with exit code 1, since starting it again would fail the same way. SIGINT or SIGTERM
stop every process (each gives its running chats back); a second signal, 2 s or more after the
first, kills them (exit code 1)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from chatd import logs
from chatd.bootstrap import build, ensure_admin
from chatd.errors import ChatdError, InvalidInput
from chatd.server import WorkerProcess, admin_sign_in_token, announce_start, listen, run
from chatd.settings import Settings

log = logging.getLogger("chatd.supervisor")

# How a worker process finds its three inherited sockets: "shared,relay,control" file descriptors.
FDS_ENV = "_CHATD_WORKER_PROCESS_FDS"
# Seconds before a worker process that died is started again (a crash then cannot spin the CPU).
RESTART_DELAY = 1.0
BACKLOG = 2048  # uvicorn's default
# A signal repeated sooner than this is the same request delivered twice (`timeout` signals its
# child and then its process group; a terminal signals the whole group), not a second Ctrl-C.
REPEAT_AFTER = 2.0


def refuse_sqlite(settings: Settings) -> None:
    from sqlalchemy.engine import make_url

    if make_url(settings.resolved_database_url()).get_backend_name() != "postgresql":
        raise InvalidInput(
            f"--workers {settings.workers} needs PostgreSQL (CHATD_DATABASE_URL=postgresql://…): on SQLite the processes "
            "would not hear each other's notifications (new messages, interrupts, live streams), so one process serves "
            "a SQLite database; start with --workers 1"
        )


def relay_url(settings: Settings, port: int) -> str:
    """The replica's internal URL with the worker process's own relay port."""
    parts = urlsplit(settings.resolved_internal_url())
    host = parts.hostname or "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return urlunsplit((parts.scheme, f"{host}:{port}", parts.path, "", ""))


@dataclass
class Child:
    """One worker process slot; `start` fills it with a new process (and a new replica id)."""

    index: int
    proc: asyncio.subprocess.Process | None = None
    replica_id: uuid.UUID | None = None
    # Its internal URL: where the other processes and replicas fetch its chats' streamed parts.
    relay: str = ""
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    control: socket.socket | None = None
    reader: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        pid = self.proc.pid if self.proc is not None else "-"
        return f"worker process {self.index} (pid {pid}, replica {self.replica_id})"


class Supervisor:
    def __init__(self, settings: Settings, shared: socket.socket, *, api: bool) -> None:
        self.settings = settings
        self.shared = shared
        self.api = api
        self.children = [Child(i + 1) for i in range(settings.workers)]
        self.stop = asyncio.Event()
        self.first_signal: float | None = None
        self.forced = False

    async def start(self, child: Child, generation: int) -> None:
        s = self.settings
        # On the public socket's interface, so that a CHATD_INTERNAL_URL naming this host works.
        relay = listen(s.host, 0)
        relay.listen(BACKLOG)
        ours, theirs = socket.socketpair()
        # The same --replica-id gives the same ids at every start; a restart gets a new one.
        child.replica_id = uuid.uuid5(s.replica_id, f"worker-process-{child.index}-{generation}")
        child.relay = relay_url(s, relay.getsockname()[1])
        mine = s.model_copy(update={"replica_id": child.replica_id, "internal_url": child.relay, "workers": 1})
        fds = (self.shared.fileno(), relay.fileno(), theirs.fileno())
        env = {**os.environ, FDS_ENV: ",".join(map(str, fds))}
        try:
            child.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "chatd.supervisor", pass_fds=fds, env=env, stdin=asyncio.subprocess.DEVNULL
            )
        finally:
            # The process holds its own copies now.
            relay.close()
            theirs.close()
        child.ready.clear()
        child.control = ours
        ours.setblocking(False)
        envelope = json.dumps({"api": self.api, "settings": json.loads(mine.model_dump_json())}) + "\n"
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(ours, envelope.encode())
        child.reader = asyncio.create_task(self._read(child, ours), name=f"control-{child.index}")

    async def _read(self, child: Child, control: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        buf = b""
        while chunk := await loop.sock_recv(control, 4096):
            buf += chunk
            if b"ready\n" in buf:
                child.ready.set()

    async def _until_ready(self, child: Child) -> bool:
        """Whether `child` became ready (False: it exited first, or a signal came)."""
        assert child.proc is not None
        waits = {
            asyncio.create_task(child.ready.wait()),
            asyncio.create_task(child.proc.wait()),
            asyncio.create_task(self.stop.wait()),
        }
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        return child.ready.is_set() and child.proc.returncode is None

    async def run(self, *, created: str | None, token: str | None, dialect: str) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._signal)
        generation = 0
        try:
            for child in self.children:
                await self.start(child, generation)
            for child in self.children:
                if not await self._until_ready(child):
                    return await self._failed_start(child)
            self._announce(created, token, dialect)
            while not self.stop.is_set():
                exits = {asyncio.create_task(c.proc.wait()): c for c in self.children if c.proc is not None}
                stopping = asyncio.create_task(self.stop.wait())
                done, _ = await asyncio.wait({*exits, stopping}, return_when=asyncio.FIRST_COMPLETED)
                for t in (*exits, stopping):
                    t.cancel()
                if self.stop.is_set():
                    break
                for task in done:
                    child = exits[task]
                    log.error("%s exited (%s); starting another in %.0f s", child.name, describe(task.result()), RESTART_DELAY)
                    self._close(child)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop.wait(), RESTART_DELAY)
                    if self.stop.is_set():
                        break
                    generation += 1
                    await self.start(child, generation)
                    if not await self._until_ready(child):
                        return await self._failed_start(child)
                    log.warning("%s replaces the one that exited", child.name)
                    self._print_process(child)
            return await self._stop_all()
        except BaseException:
            # The supervisor itself failed (no port for a relay socket, say): stop the processes
            # now rather than when they notice their control socket closing.
            self._send(signal.SIGTERM)
            raise
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    def _signal(self) -> None:
        now = time.monotonic()
        if self.first_signal is None:
            self.first_signal = now
            self.stop.set()
        elif now - self.first_signal >= REPEAT_AFTER and not self.forced:
            # A second Ctrl-C: no more waiting for the turns to be given back.
            self.forced = True
            log.warning("second signal: killing the worker processes")
            self._send(signal.SIGKILL)

    def _send(self, sig: int) -> None:
        for c in self.children:
            if c.proc is not None and c.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    c.proc.send_signal(sig)

    async def _failed_start(self, child: Child) -> int:
        if self.stop.is_set():
            return await self._stop_all()
        assert child.proc is not None
        log.error("%s exited (%s) before it was ready; stopping the others", child.name, describe(child.proc.returncode))
        await self._stop_all()
        return 1

    async def _stop_all(self) -> int:
        """SIGTERM to every worker process, then wait for all (each gives its running chats back).
        Exit code 0 when every one stopped cleanly."""
        self._send(signal.SIGTERM)
        clean = True
        for c in self.children:
            if c.proc is None:
                continue
            code = await c.proc.wait()
            if code not in (0, -signal.SIGTERM):
                log.error("%s ended: %s", c.name, describe(code))
                clean = False
            self._close(c)
        return 0 if clean and not self.forced else 1

    def _close(self, child: Child) -> None:
        if child.reader is not None:
            child.reader.cancel()
        if child.control is not None:
            child.control.close()
            child.control = None

    @staticmethod
    def _print_process(child: Child) -> None:
        # stdout keeps the current map of processes: their pids, replica ids and relay ports.
        print(f"{child.name} relays on {child.relay}", flush=True)

    def _announce(self, created: str | None, token: str | None, dialect: str) -> None:
        for c in self.children:
            self._print_process(c)
        database = f"{dialect}, {self.settings.workers} worker processes"
        announce_start(self.settings, api=self.api, database=database, created=created, token=token)


def describe(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


async def prepare(settings: Settings, *, api: bool) -> tuple[str | None, str | None, str]:
    """What a single `chatd serve` does before it listens, done once for every worker process:
    migrate, check the secret key, create the first admin, read the admin's sign-in token."""
    app = await build(settings)
    try:
        created = await ensure_admin(app) if api else None
        token = await admin_sign_in_token(app) if api else None
        logs.register_secret(token)
        return created, token, app.db.dialect
    finally:
        await app.close()


async def supervise(settings: Settings, *, api: bool) -> int:
    """Run `settings.workers` worker processes until a signal; the exit code for the shell."""
    refuse_sqlite(settings)
    shared = listen(settings.host, settings.port)
    try:
        if settings.port == 0:
            settings.port = shared.getsockname()[1]
        # Listening from now on: connections wait in the backlog until a process accepts them.
        shared.listen(BACKLOG)
        created, token, dialect = await prepare(settings, api=api)
        return await Supervisor(settings, shared, api=api).run(created=created, token=token, dialect=dialect)
    finally:
        shared.close()


def worker_process_main() -> None:
    """The entry of one worker process (`python -m chatd.supervisor`, started by `Supervisor`)."""
    # Ctrl-C reaches every process of the terminal's group: the supervisor forwards it as SIGTERM
    # once this process is up, so an interrupted import is not a traceback per process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    shared_fd, relay_fd, control_fd = (int(fd) for fd in os.environ.pop(FDS_ENV).split(","))
    control = socket.socket(fileno=control_fd)
    line = control.makefile("rb").readline()
    if not line:
        sys.exit(1)  # the supervisor is gone already
    envelope = json.loads(line)
    settings = Settings.model_validate(envelope["settings"])
    control.setblocking(False)
    logs.configure(settings.log_level, replica=settings.replica_id)
    process = WorkerProcess(shared=socket.socket(fileno=shared_fd), relay=socket.socket(fileno=relay_fd), control=control)
    try:
        asyncio.run(run(settings, api=bool(envelope["api"]), process=process))
    except ChatdError as exc:
        log.error("%s", exc.message)
        sys.exit(1)


if __name__ == "__main__":
    worker_process_main()
