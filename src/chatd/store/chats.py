"""Chat mutations (SPEC §3): each one transaction with the chat row locked.

Functions return what the service needs to publish after commit; none of them publishes.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from chatd.domain.actions import ActionState, ClientTool, PendingAction
from chatd.domain.chat import (
    MAX_QUEUED_MESSAGES,
    BusyBehavior,
    Chat,
    ChatStatus,
    Message,
    NewMessage,
    QueuedMessage,
    Role,
    SendKind,
    Visibility,
    plan_archive,
    plan_edit,
    plan_interrupt,
    plan_promote,
    plan_send,
)
from chatd.domain.parts import Part, TextPart, parts_to_json
from chatd.errors import InvalidInput, NotFound
from chatd.store import machine
from chatd.store.actions import with_actions
from chatd.store.database import Database
from chatd.store.machine import insert_messages, lock_chat
from chatd.store.rows import CHAT_COLUMNS, chat_from_row, message_from_row, queued_from_row
from chatd.store.tables import chats, messages, model_configs, queued_messages
from chatd.store.usage import check_spend


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
    # Messages that went into the history (the sent one, or "cancelled" results of pending
    # actions and then a promoted backlog head).
    inserted: list[Message] = field(default_factory=list)
    # Pending actions an interrupting send cancelled.
    cancelled: list[PendingAction] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class EditResult:
    chat: Chat
    message: Message
    queue_cleared: bool
    cancelled: list[PendingAction] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class StatusChange:
    chat: Chat
    changed: bool
    # Pending actions the change cancelled, the "cancelled" results and a promoted message.
    cancelled: list[PendingAction] = field(default_factory=list)
    inserted: list[Message] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class QueueChange:
    chat: Chat
    queue: list[QueuedMessage]
    message: Message | None = None
    status_changed: bool = False
    cancelled: list[PendingAction] = field(default_factory=list)
    # "Cancelled" results of pending actions, written before the promoted message.
    results: list[Message] = field(default_factory=list)


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
    client_tools: list[ClientTool] | None = None,
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
                mcp_server_ids=[str(x) for x in (mcp_server_ids or [])],
                client_tools=[{"name": t.name, "description": t.description, "input_schema": t.input_schema} for t in client_tools or []],
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
        row = (await conn.execute(select(*CHAT_COLUMNS).where(chats.c.id == chat_id))).one()
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
    max_queued: int = MAX_QUEUED_MESSAGES,
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
        plan = plan_send(chat.status, await machine.queue_length(conn, chat_id), busy_behavior, max_queued)

        if plan.kind is SendKind.HISTORY:
            # The transition first: the results it gives open actions precede the message.
            applied = await machine.execute(conn, chat, plan.transition, now, **changes)
            inserted = await insert_messages(
                conn, chat_id, [NewMessage(Role.USER, content, created_by=sender_id, model_config_id=model_id)], now
            )
            return SendResult(
                applied.chat, queued=False, message=inserted[0], status_changed=True, inserted=[*applied.results, *inserted],
                cancelled=applied.cancelled,
            )

        qrow = (
            await conn.execute(
                insert(queued_messages)
                .values(chat_id=chat_id, content=parts_to_json(content), created_by=sender_id, steer=plan.steer, created_at=now)
                .returning(*queued_messages.c)
            )
        ).one()
        queued = queued_from_row(qrow)
        chat = await machine.queue_changed(conn, chat)
        status_changed = plan.transition.changes_status_from(chat.status)
        # A promoted head is answered with the model this send chose.
        applied = await machine.execute(
            conn, dataclasses.replace(chat, last_model_config_id=model_id), plan.transition, now, **changes
        )
        queue = await machine.queue_of(conn, chat_id)
        return SendResult(
            applied.chat,
            queued=True,
            queued_message=queued,
            queue=queue,
            queue_changed=True,
            status_changed=status_changed,
            inserted=applied.inserted,
            cancelled=applied.cancelled,
        )


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
        cleared = await machine.queue_length(conn, chat_id) > 0
        applied = await machine.execute(conn, chat, plan_edit(chat.status), now)
        return EditResult(applied.chat, inserted[0], queue_cleared=cleared, cancelled=applied.cancelled)


async def interrupt_chat(db: Database, now: datetime, chat_id: uuid.UUID) -> StatusChange:
    async with db.write() as conn:
        chat = await lock_chat(db, conn, chat_id)
        plan = plan_interrupt(chat.status, await machine.queue_length(conn, chat_id))
        changed = plan.changes_status_from(chat.status)
        applied = await machine.execute(conn, chat, plan, now)
        return StatusChange(applied.chat, changed=changed, cancelled=applied.cancelled, inserted=applied.inserted)


@dataclass(frozen=True, slots=True)
class ArchiveResult:
    chats: list[Chat]
    # Per chat of the tree that was waiting for answers: what archiving cancelled and wrote.
    settled: list[machine.Applied] = field(default_factory=list)


async def set_archived(db: Database, now: datetime, chat_id: uuid.UUID, archived: bool) -> ArchiveResult:
    """Archive or unarchive a chat and its whole sub-agent tree; archiving stops busy chats and
    cancels the pending actions of chats waiting for answers."""
    async with db.write() as conn:
        await lock_chat(db, conn, chat_id)
        tree = or_(chats.c.id == chat_id, chats.c.root_chat_id == chat_id)
        settled: list[machine.Applied] = []
        if archived:
            for status in (ChatStatus.PENDING, ChatStatus.RUNNING):
                values = machine.transition_values(plan_archive(status))
                await conn.execute(update(chats).where(and_(tree, chats.c.status == status.value)).values(updated_at=now, **values))
            waiting = (await conn.execute(select(chats).where(and_(tree, chats.c.status == ChatStatus.REQUIRES_ACTION.value)))).all()
            for row in waiting:
                child = await lock_chat(db, conn, row.id)
                if child.status is ChatStatus.REQUIRES_ACTION:
                    settled.append(await machine.execute(conn, child, plan_archive(child.status), now))
        rows = (await conn.execute(update(chats).where(tree).values(archived=archived, updated_at=now).returning(*CHAT_COLUMNS))).all()
        return ArchiveResult([chat_from_row(r) for r in rows], settled)


async def delete_queued(db: Database, now: datetime, chat_id: uuid.UUID, queued_id: int) -> QueueChange:
    async with db.write() as conn:
        chat = await lock_chat(db, conn, chat_id)
        if await machine.pop_queued(conn, chat_id, queued_id) is None:
            raise NotFound("Queued message not found.")
        chat = await machine.queue_changed(conn, chat)
        return QueueChange(chat, await machine.queue_of(conn, chat_id))


async def promote_queued(db: Database, now: datetime, chat_id: uuid.UUID, queued_id: int) -> QueueChange:
    """Move one queued message into the history and make the chat pending (spend not re-checked:
    the content was accepted when it was queued)."""
    async with db.write() as conn:
        chat = await lock_chat(db, conn, chat_id)
        row = await machine.pop_queued(conn, chat_id, queued_id)
        if row is None:
            raise NotFound("Queued message not found.")
        plan = plan_promote(chat.status)
        changed = plan.changes_status_from(chat.status)
        # Pending actions are cancelled first: their calls' results must precede the message.
        applied = await machine.execute(conn, chat, plan, now)
        inserted = await machine.move_into_history(conn, chat, row, now)
        return QueueChange(
            applied.chat, await machine.queue_of(conn, chat_id), inserted, status_changed=changed,
            cancelled=applied.cancelled, results=applied.results,
        )


async def revoke_allowed_tool(db: Database, chat_id: uuid.UUID, tool_name: str) -> Chat:
    """Take back an "always allow" of the chat's owner: the tool asks again from the next turn
    on (a turn reads the list when it starts). Under the row lock, so an approval with
    `always_allow` racing with it is either before (and removed) or after (and kept)."""
    async with db.write() as conn:
        chat = await lock_chat(db, conn, chat_id)
        if tool_name not in chat.allowed_tools:
            raise NotFound(f"The tool {tool_name!r} is not allowed in this chat.", {"allowed_tools": list(chat.allowed_tools)})
        # `updated_at` does not move: a setting is not activity (lists and acquire order by it).
        return await machine.set_chat(conn, chat_id, None, allowed_tools=[t for t in chat.allowed_tools if t != tool_name])


async def update_title(db: Database, now: datetime, chat_id: uuid.UUID, title: str) -> Chat:
    async with db.write() as conn:
        await lock_chat(db, conn, chat_id)
        return await machine.set_chat(conn, chat_id, now, title=title)


# --- reads -----------------------------------------------------------------------------------


async def get_chat_in(conn: AsyncConnection, chat_id: uuid.UUID) -> Chat:
    row = (await conn.execute(select(*CHAT_COLUMNS).where(chats.c.id == chat_id))).first()
    if row is None:
        raise NotFound("Chat not found.")
    return chat_from_row(row)


async def get_chat(db: Database, chat_id: uuid.UUID) -> Chat:
    """The chat, with its pending actions when it waits for answers."""
    async with db.read() as conn:
        return (await with_actions(conn, [await get_chat_in(conn, chat_id)]))[0]


async def get_chats(db: Database, chat_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Chat]:
    """The chats among `chat_ids` that exist, with their pending actions as `get_chat` has them:
    one read for many (a chat watch's hints that arrived together)."""
    wanted = list(dict.fromkeys(chat_ids))
    if not wanted:
        return {}
    async with db.read() as conn:
        rows = (await conn.execute(select(*CHAT_COLUMNS).where(chats.c.id.in_(wanted)))).all()
        return {c.id: c for c in await with_actions(conn, [chat_from_row(r) for r in rows])}


async def queue_in(conn: AsyncConnection, chat_id: uuid.UUID) -> list[QueuedMessage]:
    return await machine.queue_of(conn, chat_id)


async def waiting_actions_in(conn: AsyncConnection, chat_id: uuid.UUID) -> list[PendingAction]:
    """The actions the chat waits for (answered ones are on their way into the history)."""
    return await machine.open_actions(conn, chat_id, ActionState.PENDING)


async def waiting_actions(db: Database, chat_id: uuid.UUID) -> list[PendingAction]:
    async with db.read() as conn:
        return await waiting_actions_in(conn, chat_id)


async def list_chats(
    db: Database,
    owner_id: uuid.UUID,
    *,
    archived: bool | None = False,
    parent_chat_id: uuid.UUID | None = None,
    title_contains: str | None = None,
    limit: int = 50,
    before: tuple[datetime, uuid.UUID] | None = None,
) -> list[Chat]:
    """Newest first (by `updated_at`, then id). `before` is the (updated_at, id) of the last chat of
    the previous page: keyset paging, so rows added meanwhile never shift a page."""
    q = select(*CHAT_COLUMNS).where(chats.c.owner_id == owner_id)
    if title_contains:
        # autoescape: a `%` or `_` typed by the person is searched for, not a wildcard.
        q = q.where(chats.c.title.icontains(title_contains, autoescape=True))
    if parent_chat_id is not None:
        q = q.where(chats.c.parent_chat_id == parent_chat_id)
    if archived is not None:
        q = q.where(chats.c.archived.is_(archived))
    if before is not None:
        at, last_id = before
        q = q.where(or_(chats.c.updated_at < at, and_(chats.c.updated_at == at, chats.c.id < last_id)))
    q = q.order_by(chats.c.updated_at.desc(), chats.c.id.desc()).limit(limit)
    async with db.read() as conn:
        return await with_actions(conn, [chat_from_row(r) for r in (await conn.execute(q)).all()])


async def chats_updated_since(
    db: Database, owner_id: uuid.UUID, since: datetime, *, after: Chat | None = None, limit: int = 1000
) -> list[Chat]:
    """The owner's chats (archived ones too) changed at or after `since`, oldest change first, at
    most `limit` of them: what a chat watch re-reads after its notifications may have been lost.
    The next page starts `after` the last chat of this one (keyset on `(updated_at, id)`)."""
    where = and_(chats.c.owner_id == owner_id, chats.c.updated_at >= since)
    if after is not None:
        where = and_(
            where,
            or_(
                chats.c.updated_at > after.updated_at,
                and_(chats.c.updated_at == after.updated_at, chats.c.id > after.id),
            ),
        )
    q = select(*CHAT_COLUMNS).where(where).order_by(chats.c.updated_at, chats.c.id).limit(limit)
    async with db.read() as conn:
        return await with_actions(conn, [chat_from_row(r) for r in (await conn.execute(q)).all()])


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
        return await visible_messages(conn, chat_id, after_id), await machine.queue_of(conn, chat_id)


async def list_queue(db: Database, chat_id: uuid.UUID) -> list[QueuedMessage]:
    async with db.read() as conn:
        return await machine.queue_of(conn, chat_id)


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
