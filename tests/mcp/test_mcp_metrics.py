"""MCP metrics of a replica: a server that cannot be reached counts as a connect failure of its
slug; a connected server is an open session until the turn closes it; a tool call is timed under
its server's slug."""

from __future__ import annotations

import socket

from prometheus_client import REGISTRY

from chatd.domain.tools import ToolContext
from chatd.mcp import connect_all
from conftest import PyServer, make_config, make_ctx


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_connect_failures_and_call_latency_are_counted_by_server(py_server: PyServer) -> None:
    failures, calls = value("chatd_mcp_connect_failures_total", server="gone"), value("chatd_mcp_call_seconds_count", server="live")
    sessions = value("chatd_mcp_sessions_open", server="live")
    dead = make_config(f"http://127.0.0.1:{free_port()}/mcp", slug="gone")
    tools, close = await connect_all([dead, make_config(py_server.url, slug="live")], {})
    try:
        (echo,) = [t for t in tools if t.name == "live__echo"]
        ctx: ToolContext = make_ctx()
        assert (await echo.call({"text": "hi"}, ctx)).result == "hi"
        assert value("chatd_mcp_sessions_open", server="live") - sessions == 1
        assert value("chatd_mcp_sessions_open", server="gone") == 0
    finally:
        await close()
    assert value("chatd_mcp_sessions_open", server="live") == sessions
    assert value("chatd_mcp_connect_failures_total", server="gone") - failures == 1
    assert value("chatd_mcp_call_seconds_count", server="live") - calls == 1
    assert value("chatd_mcp_call_seconds_sum", server="live") > 0
    assert value("chatd_mcp_connect_failures_total", server="live") == 0
