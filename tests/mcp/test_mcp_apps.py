"""MCP Apps (io.modelcontextprotocol/ui) against a real SDK server over stdio: the extension is
advertised, app-only tools stay away from the model, a result names its view, the view is read
and fenced, and a view's tools/call honours visibility."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

from chatd.domain.mcp import McpServerConfig, McpTransport
from chatd.domain.tools import ToolContext
from chatd.mcp import (
    AppResourceError,
    AppToolRefused,
    McpCallError,
    call_app_tool,
    connect_all,
    read_app_resource,
    read_app_view,
)
from chatd.mcp.apps import content_security_policy

SERVER = Path(__file__).parent / "apps_test_server.py"
IDENTITY = (uuid.uuid4(), uuid.uuid4())


def apps_server() -> McpServerConfig:
    return McpServerConfig(id=uuid.uuid4(), slug="dice", transport=McpTransport.STDIO, command=sys.executable, args=(str(SERVER),))


async def test_app_only_tools_are_not_offered_to_the_model_and_a_result_names_its_view() -> None:
    config = apps_server()
    tools, conns = await connect_all([config], {})
    try:
        assert sorted(t.name for t in tools) == ["dice__model_note", "dice__roll"]
        roll = next(t for t in tools if t.name == "dice__roll")
        result = await roll.call({"sides": 6}, ToolContext(IDENTITY[1], IDENTITY[0], "call-1"))
        assert result.result == "rolled 3 of 6"
        assert result.app is not None
        assert (result.app.server_id, result.app.resource_uri, result.app.tool) == (str(config.id), "ui://dice/view", "roll")
        note = next(t for t in tools if t.name == "dice__model_note")
        assert (await note.call({}, ToolContext(IDENTITY[1], IDENTITY[0], "call-2"))).app is None
    finally:
        await conns.close()


async def test_a_view_is_read_from_its_server_under_the_restrictive_default_policy() -> None:
    view = await read_app_view(apps_server(), None, "ui://dice/view", max_bytes=100_000, call_timeout=30, pool=None, identity=IDENTITY)
    assert "Dice app" in view.html
    assert "default-src 'none'" in view.csp and "connect-src 'none'" in view.csp and "sandbox allow-scripts" in view.csp


async def test_a_view_over_the_size_limit_or_not_named_by_a_tool_is_refused() -> None:
    with pytest.raises(AppResourceError, match="mcp_app_max_bytes"):
        await read_app_view(apps_server(), None, "ui://dice/view", max_bytes=100, call_timeout=30, pool=None, identity=IDENTITY)
    with pytest.raises(AppToolRefused):
        await read_app_view(apps_server(), None, "ui://dice/other", max_bytes=100_000, call_timeout=30, pool=None, identity=IDENTITY)


async def test_a_view_may_call_app_tools_of_its_server_but_not_model_only_or_unknown_ones() -> None:
    config = apps_server()
    result = await call_app_tool(config, None, "tally", {"by": 2}, call_timeout=30, pool=None, identity=IDENTITY)
    assert result["content"] == [{"type": "text", "text": "total 2"}]
    assert not result.get("isError")
    for name in ("model_note", "nope"):
        with pytest.raises(AppToolRefused):
            await call_app_tool(config, None, name, {}, call_timeout=30, pool=None, identity=IDENTITY)


def test_the_policy_takes_only_declared_origins_and_drops_anything_else() -> None:
    csp = content_security_policy({"csp": {
        "connectDomains": ["https://api.example.com", "'unsafe-eval'", "https://x.test; script-src *"],
        "resourceDomains": ["https://*.cdn.example"],
    }})
    assert "connect-src https://api.example.com;" in csp
    assert "script-src 'unsafe-inline' https://*.cdn.example;" in csp
    assert "unsafe-eval" not in csp and "x.test" not in csp
    assert "frame-src 'none'" in csp and "base-uri 'none'" in csp


async def test_a_views_resource_read_is_relayed_whole_or_refused() -> None:
    config = apps_server()
    read = await read_app_resource(config, None, "dice://faces", max_bytes=100, call_timeout=30, pool=None, identity=IDENTITY)
    assert read == {"contents": [{"uri": "dice://faces", "mimeType": "text/plain", "text": "six faces"}]}
    with pytest.raises(AppResourceError, match="mcp_app_max_bytes"):
        await read_app_resource(config, None, "dice://faces", max_bytes=5, call_timeout=30, pool=None, identity=IDENTITY)
    with pytest.raises(McpCallError):
        await read_app_resource(config, None, "dice://missing", max_bytes=100, call_timeout=30, pool=None, identity=IDENTITY)
