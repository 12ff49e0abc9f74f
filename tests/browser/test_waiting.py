"""A chat that waits for its person: the newest waiting card is scrolled into view above the
composer (or, for a person who scrolled up to read, a button jumps to it), a running call that
waits on an MCP server's form (a 2025-11-25 server asks inside the call) says so in the header,
the chat list and its tool card, a form the server stopped waiting for says nobody answered, and
the approval choice fits its field."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.browser.conftest import CHAT_NOT_THERE, MCP_SERVER_SCRIPT, Chatd, run_chatd, sign_in
from tests.browser.test_flows import send, status
from tests.fakes.llm_server import FakeLLMServer
from tests.mcp.mcp_test_servers import ServerState, SessionCounter, build_server, serve

DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
# A long first message: the chat scrolls, as one with some history does.
FILLER = "\n\n".join(f"Paragraph {i} of an earlier conversation that takes some room on the page." for i in range(30))

# Whether the newest waiting card is wholly in view between the chat's header and its composer.
CARD_IN_VIEW = """() => {
  const card = [...document.querySelectorAll('.actions > .action')].pop();
  if (!card) return false;
  const r = card.getBoundingClientRect();
  const composer = document.querySelector('.composer').getBoundingClientRect();
  const header = document.querySelector('.chat-header').getBoundingClientRect();
  return r.top >= header.bottom - 1 && r.bottom <= composer.top + 1;
}"""


def shot(page: Page, name: str) -> None:
    if shots := os.environ.get("CHATD_UI_SCREENSHOTS"):
        Path(shots).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=f"{shots}/{name}.png")


def card_in_view(page: Page) -> None:
    page.wait_for_function(CARD_IN_VIEW, timeout=5_000)


@pytest.fixture(scope="module")
def legacy_forms() -> Iterator[str]:
    """The test MCP server over HTTP, speaking 2025-11-25 only: its forms are asked inside the
    call that waits (a 2026-07-28 server's stop the chat instead; see test_actions.py)."""
    with serve(SessionCounter(build_server(ServerState()).streamable_http_app(), legacy_only=True)) as running:
        yield running.url


def http_server(chatd: Chatd, slug: str, url: str) -> dict[str, Any]:
    return dict(chatd.ok("POST", "/mcp-servers", json={
        "slug": slug, "display_name": f"{slug} tools", "url": url, "enabled": True, "availability": "default_off",
    }))  # fmt: skip


def server(chatd: Chatd, slug: str, **more: Any) -> dict[str, Any]:
    return dict(chatd.ok("POST", "/mcp-servers", json={
        "slug": slug, "display_name": f"{slug} tools", "transport": "stdio", "command": sys.executable,
        "args": [str(MCP_SERVER_SCRIPT)], "enabled": True, "availability": "default_off", **more,
    }))  # fmt: skip


@pytest.fixture(scope="module")
def servers(chatd: Chatd, legacy_forms: str) -> Iterator[None]:
    """`waitgate`: every call waits for approval; `waitform`: its `register` tool asks for a form."""
    made = [server(chatd, "waitgate", approval="always"), http_server(chatd, "waitform", legacy_forms)]
    yield
    for s in made:
        chatd.ok("DELETE", f"/mcp-servers/{s['id']}")


@pytest.fixture(params=["desktop", "phone"])
def sized(request: pytest.FixtureRequest, browser: Browser) -> Iterator[Page]:
    ctx: BrowserContext = browser.new_context(viewport=DESKTOP if request.param == "desktop" else PHONE)
    ctx.set_default_timeout(15_000)
    try:
        page = ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        yield page
        assert not errors, errors
    finally:
        ctx.close()


def chat_with(page: Page, chatd: Chatd, slug: str, text: str) -> None:
    sign_in(page, chatd)  # a new chat's page (the chat list's "New chat" is behind the menu on a phone)
    page.get_by_text(re.compile(r"Tools: \d+ of \d+ servers")).click()
    page.get_by_role("checkbox", name=f"{slug} tools").check()
    send(page, text)
    expect(page.get_by_role("heading", level=1)).not_to_have_text(CHAT_NOT_THERE)


def test_an_approval_is_scrolled_into_view_above_the_grown_composer(sized: Page, chatd: Chatd, servers: None) -> None:
    page = sized
    chat_with(page, chatd, "waitgate", FILLER + '\n\nTOOL waitgate__echo {"text": "see me"}')
    card = page.get_by_role("article", name="Approve echo", exact=True)
    expect(card).to_be_visible()
    # The composer grew for the wait (its note, its choices), and the card still shows whole above it.
    expect(page.get_by_role("note").filter(has_text="The agent waits for your approval above")).to_be_visible()
    card_in_view(page)
    shot(page, f"approval-in-view-{page.viewport_size['width'] if page.viewport_size else 0}")
    card.get_by_role("button", name="Approve").click()
    expect(page.get_by_text(re.compile(r"The tool said: .*see me"))).to_be_visible()


def test_a_form_arriving_while_the_person_watches_is_shown_and_the_chat_says_it_waits_for_them(page: Page, chatd: Chatd, servers: None) -> None:
    chat_with(page, chatd, "waitform", FILLER + "\n\nTOOL waitform__register {}")
    card = page.get_by_role("article", name="Input for waitform", exact=True)
    expect(card.get_by_text("Who is registering?")).to_be_visible()
    card_in_view(page)
    # The chat runs, but what it waits for is its person: the header, the list and the call say so.
    expect(status(page).get_by_text("waiting for you")).to_be_visible()
    title = page.get_by_role("heading", level=1).inner_text()
    row = page.get_by_role("list", name="Chats").get_by_role("link", name=re.compile(re.escape(title)))
    expect(row.get_by_text("waiting for you")).to_be_visible()
    expect(page.get_by_role("article", name="Tool register on waitform").get_by_text("waiting for your answer")).to_be_visible()
    shot(page, "form-waiting")
    card.get_by_label("Name *").fill("Grace")
    card.get_by_role("button", name="Send").click()
    expect(page.get_by_text(re.compile(r"The tool said: .*registered Grace"))).to_be_visible()
    expect(status(page).get_by_text("idle")).to_be_visible()
    expect(row.get_by_text("waiting for you")).to_have_count(0)


def test_another_tab_lists_a_running_calls_form_as_waiting_for_you(page: Page, browser: Browser, chatd: Chatd, servers: None) -> None:
    """The chat stays `running` while its call waits on a form: a tab where the chat is not open
    learns from the watch alone that it waits for its person, and that it no longer does."""
    ctx = browser.new_context(viewport=DESKTOP)
    try:
        other = ctx.new_page()
        sign_in(other, chatd)  # open before the chat exists: what it shows comes from the watch
        expect(other.get_by_role("heading", level=1)).to_have_text("New chat")
        chat_with(page, chatd, "waitform", "TOOL waitform__register {}")
        card = page.get_by_role("article", name="Input for waitform", exact=True)
        expect(card.get_by_text("Who is registering?")).to_be_visible()
        chat_id = page.url.rsplit("/", 1)[-1]
        row = other.get_by_role("list", name="Chats").locator(f'a[href="#/chats/{chat_id}"]')
        expect(row.get_by_text("waiting for you")).to_be_visible()
        card.get_by_label("Name *").fill("Grace")
        card.get_by_role("button", name="Send").click()
        expect(page.get_by_text(re.compile(r"The tool said: .*registered Grace"))).to_be_visible()
        expect(row.get_by_text("waiting for you")).to_have_count(0)
        expect(row.get_by_text("idle")).to_be_visible()
    finally:
        ctx.close()


def test_a_person_who_scrolled_up_is_offered_a_jump_to_the_waiting_card(page: Page, chatd: Chatd, servers: None) -> None:
    # The slow model leaves time to scroll up before the approval arrives.
    chat_with(page, chatd, "waitgate", "SLOW 1200\n\n" + FILLER + '\n\nTOOL waitgate__echo {"text": "later"}')
    expect(page.get_by_text("Paragraph 29 of")).to_be_visible()
    page.locator("#main").evaluate("m => { m.scrollTop = 0; m.dispatchEvent(new Event('scroll')); }")
    card = page.get_by_role("article", name="Approve echo", exact=True)
    expect(card).to_be_attached(timeout=30_000)
    jump = page.get_by_role("button", name="Waiting for you ↓")
    expect(jump).to_be_visible()
    # The page is not pulled from under the reader.
    assert page.locator("#main").evaluate("m => m.scrollTop") == 0
    assert not page.evaluate(CARD_IN_VIEW)
    shot(page, "jump-offered")
    jump.click()
    card_in_view(page)
    expect(jump).to_have_count(0)
    card.get_by_role("button", name="Deny").click()
    expect(page.get_by_role("article", name="Tool echo on waitgate").get_by_text("denied", exact=True)).to_be_visible()


@pytest.fixture(scope="module")
def impatient(tmp_path_factory: pytest.TempPathFactory, model: FakeLLMServer, legacy_forms: str) -> Iterator[Chatd]:
    """A server that waits 3 s for an answer to an MCP server's form, with the form server on."""
    with run_chatd(tmp_path_factory.mktemp("chatd-impatient"), model, None, {"CHATD_MCP_ELICITATION_TIMEOUT": "3"}) as s:
        s.configure_model()
        http_server(s, "waitform", legacy_forms)
        yield s


def test_a_form_nobody_answered_in_time_says_so_on_its_tool_card(page: Page, impatient: Chatd) -> None:
    chat_with(page, impatient, "waitform", "TOOL waitform__register {}")
    expect(page.get_by_role("article", name="Input for waitform", exact=True)).to_be_visible()
    expect(page.get_by_role("article", name="Input for waitform", exact=True)).to_have_count(0, timeout=30_000)
    tool = page.get_by_role("article", name="Tool register on waitform")
    expect(tool.get_by_text("not answered in time")).to_be_visible()
    expect(tool.get_by_text("Nobody answered the server's form in time")).to_be_visible()
    expect(tool.get_by_text("done", exact=True)).to_have_count(0)
    shot(page, "form-not-answered")
    # After a reload the card reads the recorded decision (timeout), not "cancelled".
    page.reload()
    tool = page.get_by_role("article", name="Tool register on waitform")
    expect(tool.get_by_text("not answered in time")).to_be_visible()
    expect(tool.get_by_text("Nobody answered the server's form in time")).to_be_visible()


# The selected choice's text fits inside its select (a select cuts what does not fit).
CHOICE_FITS = """s => {
  const ctx = document.createElement('canvas').getContext('2d');
  const cs = getComputedStyle(s);
  ctx.font = `${cs.fontWeight} ${cs.fontSize} ${cs.fontFamily}`;
  const text = ctx.measureText(s.options[s.selectedIndex].text).width;
  const room = s.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight) - 20;
  return [text, room];
}"""


@pytest.mark.parametrize("width", [1280, 390])
def test_the_approval_choice_fits_its_field_in_the_mcp_server_editor(browser: Browser, chatd: Chatd, width: int) -> None:
    ctx = browser.new_context(viewport={"width": width, "height": 860})
    try:
        page = ctx.new_page()
        sign_in(page, chatd)
        page.goto(f"{chatd.base}/#/admin/mcp")
        page.get_by_role("button", name="Add MCP server").click()
        choice = page.get_by_role("form", name="New MCP server").get_by_label("Approval before a tool runs")
        for option in choice.locator("option").all_inner_texts():
            choice.select_option(label=option)
            text, room = choice.evaluate(CHOICE_FITS)
            assert text <= room, (option, text, room)
        choice.scroll_into_view_if_needed()
        shot(page, f"approval-choice-{width}")
    finally:
        ctx.close()
