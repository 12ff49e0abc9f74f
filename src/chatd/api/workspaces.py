"""Templates and workspaces (issue 6): admins define templates; a member sees their workspaces."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from chatd.api.deps import CurrentUser, Service
from chatd.api.openapi import errors
from chatd.api.paging import PAGED, Before, Limit, decode_cursor, page, set_next, time_key
from chatd.api.schemas import Bool, Patch, TextChecked
from chatd.domain.workspace import Template, Workspace

router = APIRouter(prefix="/api/v1")


class TemplateParameterIO(TextChecked):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    description: str = Field(default="", max_length=1024)
    default: str | None = Field(default=None, max_length=4096)
    required: Bool = False


class TemplateIn(TextChecked):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    display_name: str = Field(default="", max_length=256)
    description: str = Field(default="", max_length=4096)
    provisioner: str = "local"
    git_url: str | None = Field(default=None, max_length=2048)
    git_ref: str | None = Field(default=None, max_length=256)
    source_path: str | None = Field(default=None, max_length=4096)
    init_script: str = Field(default="", max_length=64 * 1024)
    parameters: list[TemplateParameterIO] = Field(default_factory=list, max_length=64)
    allow_outside: Bool = False


class TemplatePatch(Patch):
    """Any of TemplateIn's fields (except the provisioner), and `deprecated`: a deprecated template
    is hidden from new workspaces but keeps serving the ones made from it."""

    nullable = frozenset({"git_url", "git_ref", "source_path"})
    name: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    display_name: str | None = Field(default=None, max_length=256)
    description: str | None = Field(default=None, max_length=4096)
    git_url: str | None = Field(default=None, max_length=2048, description="null removes it.")
    git_ref: str | None = Field(default=None, max_length=256, description="null removes it.")
    source_path: str | None = Field(default=None, max_length=4096, description="null removes it.")
    init_script: str | None = Field(default=None, max_length=64 * 1024)
    parameters: list[TemplateParameterIO] | None = Field(default=None, max_length=64)
    allow_outside: Bool | None = None
    deprecated: Bool | None = None


class TemplateOut(BaseModel):
    id: uuid.UUID
    name: str
    display_name: str
    description: str
    provisioner: str
    git_url: str | None
    git_ref: str | None
    source_path: str | None
    init_script: str
    parameters: list[TemplateParameterIO]
    allow_outside: bool
    deprecated: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, t: Template) -> TemplateOut:
        return cls(
            id=t.id, name=t.name, display_name=t.display_name, description=t.description, provisioner=t.provisioner,
            git_url=t.git_url, git_ref=t.git_ref, source_path=t.source_path, init_script=t.init_script,
            parameters=[TemplateParameterIO(name=p.name, description=p.description, default=p.default, required=p.required) for p in t.parameters],
            allow_outside=t.allow_outside, deprecated=t.deprecated, created_at=t.created_at, updated_at=t.updated_at,
        )


class WorkspaceOut(BaseModel):
    id: uuid.UUID
    owner_id: uuid.UUID
    template_id: uuid.UUID | None
    name: str
    provisioner: str
    directory: str
    status: str
    parameters: dict[str, str]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, w: Workspace) -> WorkspaceOut:
        return cls(
            id=w.id, owner_id=w.owner_id, template_id=w.template_id, name=w.name, provisioner=w.provisioner,
            directory=w.directory, status=w.status.value, parameters=dict(w.parameters),
            created_at=w.created_at, updated_at=w.updated_at,
        )


@router.get("/templates", tags=["workspaces"], responses=PAGED)
async def list_templates(
    request: Request,
    response: Response,
    user: CurrentUser,
    svc: Service,
    include_deprecated: Annotated[bool, Query(description="Deprecated ones too (admins only; members never see them).")] = False,
    limit: Limit = 100,
    before: Before = None,
) -> list[TemplateOut]:
    listed = await svc.list_templates(user, include_deprecated=include_deprecated)
    rows, nxt = page(listed, lambda t: (t.name,), limit, decode_cursor(before, (str,)))
    set_next(request, response, nxt)
    return [TemplateOut.of(t) for t in rows]


@router.post("/templates", status_code=201, tags=["workspaces"], responses=errors(403, 409))
async def create_template(body: TemplateIn, user: CurrentUser, svc: Service) -> TemplateOut:
    return TemplateOut.of(await svc.create_template(user, body.model_dump()))


@router.get("/templates/{template_id}", tags=["workspaces"])
async def get_template(template_id: uuid.UUID, user: CurrentUser, svc: Service) -> TemplateOut:
    return TemplateOut.of(await svc.get_template(user, template_id))


@router.patch("/templates/{template_id}", tags=["workspaces"], responses=errors(403, 409))
async def update_template(template_id: uuid.UUID, body: TemplatePatch, user: CurrentUser, svc: Service) -> TemplateOut:
    return TemplateOut.of(await svc.update_template(user, template_id, body.model_dump(exclude_unset=True)))


@router.delete("/templates/{template_id}", status_code=204, tags=["workspaces"], responses=errors(403))
async def delete_template(template_id: uuid.UUID, user: CurrentUser, svc: Service) -> Response:
    """Soft delete: workspaces made from it keep working."""
    await svc.delete_template(user, template_id)
    return Response(status_code=204)


@router.get("/workspaces", tags=["workspaces"], responses=PAGED)
async def list_workspaces(
    request: Request, response: Response, user: CurrentUser, svc: Service, limit: Limit = 100, before: Before = None
) -> list[WorkspaceOut]:
    """The caller's workspaces, newest first."""
    key = lambda w: (time_key(w.created_at), str(w.id))  # noqa: E731
    rows, nxt = page(await svc.list_workspaces(user), key, limit, decode_cursor(before, (str, str)), descending=True)
    set_next(request, response, nxt)
    return [WorkspaceOut.of(w) for w in rows]


@router.get("/workspaces/{workspace_id}", tags=["workspaces"])
async def get_workspace(workspace_id: uuid.UUID, user: CurrentUser, svc: Service) -> WorkspaceOut:
    return WorkspaceOut.of(await svc.get_workspace(user, workspace_id))
