"""MCP Apps in the browser: a tool's ui:// view renders in its tool card inside a sandboxed
iframe, gets the handshake, the tool's input and result, calls the server's app-only tool through
chatd, is refused a model-only tool, and cannot reach the page's DOM or storage."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Chatd, sign_in

APPS_SERVER = Path(__file__).parents[1] / "mcp" / "apps_test_server.py"


@pytest.fixture(scope="module")
def dice(chatd: Chatd) -> Iterator[dict[str, Any]]:
    server = chatd.ok("POST", "/mcp-servers", json={
        "slug": "dice", "display_name": "Dice", "transport": "stdio", "command": sys.executable,
        "args": [str(APPS_SERVER)], "enabled": True, "availability": "default_off",
    })
    try:
        yield server
    finally:
        chatd.ok("DELETE", f"/mcp-servers/{server['id']}")


def test_a_tools_app_renders_sandboxed_gets_its_result_and_calls_back_through_chatd(page: Page, chatd: Chatd, dice: dict[str, Any]) -> None:
    sign_in(page, chatd, chatd.member("apps-user"))
    page.get_by_text(re.compile(r"Tools: \d+ of \d+ servers")).click()
    page.get_by_role("checkbox", name="Dice").check()
    box = page.get_by_label("Message", exact=True)
    box.fill('TOOL dice__roll {"sides": 6}')
    box.press("Enter")
    card = page.get_by_role("article", name="Tool roll on dice")
    # The stdio server starts (Python, the SDK) before the first call: slow on a loaded machine.
    expect(card.get_by_text("done")).to_be_visible(timeout=60_000)
    iframe = card.locator("iframe.mcp-app")
    expect(iframe).to_have_attribute("sandbox", "allow-scripts")
    app = card.frame_locator("iframe.mcp-app")
    expect(app.get_by_text("handshake: chatd 2026-01-26 tool roll")).to_be_visible()
    expect(app.get_by_text('input: {"sides":6}')).to_be_visible()
    expect(app.get_by_text("result: rolled 3 of 6")).to_be_visible()
    # The app-only tool, called by the view through chatd's endpoint; the model-only one refused.
    expect(app.get_by_text("tally: total 2")).to_be_visible()
    expect(app.get_by_text("model-only refused: -32000")).to_be_visible()
    expect(app.get_by_text("isolation: parent and storage unreachable")).to_be_visible()
    # The same, asked from inside the frame: an opaque origin, no way to the page or the token.
    frame = iframe.element_handle().content_frame()
    assert frame is not None
    probe = frame.evaluate("""() => {
        const out = {origin: self.origin};
        try { out.dom = parent.document.body.innerHTML.length; } catch (e) { out.dom = "blocked"; }
        try { out.token = localStorage.getItem("chatd-token"); } catch (e) { out.token = "blocked"; }
        return out;
    }""")
    assert probe == {"origin": "null", "dom": "blocked", "token": "blocked"}


def test_an_apps_resource_reads_links_and_messages_are_answered_and_need_the_persons_click(page: Page, chatd: Chatd, dice: dict[str, Any]) -> None:
    # The link the app offers is served by the test (no network): a page the new tab can load.
    page.context.route("https://dice.example/**", lambda route: route.fulfill(body="<title>Dice rules</title>rules", content_type="text/html"))
    sign_in(page, chatd, chatd.member("apps-bridge"))
    page.get_by_text(re.compile(r"Tools: \d+ of \d+ servers")).click()
    page.get_by_role("checkbox", name="Dice").check()
    box = page.get_by_label("Message", exact=True)
    box.fill('TOOL dice__roll {"sides": 8}')
    box.press("Enter")
    card = page.get_by_role("article", name="Tool roll on dice")
    expect(card.get_by_text("done")).to_be_visible(timeout=60_000)
    app = card.frame_locator("iframe.mcp-app")
    expect(app.get_by_text("result: rolled 4 of 8")).to_be_visible()
    # resources/read through chatd to the view's own server; an absent resource is an error (the
    # server's refusal, -32000), and a request chatd does not support is "method not found".
    expect(app.get_by_text("resource: six faces")).to_be_visible()
    expect(app.get_by_text("missing refused: -32000")).to_be_visible()
    expect(app.get_by_text("unsupported refused: -32601")).to_be_visible()

    # A javascript: link is refused at once, never shown.
    app.get_by_role("button", name="Open a script").click()
    expect(app.get_by_text("link refused: -32602")).to_be_visible()
    ask = card.get_by_role("group", name="A link from the app")
    expect(ask).to_have_count(0)

    # An https link waits for the person: Cancel refuses it, nothing opens.
    pages = len(page.context.pages)
    app.get_by_role("button", name="Open the rules").click()
    expect(ask.get_by_text("https://dice.example/rules")).to_be_visible()
    ask.get_by_role("button", name="Cancel").click()
    expect(app.get_by_text("link refused: -32000")).to_be_visible()
    expect(ask).to_have_count(0)
    assert len(page.context.pages) == pages

    # Asked again and opened by the person's click: a new tab, without a way back to chatd.
    app.get_by_role("button", name="Open the rules").click()
    with page.context.expect_page() as opened:
        ask.get_by_role("button", name="Open link").click()
    tab = opened.value
    tab.wait_for_load_state()
    assert tab.url == "https://dice.example/rules"
    assert tab.evaluate("() => window.opener") is None
    tab.close()
    expect(app.get_by_text("link: opened https://dice.example/rules")).to_be_visible()

    # ui/message: the text goes into the message box after what is typed; nothing is sent.
    box.fill("First this.")
    app.get_by_role("button", name="Ask to roll again").click()
    expect(app.get_by_text("message: in the box")).to_be_visible()
    expect(box).to_have_value("First this.\n\nRoll the die again, please")
    expect(page.get_by_text("Roll the die again, please", exact=True)).to_have_count(0)
