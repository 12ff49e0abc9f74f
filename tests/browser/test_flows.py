"""What a person does in a chat: tools, queue, stop, edit, archive, a failed turn, sub-agents."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import CHAT_NOT_THERE, Chatd, sign_in


def new_chat(page: Page, text: str) -> None:
    page.get_by_role("link", name="New chat").click()
    # As a person does: type once the new chat's page is there (the last chat's box may still be).
    expect(page.get_by_role("heading", level=1)).to_have_text("New chat")
    send(page, text)
    expect(page.get_by_role("heading", level=1)).not_to_have_text(CHAT_NOT_THERE)


def send(page: Page, text: str) -> None:
    box = page.get_by_label("Message", exact=True)
    box.fill(text)
    box.press("Enter")


def status(page: Page) -> Any:
    return page.locator(".chat-status")


@pytest.fixture(scope="module")
def tools(chatd: Chatd) -> Iterator[dict[str, Any]]:
    """The MCP test server over stdio, offered but off by default (chats pick it)."""
    server = chatd.add_mcp_server(slug="tests", availability="default_off")
    yield server


def test_a_tool_call_of_an_mcp_server_shows_as_a_card_with_arguments_result_and_answer(page: Page, chatd: Chatd, tools: dict[str, Any]) -> None:
    sign_in(page, chatd)
    page.get_by_text(re.compile(r"Tools: \d+ of \d+ servers")).click()
    page.get_by_role("checkbox", name="Test tools").check()
    new_chat(page, 'TOOL tests__echo {"text": "hello from the tool"}')
    card = page.get_by_role("article", name="Tool echo on tests")
    expect(card.get_by_text("done")).to_be_visible()
    card.get_by_text("Arguments").click()
    expect(card.get_by_text('"text": "hello from the tool"')).to_be_visible()
    expect(card.get_by_text("hello from the tool", exact=True)).to_be_visible()
    expect(page.get_by_text("The tool said: hello from the tool")).to_be_visible()
    # How long the tool ran is kept with its result: still there after a reload.
    page.reload()
    card = page.get_by_role("article", name="Tool echo on tests")
    expect(card.get_by_text("done")).to_be_visible()
    expect(card.get_by_text(re.compile(r"^\d+(\.\d)? (ms|s)$"))).to_be_visible()


def test_an_image_from_a_tool_result_is_shown_inline(page: Page, chatd: Chatd, tools: dict[str, Any]) -> None:
    sign_in(page, chatd)
    page.get_by_text(re.compile(r"Tools: \d+ of \d+ servers")).click()
    page.get_by_role("checkbox", name="Test tools").check()
    new_chat(page, "TOOL tests__image {}")
    card = page.get_by_role("article", name="Tool image on tests")
    expect(card.get_by_text("done")).to_be_visible()
    # A result with an image opens by itself.
    image = card.get_by_role("img")
    expect(image).to_be_visible()
    assert image.evaluate("img => img.naturalWidth") == 1
    # The model (it takes images) got the image as an image part of its request.
    requests = [r.body for r in chatd.model.requests if r.body.get("stream")]
    assert any(
        c.get("type") == "image_url" and c["image_url"]["url"].startswith("data:image/png;base64,")
        for m in requests[-1]["messages"] if isinstance(m.get("content"), list) for c in m["content"]
    )


def test_a_long_tool_output_shows_its_preview_and_links_the_whole_output(page: Page, chatd: Chatd, tools: dict[str, Any]) -> None:
    sign_in(page, chatd)
    page.get_by_text(re.compile(r"Tools: \d+ of \d+ servers")).click()
    page.get_by_role("checkbox", name="Test tools").check()
    n = 150_000  # over CHATD_TOOL_RESULT_MAX_CHARS (100000)
    new_chat(page, f'TOOL tests__big {{"n": {n}}}')
    card = page.get_by_role("article", name="Tool big on tests")
    expect(card.get_by_text("done")).to_be_visible()
    expect(card.locator("pre.tool-preview")).to_have_text("x" * 4000)
    expect(card.get_by_text("The first 4,000 of 150,000 characters.")).to_be_visible()
    link = card.get_by_role("link", name="Whole output (150,000 characters)")
    with page.expect_download() as download:
        link.click()
    saved = download.value
    assert saved.suggested_filename == "tests__big-output.txt"
    with open(saved.path(), "rb") as f:
        assert f.read() == b"x" * n
    # The model was told where the rest is, not given it.
    expect(page.get_by_text(re.compile(r"The tool said: .*output_file"))).to_be_visible()


def test_a_failing_tool_shows_its_error_on_the_card(page: Page, chatd: Chatd, tools: dict[str, Any]) -> None:
    sign_in(page, chatd)
    page.get_by_text(re.compile(r"Tools: \d+ of \d+ servers")).click()
    page.get_by_role("checkbox", name="Test tools").check()
    new_chat(page, 'TOOL tests__fail {"message": "the disk is full"}')
    card = page.get_by_role("article", name="Tool fail on tests")
    expect(card.get_by_text("failed")).to_be_visible()
    expect(card.get_by_text(re.compile("Error: .*the disk is full"))).to_be_visible()


def test_messages_sent_while_an_answer_runs_are_queued_deleted_and_sent_after_stop(page: Page, chatd: Chatd) -> None:
    sign_in(page, chatd)
    new_chat(page, "SLOW 100\nTOKENS 400")
    expect(status(page).get_by_text("running")).to_be_visible()
    expect(page.get_by_text("tok3 ")).to_be_visible()
    # While it runs the person chooses what a new message does; queue is the default.
    expect(page.get_by_role("radio", name="Queue")).to_be_checked()
    send(page, "first in line")
    queue = page.get_by_role("region", name=re.compile("Queued"))
    expect(queue.get_by_role("listitem")).to_have_count(1)
    send(page, "changed my mind")
    expect(queue.get_by_role("listitem")).to_have_count(2)
    # The chat list shows the queue too, live (the watch's queue_change), on this chat's entry
    # (another test's chat may be listed with a queue of its own).
    chats = page.get_by_role("list", name="Chats").locator("a[aria-current=page]")
    expect(chats.get_by_text("2 queued")).to_be_visible()
    # Stop says what happens to the queue: its head runs next, at once.
    expect(page.get_by_role("button", name="Stop (2 more messages will run next)")).to_be_visible()
    expect(queue.get_by_role("listitem").first.get_by_text("next", exact=True)).to_be_visible()
    expect(queue.get_by_text("Sent one by one after this answer, also when you stop it.")).to_be_visible()
    queue.get_by_role("listitem").filter(has_text="changed my mind").get_by_role("button", name="Delete").click()
    expect(queue.get_by_role("listitem")).to_have_count(1)
    expect(chats.get_by_text("1 queued")).to_be_visible()
    page.get_by_role("button", name="Stop (1 more message will run next)").click()
    # The partial answer stays; the queued message goes next and gets its answer.
    expect(page.get_by_text("answer to: first in line")).to_be_visible()
    expect(page.get_by_text("changed my mind")).to_have_count(0)
    expect(page.get_by_role("region", name=re.compile("Queued"))).to_have_count(0)
    expect(chats.get_by_text(re.compile(r"\d+ queued"))).to_have_count(0)
    expect(page.get_by_text(re.compile(r"^tok0 tok1 tok2"))).to_be_visible()
    expect(page.get_by_text("tok399")).to_have_count(0)
    # The stopped answer says so, without a made-up "0 tokens"; the next answer is not marked.
    answer_totals = page.get_by_label("Tokens and cost of this answer")
    expect(answer_totals.first).to_contain_text("stopped")
    expect(answer_totals.first).not_to_contain_text("0 tokens")
    expect(answer_totals.last).not_to_contain_text("stopped")


def test_a_steered_message_shows_as_steering_not_in_the_queue(page: Page, chatd: Chatd) -> None:
    sign_in(page, chatd)
    new_chat(page, "SLOW 100\nTOKENS 400")
    expect(page.get_by_text("tok3 ")).to_be_visible()
    page.get_by_role("radio", name="Steer").check()
    send(page, "mention cats too")
    steering = page.get_by_role("region", name=re.compile("Steering"))
    expect(steering.get_by_role("listitem").filter(has_text="mention cats too")).to_be_visible()
    expect(steering.get_by_text("Joins the running answer at its next step.")).to_be_visible()
    expect(page.get_by_role("region", name=re.compile("Queued"))).to_have_count(0)
    # Stop says what runs after it without calling a steering message queued.
    expect(page.get_by_role("button", name="Stop (1 more message will run next)")).to_be_visible()
    # So does the chat list (its badge counted it queued: queued_count counts steering ones too).
    listed = page.get_by_role("list", name="Chats").locator("a[aria-current=page]")
    expect(listed.locator(".badge")).to_have_text(["running", "1 steering"])
    # A queued one is listed apart from it.
    page.get_by_role("radio", name="Queue").check()
    send(page, "and then dogs")
    queue = page.get_by_role("region", name=re.compile("Queued"))
    expect(queue.get_by_role("listitem")).to_have_count(1)
    expect(queue.get_by_text("mention cats too")).to_have_count(0)
    expect(steering.get_by_role("listitem")).to_have_count(1)
    expect(listed.locator(".badge")).to_have_text(["running", "1 queued", "1 steering"])


def test_a_page_opened_mid_answer_shows_the_answer_from_its_first_token(page: Page, chatd: Chatd) -> None:
    """The chat has an earlier answer: the stream's snapshot must not let it replace the parts of
    the answer in flight (the page showed the answer from a later token on until it was saved)."""
    chat = chatd.ok("POST", "/chats", json={"content": "hello there"})
    sign_in(page, chatd)
    page.goto(f"{chatd.base}/#/chats/{chat['id']}")
    expect(page.get_by_text("answer to: hello there")).to_be_visible()
    chatd.ok("POST", f"/chats/{chat['id']}/messages", json={"content": "SLOW 100\nTOKENS 300"})
    expect(page.get_by_text("tok5 ")).to_be_visible()
    # Opened again while the answer streams: the snapshot holds its first tokens.
    page.reload()
    expect(page.get_by_text(re.compile(r"^tok0 tok1 tok2"))).to_be_visible(timeout=10_000)
    expect(status(page).get_by_text("running")).to_be_visible()
    expect(page.get_by_text("tok299")).to_have_count(0)
    page.get_by_role("button", name="Stop").click()


def test_interrupt_stops_the_answer_and_sends_the_new_message_at_once(page: Page, chatd: Chatd) -> None:
    sign_in(page, chatd)
    new_chat(page, "SLOW 100\nTOKENS 400")
    expect(page.get_by_text("tok3 ")).to_be_visible()
    page.get_by_role("radio", name="Interrupt").check()
    send(page, "never mind that")
    expect(page.get_by_text("answer to: never mind that")).to_be_visible()
    expect(page.get_by_text("tok399")).to_have_count(0)


def test_editing_an_earlier_message_asks_first_then_replaces_what_came_after(page: Page, chatd: Chatd) -> None:
    sign_in(page, chatd)
    new_chat(page, "the first question")
    expect(page.get_by_text("answer to: the first question")).to_be_visible()
    send(page, "a second question")
    expect(page.get_by_text("answer to: a second question")).to_be_visible()
    page.get_by_role("listitem").filter(has_text="the first question").get_by_role("button", name="Edit this message").first.click()
    page.get_by_label("Edited text").fill("a better first question")
    page.get_by_role("button", name="Save and resend").click()
    dialog = page.get_by_role("alertdialog")
    expect(dialog).to_contain_text("Everything after this message will be replaced")
    dialog.get_by_role("button", name="Replace").click()
    expect(page.get_by_text("answer to: a better first question")).to_be_visible()
    expect(page.get_by_text("a second question")).to_have_count(0)
    expect(page.get_by_text("answer to: the first question")).to_have_count(0)
    page.reload()
    expect(page.get_by_text("answer to: a better first question")).to_be_visible()
    expect(page.get_by_text("a second question")).to_have_count(0)


def test_archiving_moves_the_chat_to_the_archived_list_and_back(page: Page, chatd: Chatd) -> None:
    sign_in(page, chatd)
    new_chat(page, "a chat to archive")
    expect(page.get_by_text("answer to: a chat to archive")).to_be_visible()
    title = page.get_by_role("heading", level=1).inner_text()
    chats = page.get_by_role("list", name="Chats")
    expect(chats.get_by_role("link", name=re.compile(re.escape(title)))).to_be_visible()
    page.get_by_role("button", name="Archive", exact=True).click()
    expect(page.get_by_text("This chat is archived.")).to_be_visible()
    expect(chats.get_by_role("link", name=re.compile(re.escape(title)))).to_have_count(0)
    page.get_by_role("button", name="Archived").click()
    archived = page.get_by_role("list", name="Archived chats")
    expect(archived.get_by_role("link", name=re.compile(re.escape(title)))).to_be_visible()
    page.get_by_role("button", name="Unarchive", exact=True).click()
    expect(archived.get_by_role("link", name=re.compile(re.escape(title)))).to_have_count(0)
    page.get_by_role("button", name="Active").click()
    expect(chats.get_by_role("link", name=re.compile(re.escape(title)))).to_be_visible()


def test_a_failed_answer_says_why_and_retry_runs_it_again(page: Page, chatd: Chatd) -> None:
    sign_in(page, chatd)
    new_chat(page, "FAIL please")
    failed = page.get_by_role("alert").filter(has_text="This answer failed.")
    expect(failed).to_be_visible()
    expect(failed).to_contain_text("scripted model refuses")
    expect(status(page).get_by_text("error")).to_be_visible()
    failed.get_by_role("button", name="Retry").click()
    expect(page.get_by_text("recovered: FAIL please")).to_be_visible()
    expect(page.get_by_role("alert").filter(has_text="This answer failed.")).to_have_count(0)
    expect(page.get_by_text("stopped")).to_have_count(0)


def test_a_sub_agent_chat_opens_from_the_tool_card_and_shows_its_own_answer(page: Page, chatd: Chatd) -> None:
    sign_in(page, chatd)
    new_chat(page, 'TOOL spawn_agent {"prompt": "TOKENS 5", "title": "Helper"}')
    card = page.get_by_role("article", name="Tool spawn_agent")
    expect(card.get_by_text("done")).to_be_visible()
    card.get_by_role("link", name="Open the sub-agent's chat").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Helper")
    expect(page.get_by_text("tok0 tok1 tok2 tok3 tok4")).to_be_visible()
    page.get_by_role("link", name="Parent chat").click()
    expect(page.get_by_role("article", name="Tool spawn_agent")).to_be_visible()


def test_a_member_on_a_server_without_models_is_told_to_ask_an_admin(page: Page, chatd: Chatd) -> None:
    member = chatd.member("newcomer")
    model = chatd.data["model"]
    chatd.ok("PATCH", f"/model-configs/{model['id']}", json={"enabled": False})
    try:
        sign_in(page, chatd, member)
        expect(page.get_by_role("alert")).to_have_text("No model is configured on this server yet. Ask an admin to add a provider and a model.")
        expect(page.get_by_label("Message", exact=True)).to_be_disabled()
    finally:
        chatd.ok("PATCH", f"/model-configs/{model['id']}", json={"enabled": True})


def test_a_queued_message_can_be_sent_at_once_with_send_now(page: Page, chatd: Chatd) -> None:
    sign_in(page, chatd)
    new_chat(page, "SLOW 100\nTOKENS 400")
    expect(page.get_by_text("tok3 ")).to_be_visible()
    send(page, "jump the queue")
    queue = page.get_by_role("region", name=re.compile("Queued"))
    queue.get_by_role("listitem").filter(has_text="jump the queue").get_by_role("button", name="Send now").click()
    expect(page.get_by_text("answer to: jump the queue")).to_be_visible()
    expect(page.get_by_role("region", name=re.compile("Queued"))).to_have_count(0)


def test_an_attached_file_is_sent_with_the_message_and_shown_in_it(page: Page, chatd: Chatd, tmp_path: Any) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("buy milk\n")
    sign_in(page, chatd)
    with page.expect_file_chooser() as chooser:
        page.get_by_role("button", name="Attach files").click()
    chooser.value.set_files(str(notes))
    expect(page.get_by_role("list", name="Attached files").get_by_text("notes.txt")).to_be_visible()
    send(page, "what is in the file?")
    expect(page.get_by_role("heading", level=1)).not_to_have_text(CHAT_NOT_THERE)
    user = page.get_by_label("You")
    expect(user.get_by_role("link", name="notes.txt")).to_be_visible()
    expect(page.get_by_text("answer to: what is in the file?")).to_be_visible()


def test_the_chat_list_is_searched_by_title(page: Page, chatd: Chatd) -> None:
    sign_in(page, chatd)
    new_chat(page, "zebra facts")
    expect(page.get_by_role("heading", level=1)).to_have_text("About zebra facts")
    new_chat(page, "giraffe facts")
    expect(page.get_by_role("heading", level=1)).to_have_text("About giraffe facts")
    chats = page.get_by_role("list", name="Chats")
    page.get_by_label("Search chats by title").fill("zebra")
    expect(chats.get_by_role("link", name=re.compile("zebra facts"))).to_be_visible()
    expect(chats.get_by_role("link", name=re.compile("giraffe facts"))).to_have_count(0)
    page.get_by_label("Search chats by title").fill("no such chat")
    expect(page.get_by_text("No chat matches.")).to_be_visible()


def test_search_finds_a_chat_beyond_the_loaded_page(page: Page, chatd: Chatd) -> None:
    """The list loads 50 chats; the search asks the server, so the 51st is found too."""
    token = chatd.member("searcher")
    chatd.ok("POST", "/chats", token, json={"content": "hi", "title": "Okapi sightings"})
    for i in range(50):
        chatd.ok("POST", "/chats", token, json={"content": "hi", "title": f"filler {i}"})
    sign_in(page, chatd, token)
    chats = page.get_by_role("list", name="Chats")
    expect(chats.get_by_role("link")).to_have_count(50)
    expect(chats.get_by_role("link", name=re.compile("Okapi"))).to_have_count(0)
    page.get_by_label("Search chats by title").fill("okapi")
    expect(chats.get_by_role("link", name=re.compile("Okapi sightings"))).to_be_visible()
    expect(chats.get_by_role("link")).to_have_count(1)


def test_a_model_picked_for_the_chat_answers_and_its_reasoning_is_collapsed_until_opened(page: Page, chatd: Chatd) -> None:
    if "anthropic" not in chatd.data:
        chatd.ok("POST", "/providers", json={"provider": "anthropic", "api_key": "k", "base_url": chatd.model.anthropic_base_url})
        chatd.data["anthropic"] = chatd.ok("POST", "/model-configs", json={
            "provider": "anthropic", "model": "claude-sonnet-4-5", "display_name": "Thinking model", "context_limit": 200_000,
        })
    sign_in(page, chatd)
    pick_model(page, "Thinking model")
    new_chat(page, "THINK about lunch")
    expect(page.get_by_text("Thought it through.")).to_be_visible()
    reasoning = page.get_by_role("group").filter(has=page.get_by_text("Reasoning", exact=True))
    expect(reasoning.get_by_text("Let me think about: THINK about lunch")).to_be_hidden()
    reasoning.get_by_text("Reasoning", exact=True).click()
    expect(reasoning.get_by_text("Let me think about: THINK about lunch")).to_be_visible()
    expect(page.get_by_label("Model")).to_have_value(chatd.data["anthropic"]["id"])


def test_an_image_address_in_a_chat_is_never_fetched_and_the_page_has_a_strict_policy(page: Page, chatd: Chatd) -> None:
    """A model (or a tool result it repeats) could put what it read into an image address; the
    browser would send it out on render. Remote images are links instead, and the page's
    Content-Security-Policy forbids loading them anyway."""
    leaked: list[str] = []
    page.on("request", lambda r: leaked.append(r.url) if "md-image" in r.url else None)
    sign_in(page, chatd)
    new_chat(page, 'look ![chart](http://127.0.0.1:9/md-image?secret=42) and <img src="http://127.0.0.1:9/md-image?raw=1">')
    expect(page.get_by_text(re.compile("^answer to: look"))).to_be_visible()
    expect(page.locator("a.remote-image").first).to_have_attribute("href", "http://127.0.0.1:9/md-image?secret=42")
    page.reload()
    expect(page.get_by_text(re.compile("^answer to: look"))).to_be_visible()
    assert leaked == []
    policy = httpx.get(f"{chatd.base}/", timeout=30).headers.get("content-security-policy", "")
    assert "img-src 'self' data: blob:" in policy and "connect-src 'self'" in policy


def test_a_long_answer_is_followed_while_it_streams(page: Page, chatd: Chatd) -> None:
    page.set_viewport_size({"width": 1280, "height": 700})
    sign_in(page, chatd)
    new_chat(page, "SLOW 10\nTOKENS 500")
    expect(page.get_by_text("tok150 ")).to_be_in_viewport()
    expect(page.get_by_text("tok499")).to_be_in_viewport(timeout=60_000)


def test_an_admin_marks_a_model_text_only_and_its_chats_get_a_note_for_a_tool_image(page: Page, chatd: Chatd, tools: dict[str, Any]) -> None:
    created = chatd.ok("POST", "/model-configs", json={
        "provider": "openai-compatible", "model": "text-only-1", "display_name": "Text only", "context_limit": 100_000,
    })
    assert created["options"]["images"] is True
    sign_in(page, chatd)
    page.get_by_role("link", name="Models").click()
    page.get_by_role("button", name="Edit Text only").click()
    form = page.get_by_role("form", name="Edit Text only")
    form.get_by_role("checkbox", name="Accepts images").uncheck()
    form.get_by_role("button", name="Save").click()
    expect(form).to_be_hidden()
    configs = {m["model"]: m for m in chatd.ok("GET", "/model-configs")}
    assert configs["text-only-1"]["options"]["images"] is False
    page.get_by_role("link", name="New chat").click()
    page.get_by_text(re.compile(r"Tools: \d+ of \d+ servers")).click()
    page.get_by_role("checkbox", name="Test tools").check()
    pick_model(page, "Text only")
    send(page, "TOOL tests__image {}")
    card = page.get_by_role("article", name="Tool image on tests")
    expect(card.get_by_role("img")).to_be_visible()  # the person sees it either way
    expect(page.get_by_text(re.compile("The tool said: "))).to_be_visible()
    last = [r.body for r in chatd.model.requests if r.body.get("stream")][-1]
    assert last["model"] == "text-only-1" and "image_url" not in json.dumps(last)
    [tool] = [m for m in last["messages"] if m["role"] == "tool"]
    assert "this model does not accept images" in tool["content"]


def pick_model(page: Page, name: str) -> None:
    """Pick a model by its name: with several providers (the shared server has every earlier
    test's) the option reads "name · provider"."""
    picker = page.get_by_label("Model", exact=True)
    option = picker.locator("option").filter(has_text=re.compile("^" + re.escape(name) + "( · |$)")).first
    value = option.get_attribute("value")
    assert value is not None
    picker.select_option(value=value)
