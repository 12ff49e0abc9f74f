"""The state the workspace tools of one turn share: the chat's workspace agent (`WorkspaceLink`,
attached mid-turn by create_workspace) and per-path locks for the file-changing tools."""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TypeVar

from chatd.domain.workspace import AgentUnreachable, WorkspaceAgent, Workspaces
from chatd.errors import ChatdError

T = TypeVar("T")


class NoWorkspace(ChatdError):
    code = "no_workspace"


class WorkspaceLink:
    """The chat's workspace as the tools of one turn see it (attached mid-turn by create_workspace)."""

    def __init__(
        self,
        workspaces: Workspaces | None,
        workspace_id: uuid.UUID | None,
        agent: WorkspaceAgent | None = None,
    ) -> None:
        self.workspaces = workspaces
        self.workspace_id = workspace_id
        self._agent = agent
        self._lock = asyncio.Lock()

    @property
    def attached(self) -> bool:
        return self.workspace_id is not None or self._agent is not None

    def attach(self, workspace_id: uuid.UUID) -> None:
        if workspace_id != self.workspace_id:
            self.workspace_id = workspace_id
            self._agent = None

    async def agent(self, *, restart: bool = False) -> WorkspaceAgent:
        async with self._lock:
            if self._agent is not None and not restart:
                return self._agent
            if self.workspace_id is None or self.workspaces is None:
                if self._agent is not None:
                    return self._agent
                raise NoWorkspace(
                    "This chat has no workspace yet."
                    + (" Create one with create_workspace first." if self.workspaces is not None else "")
                )
            self._agent = await self.workspaces.agent_for(self.workspace_id, restart=restart)
            return self._agent

    async def call(self, fn: Callable[[WorkspaceAgent], Awaitable[T]]) -> T:
        agent = await self.agent()
        try:
            return await fn(agent)
        except AgentUnreachable:
            if self.workspaces is None or self.workspace_id is None:
                raise
            # Nothing reached the agent: restart it and send the request once more.
            return await fn(await self.agent(restart=True))


class PathLocks:
    """Per-path locks shared by the file-changing tools of one turn (FIFO, like asyncio.Lock)."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    @staticmethod
    def key(path: str) -> str:
        return posixpath.normpath(path.strip()) if path.strip() else path

    @contextlib.asynccontextmanager
    async def hold(self, paths: Iterable[str]) -> AsyncIterator[None]:
        # Sorted, so two calls over overlapping sets of paths cannot deadlock.
        keys = sorted({self.key(p) for p in paths})
        async with contextlib.AsyncExitStack() as stack:
            for k in keys:
                await stack.enter_async_context(self._locks.setdefault(k, asyncio.Lock()))
            yield
