"""The UI at phone width, by keyboard alone, and on PostgreSQL."""

from __future__ import annotations

import re

from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import Chatd, sign_in


def test_at_390_px_the_chat_fits_the_screen_and_the_menu_opens_the_chat_list(browser: Browser, chatd: Chatd) -> None:
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        page = ctx.new_page()
        sign_in(page, chatd)
        chats = page.get_by_role("list", name="Chats")
        expect(chats).to_be_hidden()
        box = page.get_by_label("Message", exact=True)
        box.fill("hello from a phone")
        page.get_by_role("button", name="Send").click()
        expect(page.get_by_text("answer to: hello from a phone")).to_be_visible()
        # Nothing sticks out sideways: no horizontal scrolling anywhere.
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        assert page.evaluate("document.getElementById('main').scrollWidth") <= 390
        for control in (box, page.get_by_role("button", name="Send"), page.get_by_role("button", name="Attach files")):
            bounds = control.bounding_box()
            assert bounds is not None and bounds["x"] >= 0 and bounds["x"] + bounds["width"] <= 390, bounds
        page.get_by_role("button", name="Menu").click()
        expect(chats.get_by_role("link", name=re.compile("hello from a phone"))).to_be_visible()
        chats.get_by_role("link", name=re.compile("hello from a phone")).click()
        expect(chats).to_be_hidden()
        expect(page.get_by_text("answer to: hello from a phone")).to_be_visible()
        if (shots := __import__("os").environ.get("CHATD_UI_SCREENSHOTS")):
            page.screenshot(path=f"{shots}/phone-390.png", full_page=True)
    finally:
        ctx.close()


def test_keyboard_alone_signs_in_writes_a_two_line_message_and_sends_it(page: Page, chatd: Chatd) -> None:
    page.goto(chatd.base)
    expect(page.get_by_label("API token")).to_be_focused()
    page.keyboard.type(chatd.admin_token)
    page.keyboard.press("Enter")
    box = page.get_by_label("Message", exact=True)
    expect(box).to_be_visible()
    # From the top of the page: the first Tab reaches "Skip to content", which jumps past the chat
    # list (the shared server holds every earlier test's chats, so tabbing through it would take
    # as many presses as there are chats), and a few more Tabs reach the message box.
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#main")).to_be_focused()
    for _ in range(15):
        page.keyboard.press("Tab")
        if box.evaluate("el => el === document.activeElement"):
            break
    expect(box).to_be_focused()
    page.keyboard.type("line one")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("line two")
    expect(box).to_have_value("line one\nline two")
    page.keyboard.press("Enter")
    expect(page.get_by_text("answer to: line one\nline two")).to_be_visible()


def test_a_retry_of_the_provider_is_shown_while_it_waits(page: Page, chatd: Chatd) -> None:
    sign_in(page, chatd)
    box = page.get_by_label("Message", exact=True)
    # The person is watching the chat when the provider fails (a page opened during the wait does
    # not learn of it: the stream's snapshot carries no retry).
    box.fill("before the hiccup")
    box.press("Enter")
    expect(page.get_by_text("answer to: before the hiccup")).to_be_visible()
    box.fill("FLAKY now")
    box.press("Enter")
    expect(page.get_by_role("status").filter(has_text=re.compile(r"Retrying \(attempt 1\)"))).to_be_visible()
    expect(page.get_by_text("answer to: FLAKY now")).to_be_visible()
    expect(page.get_by_text(re.compile("Retrying"))).to_have_count(0)


def test_on_postgresql_an_answer_streams_stops_and_the_history_survives_a_reload(page: Page, chatd_pg: Chatd) -> None:
    sign_in(page, chatd_pg)
    box = page.get_by_label("Message", exact=True)
    box.fill("SLOW 100\nTOKENS 300")
    box.press("Enter")
    expect(page.get_by_text(re.compile(r"^tok0 tok1 tok2 tok3"))).to_be_visible()
    expect(page.locator(".chat-status").get_by_text("running")).to_be_visible()
    page.get_by_role("button", name="Stop").click()
    # "waiting" (the API's status) reads as "still working": the badge says idle, the title keeps it.
    expect(page.locator(".chat-status").get_by_text("idle")).to_have_attribute("title", "Status: waiting")
    partial = page.locator(".msg.assistant").inner_text()
    assert "tok299" not in partial
    page.get_by_label("Message", exact=True).fill("and now?")
    page.get_by_label("Message", exact=True).press("Enter")
    expect(page.get_by_text("answer to: and now?")).to_be_visible()
    page.reload()
    expect(page.get_by_text("answer to: and now?")).to_be_visible()
    expect(page.get_by_text(re.compile(r"^tok0 tok1 tok2 tok3"))).to_be_visible()
    expect(page.get_by_role("list", name="Chats").get_by_role("link")).to_have_count(1)


def test_in_dark_mode_an_empty_composers_send_looks_disabled_and_the_page_has_an_inline_icon(page: Page, chatd: Chatd) -> None:
    page.emulate_media(color_scheme="dark")
    sign_in(page, chatd)
    # The icon is inline, so the browser never asks the server for /favicon.ico (a 404).
    expect(page.locator('link[rel="icon"]')).to_have_attribute("href", re.compile(r"^data:image/svg\+xml,"))
    page.get_by_role("link", name="New chat").click()
    send = page.get_by_role("button", name="Send")
    expect(send).to_be_disabled()
    # Disabled: the dark theme's grey (--bg2), not its bright accent blue.
    assert send.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(31, 34, 40)"
    page.get_by_label("Message", exact=True).fill("hello")
    expect(send).to_be_enabled()
    assert send.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(91, 157, 255)"
