"""The OpenAPI document is a contract, held by schemathesis: every operation fuzzed over real HTTP
with an admin's and a member's token, on SQLite and PostgreSQL, examples, coverage, fuzzing and
stateful phases, bounded in time. Zero server errors, zero undocumented statuses and zero response
bodies that break their schema are allowed. The two streams are left out: they never end, and
tests/test_api.py, test_watch_reconnect.py and test_authz.py hold them to the contract.

CHATD_FUZZ_SECONDS sets each run's budget (default 12 s: the four runs stay near two minutes)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import httpx
import pytest

from chatd.bootstrap import App
from tests.conftest import People, serve_http

SECONDS = int(os.environ.get("CHATD_FUZZ_SECONDS", "12"))
CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
        "negative_data_rejection",
        "unsupported_method",
        "allow_header_conformance",
    )
)
# The streams (no end to wait for), and the operations that connect out to an address an admin
# typed (the MCP tool check and OAuth discovery): a fuzzer's URLs must never leave this machine;
# and revoking a token, since the fuzzer finds its own in /me/tokens (test_api_lists.py has it).
EXCLUDE = r"(/stream$|/watch$|/tools$|/oauth/|/tokens/\{token_id\}$)"
# Anything else that would connect out goes to a closed loopback port instead (the MCP client and
# the provider SDKs honour the proxy variables); the API itself is reached directly.
NO_EGRESS = {
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "ALL_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost",
}


async def seed(client: httpx.AsyncClient, people: People) -> None:
    """Something of each kind, so operations on existing rows are reached too."""
    admin, alice = people.admin.headers, people.alice.headers
    for path, body in (
        ("/api/v1/providers", {"provider": "anthropic", "api_key": "sk-test"}),
        ("/api/v1/model-configs", {"provider": "anthropic", "model": "claude-x", "context_limit": 200000}),
        ("/api/v1/mcp-servers", {"slug": "docs", "display_name": "Docs", "url": "http://127.0.0.1:9/mcp", "enabled": True}),
        ("/api/v1/templates", {"name": "empty"}),
    ):
        r = await client.post(path, headers=admin, json=body)
        assert r.status_code == 201, r.text
    for h in (admin, alice):
        chat = (await client.post("/api/v1/chats", headers=h, json={"content": "hello"})).json()
        await client.post(f"/api/v1/chats/{chat['id']}/messages", headers=h, json={"content": "queued"})
        assert (await client.post("/api/v1/files", headers=h, files={"file": ("a.txt", b"hi", "text/plain")})).status_code == 201


@pytest.mark.parametrize("role", ["admin", "member"])
async def test_schemathesis_finds_no_server_error_and_no_contract_violation(
    role: str, chatd: App, people: People, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in NO_EGRESS.items():
        monkeypatch.setenv(name, value)
    chatd.settings.mcp_connect_timeout = 1.0
    person = people.admin if role == "admin" else people.alice
    st = Path(sys.executable).parent / "st"
    async with serve_http(chatd) as base:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            await seed(client, people)
        proc = await asyncio.create_subprocess_exec(
            str(st), "run", f"{base}/openapi.json",
            "--header", f"Authorization: Bearer {person.token}",
            "--checks", CHECKS,
            "--exclude-path-regex", EXCLUDE,
            "--phases", "examples,coverage,fuzzing,stateful",
            "--max-time", str(SECONDS),
            "--seed", "20261129",
            "--request-timeout", "20",
            "--workers", "1",
            "--report", "junit",
            "--report-junit-path", str(tmp_path / "junit.xml"),
            "--output-truncate", "false",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""},
        )
        out, _ = await asyncio.wait_for(proc.communicate(), SECONDS * 4 + 60)
    text = out.decode(errors="replace")
    print(text[-6000:])
    assert proc.returncode == 0, text[-20000:]
