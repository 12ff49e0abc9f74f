"""Optional forwarding of the caller's identity to an MCP server: off by default, on per
server, and an auth header of the same name wins."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from mcp_test_servers import build_server, serve
from starlette.types import ASGIApp, Receive, Scope, Send

from chatd.mcp import connect_all
from conftest import make_config


@dataclass
class HeaderLog:
    app: ASGIApp
    seen: list[dict[str, str]] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen.append({k.decode().lower(): v.decode() for k, v in scope["headers"]})
        await self.app(scope, receive, send)


@pytest.fixture
def recording() -> Iterator[tuple[str, HeaderLog]]:
    log = HeaderLog(build_server().streamable_http_app())
    with serve(log) as running:
        yield running.url, log


USER, CHAT = uuid.uuid4(), uuid.uuid4()


async def connect_and_close(config: object) -> None:
    tools, conns = await connect_all([config], {}, identity=(USER, CHAT))  # type: ignore[list-item]
    try:
        assert tools, "the server should have connected"
    finally:
        await conns.close()


async def test_identity_is_not_sent_by_default(recording: tuple[str, HeaderLog]) -> None:
    url, log = recording
    await connect_and_close(make_config(url))
    assert log.seen and all("x-chatd-user-id" not in h and "x-chatd-chat-id" not in h for h in log.seen)


async def test_identity_is_sent_when_the_server_asks_for_it(recording: tuple[str, HeaderLog]) -> None:
    url, log = recording
    await connect_and_close(make_config(url, forward_identity=True))
    assert log.seen and all(h.get("x-chatd-user-id") == str(USER) and h.get("x-chatd-chat-id") == str(CHAT) for h in log.seen)


async def test_an_auth_header_of_the_same_name_wins(recording: tuple[str, HeaderLog]) -> None:
    url, log = recording
    config = make_config(url, forward_identity=True, auth_type="custom_headers", custom_headers={"X-Chatd-User-Id": "service-account"})
    await connect_and_close(config)
    assert log.seen and all(h.get("x-chatd-user-id") == "service-account" and h.get("x-chatd-chat-id") == str(CHAT) for h in log.seen)
