"""Row -> domain conversion."""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import Integer, Row, literal_column

from chatd.domain.actions import ActionKind, ActionState, ClientTool, Decision, PendingAction
from chatd.domain.chat import Chat, ChatStatus, Message, QueuedMessage, Role, Usage, Visibility
from chatd.domain.parts import parts_from_json
from chatd.store.tables import chats

# How many of the chat's queued messages steer its running turn, read with the chat (`queued_count`
# counts them all): what the chat list's badge tells apart. Written out because it also goes into
# UPDATE … RETURNING, where SQLAlchemy renders SQLite's columns unqualified (`chat_id = id` inside
# the subquery would then compare with the queued message's own id). Indexed by `chat_id`.
STEERING_COUNT: Final = literal_column(
    "(SELECT count(*) FROM queued_messages AS steering WHERE steering.chat_id = chats.id AND steering.steer)", Integer
).label("steering_count")
# Every chat read that reaches a client selects (or returns) these.
CHAT_COLUMNS: Final = (*chats.c, STEERING_COUNT)


def chat_from_row(r: Row[Any]) -> Chat:
    return Chat(
        id=r.id,
        owner_id=r.owner_id,
        title=r.title,
        status=ChatStatus(r.status),
        worker_id=r.worker_id,
        started_at=r.started_at,
        heartbeat_at=r.heartbeat_at,
        last_error=r.last_error,
        last_model_config_id=r.last_model_config_id,
        workspace_id=r.workspace_id,
        parent_chat_id=r.parent_chat_id,
        root_chat_id=r.root_chat_id,
        mode=r.mode,
        mcp_server_ids=[_uuid(x) for x in (r.mcp_server_ids or [])],
        archived=r.archived,
        created_at=r.created_at,
        updated_at=r.updated_at,
        generation=r.generation,
        queued_count=r.queued_count,
        # A chat locked for a change (`select(chats)`) is read without it: 0 until it is written.
        steering_count=r._mapping.get("steering_count", 0),
        trace_id=r.trace_id,
        allowed_tools=list(r.allowed_tools or []),
        client_tools=[client_tool_from_json(t) for t in (r.client_tools or [])],
    )


def client_tool_from_json(d: Any) -> ClientTool:
    return ClientTool(name=str(d["name"]), description=str(d.get("description") or ""), input_schema=dict(d.get("input_schema") or {}))


def action_from_row(r: Row[Any]) -> PendingAction:
    return PendingAction(
        id=r.id,
        chat_id=r.chat_id,
        kind=ActionKind(r.kind),
        tool_call_id=r.tool_call_id,
        tool_name=r.tool_name,
        args=dict(r.args or {}),
        state=ActionState(r.state),
        created_at=r.created_at,
        server=r.server,
        message=r.message,
        schema=r.schema,
        url=r.url,
        options=list(r.options) if r.options is not None else None,
        deadline=r.deadline,
        decision=Decision(r.decision) if r.decision else None,
        answer=dict(r.answer or {}),
        resolved_at=r.resolved_at,
        resume=dict(r.resume) if r.resume is not None else None,
    )


def _uuid(x: Any) -> Any:
    import uuid

    return x if isinstance(x, uuid.UUID) else uuid.UUID(str(x))


def message_from_row(r: Row[Any]) -> Message:
    usage = None
    if r.input_tokens is not None or r.output_tokens is not None or r.total_tokens is not None:
        usage = Usage(
            input_tokens=r.input_tokens or 0,
            output_tokens=r.output_tokens or 0,
            total_tokens=r.total_tokens or 0,
            reasoning_tokens=r.reasoning_tokens or 0,
            cache_creation_tokens=r.cache_creation_tokens or 0,
            cache_read_tokens=r.cache_read_tokens or 0,
        )
    return Message(
        id=r.id,
        chat_id=r.chat_id,
        role=Role(r.role),
        content=parts_from_json(r.content),
        visibility=Visibility(r.visibility),
        created_at=r.created_at,
        created_by=r.created_by,
        model_config_id=r.model_config_id,
        usage=usage,
        context_limit=r.context_limit,
        total_cost_micros=r.total_cost_micros,
        runtime_ms=r.runtime_ms,
        compressed=r.compressed,
    )


def queued_from_row(r: Row[Any]) -> QueuedMessage:
    return QueuedMessage(id=r.id, chat_id=r.chat_id, content=parts_from_json(r.content), created_at=r.created_at, steer=r.steer)
