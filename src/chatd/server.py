"""Run chatd: migrate, build, serve the API and the workers until a signal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import uvicorn

from chatd import logs
from chatd.api.app import create_app, create_internal_app
from chatd.bootstrap import build, ensure_admin
from chatd.settings import Settings

log = logging.getLogger("chatd")


async def run(settings: Settings, *, api: bool = True) -> None:
    logs.replica_var.set(str(settings.replica_id))
    app = await build(settings)
    token = await ensure_admin(app) if api else None
    logs.register_secret(token)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with asyncio.TaskGroup() as tg:
            workers = app.extras.get("workers")
            if workers is not None and settings.run_workers:
                tg.create_task(workers.run(stop), name="workers")
            # A worker-only replica still listens: /healthz and the part relay for other replicas.
            asgi = create_app(app) if api else create_internal_app(app)
            server = uvicorn.Server(
                uvicorn.Config(
                    asgi, host=settings.host, port=settings.port, log_level=settings.log_level.lower(), lifespan="off",
                    # Our root handler formats and redacts uvicorn's records too (chatd.logs).
                    log_config=None,
                )
            )
            # uvicorn captures SIGINT/SIGTERM inside serve() and re-raises them afterwards; we
            # own the signals instead, so that workers shut down gracefully first.
            setattr(server, "capture_signals", contextlib.nullcontext)  # noqa: B010

            async def serve() -> None:
                try:
                    await server.serve()
                finally:
                    if not server.started:
                        log.error("could not listen on %s:%s", settings.host, settings.port)
                    stop.set()

            tg.create_task(serve(), name="http")

            async def announce() -> None:
                while not server.started:
                    if stop.is_set():
                        return
                    await asyncio.sleep(0.05)
                url = settings.resolved_public_url()
                what = "chatd is listening on" if api else "chatd worker replica (internal endpoints) on"
                print(f"{what} {url} (database: {app.db.dialect})", flush=True)
                if token:
                    print(f"First start: an admin was created; its token is in {settings.data_dir / 'admin-token'}", flush=True)
                    print(f"Open {url}/#token={token}", flush=True)

            tg.create_task(announce(), name="announce")
            await stop.wait()
            server.should_exit = True
    finally:
        await app.close()
