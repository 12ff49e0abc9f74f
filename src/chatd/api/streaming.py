"""Live streams over SSE (with `id:` cursors and Last-Event-ID) and WebSocket, and the chat watch."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Header, Query, WebSocket, WebSocketDisconnect
from sse_starlette.sse import EventSourceResponse

from chatd.api.deps import AppSettings, BearerToken, Closing, CurrentUser, Service, app_state
from chatd.api.schemas import MAX_INT64, ChatOut, event_json
from chatd.domain.events import MessageEvent, StreamEvent
from chatd.errors import ChatdError, InvalidInput, NotFound

router = APIRouter(prefix="/api/v1")
T = TypeVar("T")


async def while_authorized(
    events: AsyncIterator[T], authorized: Callable[[], Awaitable[bool]], every: float, closing: asyncio.Event
) -> AsyncIterator[T]:
    """`events` until they end, the process stops (`closing`: the client reconnects to a live
    replica; uvicorn would wait for the stream forever) or, checked every `every` seconds,
    `authorized()` says no: a token revoked (or its user removed) must not keep a stream it
    opened, which can run for days. The check runs on a clock, not on quiet: a busy stream is
    checked as often as an idle one."""
    loop = asyncio.get_running_loop()
    it = aiter(events)
    pending: asyncio.Future[Any] | None = None
    stopping: asyncio.Future[Any] = asyncio.ensure_future(closing.wait())
    check_at = loop.time() + every
    try:
        while True:
            if loop.time() >= check_at:
                if not await authorized():
                    return
                check_at = loop.time() + every
            if pending is None:
                pending = asyncio.ensure_future(anext(it))
            done, _ = await asyncio.wait({pending, stopping}, timeout=max(0.0, check_at - loop.time()), return_when=asyncio.FIRST_COMPLETED)
            if stopping in done:
                return
            if not done:
                continue
            try:
                item = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            yield item
    finally:
        stopping.cancel()
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending


async def guarded(
    events: AsyncIterator[T], stop: Callable[[], None], authorized: Callable[[], Awaitable[bool]], every: float, closing: asyncio.Event
) -> AsyncIterator[T]:
    """`while_authorized` for events that can be ended from another task (`stop`: a chat
    stream's subscriber, woken by it): one guard task per stream re-checks `authorized()` every
    `every` seconds and waits for `closing`, and the events pass straight through (no task per
    event). Events that arrive while a check is under way (a database read) still pass; the
    stream ends once it fails."""
    ended = False
    failure: Exception | None = None

    async def guard() -> None:
        nonlocal ended, failure
        try:
            while True:
                try:
                    async with asyncio.timeout(every):
                        await closing.wait()
                except TimeoutError:
                    if await authorized():
                        continue
                break
        except Exception as exc:  # the check failed: the stream fails with it, as it would inline
            failure = exc
        ended = True
        stop()

    task = asyncio.create_task(guard(), name="stream-guard")
    try:
        async for item in events:
            if ended:
                break
            yield item
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if failure is not None:
        raise failure


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
    user: CurrentUser,
    token: BearerToken,
    svc: Service,
    settings: AppSettings,
    closing: Closing,
    after_id: Annotated[int | None, Query(ge=0, le=MAX_INT64)] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> EventSourceResponse:
    start = _cursor(after_id, last_event_id)
    stream = await svc.open_stream(user, chat_id, start)

    async def authorized() -> bool:
        return await svc.still_authorized(token)

    async def gen() -> AsyncIterator[dict[str, Any]]:
        async with stream as events:
            async for cursor, data in guarded(_framed(events, start), events.stop, authorized, settings.sse_keepalive, closing):
                yield {"event": data["type"], "id": str(cursor), "data": json.dumps(data)}

    return EventSourceResponse(gen(), ping=int(max(1, settings.sse_keepalive)), headers={"X-Accel-Buffering": "no"})


@router.websocket("/chats/{chat_id}/stream")
async def stream_ws(websocket: WebSocket, chat_id: str, after_id: str = "0") -> None:
    """The same stream over a WebSocket: frames are `{"id": cursor, "event": {...}}`. The path and
    query are parsed here, not by FastAPI: its refusal comes before the handshake, which a client
    sees as a bare HTTP 403."""
    svc = app_state(websocket).service
    token, subprotocol = _ws_token(websocket)
    # Refusals are close codes after the handshake (4400 bad input, 4401 no or bad token, 4404
    # unknown chat): a close before accept reaches the client as a bare HTTP 403 it cannot tell
    # apart. A browser drops the connection unless the server selects the subprotocol it offered.
    await websocket.accept(subprotocol=subprotocol)
    user = await svc.authenticate(token) if token else None
    if user is None:
        await websocket.close(code=4401, reason="unauthenticated")
        return
    try:
        cursor = int(after_id)
    except ValueError:
        cursor = -1  # refused below
    if not 0 <= cursor <= MAX_INT64:
        await websocket.close(code=4400, reason="after_id is not a message id")
        return
    try:
        chat = uuid.UUID(chat_id)
    except ValueError:
        # Like any id that names no chat of the caller's.
        await websocket.close(code=4404, reason="not found")
        return
    try:
        stream = await svc.open_stream(user, chat, cursor)
    except NotFound:
        await websocket.close(code=4404, reason="not found")
        return

    revoked = False

    async def authorized() -> bool:
        nonlocal revoked
        revoked = token is None or not await svc.still_authorized(token)
        return not revoked

    async def send_events() -> None:
        state = app_state(websocket)
        async with stream as events:
            async for at, data in guarded(_framed(events, cursor), events.stop, authorized, state.settings.sse_keepalive, state.closing):
                await websocket.send_json({"id": at, "event": data})
        if revoked:
            await websocket.close(code=4401, reason="token revoked")

    async def until_closed() -> None:
        # Clients send nothing; reading is how a closed connection is noticed while the chat is
        # quiet (else the subscription lives on until the next event fails to send).
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass

    sender = asyncio.create_task(send_events(), name=f"ws-stream-{chat}")
    reader = asyncio.create_task(until_closed(), name=f"ws-closed-{chat}")
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


@router.get(
    "/chats/watch",
    tags=["chats"],
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "`{kind, chat}` for the caller's chats."}},
)
async def watch(user: CurrentUser, token: BearerToken, svc: Service, settings: AppSettings, closing: Closing) -> EventSourceResponse:
    """Notifications are hints: when some may have been lost (the pubsub reconnected, or this
    watch fell behind) the watch re-reads the caller's chats changed since its last sync and
    reports each difference, like the chat stream's resync (`streams/watch.py`)."""
    # Subscribed before the response starts: a change made once the client has the headers is
    # never missed.
    stack = contextlib.AsyncExitStack()
    changes = await stack.enter_async_context(svc.watch_chats(user))

    async def authorized() -> bool:
        return await svc.still_authorized(token)

    async def gen() -> AsyncIterator[dict[str, Any]]:
        try:
            async for change in while_authorized(changes, authorized, settings.sse_keepalive, closing):
                data = {"kind": change.kind, "chat": ChatOut.of(change.chat).model_dump(mode="json", by_alias=True)}
                yield {"event": change.kind, "data": json.dumps(data)}
        finally:
            await stack.aclose()

    return EventSourceResponse(gen(), ping=int(max(1, settings.sse_keepalive)))
