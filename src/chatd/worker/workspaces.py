"""Workspace tools and context for a turn: what the chat's workspace is *now* (it may have been
attached mid-chat), its tools, a current awareness note and its AGENTS.md instructions."""

from __future__ import annotations

import logging

from chatd.domain.tools import Tool
from chatd.tools.instructions import instructions_section, load_instructions, workspace_note
from chatd.tools.workspace import workspace_tools
from chatd.worker.turn import ToolProvider, TurnContext
from chatd.workspace.manager import WorkspaceManager

log = logging.getLogger(__name__)


def workspace_provider(manager: WorkspaceManager) -> ToolProvider:
    async def provide(ctx: TurnContext) -> tuple[list[Tool], list[str]]:
        is_root = ctx.chat.parent_chat_id is None
        workspace_id = await manager.records.chat_workspace_id(ctx.chat.id)
        agent = None
        if workspace_id is not None:
            try:
                agent = await manager.agent_for(workspace_id)
            except Exception as exc:
                # The tools restart it on first use; the turn goes on without instructions.
                log.warning("workspace %s of chat %s is not reachable: %s", workspace_id, ctx.chat.id, exc)
        tools = workspace_tools(manager, workspace_id=workspace_id, is_root=is_root, agent=agent)
        sections = [
            workspace_note(attached=workspace_id is not None, can_create=is_root),
            instructions_section(await load_instructions(agent)),
        ]
        return tools, sections

    return provide
