"""Replica-to-replica endpoints (not part of the public API): the part relay.

Authenticated with a token derived from the secret key every replica of a deployment shares."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from chatd.api.deps import app_state
from chatd.errors import Unauthenticated

router = APIRouter(include_in_schema=False)
KEEPALIVE_S = 10.0


@router.get("/internal/v1/chats/{chat_id}/parts")
async def relay_parts(chat_id: uuid.UUID, request: Request) -> StreamingResponse:
    state = app_state(request)
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not given or not hmac.compare_digest(given, state.internal_token):
        raise Unauthenticated("Invalid internal token.")

    async def lines() -> AsyncIterator[str]:
        items = state.service.relay_lines(chat_id)
        nxt: asyncio.Task[str] | None = None
        try:
            while True:
                nxt = nxt or asyncio.ensure_future(items.__anext__())
                done, _ = await asyncio.wait({nxt}, timeout=KEEPALIVE_S)
                if not done:
                    yield "\n"  # keeps proxies and the peer's read timeout happy
                    continue
                try:
                    item = nxt.result()
                except StopAsyncIteration:
                    return
                nxt = None
                yield item
        finally:
            if nxt is not None and not nxt.done():
                nxt.cancel()
                # Let the cancellation land before closing the generator that task is inside;
                # else the task later resumes a closed generator and dies unobserved.
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await nxt
            await items.aclose()

    return StreamingResponse(lines(), media_type="application/x-ndjson")
