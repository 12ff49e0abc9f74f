"""Sub-agent tools for root chats (REFERENCE §7.5): spawn a child chat, wait for it, message it,
close it, list them.

A child is an ordinary chat (owner, workspace, model config and MCP servers inherited; parent =
the caller, root = the caller's root) that any replica's worker runs. Children get none of these
tools, so the tree is one level deep. A chat reaches only its own children.

`wait_agent` is woken by the child's status notifications (pubsub, `chat_channel(child)`), never
by polling; the database stays the truth: every wake-up, a pubsub reconnect and the deadline
re-read the child's row, so a lost notification costs latency, not correctness.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from chatd.domain.changes import (
    ActionsResolved,
    Change,
    ChatArchived,
    ChatCreated,
    MessagesAdded,
    QueueChanged,
    StatusChanged,
    status_changes,
)
from chatd.domain.chat import MAX_QUEUED_MESSAGES, BusyBehavior, Chat, ChatStatus, Role
from chatd.domain.clock import Clock
from chatd.domain.parts import TextPart, text_of
from chatd.domain.titles import fallback_title
from chatd.domain.tools import Tool, ToolContext, ToolResult
from chatd.errors import ChatdError, NotFound
from chatd.pubsub.base import PubSub, chat_channel
from chatd.store import chats as chat_store
from chatd.store.database import Database
from chatd.streams.hub import StreamHub
from chatd.streams.notes import Notification
from chatd.streams.outbox import Outbox
from chatd.worker.turn import ToolProvider, TurnContext

DEFAULT_WAIT_SECONDS = 300.0  # REFERENCE §7.5
MAX_WAIT_SECONDS = 3600.0
DEFAULT_LIST_LIMIT = 10
MAX_LIST_LIMIT = 50

SUBAGENT_SECTION = (
    "You can delegate self-contained parts of the task to sub-agents: `spawn_agent` starts one with a "
    "prompt (it works in the same workspace and cannot spawn further agents), `wait_agent` waits for "
    "its report, `message_agent` sends it more instructions, `close_agent` stops it and `list_agents` "
    "shows yours. A sub-agent sees only its prompt, so make the prompt complete."
)


def subagent_provider(db: Database, hub: StreamHub, pubsub: PubSub, clock: Clock, *, max_queued: int = MAX_QUEUED_MESSAGES) -> ToolProvider:
    async def provide(ctx: TurnContext) -> tuple[list[Tool], list[str]]:
        if ctx.chat.parent_chat_id is not None:
            return [], []  # delegated chats cannot spawn (REFERENCE §7.5)
        agents = SubAgents(db, hub, pubsub, clock, ctx.chat.id, ctx.chat.owner_id, ctx.model.config.id, max_queued)
        return agents.tools(), [SUBAGENT_SECTION]

    return provide


class _Refused(Exception):
    """An argument or target the model got wrong: becomes an error result, not a failed turn."""


@dataclass
class SubAgents:
    db: Database
    hub: StreamHub
    pubsub: PubSub
    clock: Clock
    parent_id: uuid.UUID
    owner_id: uuid.UUID
    model_config_id: uuid.UUID | None
    max_queued: int = MAX_QUEUED_MESSAGES

    @property
    def outbox(self) -> Outbox:
        return Outbox(self.hub, self.pubsub)

    def tools(self) -> list[Tool]:
        wait_schema = _schema({"chat_id": _STR, "timeout_seconds": {"type": "number", "minimum": 0, "maximum": MAX_WAIT_SECONDS}}, ["chat_id"])
        busy = {"type": "string", "enum": ["queue", "interrupt", "steer"]}
        return [
            _Tool("spawn_agent", SPAWN_DESCRIPTION, _schema({"prompt": _STR, "title": _STR}, ["prompt"]), self.spawn_agent),
            _Tool("wait_agent", WAIT_DESCRIPTION, wait_schema, self.wait_agent, idempotent=True),
            _Tool(
                "message_agent", MESSAGE_DESCRIPTION,
                _schema({"chat_id": _STR, "message": _STR, "busy_behavior": busy}, ["chat_id", "message"]), self.message_agent,
            ),
            _Tool("close_agent", CLOSE_DESCRIPTION, _schema({"chat_id": _STR}, ["chat_id"]), self.close_agent),
            _Tool(
                "list_agents", LIST_DESCRIPTION,
                _schema({"limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT}}), self.list_agents, idempotent=True,
            ),
        ]

    # --- the tools ------------------------------------------------------------------------------

    async def spawn_agent(self, args: dict[str, Any]) -> ToolResult:
        prompt = _text_arg(args, "prompt")
        title = args.get("title")
        if title is not None and not isinstance(title, str):
            raise _Refused("title must be a string.")
        title = (title or "").strip() or fallback_title(prompt)
        # Read now: create_workspace may have attached a workspace earlier in this very turn.
        parent = await chat_store.get_chat(self.db, self.parent_id)
        created = await chat_store.create_chat(
            self.db, self.clock.now(), owner_id=parent.owner_id, title=title[:256], content=[TextPart(text=prompt)],
            model_config_id=self.model_config_id, workspace_id=parent.workspace_id, parent_chat_id=parent.id,
            mcp_server_ids=parent.mcp_server_ids,
        )  # fmt: skip
        child = created.chat
        # Announced after commit, as ChatService.create_chat does; the pending wake-up lets any
        # replica's worker pick the child up at once.
        await self.outbox.publish(
            [ChatCreated(child.id, child.owner_id), *MessagesAdded.of(child.id, created.messages), *status_changes(child)]
        )
        return ToolResult({"chat_id": str(child.id), "title": child.title, "status": child.status.value})

    async def wait_agent(self, args: dict[str, Any]) -> ToolResult:
        child = await self._child(args)
        timeout = _number_arg(args, "timeout_seconds", DEFAULT_WAIT_SECONDS, MAX_WAIT_SECONDS)
        changed = asyncio.Event()

        def on_note(payload: dict[str, Any]) -> None:
            # A status change, or a pubsub reconnect (notifications may have been lost meanwhile).
            if payload.get("reconnected") or Notification.from_payload(payload).status is not None:
                changed.set()

        # Subscribed before the first read: a change between the read and the wait is not missed.
        unsubscribe = await self.pubsub.subscribe(chat_channel(child.id), on_note)
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while True:
                changed.clear()
                child = await chat_store.get_chat(self.db, child.id)
                if await self._settled(child):
                    return await self._report(child)
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return _error(
                        f"The sub-agent is still running after {timeout:g} seconds; it keeps working. Call wait_agent "
                        "again to keep waiting, or close_agent to stop it.",
                        chat_id=str(child.id), status=child.status.value,
                    )  # fmt: skip
                try:
                    async with asyncio.timeout(remaining):
                        await changed.wait()
                except TimeoutError:
                    pass  # one last read of the row decides
        finally:
            await unsubscribe()

    async def message_agent(self, args: dict[str, Any]) -> ToolResult:
        child = await self._child(args)
        text = _text_arg(args, "message")
        raw = args.get("busy_behavior")
        if raw is None:
            # The reference's `interrupt: true` spelling.
            raw = "interrupt" if args.get("interrupt") is True else "queue"
        if raw not in ("queue", "interrupt", "steer"):
            raise _Refused("busy_behavior is one of queue, interrupt, steer.")
        if child.archived:
            raise _Refused("This sub-agent was closed; spawn a new one.")
        res = await chat_store.send_message(
            self.db, self.clock.now(), chat_id=child.id, sender_id=self.owner_id, content=[TextPart(text=text)],
            busy_behavior=BusyBehavior(raw), max_queued=self.max_queued,
        )  # fmt: skip
        # Announced as ChatService.send_message does.
        await self.outbox.publish([
            *MessagesAdded.of(child.id, res.inserted),
            *(status_changes(res.chat) if res.status_changed else []),
            *ActionsResolved.of(child.id, res.cancelled),
            *([QueueChanged(child.id, res.chat.owner_id)] if res.queue_changed else []),
        ])
        return ToolResult({"chat_id": str(child.id), "queued": res.queued, "status": res.chat.status.value})

    async def close_agent(self, args: dict[str, Any]) -> ToolResult:
        child = await self._child(args)
        # Archiving stops a busy chat (-> waiting); the status notification interrupts its turn
        # on whichever replica runs it, and an archived chat promotes no queued message.
        archived = await chat_store.set_archived(self.db, self.clock.now(), child.id, True)
        changes: list[Change] = []
        for applied in archived.settled:
            changes += [*MessagesAdded.of(applied.chat.id, applied.results), *ActionsResolved.of(applied.chat.id, applied.cancelled)]
        for c in archived.chats:
            changes += [StatusChanged.of(c), ChatArchived(c.id, c.owner_id)]
        await self.outbox.publish(changes)
        return ToolResult({"chat_id": str(child.id), "closed": True})

    async def list_agents(self, args: dict[str, Any]) -> ToolResult:
        limit = int(_number_arg(args, "limit", DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT))
        children = await chat_store.list_chats(self.db, self.owner_id, archived=None, parent_chat_id=self.parent_id, limit=max(limit, 1))
        agents = [
            {"chat_id": str(c.id), "title": c.title, "status": c.status.value, "closed": c.archived, "created_at": c.created_at.isoformat()}
            for c in children
        ]
        return ToolResult({"agents": agents, "count": len(agents)})

    # --- helpers -------------------------------------------------------------------------------

    async def _child(self, args: dict[str, Any]) -> Chat:
        raw = args.get("chat_id")
        try:
            child_id = uuid.UUID(str(raw))
        except ValueError as exc:
            raise _Refused("chat_id must be the id spawn_agent returned.") from exc
        try:
            child = await chat_store.get_chat(self.db, child_id)
        except NotFound:
            child = None
        if child is None or child.parent_chat_id != self.parent_id or child.owner_id != self.owner_id:
            # Any other chat is as unknown as a missing one.
            raise _Refused(f"No sub-agent {child_id} was spawned by this chat.")
        return child

    async def _settled(self, child: Chat) -> bool:
        if child.status in (ChatStatus.ERROR, ChatStatus.REQUIRES_ACTION):
            # A child waiting for the user's answer does not move until the user answers it.
            return True
        if child.status is not ChatStatus.WAITING:
            return False
        # Waiting with a backlog is the moment between an interrupt and the promotion of the
        # queued message that caused it; the child is about to run again.
        return child.archived or not await chat_store.list_queue(self.db, child.id)

    async def _report(self, child: Chat) -> ToolResult:
        if child.status is ChatStatus.ERROR:
            return _error(child.last_error or "The sub-agent failed.", chat_id=str(child.id), status=child.status.value)
        if child.status is ChatStatus.REQUIRES_ACTION:
            waits_for = [a.kind.value + ": " + a.tool_name for a in child.pending_actions]
            return _error(
                "The sub-agent is waiting for the user to answer in its chat (" + ", ".join(waits_for) + "); it "
                "continues once the user answers. Call wait_agent again later, or close_agent to stop it.",
                chat_id=str(child.id), status=child.status.value,
            )  # fmt: skip
        report = ""
        for m in reversed(await chat_store.all_messages(self.db, child.id)):
            if m.role is Role.ASSISTANT and (text := text_of(m.content).strip()):
                report = text
                break
        out: dict[str, Any] = {"chat_id": str(child.id), "title": child.title, "status": child.status.value, "report": report}
        if not report:
            out["note"] = "The sub-agent finished without a text answer."
        return ToolResult(out)


# --- tool plumbing ------------------------------------------------------------------------------

SPAWN_DESCRIPTION = (
    "Start a sub-agent: a new chat that works on `prompt` on its own, in this chat's workspace and with "
    "this chat's model, and cannot start sub-agents itself. Returns its chat_id at once; use wait_agent "
    "for its report."
)
WAIT_DESCRIPTION = (
    "Wait until a sub-agent finishes its current work and return its last answer (or its error). "
    f"timeout_seconds defaults to {DEFAULT_WAIT_SECONDS:g}; when it passes, the sub-agent keeps running."
)
MESSAGE_DESCRIPTION = (
    "Send a sub-agent a message. While it is busy: 'queue' (default) runs it after the current work, "
    "'interrupt' stops the current work and runs it next, 'steer' adds it to the running work at its next tool boundary."
)
CLOSE_DESCRIPTION = "Stop a sub-agent and close it (its chat is archived); it takes no more messages."
LIST_DESCRIPTION = "List the sub-agents this chat started, newest activity first, with their status and title."

_STR: dict[str, Any] = {"type": "string"}


def _schema(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required or [], "additionalProperties": False}


def _text_arg(args: dict[str, Any], name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str) or not value.strip():
        raise _Refused(f"{name} is required and must be non-empty text.")
    return value


def _number_arg(args: dict[str, Any], name: str, default: float, maximum: float) -> float:
    value = args.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise _Refused(f"{name} must be a non-negative number.")
    return min(float(value), maximum)


def _error(message: str, **fields: Any) -> ToolResult:
    return ToolResult({**fields, "error": message}, is_error=True)


@dataclass
class _Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    run: Callable[[dict[str, Any]], Awaitable[ToolResult]] = field(repr=False)
    # Safe to run again after a crash (see chatd.worker.journal).
    idempotent: bool = False

    async def call(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        try:
            return await self.run(args)
        except _Refused as exc:
            return _error(str(exc))
        except ChatdError as exc:
            # Spend limit, full queue, ...: the model reads why and can react.
            return _error(exc.message)
