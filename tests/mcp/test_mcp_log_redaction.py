"""An MCP connect to a URL with user-info, logged at DEBUG by chatd, the MCP SDK and httpx: the
password appears in no log line (issue 9, item 5)."""

from __future__ import annotations

import io
import json

from chatd import logs
from chatd.mcp import connect_all
from conftest import PyServer, make_config

PASSWORD = "pw-never-logged-5678"
API_KEY = "key-never-logged-1234"


async def test_mcp_connect_with_userinfo_and_api_key_logs_neither(py_server: PyServer, captured: io.StringIO) -> None:
    url = py_server.url.replace("http://", f"http://alice:{PASSWORD}@", 1)
    config = make_config(url, slug="py", auth_type="api_key", api_key_header="X-API-Key", api_key_value=API_KEY)
    tools, close = await connect_all([config], {})
    try:
        assert tools
    finally:
        await close()
    out = captured.getvalue()
    events = [json.loads(line) for line in out.splitlines()]
    # The connect was logged (httpx names each request's URL), just not its credentials.
    assert any(e["logger"].startswith("httpx") and f"http://{logs.REDACTED}@127.0.0.1:" in e["msg"] for e in events), out
    assert any(e["logger"].startswith("mcp.client") and f"{logs.REDACTED}@127.0.0.1" in e["msg"] for e in events), out
    assert PASSWORD not in out
    assert API_KEY not in out
