"""At-most-once tool effects across crashes (beyond the reference, which re-runs on replay).

Every tool of a turn that does not declare itself idempotent is wrapped: before it runs, the call
is recorded as started in the store (`tool_calls_started`); the worker's step write deletes the
records in the same transaction as the results. If the worker dies in between, the recovered turn
re-asks the model from the last persisted step, and when the model issues the same call again (same
id, or same tool and arguments under a new id) at the same point of the history, it gets
`NOT_RERUN_RESULT` instead of a second execution. See ARCHITECTURE.md, "Tool calls across crashes".

A tool opts out with a true `idempotent` attribute (reads, waits, listings): re-running those is
better than refusing them.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from typing import Any

from chatd.domain.clock import Clock
from chatd.domain.tools import Tool, ToolContext, ToolResult, ToolWrapper
from chatd.store import tool_calls
from chatd.store.database import Database
from chatd.store.tool_calls import ToolStart

NOT_RERUN_RESULT = (
    "This tool call was interrupted (the server stopped) after it had started and before its result "
    "was saved, so it was not run again: its effects may or may not have happened. Check the current "
    "state before deciding whether to call it again."
)
NOT_OURS_RESULT = "The chat is no longer run by this worker; the tool call was not started."


def args_sha256(args: dict[str, Any]) -> str:
    canonical = json.dumps(args, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class ToolJournal:
    """The started-call records of one run of a turn (one `ChatTurn`)."""

    def __init__(self, db: Database, clock: Clock, chat_id: uuid.UUID, worker_id: uuid.UUID, generation: int) -> None:
        self.db = db
        self.clock = clock
        self.chat_id = chat_id
        self.worker_id = worker_id
        self.generation = generation
        self.run_id = uuid.uuid4()

    async def start(self, tool_name: str, args: dict[str, Any], tool_call_id: str) -> ToolStart:
        return await tool_calls.start_tool_call(
            self.db, self.clock.now(), chat_id=self.chat_id, worker_id=self.worker_id, generation=self.generation, run_id=self.run_id,
            tool_call_id=tool_call_id, tool_name=tool_name, args_sha256=args_sha256(args),
        )  # fmt: skip

    def wrap(self, tools: Sequence[Tool]) -> list[Tool]:
        return [t if getattr(t, "idempotent", False) else JournaledTool(t, self) for t in tools]


class JournaledTool(ToolWrapper):
    """A tool whose calls are recorded as started before they run (see the module docstring)."""

    def __init__(self, tool: Tool, journal: ToolJournal) -> None:
        super().__init__(tool)
        self.journal = journal

    async def call(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        started = await self.journal.start(self.tool.name, args, ctx.tool_call_id)
        if started is ToolStart.NOT_RERUN:
            return ToolResult({"error": NOT_RERUN_RESULT, "not_rerun": True}, is_error=True)
        if started is ToolStart.NOT_OURS:
            return ToolResult({"error": NOT_OURS_RESULT}, is_error=True)
        return await self.tool.call(args, ctx)
