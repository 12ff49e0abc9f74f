"""Live streams over SSE (with `id:` cursors and Last-Event-ID) and WebSocket, and the chat watch."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, WebSocket, WebSocketDisconnect
from sse_starlette.sse import EventSourceResponse

from chatd.api.deps import CurrentUser, Service
from chatd.api.schemas import MAX_INT64, ChatOut, event_json
from chatd.domain.chat import Chat
from chatd.domain.events import MessageEvent, StreamEvent
from chatd.errors import ChatdError, InvalidInput, NotFound
from chatd.pubsub.base import owner_channel

router = APIRouter(prefix="/api/v1")


def _cursor(after_id: int | None, last_event_id: str | None) -> int:
    if last_event_id:
        try:
            cursor = int(last_event_id)
        except ValueError as exc:
            raise InvalidInput("Last-Event-ID must be a message id.") from exc
        if cursor > MAX_INT64:
            raise InvalidInput("Last-Event-ID is larger than any message id.")
        return max(0, cursor)
    return after_id or 0


async def _framed(events: AsyncIterator[StreamEvent], start: int) -> AsyncIterator[tuple[int, dict[str, Any]]]:
    """Each event with the cursor a client resumes from: the highest message id delivered so far."""
    cursor = start
    async for ev in events:
        if isinstance(ev, MessageEvent):
            cursor = max(cursor, ev.message.id)
        yield cursor, event_json(ev)


@router.get(
    "/chats/{chat_id}/stream",
    tags=["chats"],
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events; `data` is one stream event."}},
)
async def stream(
    chat_id: uuid.UUID,
    request: Request,
    user: CurrentUser,
    svc: Service,
    after_id: Annotated[int | None, Query(ge=0, le=MAX_INT64)] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> EventSourceResponse:
    await svc.get_chat(user, chat_id)
    start = _cursor(after_id, last_event_id)
    hub = svc.hub
    keepalive: float = request.app.state.chatd.settings.sse_keepalive

    async def gen() -> AsyncIterator[dict[str, Any]]:
        async with hub.subscribe(chat_id, start) as events:
            async for cursor, data in _framed(events, start):
                yield {"event": data["type"], "id": str(cursor), "data": json.dumps(data)}

    return EventSourceResponse(gen(), ping=int(max(1, keepalive)), headers={"X-Accel-Buffering": "no"})


@router.websocket("/chats/{chat_id}/stream")
async def stream_ws(websocket: WebSocket, chat_id: uuid.UUID, after_id: int = 0) -> None:
    """The same stream over a WebSocket: frames are `{"id": cursor, "event": {...}}`."""
    state = websocket.app.state.chatd
    token, subprotocol = _ws_token(websocket)
    # Refusals are close codes after the handshake (4400 bad input, 4401 no or bad token, 4404
    # unknown chat): a close before accept reaches the client as a bare HTTP 403 it cannot tell
    # apart. A browser drops the connection unless the server selects the subprotocol it offered.
    await websocket.accept(subprotocol=subprotocol)
    user = await state.service.authenticate(token) if token else None
    if user is None:
        await websocket.close(code=4401, reason="unauthenticated")
        return
    if not 0 <= after_id <= MAX_INT64:
        await websocket.close(code=4400, reason="after_id is not a message id")
        return
    try:
        await state.service.get_chat(user, chat_id)
    except NotFound:
        await websocket.close(code=4404, reason="not found")
        return

    async def send_events() -> None:
        async with state.service.hub.subscribe(chat_id, after_id) as events:
            async for cursor, data in _framed(events, after_id):
                await websocket.send_json({"id": cursor, "event": data})

    async def until_closed() -> None:
        # Clients send nothing; reading is how a closed connection is noticed while the chat is
        # quiet (else the subscription lives on until the next event fails to send).
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass

    sender = asyncio.create_task(send_events(), name=f"ws-stream-{chat_id}")
    reader = asyncio.create_task(until_closed(), name=f"ws-closed-{chat_id}")
    try:
        await asyncio.wait({sender, reader}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sender, reader):
            task.cancel()
        outcomes = await asyncio.gather(sender, reader, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, Exception) and not isinstance(outcome, (WebSocketDisconnect, ChatdError)):
            raise outcome


def _ws_token(ws: WebSocket) -> tuple[str | None, str | None]:
    """The bearer token, and the subprotocol that carried it (to be selected on accept)."""
    auth = ws.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip(), None
    # Browsers cannot set headers on a WebSocket: accept the token as a subprotocol.
    for proto in ws.headers.get("sec-websocket-protocol", "").split(","):
        proto = proto.strip()
        if proto.startswith("bearer."):
            return proto[7:], proto
    return None, None


# A watch re-reads chats changed since its last sync point minus this margin: replicas' clocks
# differ a little, and an event sent twice costs a client one re-render, a lost one a stale list.
RESYNC_MARGIN = timedelta(seconds=5)
WATCH_KINDS = ("created", "status_change", "title_change", "queue_change", "deleted")


@dataclass(frozen=True, slots=True)
class _Seen:
    status: str
    title: str
    archived: bool
    queued_count: int

    @classmethod
    def of(cls, chat: Chat) -> _Seen:
        return cls(chat.status.value, chat.title, chat.archived, chat.queued_count)


def _resync_kind(chat: Chat, seen: _Seen | None, since: datetime) -> str | None:
    """The event a re-read chat is reported as; None when the client already has this state."""
    now = _Seen.of(chat)
    if seen is None:
        if chat.archived:
            return "deleted"
        return "created" if chat.created_at >= since else "status_change"
    if now == seen:
        return None
    if now.archived != seen.archived:
        return "deleted" if now.archived else "created"
    if now.status != seen.status:
        return "status_change"
    return "title_change" if now.title != seen.title else "queue_change"


@router.get(
    "/chats/watch",
    tags=["chats"],
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "`{kind, chat}` for the caller's chats."}},
)
async def watch(request: Request, user: CurrentUser, svc: Service) -> EventSourceResponse:
    """Notifications are hints: when some may have been lost (the pubsub reconnected, or this
    watch fell 256 behind) the watch re-reads the caller's chats changed since its last sync and
    reports each difference, like the chat stream's resync."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(256)
    lost = False

    def on_event(payload: dict[str, Any]) -> None:
        nonlocal lost
        try:
            queue.put_nowait(payload)
        except asyncio.QueueFull:
            lost = True  # the consumer has a full queue to work through and resyncs after it

    unsubscribe = await svc.pubsub.subscribe(owner_channel(user.id), on_event)
    since = svc.clock.now() - RESYNC_MARGIN
    seen: dict[uuid.UUID, _Seen] = {}

    def event(kind: str, chat: Chat) -> dict[str, Any]:
        seen[chat.id] = _Seen.of(chat)
        data = {"kind": kind, "chat": ChatOut.of(chat).model_dump(mode="json")}
        return {"event": kind, "data": json.dumps(data)}

    async def gen() -> AsyncIterator[dict[str, Any]]:
        nonlocal lost, since
        try:
            while True:
                payload = await queue.get()
                if payload.get("reconnected") or lost:
                    lost = False
                    mark = svc.clock.now()
                    for chat in await svc.chats_changed_since(user, since):
                        kind = _resync_kind(chat, seen.get(chat.id), since)
                        if kind is not None:
                            yield event(kind, chat)
                    since = mark - RESYNC_MARGIN
                kind = payload.get("k")
                try:
                    chat_id = uuid.UUID(str(payload.get("c")))
                except ValueError:
                    continue  # the reconnect notice, or a payload of some other kind
                if kind not in WATCH_KINDS:
                    continue
                try:
                    chat = await svc.get_chat(user, chat_id)
                except NotFound:
                    continue
                yield event(str(kind), chat)
        finally:
            await unsubscribe()

    return EventSourceResponse(gen(), ping=int(max(1, request.app.state.chatd.settings.sse_keepalive)))
