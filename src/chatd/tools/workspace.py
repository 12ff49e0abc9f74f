"""Workspace tools (REFERENCE §7.2-7.4): files, commands and processes in the chat's workspace,
and for root chats the template and workspace tools.

Build them per turn with `workspace_tools(...)`. All tools of one turn share a `WorkspaceLink`:
the agent connection is made lazily, remade once when the agent cannot be reached (the request
never arrived, so a retry is safe), and switched when `create_workspace` attaches a workspace
mid-turn, so the file tools work right after it in the same turn.

Writes and edits of one path in one step run one at a time in call order: the loop serialises
calls with the same `concurrency_key` *per tool*, and the shared `PathLocks` extend that across
write_file and edit_files (and across the several paths of one edit_files call).
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from chatd.domain.tools import Tool, ToolContext, ToolResult
from chatd.domain.workspace import (
    AgentUnreachable,
    FileEdits,
    ProcessState,
    Signal,
    WorkspaceAgent,
    WorkspaceOutcome,
    Workspaces,
)
from chatd.errors import ChatdError

T = TypeVar("T")

DEFAULT_EXECUTE_TIMEOUT = 10.0  # REFERENCE §7.3
MAX_EXECUTE_TIMEOUT = 600.0
DEFAULT_OUTPUT_WAIT = 10.0
OUTPUT_CAP = 32 * 1024  # bytes of command output sent to the model
TEMPLATE_PAGE_SIZE = 10
TEMPLATE_DESCRIPTION_MAX = 200
PARAMETER_DESCRIPTION_MAX = 300


class NoWorkspace(ChatdError):
    code = "no_workspace"


# --- durations ------------------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(value: object, default: float) -> float:
    """Seconds from a Go-style duration ("10s", "1m30s", "500ms") or a number of seconds."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise ValueError("a duration must be a string like '30s' or a number of seconds")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip().replace(" ", "")
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        else:
            parts = _DURATION.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ValueError(f"invalid duration {value!r}; use e.g. '30s', '2m' or '1m30s'")
            scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
            seconds = sum(float(n) * scale[u] for n, u in parts)
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{int(seconds * 1000)}ms"
    if seconds < 60 or seconds % 60:
        return f"{seconds:g}s"
    return f"{int(seconds // 60)}m"


# --- the shared state of one turn's tools ---------------------------------------------------------


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


# --- tool plumbing --------------------------------------------------------------------------------


class _Args(BaseModel):
    model_config = ConfigDict(extra="ignore")


def _error(message: str) -> ToolResult:
    return ToolResult({"error": message}, is_error=True)


def _parse(model: type[Any], args: dict[str, Any]) -> Any:
    try:
        return model.model_validate(args)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'arguments'}: {e['msg']}" for e in exc.errors())
        raise _BadArgs(f"Invalid arguments: {problems}") from None


class _BadArgs(Exception):
    pass


class _WorkspaceTool:
    """Shared by every tool here: argument parsing and error conversion.

    Tool errors go back to the model as error results; they never end the turn.
    """

    name: str
    description: str
    parameters: dict[str, Any]
    # Reads are safe to run again after a crash; the rest run at most once (chatd.worker.journal).
    idempotent: bool = False

    async def call(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        try:
            return await self.run(args, ctx)
        except _BadArgs as exc:
            return _error(str(exc))
        except ChatdError as exc:
            return _error(exc.message)

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        raise NotImplementedError


def _schema(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema


# --- files ----------------------------------------------------------------------------------------


class _ReadArgs(_Args):
    path: str = Field(min_length=1)
    offset: int = Field(default=1, ge=1)
    limit: int | None = Field(default=None, ge=1)


class ReadFile(_WorkspaceTool):
    name = "read_file"
    idempotent = True
    description = (
        "Read a text file in the workspace. Returns the content with line numbers, the file size, "
        "the total number of lines and how many were read. Reads at most 2000 lines per call by "
        "default: for large files, read a range with offset (1-based line) and limit, and continue "
        "with a larger offset."
    )
    parameters = _schema(
        {
            "path": {"type": "string", "description": "Path of the file, relative to the workspace directory or absolute."},
            "offset": {"type": "integer", "minimum": 1, "description": "First line to read (1-based). Default 1."},
            "limit": {"type": "integer", "minimum": 1, "description": "Maximum number of lines. Default 2000."},
        },
        ["path"],
    )

    def __init__(self, link: WorkspaceLink) -> None:
        self.link = link

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        a: _ReadArgs = _parse(_ReadArgs, args)
        result = await self.link.call(lambda agent: agent.read_file(a.path, offset=a.offset, limit=a.limit))
        return ToolResult(result.model_dump(exclude_none=True))


class _WriteArgs(_Args):
    path: str = Field(min_length=1)
    content: str


class WriteFile(_WorkspaceTool):
    name = "write_file"
    description = (
        "Create or overwrite a file in the workspace with the given content (parent directories "
        "are created). To change part of an existing file, prefer edit_files."
    )
    parameters = _schema(
        {
            "path": {"type": "string", "description": "Path of the file, relative to the workspace directory or absolute."},
            "content": {"type": "string", "description": "The complete new content of the file."},
        },
        ["path", "content"],
    )

    def __init__(self, link: WorkspaceLink, locks: PathLocks) -> None:
        self.link = link
        self.locks = locks

    def concurrency_key(self, args: dict[str, Any]) -> str | None:
        path = args.get("path")
        return f"path:{PathLocks.key(path)}" if isinstance(path, str) else None

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        a: _WriteArgs = _parse(_WriteArgs, args)
        async with self.locks.hold([a.path]):
            await self.link.call(lambda agent: agent.write_file(a.path, a.content))
        return ToolResult({"ok": True})


class _EditArgs(_Args):
    files: list[FileEdits] = Field(min_length=1)

    @field_validator("files")
    @classmethod
    def _edits_present(cls, files: list[FileEdits]) -> list[FileEdits]:
        for f in files:
            if not f.edits:
                raise ValueError(f"no edits given for {f.path}")
        return files


class EditFiles(_WorkspaceTool):
    name = "edit_files"
    description = (
        "Edit existing files by search and replace. Each edit's search text must match the file "
        "exactly once (include enough surrounding lines to make it unique); edits of one file apply "
        "in order. All edits of a call are applied atomically: if any edit does not apply, no file "
        "is changed and the error says which edit failed."
    )
    parameters = _schema(
        {
            "files": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "properties": {
                        "path": {"type": "string"},
                        "edits": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "properties": {
                                    "search": {"type": "string", "description": "Exact text to find."},
                                    "replace": {"type": "string", "description": "Text to put in its place."},
                                },
                                "required": ["search", "replace"],
                                "additionalProperties": False,
                            },
                        },
                    },
                    "required": ["path", "edits"],
                    "additionalProperties": False,
                },
            }
        },
        ["files"],
    )

    def __init__(self, link: WorkspaceLink, locks: PathLocks) -> None:
        self.link = link
        self.locks = locks

    def concurrency_key(self, args: dict[str, Any]) -> str | None:
        files = args.get("files")
        if not isinstance(files, list):
            return None
        paths = sorted({PathLocks.key(f["path"]) for f in files if isinstance(f, dict) and isinstance(f.get("path"), str)})
        return "paths:" + "\0".join(paths) if paths else None

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        a: _EditArgs = _parse(_EditArgs, args)
        async with self.locks.hold(f.path for f in a.files):
            await self.link.call(lambda agent: agent.edit_files(a.files))
        return ToolResult({"ok": True})


# --- processes ------------------------------------------------------------------------------------

_FILE_DUMP = re.compile(r"^\s*cat\s|^\s*(grep|rg)\b.*\s(-l|--files-with-matches|--include-all)(\s|$)")
_FILE_DUMP_NOTE = (
    "To read a file, use read_file instead of cat: it numbers lines and pages large files. "
    "To find files, prefer a search that prints matching lines with context."
)


def split_background(command: str) -> tuple[str, bool]:
    """Strip a trailing single `&` (not `&&`, not `|&`): such a command runs in the background."""
    stripped = command.rstrip()
    if stripped.endswith("&") and not stripped.endswith("&&") and not stripped.endswith("|&") and not stripped.endswith("\\&"):
        return stripped[:-1].rstrip(), True
    return command, False


def _finished(state: ProcessState) -> dict[str, Any]:
    result: dict[str, Any] = {
        "success": state.exit_code == 0,
        "exit_code": state.exit_code,
        "output": state.output,
        "wall_duration_ms": state.wall_duration_ms,
    }
    if state.truncated is not None:
        result["truncated"] = state.truncated.model_dump()
    return result


class _ExecuteArgs(_Args):
    command: str = Field(min_length=1)
    timeout: str | float | None = None
    workdir: str | None = None
    run_in_background: bool = False


class Execute(_WorkspaceTool):
    name = "execute"
    description = (
        "Run a shell command (sh -c) in the workspace and return its exit code and output "
        "(stdout and stderr together, at most 32 KB: the middle of longer output is cut). The "
        "environment is non-interactive: no editors, pagers or prompts. Waits up to `timeout` "
        "(default 10s); a command still running then keeps running and you get its "
        "background_process_id for process_output. For servers and other long-running commands, "
        "set run_in_background (or end the command with a single &) and poll with process_output."
    )
    parameters = _schema(
        {
            "command": {"type": "string", "description": "The shell command."},
            "timeout": {"type": "string", "description": "How long to wait, e.g. '30s' or '5m'. Default '10s', at most '10m'."},
            "workdir": {"type": "string", "description": "Working directory (default: the workspace directory)."},
            "run_in_background": {"type": "boolean", "description": "Start it and return at once with a process id."},
        },
        ["command"],
    )

    def __init__(self, link: WorkspaceLink) -> None:
        self.link = link

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        a: _ExecuteArgs = _parse(_ExecuteArgs, args)
        try:
            timeout = min(parse_duration(a.timeout, DEFAULT_EXECUTE_TIMEOUT), MAX_EXECUTE_TIMEOUT)
        except ValueError as exc:
            return _error(str(exc))
        command, background = a.command, a.run_in_background
        if not background:
            command, background = split_background(command)
        env = {"CHATD_CHAT_ID": str(ctx.chat_id)}
        try:
            state = await self.link.call(
                lambda agent: agent.start_process(
                    command,
                    workdir=a.workdir,
                    background=background,
                    wait=0.0 if background else timeout,
                    max_output_bytes=OUTPUT_CAP,
                    env=env,
                )
            )
        except NoWorkspace:
            raise
        except ChatdError as exc:
            if getattr(exc, "agent_code", None) == "commands_disabled":
                raise  # the server's policy, not this command's failure: a tool error
            # Start failures are results, not tool errors (REFERENCE §7.3).
            return ToolResult({"success": False, "error": exc.message})
        if background:
            return ToolResult(
                {
                    "success": True,
                    "background_process_id": state.id,
                    "note": "Started in the background. Use process_output to read its output and process_signal to stop it.",
                }
            )
        if state.running:
            result: dict[str, Any] = {
                "success": False,
                "exit_code": -1,
                "error": f"command timed out after {format_duration(timeout)}",
                "output": state.output,
                "background_process_id": state.id,
                "note": "The command is still running. Use process_output to wait for it or process_signal to stop it.",
            }
            if state.truncated is not None:
                result["truncated"] = state.truncated.model_dump()
            return ToolResult(result)
        result = _finished(state)
        if _FILE_DUMP.search(command):
            result["note"] = _FILE_DUMP_NOTE
        return ToolResult(result)


class _OutputArgs(_Args):
    process_id: str = Field(min_length=1)
    wait_timeout: str | float | None = None


class ProcessOutput(_WorkspaceTool):
    name = "process_output"
    idempotent = True
    description = (
        "Read the output of a process started by execute (background or timed out). Waits up to "
        "wait_timeout (default 10s; '0s' for a snapshot) for it to finish. Output is capped at 32 KB."
    )
    parameters = _schema(
        {
            "process_id": {"type": "string"},
            "wait_timeout": {"type": "string", "description": "How long to wait for it to exit, e.g. '30s'. Default '10s'."},
        },
        ["process_id"],
    )

    def __init__(self, link: WorkspaceLink) -> None:
        self.link = link

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        a: _OutputArgs = _parse(_OutputArgs, args)
        try:
            wait = min(parse_duration(a.wait_timeout, DEFAULT_OUTPUT_WAIT), MAX_EXECUTE_TIMEOUT)
        except ValueError as exc:
            return _error(str(exc))
        state = await self.link.call(lambda agent: agent.process_output(a.process_id, wait=wait, max_output_bytes=OUTPUT_CAP))
        if state.running:
            result: dict[str, Any] = {
                "success": True,
                "running": True,
                "output": state.output,
                "wall_duration_ms": state.wall_duration_ms,
                "note": "process is still running",
            }
            if state.truncated is not None:
                result["truncated"] = state.truncated.model_dump()
            return ToolResult(result)
        return ToolResult(_finished(state))


class ProcessList(_WorkspaceTool):
    name = "process_list"
    idempotent = True
    description = "List the processes started with execute in this workspace: id, command, whether it runs, exit code."
    parameters = _schema({})

    def __init__(self, link: WorkspaceLink) -> None:
        self.link = link

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        states = await self.link.call(lambda agent: agent.list_processes())
        return ToolResult(
            {
                "processes": [
                    {
                        "process_id": s.id,
                        "command": s.command,
                        "running": s.running,
                        "exit_code": s.exit_code,
                        "background": s.background,
                        "wall_duration_ms": s.wall_duration_ms,
                    }
                    for s in states
                ]
            }
        )


class _SignalArgs(_Args):
    process_id: str = Field(min_length=1)
    signal: str = Field(pattern="^(terminate|kill)$")


class ProcessSignal(_WorkspaceTool):
    name = "process_signal"
    description = "Stop a process started with execute: 'terminate' (SIGTERM, lets it clean up) or 'kill' (SIGKILL)."
    parameters = _schema(
        {"process_id": {"type": "string"}, "signal": {"type": "string", "enum": ["terminate", "kill"]}},
        ["process_id", "signal"],
    )

    def __init__(self, link: WorkspaceLink) -> None:
        self.link = link

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        a: _SignalArgs = _parse(_SignalArgs, args)
        sig: Signal = "kill" if a.signal == "kill" else "terminate"
        message = await self.link.call(lambda agent: agent.signal_process(a.process_id, sig))
        return ToolResult({"success": True, "message": message})


# --- templates and workspaces (root chats) --------------------------------------------------------


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _ListTemplatesArgs(_Args):
    query: str | None = None
    page: int = Field(default=1, ge=1)


class ListTemplates(_WorkspaceTool):
    name = "list_templates"
    idempotent = True
    description = (
        "List the workspace templates you can create a workspace from (10 per page), optionally "
        "filtered by name. Use read_template for its parameters, then create_workspace."
    )
    parameters = _schema(
        {
            "query": {"type": "string", "description": "Part of a template name to filter by."},
            "page": {"type": "integer", "minimum": 1, "description": "Page number, from 1."},
        }
    )

    def __init__(self, workspaces: Workspaces) -> None:
        self.workspaces = workspaces

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        a: _ListTemplatesArgs = _parse(_ListTemplatesArgs, args)
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


class _TemplateIdArgs(_Args):
    template_id: uuid.UUID


class ReadTemplate(_WorkspaceTool):
    name = "read_template"
    idempotent = True
    description = "Show a workspace template and the parameters create_workspace accepts for it."
    parameters = _schema({"template_id": {"type": "string", "description": "The template's id."}}, ["template_id"])

    def __init__(self, workspaces: Workspaces) -> None:
        self.workspaces = workspaces

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        a: _TemplateIdArgs = _parse(_TemplateIdArgs, args)
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


class _CreateArgs(_Args):
    template_id: uuid.UUID
    name: str | None = None
    parameters: dict[str, str | int | float | bool] | None = None


class CreateWorkspace(_WorkspaceTool):
    name = "create_workspace"
    description = (
        "Create a workspace for this chat from a template (see list_templates / read_template) "
        "and start it; the workspace tools (read_file, write_file, edit_files, execute, ...) then "
        "act in it. If the chat already has a working workspace, that one is kept and reported."
    )
    parameters = _schema(
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
        a: _CreateArgs = _parse(_CreateArgs, args)
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


class StartWorkspace(_WorkspaceTool):
    name = "start_workspace"
    description = "Start (or restart) this chat's workspace agent, e.g. after the server restarted or it stopped."
    parameters = _schema({})

    def __init__(self, workspaces: Workspaces, link: WorkspaceLink) -> None:
        self.workspaces = workspaces
        self.link = link

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        o = await self.workspaces.start_for_chat(ctx.chat_id)
        self.link.attach(o.workspace.id)
        return _outcome(o, {"started": o.started})


# --- the factory ----------------------------------------------------------------------------------


def workspace_tools(
    workspaces: Workspaces | None,
    *,
    workspace_id: uuid.UUID | None,
    is_root: bool,
    agent: WorkspaceAgent | None = None,
) -> list[Tool]:
    """The workspace tools of one turn of one chat.

    - `workspaces`: the workspace manager (None: no provisioning on this server; file tools then
      work only with `agent`).
    - `workspace_id`: the chat's workspace now (None: not attached yet).
    - `is_root`: root chats also get list_templates, read_template, create_workspace and
      start_workspace; sub-agents never do (one level of provisioning, as the reference).
    - `agent`: an already connected agent to use instead of resolving `workspace_id`.
    """
    link = WorkspaceLink(workspaces, workspace_id, agent)
    locks = PathLocks()
    tools: list[Tool] = [
        ReadFile(link),
        WriteFile(link, locks),
        EditFiles(link, locks),
        Execute(link),
        ProcessOutput(link),
        ProcessList(link),
        ProcessSignal(link),
    ]
    if is_root and workspaces is not None:
        tools += [
            ListTemplates(workspaces),
            ReadTemplate(workspaces),
            CreateWorkspace(workspaces, link),
            StartWorkspace(workspaces, link),
        ]
    return tools
