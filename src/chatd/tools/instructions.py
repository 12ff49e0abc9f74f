"""Per-turn system sections about the workspace (REFERENCE §6.6, §12.2).

- `workspace_note(attached=...)`: the workspace-awareness note, computed from the chat's workspace
  *now*. The reference persists it at chat creation, so a chat that gets a workspace mid-way keeps
  telling the model "no workspace yet"; build it every turn instead (and skip the copy stored at
  creation, see `chatd.store.chats.workspace_awareness`).
- `load_instructions(agent)` + `instructions_section(...)`: `~/.chatd/AGENTS.md` and
  `<dir>/AGENTS.md` read through the agent (64 KiB each, with a truncation note), plus the OS and
  working directory, as one `<workspace-context>` block. The agent re-reads a file when its stat
  changes, so an edit is seen on the next turn; a failed lookup only drops the block.
"""

from __future__ import annotations

import asyncio
import logging
import re

from chatd.domain.workspace import Instructions, WorkspaceAgent

log = logging.getLogger(__name__)

INSTRUCTIONS_TIMEOUT = 5.0  # REFERENCE §12.2 lookup timeout

_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
# Zero-width and bidi controls: invisible to a reviewer, visible to the model.
_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")


def sanitize(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _HTML_COMMENT.sub("", text)
    return _INVISIBLE.sub("", text).strip()


def workspace_note(*, attached: bool, can_create: bool = True) -> str:
    if attached:
        return (
            "This chat is attached to a workspace. Use the workspace tools (read_file, write_file, "
            "edit_files, execute, process_output, process_list, process_signal) to read and change "
            "files and to run commands in it."
        )
    if can_create:
        return (
            "This chat has no workspace yet. If the task needs files or commands, find a template "
            "with list_templates and create a workspace with create_workspace before using the "
            "workspace tools."
        )
    return "This chat has no workspace, so the workspace tools (files, commands) are not available."


async def load_instructions(agent: WorkspaceAgent | None, *, timeout: float = INSTRUCTIONS_TIMEOUT) -> Instructions | None:
    """The agent's instruction files, or None when there is no agent or it does not answer."""
    if agent is None:
        return None
    try:
        return await asyncio.wait_for(agent.instructions(), timeout)
    except Exception:
        # Instructions are an aid: a slow or broken agent must not fail the turn.
        log.warning("could not read workspace instructions", exc_info=True)
        return None


def instructions_section(instructions: Instructions | None) -> str:
    """The `<workspace-context>` block, or "" when nothing is known."""
    if instructions is None:
        return ""
    lines: list[str] = []
    if instructions.os:
        lines.append(f"Operating System: {instructions.os}")
    if instructions.directory:
        lines.append(f"Working Directory: {instructions.directory}")
    for f in instructions.files:
        content = sanitize(f.content)
        if not content:
            continue
        if lines:
            lines.append("")
        lines.append(f"Source: {f.path}" + (" (truncated to 64KiB)" if f.truncated else ""))
        lines.append(content)
    if not lines:
        return ""
    return "<workspace-context>\n" + "\n".join(lines) + "\n</workspace-context>"
