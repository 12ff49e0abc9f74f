"""What a chat shows about the answers its person gave: several approvals answered one by one
(the composer's button says it cancels all that is pending), "always allow" seen and revoked,
the composer's buttons in one row while the chat waits, and an MCP server's tool count after a
reload of the admin page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import Chatd, sign_in
from tests.browser.test_flows import status
from tests.browser.test_waiting import DESKTOP, PHONE, chat_with, server, shot


@pytest.fixture(scope="module")
def approvals(chatd: Chatd) -> Iterator[None]:
    """`askfirst`: every call of its tools waits for approval."""
    made = server(chatd, "askfirst", approval="always")
    yield
    chatd.ok("DELETE", f"/mcp-servers/{made['id']}")


TWO_CALLS = 'TOOL askfirst__echo {"text": "one"}\nTOOL askfirst__echo {"text": "two"}'


def test_each_card_answers_its_own_call_and_the_composer_cancels_all_that_is_pending(page: Page, chatd: Chatd, approvals: None) -> None:
    chat_with(page, chatd, "askfirst", TWO_CALLS)
    cards = page.get_by_role("article", name="Approve echo", exact=True)
    expect(cards).to_have_count(2)
    expect(page.get_by_role("button", name="Cancel all 2 pending approvals")).to_be_visible()
    expect(page.get_by_role("note").filter(has_text="The agent waits for your approval above")).to_be_visible()
    expect(page.get_by_role("radio", name="Cancel all 2 pending approvals and send")).to_be_attached()
    cards.first.get_by_role("button", name="Deny").click()
    # Only that call was answered: the other still waits, and the button now names one approval.
    expect(cards).to_have_count(1)
    expect(cards.first.get_by_label("Arguments")).to_have_value(re.compile('"text": "two"'))
    expect(status(page).get_by_text("waiting for you")).to_be_visible()
    expect(page.get_by_role("button", name="Cancel the pending approval")).to_be_visible()
    cards.first.get_by_role("button", name="Approve").click()
    expect(page.get_by_text(re.compile(r"The tool said: .*two"))).to_be_visible()
    tools = page.get_by_role("article", name="Tool echo on askfirst")
    expect(tools.nth(0).get_by_text("denied", exact=True)).to_be_visible()
    expect(tools.nth(1).get_by_text("done", exact=True)).to_be_visible()


def test_an_approved_call_says_so_while_the_other_approval_of_its_step_waits(page: Page, chatd: Chatd, approvals: None) -> None:
    chat_with(page, chatd, "askfirst", TWO_CALLS)
    cards = page.get_by_role("article", name="Approve echo", exact=True)
    expect(cards).to_have_count(2)
    cards.first.get_by_role("button", name="Approve").click()
    expect(cards).to_have_count(1)
    tools = page.get_by_role("article", name="Tool echo on askfirst")
    expect(tools.nth(0).get_by_text("approved", exact=True)).to_be_visible()
    expect(tools.nth(0).get_by_text("no result")).to_have_count(0)
    cards.first.get_by_role("button", name="Approve").click()
    expect(page.get_by_text(re.compile(r"The tool said: .*two"))).to_be_visible()
    expect(tools.get_by_text("done", exact=True)).to_have_count(2)


def test_the_composer_cancels_every_pending_approval(page: Page, chatd: Chatd, approvals: None) -> None:
    chat_with(page, chatd, "askfirst", TWO_CALLS)
    expect(page.get_by_role("article", name="Approve echo", exact=True)).to_have_count(2)
    page.get_by_role("button", name="Cancel all 2 pending approvals").click()
    expect(page.get_by_role("article", name="Approve echo", exact=True)).to_have_count(0)
    tools = page.get_by_role("article", name="Tool echo on askfirst")
    expect(tools.get_by_text("cancelled", exact=True)).to_have_count(2)
    expect(tools.get_by_text("failed")).to_have_count(0)


def test_always_allow_is_listed_on_the_chat_and_revoked_there(page: Page, chatd: Chatd, approvals: None) -> None:
    chat_with(page, chatd, "askfirst", 'TOOL askfirst__echo {"text": "first"}')
    card = page.get_by_role("article", name="Approve echo", exact=True)
    card.get_by_label("Always allow echo in this chat").check()
    card.get_by_role("button", name="Approve").click()
    expect(page.get_by_text(re.compile(r"The tool said: .*first"))).to_be_visible()
    allowed = page.get_by_text("Always allowed in this chat (1)")
    expect(allowed).to_be_visible()
    page.reload()
    page.get_by_text("Always allowed in this chat (1)").click()
    listed = page.get_by_role("list", name="Always allowed tools")
    expect(listed.get_by_text("echo", exact=True)).to_be_visible()
    shot(page, "always-allowed")
    listed.get_by_role("button", name="Revoke always allow for echo").click()
    expect(page.get_by_text(re.compile(r"Always allowed in this chat"))).to_have_count(0)
    chat_id = page.url.rsplit("/", 1)[-1]
    assert chatd.ok("GET", f"/chats/{chat_id}")["allowed_tools"] == []
    # Asked again: the next call waits for approval.
    page.get_by_label("Message", exact=True).fill('TOOL askfirst__echo {"text": "again"}')
    page.get_by_label("Message", exact=True).press("Enter")
    expect(page.get_by_role("article", name="Approve echo", exact=True)).to_be_visible()


# Each button of the composer's row: its top and bottom, and the viewport's width.
BUTTONS = """() => [...document.querySelectorAll('.composer-actions button')].map(b => {
  const r = b.getBoundingClientRect(); return [b.textContent, r.top, r.bottom, r.left, r.right];
})"""


@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_the_composers_buttons_sit_in_a_row_while_the_chat_waits(browser: Browser, chatd: Chatd, approvals: None, size: str) -> None:
    ctx = browser.new_context(viewport=DESKTOP if size == "desktop" else PHONE)
    try:
        page = ctx.new_page()
        chat_with(page, chatd, "askfirst", TWO_CALLS)
        expect(page.get_by_role("button", name="Cancel all 2 pending approvals")).to_be_visible()
        buttons: list[list[Any]] = page.evaluate(BUTTONS)
        assert [b[0] for b in buttons] == ["Attach", "Cancel all 2 pending approvals", "Send"]
        width = page.viewport_size["width"] if page.viewport_size else 0
        assert all(b[3] >= 0 and b[4] <= width for b in buttons), buttons
        if size == "desktop":
            # One row beside the box, not a column.
            assert len({round(b[1]) for b in buttons}) == 1, buttons
            box = page.get_by_label("Message", exact=True).bounding_box()
            assert box is not None and box["width"] > 300 and box["x"] + box["width"] <= buttons[0][3], (box, buttons)
        else:
            # Under the box, in as few rows as fit: no button is taller than one line.
            assert all(b[2] - b[1] < 60 for b in buttons), buttons
        shot(page, f"composer-waiting-{width}")
    finally:
        ctx.close()


def test_a_servers_tool_count_stays_after_a_reload(page: Page, chatd: Chatd, approvals: None) -> None:
    sign_in(page, chatd)
    page.goto(f"{chatd.base}/#/admin/mcp")
    card = page.get_by_role("listitem", name="askfirst tools")
    card.get_by_role("button", name="Test askfirst tools").click()
    expect(card.get_by_role("status").filter(has_text=re.compile(r"works: \d+ tools"))).to_be_visible()
    n = re.search(r"works: (\d+) tools", card.get_by_role("status").filter(has_text="works").inner_text())
    assert n is not None
    page.reload()
    card = page.get_by_role("listitem", name="askfirst tools")
    expect(card.get_by_text(f"connected, {n.group(1)} tools")).to_be_visible()
    shot(page, "mcp-tool-count")
