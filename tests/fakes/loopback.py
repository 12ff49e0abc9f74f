"""An ASGI app served by uvicorn on 127.0.0.1 inside the test's event loop (the fakes' shared
lifecycle): listening before uvicorn starts, so clients can connect at once."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import uvicorn


class LoopbackServer:
    def __init__(self, app: Any, name: str, *, port: int = 0, **config: Any) -> None:
        self.app = app
        self.name = name
        self.config = config
        # 0: a free port, chosen by the kernel (tests); a fixed one for bench/llm.py.
        self.port = port
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        # The kernel queues connections until uvicorn accepts them: no start-up wait needed.
        sock.listen(128)
        sock.setblocking(False)
        self._sock = sock
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="critical", lifespan="off", access_log=False, **self.config)
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server._serve([sock]), name=self.name)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                try:
                    await asyncio.wait_for(self._task, 5)
                except TimeoutError:
                    self._task.cancel()
                    await self._task
        if self._sock is not None:
            self._sock.close()
