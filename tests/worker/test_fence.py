"""The turn generation fences every worker write (hardening issue, item 1): an edit, interrupt or
promote while a step is being written, and an at-once re-acquire by the same replica, never let
the old turn's writes into the new history."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from chatd.domain.chat import ChatStatus, Role
from chatd.domain.events import StatusEvent, StreamEvent
from chatd.domain.parts import text_of
from tests.conftest import serve_http
from tests.fakes.llm_server import directive_reply
from tests.worker.conftest import Rig


def _is_part(ev: StreamEvent) -> bool:
    return ev.type == "message_part"


async def test_an_edit_while_the_turn_streams_is_answered_and_the_old_turn_writes_nothing_after_it(rig: Rig) -> None:
    """The drill of the hardening issue: the same replica re-acquires the edited chat at once."""
    rig.llm.responder = directive_reply
    rig.app.settings.acquire_interval = 30  # only the pending notification wakes the pool: at once
    stop = asyncio.Event()
    runner = asyncio.create_task(rig.workers.run(stop))
    try:
        async with serve_http(rig.app) as base_url, httpx.AsyncClient(base_url=base_url, headers=rig.people.alice.headers, timeout=30) as http:
            for round_ in range(3):
                r = await http.post("/api/v1/chats", json={"content": [{"type": "text", "text": "SLOW 50\nTOKENS 60\norig"}]})
                assert r.status_code == 201, r.text
                chat_id = uuid.UUID(r.json()["id"])
                # Running and streaming: the first token has gone out.
                async with asyncio.timeout(30), rig.app.hub.subscribe(chat_id, 0) as events:
                    async for ev in events:
                        if _is_part(ev):
                            break
                user = next(m for m in await rig.messages(chat_id) if m.role is Role.USER)
                r = await http.patch(
                    f"/api/v1/chats/{chat_id}/messages/{user.id}", json={"content": [{"type": "text", "text": f"edited {round_}"}]}
                )
                assert r.status_code == 200, r.text
                cid = chat_id
                await _wait_settled(rig, cid)
                msgs = [m for m in await rig.messages(cid) if m.role is not Role.SYSTEM]
                assert [(m.role, text_of(m.content)) for m in msgs] == [
                    (Role.USER, f"edited {round_}"),
                    (Role.ASSISTANT, f"answer to: edited {round_}"),
                ], f"round {round_}"
                assert (await rig.get(cid)).status is ChatStatus.WAITING
    finally:
        stop.set()
        await asyncio.wait_for(runner, 20)


async def _wait_settled(rig: Rig, chat_id: uuid.UUID) -> None:
    """Until the chat is idle (waiting or error) and this replica runs no turn of it."""
    async with asyncio.timeout(60):
        while True:
            await rig.workers.drain()
            if (await rig.get(chat_id)).status in (ChatStatus.WAITING, ChatStatus.ERROR) and not rig.workers.running:
                return
            # Not idle yet: wait for the next idle status (the snapshot carries the current one).
            async with rig.app.hub.subscribe(chat_id, 0) as events:
                async for ev in events:
                    if isinstance(ev, StatusEvent) and ev.status in (ChatStatus.WAITING, ChatStatus.ERROR):
                        break
