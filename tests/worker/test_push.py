"""Web push when a turn ends (SPEC §5.10), through the real worker, store and pywebpush, to a real
push service on 127.0.0.1 that checks the VAPID JWT and decrypts the payload like a browser."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest

from chatd.domain.chat import ChatStatus
from chatd.domain.parts import TextPart
from chatd.loop.prompts import FALLBACK_PUSH_BODY, PUSH_SYSTEM_PROMPT
from chatd.push_service import PushService
from chatd.store import push as push_store
from tests.fakes.llm_server import Fault, Reply, ToolCall
from tests.fakes.push_service import FakePushService
from tests.mcp.mcp_test_servers import ServerState, SessionCounter, build_server, serve
from tests.worker.conftest import Gate, Rig


@pytest.fixture
async def push(rig: Rig) -> AsyncIterator[FakePushService]:
    service: PushService = rig.app.push
    # The local push service speaks http on loopback; real ones are https on public addresses.
    service.allow_http = True
    service.allow_private = True
    async with FakePushService(service.web_push.public_key, service.web_push.keys.subject) as fake:
        yield fake


def _service(rig: Rig) -> PushService:
    svc: PushService = rig.app.push
    return svc


async def _subscribe(rig: Rig, push: FakePushService, who: str = "alice") -> dict[str, Any]:
    sub = push.subscribe()
    user = getattr(rig.people, who).user
    await _service(rig).subscribe(user, endpoint=sub["endpoint"], p256dh=sub["keys"]["p256dh"], auth=sub["keys"]["auth"])
    return sub


async def _turns_and_pushes_done(rig: Rig) -> None:
    await rig.run()
    await _service(rig).web_push.drain()


async def test_a_finished_turn_pushes_a_model_summary_to_each_of_the_owners_browsers(rig: Rig, push: FakePushService) -> None:
    laptop, phone = await _subscribe(rig, push), await _subscribe(rig, push)
    bobs = await _subscribe(rig, push, "bob")
    rig.llm.script(Reply(text="I found the bug in parser.py and fixed the off-by-one."))
    rig.llm.script_side(Reply(text="  Fixed an off-by-one\n bug in parser.py.  "))
    chat = await rig.chat("please fix the parser", title="Fix the parser")
    await _turns_and_pushes_done(rig)

    assert (await rig.get(chat.id)).status is ChatStatus.WAITING
    expected = {"title": "Fix the parser", "body": "Fixed an off-by-one bug in parser.py.", "icon": "/favicon.ico", "data": {"url": f"/#chat={chat.id}"}}
    assert [d.payload for d in push.received_by(laptop)] == [expected]
    assert [d.payload for d in push.received_by(phone)] == [expected]
    assert push.received_by(bobs) == [] and push.rejected == []
    delivered = push.received_by(laptop)[0]
    assert delivered.claims["sub"] == "mailto:chatd@localhost" and delivered.claims["aud"] == push.origin
    assert int(delivered.headers["ttl"]) > 0
    # The summary came from the (quick) model, given the title and the final answer.
    summary = next(r for r in rig.llm.requests if not r.body.get("stream"))
    assert summary.body["messages"][0] == {"role": "system", "content": PUSH_SYSTEM_PROMPT}
    assert "Fix the parser" in summary.body["messages"][1]["content"]
    assert "off-by-one" in summary.body["messages"][1]["content"]


async def test_a_failed_turn_pushes_its_error(rig: Rig, push: FakePushService) -> None:
    sub = await _subscribe(rig, push)
    rig.llm.script(Reply(fault=Fault.status(401, message="Incorrect API key provided")))
    chat = await rig.chat("hello", title="Greeting")
    await _turns_and_pushes_done(rig)

    failed = await rig.get(chat.id)
    assert failed.status is ChatStatus.ERROR and failed.last_error
    assert [d.payload for d in push.received_by(sub)] == [
        {"title": "Greeting", "body": failed.last_error, "icon": "/favicon.ico", "data": {"url": f"/#chat={chat.id}"}}
    ]
    # No summary call for an error: the error text is the message.
    assert all(r.body.get("stream") for r in rig.llm.requests)


async def test_a_failed_summary_falls_back_to_a_fixed_text(rig: Rig, push: FakePushService) -> None:
    sub = await _subscribe(rig, push)
    rig.llm.script(Reply(text="Done with the refactor."))
    rig.llm.script_side(Reply(fault=Fault.status(500)))
    await rig.chat("refactor it")
    await _turns_and_pushes_done(rig)
    assert [d.payload["body"] for d in push.received_by(sub)] == [FALLBACK_PUSH_BODY]


async def test_a_gone_subscription_is_deleted_and_the_others_still_get_it(rig: Rig, push: FakePushService) -> None:
    old, current = await _subscribe(rig, push), await _subscribe(rig, push)
    push.gone(old)
    rig.llm.script(Reply(text="ok"), Reply(text="ok again"))
    rig.llm.script_side(Reply(text="Said ok."), Reply(text="Said ok again."))
    chat = await rig.chat("say ok")
    await _turns_and_pushes_done(rig)

    alice = rig.people.alice.user
    remaining = await push_store.user_subscriptions(rig.app.db, rig.app.box, alice.id)
    assert [s.endpoint for s in remaining] == [current["endpoint"]]
    assert [d.payload["body"] for d in push.received_by(current)] == ["Said ok."]
    requests_before = push.requests
    # The next turn does not try the deleted one again.
    await rig.app.service.send_message(alice, chat.id, content=[TextPart(text="again")])
    await _turns_and_pushes_done(rig)
    assert [d.payload["body"] for d in push.received_by(current)] == ["Said ok.", "Said ok again."]
    assert push.requests == requests_before + 1


async def test_a_refusing_or_unreachable_push_service_changes_nothing(rig: Rig, push: FakePushService) -> None:
    sub = await _subscribe(rig, push)
    nowhere = push.subscribe()
    nowhere_endpoint = "http://127.0.0.1:9/push/closed-port"
    alice = rig.people.alice.user
    await _service(rig).subscribe(alice, endpoint=nowhere_endpoint, p256dh=nowhere["keys"]["p256dh"], auth=nowhere["keys"]["auth"])
    # A push service that does not know the VAPID key: 401, not a reason to drop the subscription.
    web_push = _service(rig).web_push
    web_push.keys = dataclasses.replace(web_push.keys, subject="mailto:someone@else.example")
    rig.llm.script(Reply(text="done"))
    rig.llm.script_side(Reply(text="Did it."))
    chat = await rig.chat("do it")
    await _turns_and_pushes_done(rig)

    assert (await rig.get(chat.id)).status is ChatStatus.WAITING
    assert push.received_by(sub) == [] and push.rejected == ["sub 'mailto:someone@else.example'"]
    kept = {s.endpoint for s in await push_store.user_subscriptions(rig.app.db, rig.app.box, alice.id)}
    assert kept == {sub["endpoint"], nowhere_endpoint}


async def test_sub_agent_chats_do_not_push(rig: Rig, push: FakePushService) -> None:
    sub = await _subscribe(rig, push)
    rig.llm.script(Reply(text="parent done"))
    rig.llm.script_side(Reply(text="Parent done."))
    parent = await rig.chat("parent")
    await _turns_and_pushes_done(rig)
    rig.llm.script(Reply(text="child done"))
    rig.llm.script_side(Reply(text="never used"))
    child = await rig.chat("child task", parent_chat_id=parent.id)
    await _turns_and_pushes_done(rig)

    assert (await rig.get(child.id)).status is ChatStatus.WAITING
    # Only the root chat's turn was announced.
    assert [(d.payload["body"], d.payload["data"]["url"]) for d in push.received_by(sub)] == [("Parent done.", f"/#chat={parent.id}")]


async def test_an_interrupted_turn_does_not_push(rig: Rig, push: FakePushService) -> None:
    sub = await _subscribe(rig, push)
    gate = Gate()
    rig.tools = [gate.tool()]
    rig.llm.script(Reply(text="Working.", tool_calls=[ToolCall("c1", "wait", {})]))
    chat = await rig.chat("long job")
    await rig.workers.acquire_once()
    await asyncio.wait_for(gate.entered.wait(), 10)
    await rig.app.service.interrupt(rig.people.alice.user, chat.id)
    await rig.workers.drain()
    await _service(rig).web_push.drain()

    assert (await rig.get(chat.id)).status is ChatStatus.WAITING
    assert push.requests == 0 and push.received_by(sub) == []
    gate.release.set()


async def test_a_turn_followed_by_a_queued_message_pushes_once_at_the_end(rig: Rig, push: FakePushService) -> None:
    sub = await _subscribe(rig, push)
    gate = Gate()
    rig.tools = [gate.tool()]
    rig.llm.script(Reply(tool_calls=[ToolCall("c1", "wait", {})]), Reply(text="first done"), Reply(text="second done"))
    rig.llm.script_side(Reply(text="Did both."))
    chat = await rig.chat("first")
    await rig.workers.acquire_once()
    await asyncio.wait_for(gate.entered.wait(), 10)
    await rig.app.service.send_message(rig.people.alice.user, chat.id, content=[TextPart(text="second")])
    gate.release.set()
    await _turns_and_pushes_done(rig)
    # The first turn ended with the queued message promoted (still working): no push for it.
    assert [d.payload["body"] for d in push.received_by(sub)] == ["Did both."]


async def test_a_chat_that_starts_waiting_for_its_user_pushes_what_it_waits_for(rig: Rig, push: FakePushService) -> None:
    sub = await _subscribe(rig, push)
    rig.llm.script(Reply(tool_calls=[ToolCall("q1", "ask_user_question", {"question": "Deploy to prod?", "options": ["yes", "no"]})]))
    chat = await rig.chat("deploy", title="Deploy")
    await _turns_and_pushes_done(rig)

    assert (await rig.get(chat.id)).status is ChatStatus.REQUIRES_ACTION
    assert [d.payload for d in push.received_by(sub)] == [
        {"title": "Deploy", "body": "Waiting for you: Deploy to prod?", "icon": "/favicon.ico", "data": {"url": f"/#chat={chat.id}"}}
    ]
    # No summary call: the question is the message.
    assert all(r.body.get("stream") for r in rig.llm.requests)


async def test_an_mcp_servers_question_during_a_call_pushes_it_while_the_chat_runs(rig: Rig, push: FakePushService) -> None:
    # A 2025-11-25 server asks inside the call: the chat stays `running` while the call waits, so
    # no turn end would tell the user.
    sub = await _subscribe(rig, push)
    rig.app.settings.mcp_elicitation_timeout = 3.0  # then the call is cancelled and the turn ends
    with serve(SessionCounter(build_server(ServerState()).streamable_http_app(), legacy_only=True)) as server:
        config = await rig.app.service.create_mcp_server(rig.people.admin.user, {"slug": "notes", "display_name": "Notes", "url": server.url, "enabled": True})
        rig.llm.script(Reply(tool_calls=[ToolCall("r1", "notes__register", {})]), Reply(text="Done."))
        chat = await rig.chat("sign me up", title="Signup", mcp_server_ids=[config.id])
        await rig.workers.acquire_once()
        async with asyncio.timeout(20):
            while not push.received_by(sub):  # noqa: ASYNC110 - waits for the push service to get it
                await asyncio.sleep(0.05)
        assert (await rig.get(chat.id)).status is ChatStatus.RUNNING
        assert [d.payload for d in push.received_by(sub)] == [
            {"title": "Signup", "body": "Waiting for you: Who is registering?", "icon": "/favicon.ico", "data": {"url": f"/#chat={chat.id}"}}
        ]
        await rig.workers.drain()


async def test_a_2026_servers_form_stops_the_chat_and_pushes_once(rig: Rig, push: FakePushService) -> None:
    sub = await _subscribe(rig, push)
    with serve(build_server(ServerState()).streamable_http_app()) as server:
        config = await rig.app.service.create_mcp_server(rig.people.admin.user, {"slug": "notes", "display_name": "Notes", "url": server.url, "enabled": True})
        rig.llm.script(Reply(tool_calls=[ToolCall("r1", "notes__register", {})]), Reply(text="Done."))
        chat = await rig.chat("sign me up", title="Signup", mcp_server_ids=[config.id])
        await rig.run()
        async with asyncio.timeout(20):
            while not push.received_by(sub):  # noqa: ASYNC110 - waits for the push service to get it
                await asyncio.sleep(0.05)
        assert (await rig.get(chat.id)).status is ChatStatus.REQUIRES_ACTION
        await asyncio.sleep(0.2)  # a second notification would have come by now
        assert [d.payload["body"] for d in push.received_by(sub)] == ["Waiting for you: Who is registering?"]
