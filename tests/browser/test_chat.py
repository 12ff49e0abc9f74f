"""A person signs in, chats and reads the answer, on SQLite (the default `chatd serve`)."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.browser.conftest import CHAT_NOT_THERE, Chatd, sign_in


def new_chat(page: Page, text: str) -> None:
    page.get_by_role("link", name="New chat").click()
    box = page.get_by_label("Message", exact=True)
    box.fill(text)
    box.press("Enter")
    expect(page.get_by_role("heading", level=1)).not_to_have_text(CHAT_NOT_THERE, timeout=15_000)


def test_the_printed_link_signs_the_admin_in_and_sign_out_returns_to_the_form(page: Page, chatd: Chatd) -> None:
    sign_in(page, chatd)
    # The token left the address bar.
    assert "token=" not in page.url
    expect(page.get_by_text("admin", exact=True)).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in to chatd")).to_be_visible()
    page.reload()
    expect(page.get_by_label("API token")).to_be_visible()
    # The printed link opened in this tab (already on the sign-in page) changes only the fragment:
    # it signs in all the same, and the token leaves the address bar.
    page.goto(f"{chatd.base}/#token={chatd.admin_token}")
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    assert "token=" not in page.url


def test_a_wrong_token_is_refused_in_words_and_a_pasted_token_signs_in(page: Page, chatd: Chatd) -> None:
    page.goto(chatd.base)
    page.get_by_label("API token").fill("chatd_not-a-real-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("That token is not valid. Check it and try again.")
    page.get_by_label("API token").fill(chatd.admin_token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def test_a_markdown_answer_streams_in_rendered_and_no_html_from_the_model_runs(page: Page, chatd: Chatd) -> None:
    sign_in(page, chatd)
    new_chat(page, "MARKDOWN\nSLOW 30")
    answer = page.get_by_role("listitem").filter(has=page.get_by_label("Answer"))
    expect(page.get_by_role("heading", name="Shopping list")).to_be_visible()
    expect(page.get_by_role("strong").filter(has_text="apples")).to_be_visible()
    expect(page.locator("pre code")).to_contain_text("print('hello')")
    expect(answer.get_by_text("tokens")).to_be_visible()
    assert page.evaluate("window.__injected") is None
    assert page.locator(".md img[onerror], .md script").count() == 0
    # The javascript: link is shown as its text, not as a link.
    expect(answer.get_by_text("click")).to_be_visible()
    expect(answer.get_by_role("link", name="click")).to_have_count(0)


def test_a_reloaded_chat_never_reads_as_a_new_chat(page: Page, chatd: Chatd) -> None:
    """While a reloaded chat is read, its heading is not the new-chat page's ("New chat" flashed)."""
    sign_in(page, chatd)
    new_chat(page, "remember the milk")
    expect(page.get_by_text("answer to: remember the milk")).to_be_visible()
    page.add_init_script(
        """window.__headings = [];
        new MutationObserver(() => {
          const h = document.querySelector("h1");
          if (h) window.__headings.push(h.textContent);
        }).observe(document, { subtree: true, childList: true, characterData: true });"""
    )
    page.reload()
    expect(page.get_by_role("heading", level=1)).to_have_text("About remember the milk")
    seen = page.evaluate("window.__headings")
    assert seen and "New chat" not in seen, seen


def test_the_history_is_there_after_a_reload(page: Page, chatd: Chatd) -> None:
    sign_in(page, chatd)
    new_chat(page, "remember the milk")
    expect(page.get_by_text("answer to: remember the milk")).to_be_visible()
    page.reload()
    expect(page.get_by_text("remember the milk", exact=True)).to_be_visible()
    expect(page.get_by_text("answer to: remember the milk")).to_be_visible()
    expect(page.get_by_role("heading", level=1)).to_have_text("About remember the milk")
