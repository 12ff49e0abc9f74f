"""The workspace manager: templates -> workspaces -> running agents, and chats bound to them.

It implements `chatd.domain.workspace.Workspaces` for the tools and offers the same operations to
the service/API. Persistence comes in as `WorkspaceRecords` (`chatd.store.workspaces.
SqlWorkspaceRecords` in production), so this package does not import the store.

Agents are children of this process: after a restart of chatd the rows may say `running` while
no agent runs; `agent_for` notices (the provisioner has no such child) and starts one.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import uuid
import weakref
from collections.abc import Mapping
from typing import Protocol

from chatd import metrics
from chatd.domain.workspace import (
    Template,
    Workspace,
    WorkspaceOutcome,
    WorkspaceStatus,
)
from chatd.errors import InvalidInput, NotFound
from chatd.workspace.client import AgentClient
from chatd.workspace.provisioner import AgentEndpoint, Provisioner, ProvisionFailed

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$", re.IGNORECASE)
_NAME_BASE_MAX = 27  # `<template>-<4 hex>`, as the reference names workspaces


class WorkspaceRecords(Protocol):
    async def list_templates(self) -> list[Template]: ...

    async def get_template(self, template_id: uuid.UUID) -> Template: ...

    async def create_workspace(
        self,
        *,
        workspace_id: uuid.UUID,
        owner_id: uuid.UUID,
        template: Template,
        name: str,
        directory: str,
        parameters: dict[str, str],
    ) -> Workspace: ...

    async def get_workspace(self, workspace_id: uuid.UUID) -> Workspace: ...

    async def set_status(
        self,
        workspace_id: uuid.UUID,
        status: WorkspaceStatus,
        *,
        agent_url: str | None = None,
        last_error: str | None = None,
    ) -> Workspace: ...

    async def mark_stopped(self, workspace_ids: list[uuid.UUID]) -> None: ...

    async def chat_workspace_id(self, chat_id: uuid.UUID) -> uuid.UUID | None: ...

    async def attach_workspace(self, chat_id: uuid.UUID, workspace_id: uuid.UUID) -> None: ...


def workspace_name(template: Template, requested: str | None) -> str:
    if requested and _NAME.match(requested):
        return requested
    base = re.sub(r"[^a-z0-9-]+", "-", template.name.lower()).strip("-")[:_NAME_BASE_MAX] or "workspace"
    return f"{base}-{secrets.token_hex(2)}"


def resolve_parameters(template: Template, given: Mapping[str, object] | None) -> dict[str, str]:
    """Template defaults plus given values; unknown names and missing required values are errors."""
    given = dict(given or {})
    known = {p.name for p in template.parameters}
    unknown = sorted(set(given) - known)
    if unknown:
        raise InvalidInput(f"Unknown template parameters: {', '.join(unknown)}. Known: {', '.join(sorted(known)) or 'none'}.")
    values: dict[str, str] = {}
    for p in template.parameters:
        if p.name in given and given[p.name] is not None:
            values[p.name] = str(given[p.name])
        elif p.default is not None:
            values[p.name] = p.default
        elif p.required:
            raise InvalidInput(f"The template parameter {p.name!r} is required.")
    return values


class WorkspaceManager:
    def __init__(
        self,
        records: WorkspaceRecords,
        provisioners: Mapping[str, Provisioner],
        *,
        ping_timeout: float = 5.0,
    ) -> None:
        self.records = records
        self.provisioners = dict(provisioners)
        self.ping_timeout = ping_timeout
        self._clients: dict[uuid.UUID, tuple[AgentEndpoint, AgentClient]] = {}
        # Held only while used: the per-chat lock serialises create/start of one chat (one turn
        # may call both); the per-workspace lock serialises starting one agent.
        self._chat_locks: weakref.WeakValueDictionary[uuid.UUID, asyncio.Lock] = weakref.WeakValueDictionary()
        self._workspace_locks: weakref.WeakValueDictionary[uuid.UUID, asyncio.Lock] = weakref.WeakValueDictionary()

    @staticmethod
    def _lock(table: weakref.WeakValueDictionary[uuid.UUID, asyncio.Lock], key: uuid.UUID) -> asyncio.Lock:
        lock = table.get(key)
        if lock is None:
            lock = asyncio.Lock()
            table[key] = lock
        return lock

    def _provisioner(self, kind: str) -> Provisioner:
        p = self.provisioners.get(kind)
        if p is None:
            raise InvalidInput(f"No {kind!r} provisioner is configured on this server.")
        return p

    # --- templates ----------------------------------------------------------------------------------

    async def list_templates(self, query: str | None = None) -> list[Template]:
        templates = await self.records.list_templates()
        if query and query.strip():
            q = query.strip().lower()
            templates = [t for t in templates if q in t.name.lower() or q in t.display_name.lower()]
        return templates

    async def get_template(self, template_id: uuid.UUID) -> Template:
        return await self.records.get_template(template_id)

    # --- workspaces ---------------------------------------------------------------------------------

    async def create_workspace(
        self,
        owner_id: uuid.UUID,
        template_id: uuid.UUID,
        *,
        name: str | None = None,
        parameters: Mapping[str, object] | None = None,
        start: bool = True,
    ) -> Workspace:
        """Make a workspace from a template and (by default) start its agent.

        Provisioning failures leave the row `failed` with the reason and raise `ProvisionFailed`;
        an agent that does not start leaves it `failed` too (start_workspace can retry).
        """
        template = await self.records.get_template(template_id)
        if template.deprecated:
            raise InvalidInput(f"The template {template.name!r} is deprecated.")
        provisioner = self._provisioner(template.provisioner)
        values = resolve_parameters(template, parameters)
        wid = uuid.uuid4()
        ws = await self.records.create_workspace(
            workspace_id=wid,
            owner_id=owner_id,
            template=template,
            name=workspace_name(template, name),
            directory=provisioner.directory_for(wid),
            parameters=values,
        )
        try:
            await provisioner.provision(ws, template)
        except ProvisionFailed as exc:
            await self.records.set_status(wid, WorkspaceStatus.FAILED, last_error=exc.message)
            raise
        ws = await self.records.set_status(wid, WorkspaceStatus.STOPPED)
        if start:
            await self.agent_for(wid)
            ws = await self.records.get_workspace(wid)
        return ws

    async def agent_for(self, workspace_id: uuid.UUID, *, restart: bool = False) -> AgentClient:
        """A client of the workspace's agent, starting the agent if it does not run here."""
        async with self._lock(self._workspace_locks, workspace_id):
            ws = await self.records.get_workspace(workspace_id)
            if ws.status is WorkspaceStatus.DELETED:
                raise NotFound("The workspace was deleted.")
            provisioner = self._provisioner(ws.provisioner)
            if restart:
                await provisioner.stop(workspace_id)
            if not provisioner.is_running(workspace_id):
                try:
                    endpoint = await provisioner.start(ws)
                except ProvisionFailed as exc:
                    await self.records.set_status(workspace_id, WorkspaceStatus.FAILED, last_error=exc.message)
                    raise
                await self.records.set_status(workspace_id, WorkspaceStatus.RUNNING, agent_url=endpoint.url, last_error=None)
            else:
                endpoint = await provisioner.start(ws)  # returns the running agent's endpoint
            cached = self._clients.get(workspace_id)
            if cached is not None and cached[0] == endpoint:
                return cached[1]
            if cached is not None:
                await cached[1].aclose()
            client = AgentClient(endpoint.url, endpoint.token)
            if cached is None:
                metrics.WORKSPACE_AGENTS.inc()
            self._clients[workspace_id] = (endpoint, client)
            return client

    async def start_workspace(self, workspace_id: uuid.UUID) -> Workspace:
        """Make sure the agent runs and answers; restart it if it runs but does not answer."""
        client = await self.agent_for(workspace_id)
        if not await client.ping(timeout=self.ping_timeout):
            client = await self.agent_for(workspace_id, restart=True)
            if not await client.ping(timeout=self.ping_timeout):
                raise ProvisionFailed("The workspace agent started but does not answer.")
        return await self.records.get_workspace(workspace_id)

    async def stop_workspace(self, workspace_id: uuid.UUID) -> Workspace:
        async with self._lock(self._workspace_locks, workspace_id):
            ws = await self.records.get_workspace(workspace_id)
            await self._provisioner(ws.provisioner).stop(workspace_id)
            cached = self._clients.pop(workspace_id, None)
            if cached is not None:
                metrics.WORKSPACE_AGENTS.dec()
                await cached[1].aclose()
            if ws.status is WorkspaceStatus.RUNNING:
                ws = await self.records.set_status(workspace_id, WorkspaceStatus.STOPPED, agent_url=None)
            return ws

    # --- chats (the root-chat tools) ----------------------------------------------------------------

    async def create_for_chat(
        self,
        chat_id: uuid.UUID,
        owner_id: uuid.UUID,
        template_id: uuid.UUID,
        *,
        name: str | None = None,
        parameters: dict[str, str] | None = None,
    ) -> WorkspaceOutcome:
        """Idempotent per chat: a chat that has a usable workspace gets that one back."""
        async with self._lock(self._chat_locks, chat_id):
            existing_id = await self.records.chat_workspace_id(chat_id)
            if existing_id is not None:
                ws = await self.records.get_workspace(existing_id)
                if ws.status not in (WorkspaceStatus.DELETED, WorkspaceStatus.FAILED, WorkspaceStatus.PROVISIONING):
                    ready, error = await self._ready(existing_id)
                    ws = await self.records.get_workspace(existing_id)
                    return WorkspaceOutcome(ws, already_existed=True, agent_ready=ready, agent_error=error)
            ws = await self.create_workspace(owner_id, template_id, name=name, parameters=parameters, start=False)
            await self.records.attach_workspace(chat_id, ws.id)
            ready, error = await self._ready(ws.id)
            ws = await self.records.get_workspace(ws.id)
            return WorkspaceOutcome(ws, created=True, agent_ready=ready, agent_error=error)

    async def start_for_chat(self, chat_id: uuid.UUID) -> WorkspaceOutcome:
        async with self._lock(self._chat_locks, chat_id):
            wid = await self.records.chat_workspace_id(chat_id)
            if wid is None:
                raise InvalidInput("This chat has no workspace; use create_workspace first.")
            ws = await self.records.get_workspace(wid)
            if ws.status is WorkspaceStatus.DELETED:
                raise InvalidInput("The workspace was deleted; use create_workspace to make a new one.")
            ready, error = await self._ready(wid)
            ws = await self.records.get_workspace(wid)
            return WorkspaceOutcome(ws, started=ready, agent_ready=ready, agent_error=error)

    async def _ready(self, workspace_id: uuid.UUID) -> tuple[bool, str | None]:
        try:
            await self.start_workspace(workspace_id)
        except ProvisionFailed as exc:
            return False, exc.message
        return True, None

    # --- shutdown -----------------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop every agent this process started and mark their workspaces stopped."""
        running = [wid for wid, _ in self._clients.items()]
        for _, client in self._clients.values():
            await client.aclose()
        metrics.WORKSPACE_AGENTS.dec(len(self._clients))
        self._clients.clear()
        async with asyncio.TaskGroup() as group:
            for kind, provisioner in self.provisioners.items():
                group.create_task(provisioner.close(), name=f"close-provisioner:{kind}")
        try:
            await self.records.mark_stopped(running)
        except Exception:
            # The database may already be closed at shutdown; the rows are fixed on next use.
            log.warning("could not mark %d workspaces stopped", len(running), exc_info=True)


__all__ = ["WorkspaceManager", "WorkspaceRecords", "resolve_parameters", "workspace_name"]
