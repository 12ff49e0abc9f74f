"""Workspaces: templates, workspace records, and the two interfaces the tools use.

A *template* says how to make a workspace (which provisioner, where the files come from, an init
script); a *workspace* is a directory with an agent serving it. The tools see a workspace only
through `WorkspaceAgent` (one workspace's agent) and `Workspaces` (templates and lifecycle), so
they do not depend on HTTP, the database or any provisioner.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from chatd.errors import Unavailable


class AgentUnreachable(Unavailable):
    """A workspace agent could not be reached: the request was not delivered, so restarting the
    agent and sending it again is safe (unlike a timeout, after which it may have acted)."""

# --- records ------------------------------------------------------------------------------------


class WorkspaceStatus(enum.StrEnum):
    PROVISIONING = "provisioning"  # directory being made (clone, copy, init script)
    RUNNING = "running"  # an agent serves it
    STOPPED = "stopped"  # files kept, no agent
    FAILED = "failed"  # provisioning or start failed: see last_error
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class TemplateParameter:
    """A value asked for at creation; the init script sees it as `CHATD_PARAM_<NAME>`."""

    name: str
    description: str = ""
    default: str | None = None
    required: bool = False


@dataclass(frozen=True, slots=True)
class Template:
    id: uuid.UUID
    name: str
    display_name: str
    description: str
    provisioner: str  # "local" for now
    git_url: str | None  # clone from here, or
    source_path: str | None  # copy from here (neither: an empty directory)
    git_ref: str | None
    init_script: str
    parameters: list[TemplateParameter]
    # File tools may reach outside the workspace directory (commands always can, unless sandboxed).
    allow_outside: bool
    deprecated: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Workspace:
    id: uuid.UUID
    owner_id: uuid.UUID
    template_id: uuid.UUID | None
    name: str
    provisioner: str
    directory: str
    status: WorkspaceStatus
    parameters: dict[str, str]
    allow_outside: bool
    agent_url: str | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class WorkspaceOutcome:
    """What create/start reports to the model (REFERENCE §7.4 result shapes)."""

    workspace: Workspace
    created: bool = False
    started: bool = False
    already_existed: bool = False
    agent_ready: bool = True
    agent_error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# --- what the agent returns (the wire models of chatd.workspace.agent) --------------------------


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class FileContent(_Wire):
    content: str  # line-numbered
    file_size: int
    total_lines: int
    lines_read: int
    note: str | None = None


class Truncation(_Wire):
    original_bytes: int
    shown_bytes: int
    note: str


class ProcessState(_Wire):
    id: str
    command: str
    workdir: str
    pid: int | None
    running: bool
    exit_code: int | None
    output: str = ""
    truncated: Truncation | None = None
    background: bool = False
    started_at: float  # unix seconds
    ended_at: float | None = None
    wall_duration_ms: int = 0


class InstructionFile(_Wire):
    path: str
    content: str
    truncated: bool = False


class Instructions(_Wire):
    os: str | None = None
    directory: str | None = None
    files: list[InstructionFile] = []


class Edit(_Wire):
    search: str
    replace: str


class FileEdits(_Wire):
    path: str
    edits: list[Edit]


Signal = Literal["terminate", "kill"]


# --- interfaces -----------------------------------------------------------------------------------


class WorkspaceAgent(Protocol):
    """One workspace's agent (chatd.workspace.client.AgentClient over HTTP)."""

    async def read_file(self, path: str, *, offset: int = 1, limit: int | None = None) -> FileContent: ...

    async def write_file(self, path: str, content: str) -> None: ...

    async def edit_files(self, files: list[FileEdits]) -> None: ...

    async def start_process(
        self,
        command: str,
        *,
        workdir: str | None = None,
        background: bool = False,
        wait: float = 0.0,
        max_output_bytes: int | None = None,
        env: dict[str, str] | None = None,
    ) -> ProcessState: ...

    async def process_output(self, process_id: str, *, wait: float = 0.0, max_output_bytes: int | None = None) -> ProcessState: ...

    async def list_processes(self) -> list[ProcessState]: ...

    async def signal_process(self, process_id: str, signal: Signal) -> str: ...

    async def instructions(self) -> Instructions: ...

    async def ping(self, *, timeout: float = 5.0) -> bool: ...


class Workspaces(Protocol):
    """Templates and workspace lifecycle, as the root-chat tools need them."""

    async def list_templates(self, query: str | None = None) -> list[Template]: ...

    async def get_template(self, template_id: uuid.UUID) -> Template: ...

    async def create_for_chat(
        self,
        chat_id: uuid.UUID,
        owner_id: uuid.UUID,
        template_id: uuid.UUID,
        *,
        name: str | None = None,
        parameters: dict[str, str] | None = None,
    ) -> WorkspaceOutcome: ...

    async def start_for_chat(self, chat_id: uuid.UUID) -> WorkspaceOutcome: ...

    async def agent_for(self, workspace_id: uuid.UUID, *, restart: bool = False) -> WorkspaceAgent: ...
