"""Chat mutations (SPEC §3): each one transaction with the chat row locked.

Functions return what the service needs to publish after commit; none of them publishes.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from chatd.domain.chat import (
    BusyBehavior,
    Chat,
    ChatStatus,
    Message,
    NewMessage,
    QueuedMessage,
    Role,
    Visibility,
    should_queue,
    status_after_interrupt,
)
from chatd.domain.parts import Part, TextPart, parts_to_json
from chatd.errors import ChatBusy, InvalidInput, NotFound, QueueFull
from chatd.store.database import Database
from chatd.store.rows import chat_from_row, message_from_row, queued_from_row
from chatd.store.tables import chats, messages, model_configs, queued_messages
from chatd.store.usage import check_spend

# Leaving `running` (or being made pending again) always clears the worker's lease.
_RELEASE: dict[str, Any] = {"worker_id": None, "started_at": None, "heartbeat_at": None}


def workspace_awareness(has_workspace: bool) -> str:
    if has_workspace:
        return (
            "This chat is attached to a workspace. Use the workspace tools to read and change files "
            "and to run commands in it."
        )
    return (
        "This chat has no workspace yet. If the task needs files or commands, create one with the "
        "`create_workspace` tool first."
    )


@dataclass(frozen=True, slots=True)
class CreatedChat:
    chat: Chat
    messages: list[Message]


@dataclass(frozen=True, slots=True)
class SendResult:
    chat: Chat
    queued: bool
    message: Message | None = None
    queued_message: QueuedMessage | None = None
    queue: list[QueuedMessage] = field(default_factory=list)
    queue_changed: bool = False
    status_changed: bool = False
    # Messages that went into the history (the sent one, or a promoted backlog head).
    inserted: list[Message] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class EditResult:
    chat: Chat
    message: Message
    queue_cleared: bool


@dataclass(frozen=True, slots=True)
class StatusChange:
    chat: Chat
    changed: bool


@dataclass(frozen=True, slots=True)
class QueueChange:
    chat: Chat
    queue: list[QueuedMessage]
    message: Message | None = None
    status_changed: bool = False


async def lock_chat(db: Database, conn: AsyncConnection, chat_id: uuid.UUID) -> Chat:
    row = await db.lock_row(conn, chats, chat_id)
    if row is None:
        raise NotFound("Chat not found.")
    return chat_from_row(row)


async def insert_messages(
    conn: AsyncConnection, chat_id: uuid.UUID, new: Sequence[NewMessage], now: datetime
) -> list[Message]:
    out: list[Message] = []
    for m in new:
        u = m.usage
        row = (
            await conn.execute(
                insert(messages)
                .values(
                    chat_id=chat_id,
                    role=m.role.value,
                    content=parts_to_json(m.content),
                    visibility=m.visibility.value,
                    created_by=m.created_by,
                    model_config_id=m.model_config_id,
                    input_tokens=u.input_tokens if u else None,
                    output_tokens=u.output_tokens if u else None,
                    total_tokens=u.total_tokens if u else None,
                    reasoning_tokens=u.reasoning_tokens if u else None,
                    cache_creation_tokens=u.cache_creation_tokens if u else None,
                    cache_read_tokens=u.cache_read_tokens if u else None,
                    context_limit=m.context_limit,
                    total_cost_micros=m.total_cost_micros,
                    runtime_ms=m.runtime_ms,
                    compressed=m.compressed,
                    created_at=now,
                )
                .returning(*messages.c)
            )
        ).one()
        out.append(message_from_row(row))
    return out


async def _set_chat(conn: AsyncConnection, chat_id: uuid.UUID, now: datetime, **values: Any) -> Chat:
    row = (
        await conn.execute(
            update(chats).where(chats.c.id == chat_id).values(updated_at=now, **values).returning(*chats.c)
        )
    ).one()
    return chat_from_row(row)


async def _queue(conn: AsyncConnection, chat_id: uuid.UUID) -> list[QueuedMessage]:
    rows = (
        await conn.execute(
            select(queued_messages).where(queued_messages.c.chat_id == chat_id).order_by(queued_messages.c.id)
        )
    ).all()
    return [queued_from_row(r) for r in rows]


async def _queue_length(conn: AsyncConnection, chat_id: uuid.UUID) -> int:
    q = select(func.count()).select_from(queued_messages).where(queued_messages.c.chat_id == chat_id)
    return int((await conn.execute(q)).scalar_one())


async def _pop_queued(
    conn: AsyncConnection, chat_id: uuid.UUID, queued_id: int | None = None, *, steer_only: bool = False
) -> Any:
    """Delete and return the oldest (or a given) queued message; None when there is none."""
    cond = queued_messages.c.chat_id == chat_id
    if queued_id is not None:
        cond = and_(cond, queued_messages.c.id == queued_id)
    else:
        oldest = select(func.min(queued_messages.c.id)).where(
            and_(queued_messages.c.chat_id == chat_id, queued_messages.c.steer) if steer_only else queued_messages.c.chat_id == chat_id
        )
        cond = and_(cond, queued_messages.c.id == oldest.scalar_subquery())
    return (await conn.execute(delete(queued_messages).where(cond).returning(*queued_messages.c))).first()


async def _validate_model_config(conn: AsyncConnection, model_config_id: uuid.UUID) -> None:
    row = (
        await conn.execute(
            select(model_configs.c.id).where(
                and_(model_configs.c.id == model_config_id, model_configs.c.deleted.is_(False))
            )
        )
    ).first()
    if row is None:
        raise InvalidInput("Invalid model config ID.", {"model_config_id": str(model_config_id)})


async def default_model_config_id(conn: AsyncConnection) -> uuid.UUID | None:
    row = (
        await conn.execute(
            select(model_configs.c.id).where(
                and_(model_configs.c.is_default.is_(True), model_configs.c.deleted.is_(False))
            )
        )
    ).first()
    return row.id if row else None


async def create_chat(
    db: Database,
    now: datetime,
    *,
    owner_id: uuid.UUID,
    title: str,
    content: list[Part],
    model_config_id: uuid.UUID | None = None,
    workspace_id: uuid.UUID | None = None,
    parent_chat_id: uuid.UUID | None = None,
    system_prompt: str | None = None,
    mcp_server_ids: list[uuid.UUID] | None = None,
    mode: str | None = None,
) -> CreatedChat:
    chat_id = uuid.uuid4()
    async with db.write() as conn:
        await check_spend(db, conn, owner_id, now)
        if model_config_id is not None:
            await _validate_model_config(conn, model_config_id)
        else:
            model_config_id = await default_model_config_id(conn)
        root_id = chat_id
        if parent_chat_id is not None:
            parent = (await conn.execute(select(chats).where(chats.c.id == parent_chat_id))).first()
            if parent is None or parent.owner_id != owner_id:
                raise InvalidInput("Invalid parent chat ID.")
            root_id = parent.root_chat_id or parent.id
        await conn.execute(
            insert(chats).values(
                id=chat_id,
                owner_id=owner_id,
                title=title,
                status=ChatStatus.PENDING.value,
                last_model_config_id=model_config_id,
                workspace_id=workspace_id,
                parent_chat_id=parent_chat_id,
                root_chat_id=root_id,
                mode=mode,
                mcp_server_ids=[str(x) for x in (mcp_server_ids or [])],
                archived=False,
                created_at=now,
                updated_at=now,
            )
        )
        new: list[NewMessage] = []
        if system_prompt and system_prompt.strip():
            new.append(NewMessage(Role.SYSTEM, [TextPart(text=system_prompt)], Visibility.MODEL))
        new.append(
            NewMessage(Role.SYSTEM, [TextPart(text=workspace_awareness(workspace_id is not None))], Visibility.MODEL)
        )
        new.append(NewMessage(Role.USER, content, Visibility.BOTH, created_by=owner_id, model_config_id=model_config_id))
        inserted = await insert_messages(conn, chat_id, new, now)
        row = (await conn.execute(select(chats).where(chats.c.id == chat_id))).one()
        return CreatedChat(chat_from_row(row), inserted)


async def send_message(
    db: Database,
    now: datetime,
    *,
    chat_id: uuid.UUID,
    sender_id: uuid.UUID,
    content: list[Part],
    busy_behavior: BusyBehavior = BusyBehavior.QUEUE,
    model_config_id: uuid.UUID | None = None,
    mcp_server_ids: list[uuid.UUID] | None = None,
    max_queued: int = 20,
) -> SendResult:
    async with db.write() as conn:
        chat = await lock_chat(db, conn, chat_id)
        await check_spend(db, conn, chat.owner_id, now)
        changes: dict[str, Any] = {}
        if model_config_id is not None:
            await _validate_model_config(conn, model_config_id)
            changes["last_model_config_id"] = model_config_id
        if mcp_server_ids is not None:
            changes["mcp_server_ids"] = [str(x) for x in mcp_server_ids]
        model_id = model_config_id or chat.last_model_config_id
        backlog = await _queue_length(conn, chat_id)

        if not should_queue(chat.status, backlog):
            inserted = await insert_messages(
                conn, chat_id, [NewMessage(Role.USER, content, created_by=sender_id, model_config_id=model_id)], now
            )
            chat = await _set_chat(conn, chat_id, now, status=ChatStatus.PENDING.value, last_error=None, **_RELEASE, **changes)
            return SendResult(chat, queued=False, message=inserted[0], status_changed=True, inserted=inserted)

        if busy_behavior is BusyBehavior.REJECT:
            raise ChatBusy("The chat is busy; try again when it is waiting.", {"status": chat.status.value})
        if backlog >= max_queued:
            raise QueueFull("Message queue is full.", {"max_queued_messages": max_queued})
        steer = busy_behavior is BusyBehavior.STEER and chat.status is ChatStatus.RUNNING
        qrow = (
            await conn.execute(
                insert(queued_messages)
                .values(chat_id=chat_id, content=parts_to_json(content), created_by=sender_id, steer=steer, created_at=now)
                .returning(*queued_messages.c)
            )
        ).one()
        queued = queued_from_row(qrow)
        status_changed = False
        promoted: list[Message] = []
        if busy_behavior is BusyBehavior.INTERRUPT and chat.status is ChatStatus.RUNNING:
            # The owning worker sees `waiting`, saves the partial answer, then promotes the queue.
            changes.update(status=status_after_interrupt(chat.status).value, **_RELEASE)
            status_changed = True
        elif not chat.status.busy:
            # Idle with a backlog (e.g. its worker vanished after an interrupt): nobody else will
            # promote it, so promote the head now and keep FIFO order.
            head = await _pop_queued(conn, chat_id)
            promoted = await insert_messages(
                conn,
                chat_id,
                [NewMessage(Role.USER, _content_of(head), created_by=head.created_by or sender_id, model_config_id=model_id)],
                now,
            )
            changes.update(status=ChatStatus.PENDING.value, last_error=None, **_RELEASE)
            status_changed = True
        if changes:
            chat = await _set_chat(conn, chat_id, now, **changes)
        queue = await _queue(conn, chat_id)
        return SendResult(
            chat,
            queued=True,
            queued_message=queued,
            queue=queue,
            queue_changed=True,
            status_changed=status_changed,
            inserted=promoted,
        )


def _content_of(row: Any) -> list[Part]:
    from chatd.domain.parts import parts_from_json

    return parts_from_json(row.content)


async def edit_message(
    db: Database,
    now: datetime,
    *,
    chat_id: uuid.UUID,
    message_id: int,
    editor_id: uuid.UUID,
    content: list[Part],
) -> EditResult:
    async with db.write() as conn:
        chat = await lock_chat(db, conn, chat_id)
        row = (
            await conn.execute(
                select(messages).where(
                    and_(messages.c.id == message_id, messages.c.chat_id == chat_id, messages.c.deleted.is_(False))
                )
            )
        ).first()
        if row is None:
            raise NotFound("Message not found.")
        if row.role != Role.USER.value:
            raise InvalidInput("Only user messages can be edited.")
        await check_spend(db, conn, chat.owner_id, now)
        await conn.execute(
            update(messages)
            .where(and_(messages.c.chat_id == chat_id, messages.c.id >= message_id))
            .values(deleted=True)
        )
        inserted = await insert_messages(
            conn,
            chat_id,
            [NewMessage(Role.USER, content, created_by=editor_id, model_config_id=chat.last_model_config_id)],
            now,
        )
        cleared = (await conn.execute(delete(queued_messages).where(queued_messages.c.chat_id == chat_id))).rowcount
        chat = await _set_chat(conn, chat_id, now, status=ChatStatus.PENDING.value, last_error=None, **_RELEASE)
        return EditResult(chat, inserted[0], queue_cleared=bool(cleared))


async def interrupt_chat(db: Database, now: datetime, chat_id: uuid.UUID) -> StatusChange:
    async with db.write() as conn:
        chat = await lock_chat(db, conn, chat_id)
        if chat.status is not ChatStatus.RUNNING:
            # Pending wins (a new message must run); waiting/error have nothing to stop.
            return StatusChange(chat, changed=False)
        chat = await _set_chat(conn, chat_id, now, status=ChatStatus.WAITING.value, **_RELEASE)
        return StatusChange(chat, changed=True)


async def set_archived(db: Database, now: datetime, chat_id: uuid.UUID, archived: bool) -> list[Chat]:
    """Archive or unarchive a chat and its whole sub-agent tree; archiving stops busy chats."""
    async with db.write() as conn:
        await lock_chat(db, conn, chat_id)
        tree = or_(chats.c.id == chat_id, chats.c.root_chat_id == chat_id)
        if archived:
            await conn.execute(
                update(chats)
                .where(and_(tree, chats.c.status.in_([ChatStatus.PENDING.value, ChatStatus.RUNNING.value])))
                .values(status=ChatStatus.WAITING.value, updated_at=now, **_RELEASE)
            )
        rows = (await conn.execute(update(chats).where(tree).values(archived=archived, updated_at=now).returning(*chats.c))).all()
        return [chat_from_row(r) for r in rows]


async def delete_queued(db: Database, now: datetime, chat_id: uuid.UUID, queued_id: int) -> QueueChange:
    async with db.write() as conn:
        chat = await lock_chat(db, conn, chat_id)
        if await _pop_queued(conn, chat_id, queued_id) is None:
            raise NotFound("Queued message not found.")
        return QueueChange(chat, await _queue(conn, chat_id))


async def promote_queued(db: Database, now: datetime, chat_id: uuid.UUID, queued_id: int) -> QueueChange:
    """Move one queued message into the history and make the chat pending (spend not re-checked:
    the content was accepted when it was queued)."""
    async with db.write() as conn:
        chat = await lock_chat(db, conn, chat_id)
        row = await _pop_queued(conn, chat_id, queued_id)
        if row is None:
            raise NotFound("Queued message not found.")
        inserted = await insert_messages(
            conn,
            chat_id,
            [NewMessage(Role.USER, _content_of(row), created_by=row.created_by, model_config_id=chat.last_model_config_id)],
            now,
        )
        changed = chat.status is not ChatStatus.PENDING
        chat = await _set_chat(conn, chat_id, now, status=ChatStatus.PENDING.value, last_error=None, **_RELEASE)
        return QueueChange(chat, await _queue(conn, chat_id), inserted[0], status_changed=changed)


async def update_title(db: Database, now: datetime, chat_id: uuid.UUID, title: str) -> Chat:
    async with db.write() as conn:
        await lock_chat(db, conn, chat_id)
        return await _set_chat(conn, chat_id, now, title=title)


# --- reads -----------------------------------------------------------------------------------


async def get_chat_in(conn: AsyncConnection, chat_id: uuid.UUID) -> Chat:
    row = (await conn.execute(select(chats).where(chats.c.id == chat_id))).first()
    if row is None:
        raise NotFound("Chat not found.")
    return chat_from_row(row)


async def get_chat(db: Database, chat_id: uuid.UUID) -> Chat:
    async with db.read() as conn:
        return await get_chat_in(conn, chat_id)


async def queue_in(conn: AsyncConnection, chat_id: uuid.UUID) -> list[QueuedMessage]:
    return await _queue(conn, chat_id)


async def list_chats(
    db: Database,
    owner_id: uuid.UUID,
    *,
    archived: bool | None = False,
    parent_chat_id: uuid.UUID | None = None,
    limit: int = 50,
    before: tuple[datetime, uuid.UUID] | None = None,
) -> list[Chat]:
    """Newest first (by `updated_at`, then id). `before` is the (updated_at, id) of the last chat of
    the previous page: keyset paging, so rows added meanwhile never shift a page."""
    q = select(chats).where(chats.c.owner_id == owner_id)
    if parent_chat_id is not None:
        q = q.where(chats.c.parent_chat_id == parent_chat_id)
    if archived is not None:
        q = q.where(chats.c.archived.is_(archived))
    if before is not None:
        at, last_id = before
        q = q.where(or_(chats.c.updated_at < at, and_(chats.c.updated_at == at, chats.c.id < last_id)))
    q = q.order_by(chats.c.updated_at.desc(), chats.c.id.desc()).limit(limit)
    async with db.read() as conn:
        return [chat_from_row(r) for r in (await conn.execute(q)).all()]


async def chats_updated_since(db: Database, owner_id: uuid.UUID, since: datetime, limit: int = 1000) -> list[Chat]:
    """The owner's chats (archived ones too) changed at or after `since`, oldest change first:
    what a chat watch re-reads after its notifications may have been lost."""
    q = (
        select(chats)
        .where(and_(chats.c.owner_id == owner_id, chats.c.updated_at >= since))
        .order_by(chats.c.updated_at, chats.c.id)
        .limit(limit)
    )
    async with db.read() as conn:
        return [chat_from_row(r) for r in (await conn.execute(q)).all()]


async def visible_messages(conn: AsyncConnection, chat_id: uuid.UUID, after_id: int = 0) -> list[Message]:
    q = (
        select(messages)
        .where(
            and_(
                messages.c.chat_id == chat_id,
                messages.c.id > after_id,
                messages.c.deleted.is_(False),
                messages.c.visibility.in_([Visibility.USER.value, Visibility.BOTH.value]),
            )
        )
        .order_by(messages.c.id)
    )
    return [message_from_row(r) for r in (await conn.execute(q)).all()]


async def list_messages(db: Database, chat_id: uuid.UUID, after_id: int = 0) -> tuple[list[Message], list[QueuedMessage]]:
    async with db.read() as conn:
        return await visible_messages(conn, chat_id, after_id), await _queue(conn, chat_id)


async def list_queue(db: Database, chat_id: uuid.UUID) -> list[QueuedMessage]:
    async with db.read() as conn:
        return await _queue(conn, chat_id)


async def all_messages(db: Database, chat_id: uuid.UUID, *, include_deleted: bool = False) -> list[Message]:
    """Every message of a chat in id order (tests and the prompt builder)."""
    q = select(messages).where(messages.c.chat_id == chat_id)
    if not include_deleted:
        q = q.where(messages.c.deleted.is_(False))
    async with db.read() as conn:
        return [message_from_row(r) for r in (await conn.execute(q.order_by(messages.c.id))).all()]


async def remove_mcp_server_from_chats(conn: AsyncConnection, db: Database, server_id: uuid.UUID, now: datetime) -> None:
    """A deleted MCP config disappears from every chat's ids."""
    sid = str(server_id)
    if db.is_postgres:
        from sqlalchemy import text

        await conn.execute(
            text(
                "UPDATE chats SET mcp_server_ids = COALESCE((SELECT jsonb_agg(e) FROM jsonb_array_elements(mcp_server_ids) e "
                "WHERE e #>> '{}' <> CAST(:sid AS text)), '[]'::jsonb) WHERE mcp_server_ids @> jsonb_build_array(CAST(:sid AS text))"
            ),
            {"sid": sid},
        )
        return
    from sqlalchemy import text as sql

    await conn.execute(
        sql(
            "UPDATE chats SET mcp_server_ids = (SELECT json_group_array(value) FROM json_each(chats.mcp_server_ids) "
            "WHERE value <> :sid) WHERE EXISTS (SELECT 1 FROM json_each(chats.mcp_server_ids) WHERE value = :sid)"
        ),
        {"sid": sid},
    )
