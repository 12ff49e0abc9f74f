"""/metrics after a real turn: the API on a loopback port, the workers running a turn against the
scripted LLM server (one overloaded answer retried, a tool call, a final answer), and the series
scraped over HTTP before, during and after it. Metrics are per process, so the test compares
deltas, never absolute values."""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client.parser import text_string_to_metric_families

from chatd.domain.chat import ChatStatus
from tests.fakes.llm_server import Fault, Reply, TokenUsage, ToolCall
from tests.worker.conftest import Gate, Rig
from tests.worker.test_cli_chat import running

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]
MODEL = (("model", "fake-model"), ("provider", "openai-compatible"))


async def scrape(url: str, token: str) -> Series:
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 200, r.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def delta(after: Series, before: Series, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


async def test_metrics_move_with_a_real_turn(rig: Rig) -> None:
    gate = Gate()
    rig.tools = [gate.tool()]
    rig.llm.script(
        Reply(fault=Fault.overloaded()),
        Reply(text="Waiting.", tool_calls=[ToolCall("call_1", "wait", {})], usage=TokenUsage(input=100, output=20)),
        Reply(text="Done.", usage=TokenUsage(input=150, output=10)),
    )
    token = rig.people.admin.token
    async with running(rig) as url:
        before = await scrape(url, token)
        chat = await rig.chat("go")
        await asyncio.wait_for(gate.entered.wait(), 10)
        async with rig.app.hub.subscribe(chat.id) as events:
            await anext(events)  # subscribed: the status snapshot arrived
            during = await scrape(url, token)
        gate.release.set()
        await rig.wait_status(chat.id, ChatStatus.WAITING)
        after = await scrape(url, token)

    assert delta(during, before, "chatd_turns_running") == 1
    assert delta(during, before, "chatd_stream_subscribers") == 1
    assert during[("chatd_chats", (("status", "running"),))] >= 1
    assert delta(after, before, "chatd_turns_running") == 0
    assert delta(after, before, "chatd_stream_subscribers") == 0
    assert after[("chatd_chats", (("status", "waiting"),))] >= 1
    assert delta(after, before, "chatd_chats_acquired_total") >= 1
    assert delta(after, before, "chatd_acquire_seconds_count") >= 1

    # One overloaded answer, retried once; two steps, each with a first token.
    assert delta(after, before, "chatd_provider_errors_total", **{"class": "overloaded"}) == 1
    assert delta(after, before, "chatd_provider_retries_total", **{"class": "overloaded"}) == 1
    assert delta(after, before, "chatd_time_to_first_token_seconds_count", **dict(MODEL)) == 2
    assert delta(after, before, "chatd_step_duration_seconds_count", **dict(MODEL)) == 2
    assert delta(after, before, "chatd_step_duration_seconds_sum", **dict(MODEL)) > 0
    assert delta(after, before, "chatd_tokens_total", model="fake-model", kind="input") == 250
    assert delta(after, before, "chatd_tokens_total", model="fake-model", kind="output") == 30
    # Pricing: 1 000 000 micros per million input tokens, 2 000 000 per million output tokens.
    assert delta(after, before, "chatd_cost_micros_total", model="fake-model") == 250 + 60
    assert after[("chatd_db_pool_size", ())] >= 1
    assert delta(after, before, "chatd_db_pool_wait_seconds_count") > 0
    assert ("chatd_queue_depth", ()) in after
