"""Prompt assembly (SPEC §5.3): stored system rows first, then the per-turn sections (sub-agent
instruction, workspace context, `<user-instructions>`, connected MCP servers), then history."""

from __future__ import annotations

from collections.abc import Sequence

from chatd.domain.chat import Message, Role
from chatd.domain.parts import TextPart
from chatd.loop import PromptMessage
from chatd.store.chats import workspace_awareness

SUBAGENT_INSTRUCTION = (
    "You are a delegated sub-agent. Another agent gave you the task in the first user message. "
    "Do the task, then answer concisely for that agent: what you did, what you found, and anything "
    "it must know. You cannot spawn further agents."
)
MAX_PROMPT_BYTES = 128 * 1024


def sanitize(text: str) -> str:
    import re

    text = text.replace("\r\n", "\n")
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    return text.strip()[:MAX_PROMPT_BYTES]


def user_instructions(custom_prompt: str) -> str:
    text = sanitize(custom_prompt)
    return f"<user-instructions>\n{text}\n</user-instructions>" if text else ""


# The awareness note stored at creation goes stale when a workspace is attached later; the turn
# states the current one instead (a per-turn section), so the stored one is left out.
_STORED_NOTES = {workspace_awareness(True), workspace_awareness(False)}


def _stale_note(m: Message) -> bool:
    return m.role is Role.SYSTEM and len(m.content) == 1 and isinstance(m.content[0], TextPart) and m.content[0].text in _STORED_NOTES


def build_prompt(rows: Sequence[Message], sections: Sequence[str], *, replace_workspace_note: bool = False) -> list[PromptMessage]:
    """Rows in id order; `sections` are inserted as system messages right after the leading
    system block (empty sections are skipped). They are never persisted."""
    if replace_workspace_note:
        rows = [m for m in rows if not _stale_note(m)]
    out = [PromptMessage(m.role, list(m.content)) for m in rows]
    at = 0
    while at < len(out) and out[at].role is Role.SYSTEM:
        at += 1
    extra = [PromptMessage(Role.SYSTEM, [TextPart(text=s)]) for s in sections if s.strip()]
    return out[:at] + extra + out[at:]
