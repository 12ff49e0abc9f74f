"""Workspace tools (REFERENCE §7.2-7.4): files, commands and processes in the chat's workspace,
and for root chats the template and workspace tools.

Build them per turn with `workspace_tools(...)`. All tools of one turn share a `WorkspaceLink`:
the agent connection is made lazily, remade once when the agent cannot be reached (the request
never arrived, so a retry is safe), and switched when `create_workspace` attaches a workspace
mid-turn, so the file tools work right after it in the same turn.

Writes and edits of one path in one step run one at a time in call order: the loop serialises
calls with the same `concurrency_key` *per tool*, and the shared `PathLocks` extend that across
write_file and edit_files (and across the several paths of one edit_files call).

One module per tool family: `files.py`, `processes.py`, `provisioning.py`; what they share is
`link.py` (the workspace of the turn, path locks) and `tool.py` (argument parsing, errors).
"""

from __future__ import annotations

import uuid

from chatd.domain.tools import Tool
from chatd.domain.workspace import WorkspaceAgent, Workspaces
from chatd.tools.workspace.files import EditFiles, ReadFile, WriteFile
from chatd.tools.workspace.link import PathLocks, WorkspaceLink
from chatd.tools.workspace.processes import Execute, ProcessList, ProcessOutput, ProcessSignal
from chatd.tools.workspace.provisioning import (
    CreateWorkspace,
    ListTemplates,
    ReadTemplate,
    StartWorkspace,
)


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
