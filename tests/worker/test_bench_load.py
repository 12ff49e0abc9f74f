"""bench/load.py and bench/llm.py do what the README says: against a served API with running
workers, the load test sets the scripted model up, runs its mix of chats to the end, measures
each phase and sees the metrics move."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from bench import load
from bench.llm import LoadModel

from tests.mcp.mcp_test_servers import ServerState, build_server, serve
from tests.worker.conftest import Rig
from tests.worker.test_cli_chat import running


@pytest.fixture
def mcp_server() -> Iterator[tuple[str, ServerState]]:
    state = ServerState()
    with serve(build_server(state).streamable_http_app()) as running_server:
        yield running_server.url, state


def test_the_scripted_load_model_calls_the_tool_once_retries_once_and_pads() -> None:
    model = LoadModel()
    first = {"stream": True, "messages": [{"role": "user", "content": 'x\nTOKENS 3\nTOOL bench__add {"a": 1}\nFLAKY'}]}
    refused = model(first)
    assert refused.fault is not None and refused.fault.status_code == 529
    call = model(first)
    assert [(c.name, c.args) for c in call.tool_calls] == [("bench__add", {"a": 1})]
    after = {**first, "messages": [*first["messages"], {"role": "assistant", "content": None}, {"role": "tool", "content": "2"}]}
    assert model(after).text == "tok0 tok1 tok2" and not model(after).tool_calls
    padded = model({"stream": True, "messages": [{"role": "user", "content": "TOKENS 2\nPAD 3"}]})
    assert padded.text == "tok0xxx tok1xxx"
    assert model({"stream": False, "messages": [{"role": "user", "content": "name this chat please"}]}).text == "Title: name this chat please"


def test_a_series_moved_when_a_gauge_changed_or_a_counter_grew_on_any_replica() -> None:
    scrapes = load.Scrapes()
    flat = {("chatd_tokens_total", (("kind", "input"), ("model", "m"))): 5.0, ("chatd_turns_running", ()): 0.0}
    scrapes.by_url["a"] = [flat, {**flat, ("chatd_turns_running", ()): 2.0}]
    scrapes.by_url["b"] = [flat, {**flat, ("chatd_tokens_total", (("kind", "input"), ("model", "m"))): 9.0}]
    report = load.moved(scrapes)
    assert report["chatd_turns_running"] == {"moved": True, "replicas": ["a"], "peak": 2.0}
    assert report["chatd_tokens_total"] == {"moved": True, "replicas": ["b"], "peak": 9.0}
    assert report["chatd_relay_connections"]["moved"] is False


async def test_the_load_test_runs_its_mix_against_a_served_deployment(rig: Rig, mcp_server: tuple[str, ServerState]) -> None:
    mcp_url, state = mcp_server
    rig.llm.responder = LoadModel()
    async with running(rig) as url:
        args = load.parse([
            "--url", url, "--chats", "6", "--rate", "20", "--tokens", "5", "--timeout", "60",
            "--setup-model", rig.llm.openai_base_url, "--mcp-url", mcp_url,
            "--tool-share", "0.5", "--flaky-share", "0.3", "--queue-share", "0.3", "--down-share", "0", "--scrape-every", "0.2",
        ])  # fmt: skip
        report = await load.main(args, rig.people.admin.token)
    assert report["errors"] == {} and report["completed"] == 6, report
    for phase in ("create_s", "first_token_s", "done_s"):
        assert report[phase] is not None and 0 < report[phase]["p50"] <= report[phase]["max"] < 60, phase
    mix = report["mix"]
    assert mix["tool"] > 0 and mix["flaky"] > 0 and mix["queued"] > 0, mix
    assert len(state.calls) == mix["tool"] and set(state.calls) == {"add"}
    metrics = report["metrics"]
    for name in ("chatd_tokens_total", "chatd_cost_micros_total", "chatd_step_duration_seconds", "chatd_mcp_call_seconds", "chatd_provider_retries_total"):
        assert metrics[name]["moved"], name
