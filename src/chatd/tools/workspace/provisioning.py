"""The tools of root chats that make workspaces: list_templates, read_template, create_workspace,
start_workspace (sub-agents never get them: one level of provisioning, as the reference)."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import Field

from chatd.domain.tools import ToolContext, ToolResult
from chatd.domain.workspace import WorkspaceOutcome, Workspaces
from chatd.tools.workspace.link import WorkspaceLink
from chatd.tools.workspace.tool import Args, WorkspaceTool, parse_args, schema

TEMPLATE_PAGE_SIZE = 10
TEMPLATE_DESCRIPTION_MAX = 200
PARAMETER_DESCRIPTION_MAX = 300


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _ListTemplatesArgs(Args):
    query: str | None = None
    page: int = Field(default=1, ge=1)


class ListTemplates(WorkspaceTool):
    name = "list_templates"
    idempotent = True
    description = (
        "List the workspace templates you can create a workspace from (10 per page), optionally "
        "filtered by name. Use read_template for its parameters, then create_workspace."
    )
    parameters = schema(
        {
            "query": {"type": "string", "description": "Part of a template name to filter by."},
            "page": {"type": "integer", "minimum": 1, "description": "Page number, from 1."},
        }
    )

    def __init__(self, workspaces: Workspaces) -> None:
        self.workspaces = workspaces

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        a: _ListTemplatesArgs = parse_args(_ListTemplatesArgs, args)
        templates = await self.workspaces.list_templates(a.query)
        total = len(templates)
        pages = max(1, -(-total // TEMPLATE_PAGE_SIZE))
        chunk = templates[(a.page - 1) * TEMPLATE_PAGE_SIZE : a.page * TEMPLATE_PAGE_SIZE]
        items = []
        for t in chunk:
            item: dict[str, Any] = {"id": str(t.id), "name": t.name}
            if t.display_name:
                item["display_name"] = t.display_name
            if t.description:
                item["description"] = _clip(t.description, TEMPLATE_DESCRIPTION_MAX)
            items.append(item)
        return ToolResult({"templates": items, "count": len(items), "page": a.page, "total_pages": pages, "total_count": total})


class _TemplateIdArgs(Args):
    template_id: uuid.UUID


class ReadTemplate(WorkspaceTool):
    name = "read_template"
    idempotent = True
    description = "Show a workspace template and the parameters create_workspace accepts for it."
    parameters = schema({"template_id": {"type": "string", "description": "The template's id."}}, ["template_id"])

    def __init__(self, workspaces: Workspaces) -> None:
        self.workspaces = workspaces

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        a: _TemplateIdArgs = parse_args(_TemplateIdArgs, args)
        t = await self.workspaces.get_template(a.template_id)
        template: dict[str, Any] = {"id": str(t.id), "name": t.name}
        if t.display_name:
            template["display_name"] = t.display_name
        if t.description:
            template["description"] = t.description
        params = []
        for p in t.parameters:
            item: dict[str, Any] = {"name": p.name, "type": "string", "required": p.required and p.default is None}
            if p.description:
                item["description"] = _clip(p.description, PARAMETER_DESCRIPTION_MAX)
            if p.default is not None:
                item["default"] = p.default
            params.append(item)
        return ToolResult({"template": template, "parameters": params})


def _outcome(o: WorkspaceOutcome, result: dict[str, Any]) -> ToolResult:
    result["workspace_name"] = o.workspace.name
    result["workspace_id"] = str(o.workspace.id)
    if not o.agent_ready:
        result["agent_status"] = "not_ready"
        if o.agent_error:
            result["agent_error"] = o.agent_error
    return ToolResult(result)


class _CreateArgs(Args):
    template_id: uuid.UUID
    name: str | None = None
    parameters: dict[str, str | int | float | bool] | None = None


class CreateWorkspace(WorkspaceTool):
    name = "create_workspace"
    description = (
        "Create a workspace for this chat from a template (see list_templates / read_template) "
        "and start it; the workspace tools (read_file, write_file, edit_files, execute, ...) then "
        "act in it. If the chat already has a working workspace, that one is kept and reported."
    )
    parameters = schema(
        {
            "template_id": {"type": "string"},
            "name": {"type": "string", "description": "Optional name (letters, digits, - and _)."},
            "parameters": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Template parameter values."},
        },
        ["template_id"],
    )

    def __init__(self, workspaces: Workspaces, link: WorkspaceLink) -> None:
        self.workspaces = workspaces
        self.link = link

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        a: _CreateArgs = parse_args(_CreateArgs, args)
        params = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in (a.parameters or {}).items()}
        o = await self.workspaces.create_for_chat(ctx.chat_id, ctx.owner_id, a.template_id, name=a.name, parameters=params)
        self.link.attach(o.workspace.id)
        if o.already_existed:
            return _outcome(
                o,
                {
                    "created": False,
                    "status": "already_exists",
                    "message": "This chat already has a workspace; it was kept. Use the workspace tools in it.",
                },
            )
        return _outcome(o, {"created": True})


class StartWorkspace(WorkspaceTool):
    name = "start_workspace"
    description = "Start (or restart) this chat's workspace agent, e.g. after the server restarted or it stopped."
    parameters = schema({})

    def __init__(self, workspaces: Workspaces, link: WorkspaceLink) -> None:
        self.workspaces = workspaces
        self.link = link

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        o = await self.workspaces.start_for_chat(ctx.chat_id)
        self.link.attach(o.workspace.id)
        return _outcome(o, {"started": o.started})
