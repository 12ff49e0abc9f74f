"""Which calls of a turn wait for a person before they run (human in the loop, domain/actions.py):
MCP tools by their server's approval policy and the tool's annotations, built-in workspace tools
by the deployment's `workspace_tool_approval`; a tool the owner allowed for the chat ("always
allow") runs without asking. Client-side tools always wait for the client."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chatd.domain.actions import ActionKind, ActionRequest, needs_approval
from chatd.domain.chat import Chat
from chatd.domain.tools import Tool, ToolWrapper
from chatd.mcp import McpTool
from chatd.settings import Settings
from chatd.tools.client import ClientSideTool

# Built-in workspace tools by what they do (tools/workspace.py).
WORKSPACE_COMMANDS = frozenset({"execute", "process_signal"})
WORKSPACE_WRITES = frozenset({"write_file", "edit_files"})


def workspace_policy(setting: str, tool_name: str) -> bool:
    if setting == "execute":
        return tool_name in WORKSPACE_COMMANDS
    if setting == "writes":
        return tool_name in WORKSPACE_COMMANDS | WORKSPACE_WRITES
    return False


def _mcp_asks(tool: McpTool) -> bool:
    policy = tool.server.config.approval_for(tool.original_name)
    return needs_approval(policy, read_only=tool.read_only)


class ApprovalGate(ToolWrapper):
    """A tool whose calls wait for the owner's approval (approve, deny, or approve edited args):
    the turn asks before it calls (`action_for`); the call itself is the inner tool's."""

    def __init__(self, tool: Tool, server: str | None) -> None:
        super().__init__(tool)
        self.server = server

    def action_for(self, args: dict[str, Any]) -> ActionRequest:
        # The tool's input schema: edited arguments are held to it when answered (a 400 then,
        # with the approval still open), not refused by the tool after the model was told.
        return ActionRequest(ActionKind.TOOL_APPROVAL, message=f"Run {self.tool.name}?", server=self.server, schema=self.tool.parameters)


def gate_tools(tools: Sequence[Tool], chat: Chat, settings: Settings) -> list[Tool]:
    allowed = set(chat.allowed_tools)
    out: list[Tool] = []
    for tool in tools:
        if isinstance(tool, McpTool):
            asks, slug = _mcp_asks(tool), tool.server_slug
        else:
            asks, slug = workspace_policy(settings.workspace_tool_approval, tool.name), None
        out.append(ApprovalGate(tool, slug) if asks and tool.name not in allowed else tool)
    return out


def client_tools(chat: Chat, settings: Settings) -> list[Tool]:
    return [ClientSideTool(spec, settings.client_tool_timeout) for spec in chat.client_tools]
