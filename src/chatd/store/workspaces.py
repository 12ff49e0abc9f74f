"""Templates, workspaces, and which workspace a chat is attached to."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from chatd.domain.clock import Clock
from chatd.domain.workspace import Template, TemplateParameter, Workspace, WorkspaceStatus
from chatd.errors import Conflict, InvalidInput, NotFound
from chatd.store.database import Database
from chatd.store.tables import chats, templates, workspaces

_MISSING: Any = object()


def _template(r: Any) -> Template:
    return Template(
        id=r.id,
        name=r.name,
        display_name=r.display_name,
        description=r.description,
        provisioner=r.provisioner,
        git_url=r.git_url,
        source_path=r.source_path,
        git_ref=r.git_ref,
        init_script=r.init_script,
        parameters=[TemplateParameter(**p) for p in (r.parameters or [])],
        allow_outside=r.allow_outside,
        deprecated=r.deprecated,
        created_at=r.created_at,
        updated_at=r.updated_at,
    )


def _workspace(r: Any) -> Workspace:
    return Workspace(
        id=r.id,
        owner_id=r.owner_id,
        template_id=r.template_id,
        name=r.name,
        provisioner=r.provisioner,
        directory=r.directory,
        status=WorkspaceStatus(r.status),
        parameters=dict(r.parameters or {}),
        allow_outside=r.allow_outside,
        agent_url=r.agent_url,
        last_error=r.last_error,
        created_at=r.created_at,
        updated_at=r.updated_at,
    )


# --- templates ------------------------------------------------------------------------------------


async def create_template(
    db: Database,
    now: datetime,
    *,
    name: str,
    display_name: str = "",
    description: str = "",
    provisioner: str = "local",
    git_url: str | None = None,
    git_ref: str | None = None,
    source_path: str | None = None,
    init_script: str = "",
    parameters: list[TemplateParameter] | None = None,
    allow_outside: bool = False,
    created_by: uuid.UUID | None = None,
) -> Template:
    if git_url and source_path:
        raise InvalidInput("A template takes either git_url or source_path, not both.")
    tid = uuid.uuid4()
    params = [
        {"name": p.name, "description": p.description, "default": p.default, "required": p.required}
        for p in (parameters or [])
    ]
    try:
        async with db.write() as conn:
            await conn.execute(
                insert(templates).values(
                    id=tid,
                    name=name,
                    display_name=display_name,
                    description=description,
                    provisioner=provisioner,
                    git_url=git_url,
                    git_ref=git_ref,
                    source_path=source_path,
                    init_script=init_script,
                    parameters=params,
                    allow_outside=allow_outside,
                    deprecated=False,
                    deleted=False,
                    created_by=created_by,
                    created_at=now,
                    updated_at=now,
                )
            )
    except IntegrityError as exc:
        raise Conflict(f"A template named {name!r} already exists.") from exc
    return await get_template(db, tid)


async def get_template(db: Database, template_id: uuid.UUID) -> Template:
    async with db.read() as conn:
        r = (
            await conn.execute(select(templates).where(templates.c.id == template_id, templates.c.deleted.is_(False)))
        ).first()
    if r is None:
        raise NotFound("Template not found.")
    return _template(r)


async def list_templates(db: Database, *, include_deprecated: bool = False) -> list[Template]:
    q = select(templates).where(templates.c.deleted.is_(False)).order_by(templates.c.name)
    if not include_deprecated:
        q = q.where(templates.c.deprecated.is_(False))
    async with db.read() as conn:
        return [_template(r) for r in (await conn.execute(q)).all()]


_TEMPLATE_FIELDS = frozenset(
    {"name", "display_name", "description", "git_url", "git_ref", "source_path", "init_script", "parameters", "allow_outside", "deprecated"}
)


async def update_template(db: Database, now: datetime, template_id: uuid.UUID, changes: dict[str, Any]) -> Template:
    """A partial update. Workspaces already made from the template keep their directory: the
    change applies to workspaces made from now on."""
    unknown = set(changes) - _TEMPLATE_FIELDS
    if unknown:
        raise InvalidInput(f"Unknown template fields: {', '.join(sorted(unknown))}.")
    values = dict(changes)
    if "parameters" in values:
        values["parameters"] = [
            {"name": p.name, "description": p.description, "default": p.default, "required": p.required} for p in values["parameters"]
        ]
    try:
        async with db.write() as conn:
            row = (
                await conn.execute(
                    select(templates).where(templates.c.id == template_id, templates.c.deleted.is_(False)).with_for_update()
                )
            ).first()
            if row is None:
                raise NotFound("Template not found.")
            current = _template(row)
            git_url = values.get("git_url", current.git_url)
            source_path = values.get("source_path", current.source_path)
            if git_url and source_path:
                raise InvalidInput("A template takes either git_url or source_path, not both.")
            if values:
                await conn.execute(update(templates).where(templates.c.id == template_id).values(updated_at=now, **values))
    except IntegrityError as exc:
        raise Conflict(f"A template named {changes.get('name')!r} already exists.") from exc
    return await get_template(db, template_id)


async def set_template_deprecated(db: Database, now: datetime, template_id: uuid.UUID, deprecated: bool) -> Template:
    async with db.write() as conn:
        n = (
            await conn.execute(
                update(templates)
                .where(templates.c.id == template_id, templates.c.deleted.is_(False))
                .values(deprecated=deprecated, updated_at=now)
            )
        ).rowcount
    if not n:
        raise NotFound("Template not found.")
    return await get_template(db, template_id)


async def delete_template(db: Database, now: datetime, template_id: uuid.UUID) -> None:
    """Soft delete: workspaces made from it keep their template id."""
    async with db.write() as conn:
        n = (
            await conn.execute(
                update(templates)
                .where(templates.c.id == template_id, templates.c.deleted.is_(False))
                .values(deleted=True, updated_at=now)
            )
        ).rowcount
    if not n:
        raise NotFound("Template not found.")


# --- workspaces -----------------------------------------------------------------------------------


async def create_workspace(
    db: Database,
    now: datetime,
    *,
    owner_id: uuid.UUID,
    name: str,
    provisioner: str,
    directory: str,
    template_id: uuid.UUID | None = None,
    parameters: dict[str, str] | None = None,
    allow_outside: bool = False,
    workspace_id: uuid.UUID | None = None,
) -> Workspace:
    """Insert a workspace in `provisioning`; the caller makes the directory and starts the agent."""
    wid = workspace_id or uuid.uuid4()
    try:
        async with db.write() as conn:
            await conn.execute(
                insert(workspaces).values(
                    id=wid,
                    owner_id=owner_id,
                    template_id=template_id,
                    name=name,
                    provisioner=provisioner,
                    directory=directory,
                    status=WorkspaceStatus.PROVISIONING.value,
                    parameters=dict(parameters or {}),
                    allow_outside=allow_outside,
                    created_at=now,
                    updated_at=now,
                )
            )
    except IntegrityError as exc:
        raise Conflict(f"A workspace named {name!r} already exists.") from exc
    return await get_workspace(db, wid)


async def get_workspace(db: Database, workspace_id: uuid.UUID, *, owner_id: uuid.UUID | None = None) -> Workspace:
    """One workspace; with `owner_id`, another owner's workspace is reported as not found."""
    async with db.read() as conn:
        r = (await conn.execute(select(workspaces).where(workspaces.c.id == workspace_id))).first()
    if r is None or (owner_id is not None and r.owner_id != owner_id):
        raise NotFound("Workspace not found.")
    return _workspace(r)


async def list_workspaces(
    db: Database, *, owner_id: uuid.UUID | None = None, include_deleted: bool = False
) -> list[Workspace]:
    q = select(workspaces).order_by(workspaces.c.created_at.desc(), workspaces.c.id)
    if owner_id is not None:
        q = q.where(workspaces.c.owner_id == owner_id)
    if not include_deleted:
        q = q.where(workspaces.c.status != WorkspaceStatus.DELETED.value)
    async with db.read() as conn:
        return [_workspace(r) for r in (await conn.execute(q)).all()]


async def set_workspace_status(
    db: Database,
    now: datetime,
    workspace_id: uuid.UUID,
    status: WorkspaceStatus,
    *,
    agent_url: str | None = _MISSING,
    last_error: str | None = _MISSING,
) -> Workspace:
    values: dict[str, Any] = {"status": status.value, "updated_at": now}
    if agent_url is not _MISSING:
        values["agent_url"] = agent_url
    if last_error is not _MISSING:
        values["last_error"] = last_error
    async with db.write() as conn:
        n = (await conn.execute(update(workspaces).where(workspaces.c.id == workspace_id).values(**values))).rowcount
    if not n:
        raise NotFound("Workspace not found.")
    return await get_workspace(db, workspace_id)


async def set_running_workspaces_stopped(db: Database, now: datetime, workspace_ids: list[uuid.UUID]) -> None:
    """After the agents of these workspaces were stopped (server shutdown)."""
    if not workspace_ids:
        return
    async with db.write() as conn:
        await conn.execute(
            update(workspaces)
            .where(workspaces.c.id.in_(workspace_ids), workspaces.c.status == WorkspaceStatus.RUNNING.value)
            .values(status=WorkspaceStatus.STOPPED.value, agent_url=None, updated_at=now)
        )


# --- chats <-> workspaces -------------------------------------------------------------------------


async def chat_workspace_id(db: Database, chat_id: uuid.UUID) -> uuid.UUID | None:
    async with db.read() as conn:
        r = (await conn.execute(select(chats.c.workspace_id).where(chats.c.id == chat_id))).first()
    if r is None:
        raise NotFound("Chat not found.")
    return r.workspace_id  # type: ignore[no-any-return]


async def attach_workspace(db: Database, chat_id: uuid.UUID, workspace_id: uuid.UUID) -> None:
    """Bind a workspace to a chat (create_workspace mid-chat).

    `updated_at` is left alone on purpose: it orders acquisition of pending chats.
    """
    async with db.write() as conn:
        chat = (await db.lock_row(conn, chats, chat_id))
        if chat is None:
            raise NotFound("Chat not found.")
        ws = (await conn.execute(select(workspaces.c.owner_id).where(workspaces.c.id == workspace_id))).first()
        if ws is None or ws.owner_id != chat.owner_id:
            raise NotFound("Workspace not found.")
        await conn.execute(update(chats).where(chats.c.id == chat_id).values(workspace_id=workspace_id))


# --- the records the workspace manager needs, bound to one database -------------------------------


@dataclass(frozen=True, slots=True)
class SqlWorkspaceRecords:
    """`chatd.workspace.manager.WorkspaceRecords` over this module (bootstrap builds it)."""

    db: Database
    clock: Clock

    async def list_templates(self) -> list[Template]:
        return await list_templates(self.db)

    async def get_template(self, template_id: uuid.UUID) -> Template:
        return await get_template(self.db, template_id)

    async def create_workspace(
        self,
        *,
        workspace_id: uuid.UUID,
        owner_id: uuid.UUID,
        template: Template,
        name: str,
        directory: str,
        parameters: dict[str, str],
    ) -> Workspace:
        return await create_workspace(
            self.db,
            self.clock.now(),
            workspace_id=workspace_id,
            owner_id=owner_id,
            name=name,
            provisioner=template.provisioner,
            directory=directory,
            template_id=template.id,
            parameters=parameters,
            allow_outside=template.allow_outside,
        )

    async def get_workspace(self, workspace_id: uuid.UUID) -> Workspace:
        return await get_workspace(self.db, workspace_id)

    async def set_status(
        self,
        workspace_id: uuid.UUID,
        status: WorkspaceStatus,
        *,
        agent_url: str | None = None,
        last_error: str | None = None,
    ) -> Workspace:
        return await set_workspace_status(
            self.db, self.clock.now(), workspace_id, status, agent_url=agent_url, last_error=last_error
        )

    async def mark_stopped(self, workspace_ids: list[uuid.UUID]) -> None:
        await set_running_workspaces_stopped(self.db, self.clock.now(), workspace_ids)

    async def chat_workspace_id(self, chat_id: uuid.UUID) -> uuid.UUID | None:
        return await chat_workspace_id(self.db, chat_id)

    async def attach_workspace(self, chat_id: uuid.UUID, workspace_id: uuid.UUID) -> None:
        await attach_workspace(self.db, chat_id, workspace_id)
