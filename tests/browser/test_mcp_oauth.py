"""A member connects their own account to an OAuth MCP server from the chat page, then uses it."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Chatd, sign_in

# The OAuth world lives beside the MCP client tests, which import it as a top-level module.
sys.path.insert(0, str(Path(__file__).parents[1] / "mcp"))
from oauth_test_server import OAuthWorld, oauth_world


@pytest.fixture(scope="module")
def secure(chatd: Chatd) -> Iterator[tuple[OAuthWorld, dict[str, Any]]]:
    with oauth_world() as world:
        server = chatd.ok("POST", "/mcp-servers", json={
            "slug": "secure", "display_name": "Secure", "url": world.mcp_url, "transport": "streamable_http",
            "auth_type": "oauth2", "enabled": True, "availability": "default_off",
        })
        try:
            yield world, server
        finally:
            chatd.ok("DELETE", f"/mcp-servers/{server['id']}")


def test_connect_signs_the_member_in_to_the_server_and_its_tools_then_work(page: Page, chatd: Chatd, secure: tuple[OAuthWorld, dict[str, Any]]) -> None:
    world, _ = secure
    sign_in(page, chatd, chatd.member("oauth-user"))
    page.get_by_text(re.compile(r"Tools: \d+ of \d+ servers")).click()
    page.get_by_role("checkbox", name="Secure").check()
    with page.expect_popup() as popup:
        page.get_by_role("button", name="Connect Secure").click()
    # The authorization server approves at once and sends the browser back to chatd.
    expect(popup.value.get_by_role("heading", name="Connected to Secure")).to_be_visible()
    popup.value.close()
    expect(page.get_by_role("button", name="Connect Secure")).to_have_count(0)
    expect(page.get_by_text("connected", exact=True)).to_be_visible()
    assert world.auth.code_exchanges == 1
    box = page.get_by_label("Message", exact=True)
    box.fill('TOOL secure__echo {"text": "with my own token"}')
    box.press("Enter")
    card = page.get_by_role("article", name="Tool echo on secure")
    expect(card.get_by_text("done")).to_be_visible()
    expect(page.get_by_text("The tool said: with my own token")).to_be_visible()
