"""Run chatd: migrate, build, serve the API and the workers until a signal."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import importlib
import logging
import signal
import socket
from dataclasses import dataclass

import uvicorn

from chatd import logs, tracing
from chatd.api.app import create_app, create_internal_app
from chatd.bootstrap import App, build, ensure_admin
from chatd.errors import CannotListen, InvalidInput
from chatd.providers.registry import WIRES
from chatd.settings import Settings

log = logging.getLogger("chatd")

# Imported on first use by chatd.providers (not at start, where they were half of the start-up
# CPU); once chatd listens they are loaded in the background so the first turn does not wait.
PRELOAD = tuple(wire.model_module for wire in WIRES)


def preload() -> None:
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            log.warning("could not preload %s", name, exc_info=True)


# Objects allocated between two young collections (CPython's default is 700). A streamed token
# allocates dozens (chunk dicts, parts, events); at the default, 100 streaming chats ran ~60 young
# collections a second, each promoting the turn's short-lived objects towards the old generation.
GC_YOUNG_THRESHOLD = 10_000


def settle_heap() -> None:
    """Once the process has imported what it serves with: move everything alive into the
    collector's permanent generation, and collect the young generation less often.

    The modules, the SDKs' types, the app and its caches live as long as the process, but a full
    collection walked all of them again (200,000+ objects, ~0.2 s of CPU each, several a minute
    under load: 9% of the daemon's CPU at 100 streaming chats). Frozen, they are never walked;
    they were never going to be freed either. Nothing else changes: reference counting frees as
    before, and cycles made after this point are collected as before."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def listen(host: str, port: int) -> socket.socket:
    """Bind the listening socket before anything else starts: a taken port is then one clear
    line and nothing was migrated or created for nothing (uvicorn would log it and exit from
    inside the server task, which ends in a long traceback)."""
    how = "pick another with --port N or CHATD_PORT=N"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise CannotListen(f"cannot listen on {host}:{port}: unknown host ({exc.strerror}); pick another with --host or CHATD_HOST") from exc
    sock = socket.socket(family, kind, proto)
    # As uvicorn does: a restarted chatd can listen again while old connections linger in TIME_WAIT.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise CannotListen(f"port {port} on {host} is in use (another chatd?); {how}") from exc
        if exc.errno == errno.EACCES:
            raise CannotListen(f"not allowed to listen on port {port} on {host} (ports below 1024 need privileges); {how}") from exc
        raise CannotListen(f"cannot listen on {host}:{port}: {exc.strerror}; pick another address with --host/--port (CHATD_HOST/CHATD_PORT)") from exc
    return sock


# Seconds requests still running at a stop get to finish before they are cancelled.
SHUTDOWN_GRACE_S = 10


async def serve_without_signals(server: uvicorn.Server, sockets: list[socket.socket]) -> None:
    """What `uvicorn.Server.serve` does, through its public `startup`, `main_loop` and `shutdown`,
    without `serve`'s signal capture: uvicorn would take SIGINT/SIGTERM for itself and raise them
    again once it stopped, while chatd owns them (`run`) so that the workers give their chats back
    before the process ends. Stops when `server.should_exit` is set."""
    config = server.config
    if not config.loaded:
        config.load()
    server.lifespan = config.lifespan_class(config)
    await server.startup(sockets=sockets)
    if not server.should_exit:
        await server.main_loop()
    if server.started:
        await server.shutdown(sockets=sockets)


async def admin_sign_in_token(app: App) -> str | None:
    """The token in `data_dir/admin-token` while that file exists and the token still works: its
    sign-in link is printed on every start, so the first user never has to find the file."""
    path = app.settings.data_dir / "admin-token"
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        return None
    # The same check as a request with this token (a revoked token must not be advertised).
    if await app.service.authenticate(token) is None:
        print(f"The admin token in {path} no longer works: `chatd tokens create admin` prints a new one.", flush=True)
        return None
    return token


@dataclass(frozen=True)
class WorkerProcess:
    """What one worker process of `chatd serve --workers N` gets from its supervisor
    (`chatd.supervisor`): the listening socket every process shares, a socket of its own for the
    part relay (its `internal_url`: a relay request must reach the process that runs the chat, so
    it cannot go through the shared port), and its line to the supervisor. The supervisor migrated
    the database and announced the admin's link already."""

    shared: socket.socket
    relay: socket.socket
    control: socket.socket


async def run(settings: Settings, *, api: bool = True, process: WorkerProcess | None = None) -> None:
    logs.replica_var.set(str(settings.replica_id))
    if process is not None:
        await _run_traced(settings, process.shared, api=api, process=process)
        return
    sock = listen(settings.host, settings.port)
    if settings.port == 0:
        # An ephemeral port (--port 0): announce and advertise the one the kernel picked.
        settings.port = sock.getsockname()[1]
    await _run_traced(settings, sock, api=api)


async def _run_traced(settings: Settings, sock: socket.socket, *, api: bool, process: WorkerProcess | None = None) -> None:
    try:
        tracing.configure(
            settings.otel_endpoint, replica_id=settings.replica_id, sample_ratio=settings.otel_sample_ratio,
            capture_content=settings.otel_capture_content,
        )
    except ValueError as exc:
        sock.close()
        raise InvalidInput(str(exc)) from exc
    try:
        await _run(settings, sock, api=api, process=process)
    finally:
        sock.close()
        # Spans still buffered are sent (the exporter gives up after its own timeout).
        await asyncio.to_thread(tracing.shutdown)


async def _run(settings: Settings, sock: socket.socket, *, api: bool, process: WorkerProcess | None = None) -> None:
    # A worker process's supervisor migrated the database and announces the admin's link, once.
    app = await build(settings, run_migrations=process is None)
    created = await ensure_admin(app) if api and process is None else None
    token = await admin_sign_in_token(app) if api and process is None else None
    logs.register_secret(token)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with asyncio.TaskGroup() as tg:
            if app.workers is not None and settings.run_workers:
                tg.create_task(app.workers.run(stop), name="workers")
            # A worker-only replica still listens: /healthz and the part relay for other replicas.
            asgi = create_app(app) if api else create_internal_app(app)
            server = uvicorn.Server(
                uvicorn.Config(
                    asgi, host=settings.host, port=settings.port, log_level=settings.log_level.lower(), lifespan="off",
                    timeout_keep_alive=settings.http_keep_alive,
                    # A request still running this long after the stop is cancelled (streams end
                    # at once through `app.closing`): a stop must not wait on a client.
                    timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
                    # Our root handler formats and redacts uvicorn's records too (chatd.logs).
                    log_config=None,
                )
            )
            async def serve() -> None:
                try:
                    await serve_without_signals(server, [sock] if process is None else [sock, process.relay])
                finally:
                    if not server.started:
                        log.error("could not listen on %s:%s", settings.host, settings.port)
                    stop.set()

            tg.create_task(serve(), name="http")
            if process is not None:
                tg.create_task(follow_supervisor(process.control, stop), name="supervisor")

            async def announce() -> None:
                while not server.started:
                    if stop.is_set():
                        return
                    await asyncio.sleep(0.05)
                if process is not None:
                    # The supervisor prints the address once, when every process listens.
                    await loop.sock_sendall(process.control, b"ready\n")
                    if settings.run_workers:
                        await asyncio.to_thread(preload)
                    settle_heap()
                    return
                announce_start(settings, api=api, database=app.db.dialect, created=created, token=token)
                if settings.run_workers:
                    await asyncio.to_thread(preload)
                settle_heap()

            tg.create_task(announce(), name="announce")
            await stop.wait()
            # Open streams end first: uvicorn's shutdown waits for every connection to close.
            app.closing.set()
            server.should_exit = True
    finally:
        await app.close()


def announce_start(settings: Settings, *, api: bool, database: str, created: str | None, token: str | None) -> None:
    """Say on stdout that chatd listens (where, on what database), where the first admin's token
    is and the admin's sign-in link; leave the address in the data dir for the CLI."""
    url = settings.resolved_public_url()
    what = "chatd is listening on" if api else "chatd worker replica (internal endpoints) on"
    print(f"{what} {url} (database: {database})", flush=True)
    if api:
        # The CLI's default address: this server may listen on another --port.
        with contextlib.suppress(OSError):
            (settings.data_dir / "server-url").write_text(url + "\n")
    if created:
        print(f"First start: an admin was created; its token is in {settings.data_dir / 'admin-token'}", flush=True)
    if token:
        print(f"Open {url}/#token={token}", flush=True)


async def follow_supervisor(control: socket.socket, stop: asyncio.Event) -> None:
    """A worker process stops when its supervisor is gone (killed with no chance to stop its
    children): the end of the control socket, never an orphan serving on. Ends with `stop`."""
    loop = asyncio.get_running_loop()

    async def until_gone() -> None:
        while await loop.sock_recv(control, 4096):
            pass
        log.warning("the supervisor of this worker process is gone; stopping")

    gone = asyncio.create_task(until_gone(), name="supervisor-gone")
    stopping = asyncio.create_task(stop.wait(), name="supervisor-stop")
    try:
        await asyncio.wait({gone, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (gone, stopping):
            task.cancel()
        await asyncio.gather(gone, stopping, return_exceptions=True)
    stop.set()
