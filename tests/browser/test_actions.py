"""Human in the loop in the browser: a question answered with a suggested answer or free text, a
tool call approved with edited arguments or denied; the chat list says which chat waits."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import MCP_SERVER_SCRIPT, Chatd, sign_in
from tests.browser.test_flows import new_chat, send, status


def ask(question: str, *options: str) -> str:
    return "TOOL ask_user_question " + json.dumps({"question": question, "options": list(options)})


def test_a_question_is_answered_with_a_suggested_answer(page: Page, chatd: Chatd) -> None:
    sign_in(page, chatd)
    new_chat(page, ask("Which colour?", "red", "blue"))
    card = page.get_by_role("article", name="Question", exact=True)
    expect(card.get_by_text("Which colour?")).to_be_visible()
    expect(status(page).get_by_text("waiting for you")).to_be_visible()
    expect(page.get_by_role("article", name="Tool ask_user_question").get_by_text("waiting for you")).to_be_visible()
    # The chat list says it waits too.
    expect(page.get_by_role("list", name="Chats").get_by_text("waiting for you").first).to_be_visible()
    card.get_by_role("button", name="blue").click()
    expect(page.get_by_text('The tool said: {"answer":"blue"}')).to_be_visible()
    expect(status(page).get_by_text("idle")).to_be_visible()
    expect(page.get_by_role("article", name="Question", exact=True)).to_have_count(0)


def test_a_question_is_answered_in_free_text_after_a_reload(page: Page, chatd: Chatd) -> None:
    sign_in(page, chatd)
    new_chat(page, ask("What should I call it?", "foo", "bar"))
    expect(page.get_by_role("article", name="Question", exact=True)).to_be_visible()
    # The wait is durable: a reload shows the same question.
    page.reload()
    card = page.get_by_role("article", name="Question", exact=True)
    card.get_by_label("Your own answer").fill("quux")
    card.get_by_role("button", name="Answer").click()
    expect(page.get_by_text('The tool said: {"answer":"quux"}')).to_be_visible()


def test_while_a_question_waits_the_composer_keeps_the_draft_and_says_how_long_it_waited(page: Page, chatd: Chatd) -> None:
    sign_in(page, chatd)
    new_chat(page, ask("Which size?", "S", "L"))
    card = page.get_by_role("article", name="Question", exact=True)
    expect(card.get_by_text("Waiting for you for less than a minute")).to_be_visible()
    # The composer says what a message does now: no answer runs, so there is nothing to steer.
    expect(page.get_by_role("note").filter(has_text="The agent waits for your answer above")).to_be_visible()
    expect(page.get_by_role("group", name="While the agent waits for you")).to_be_visible()
    expect(page.get_by_role("radio", name="Steer")).to_have_count(0)
    expect(page.get_by_role("button", name="Cancel the pending question")).to_be_visible()
    # What the person types is kept: across a reload and a visit to another page.
    box = page.get_by_label("Message", exact=True)
    box.fill("a note for later")
    page.reload()
    expect(page.get_by_label("Message", exact=True)).to_have_value("a note for later")
    chat_url = page.url
    page.get_by_role("link", name="New chat").click()
    expect(page.get_by_label("Message", exact=True)).to_have_value("")
    page.goto(chat_url)
    expect(page.get_by_label("Message", exact=True)).to_have_value("a note for later")
    page.get_by_role("article", name="Question", exact=True).get_by_role("button", name="L", exact=True).click()
    expect(page.get_by_text('The tool said: {"answer":"L"}')).to_be_visible()
    expect(page.get_by_label("Message", exact=True)).to_have_value("a note for later")


@pytest.fixture(scope="module")
def gated(chatd: Chatd) -> Iterator[dict[str, Any]]:
    """The MCP test server with every call waiting for approval (removed afterwards)."""
    server = chatd.ok("POST", "/mcp-servers", json={
        "slug": "gated", "display_name": "Gated tools", "transport": "stdio", "command": sys.executable,
        "args": [str(MCP_SERVER_SCRIPT)], "enabled": True, "availability": "default_off", "approval": "always",
    })  # fmt: skip
    yield dict(server)
    chatd.ok("DELETE", f"/mcp-servers/{server['id']}")


def gated_chat(page: Page, chatd: Chatd, text: str) -> None:
    sign_in(page, chatd)
    page.get_by_text(re.compile(r"Tools: \d+ of \d+ servers")).click()
    page.get_by_role("checkbox", name="Gated tools").check()
    new_chat(page, text)


def test_a_tool_call_is_approved_with_edited_arguments(page: Page, chatd: Chatd, gated: dict[str, Any]) -> None:
    gated_chat(page, chatd, 'TOOL gated__echo {"text": "from the model"}')
    card = page.get_by_role("article", name="Approve echo", exact=True)
    expect(card.get_by_text("on gated")).to_be_visible()
    args = card.get_by_label("Arguments")
    expect(args).to_have_value(re.compile(r'"text": "from the model"'))
    args.fill('{"text": "from the person"}')
    card.get_by_role("button", name="Approve").click()
    expect(page.get_by_text(re.compile(r"The tool said: .*from the person"))).to_be_visible()
    tool = page.get_by_role("article", name="Tool echo on gated")
    expect(tool.get_by_text("done")).to_be_visible()
    # The card shows what ran, and says it was edited (the model's own stay a click away).
    for _ in range(2):
        expect(tool.get_by_text("Arguments (edited by you before approving)")).to_be_visible()
        expect(tool.locator("pre").first).to_contain_text('"text": "from the person"')
        tool.get_by_text("The model's arguments").click()
        expect(tool.get_by_text('"text": "from the model"')).to_be_visible()
        page.reload()
        tool = page.get_by_role("article", name="Tool echo on gated")


def test_a_denied_tool_call_never_runs(page: Page, chatd: Chatd, gated: dict[str, Any]) -> None:
    gated_chat(page, chatd, 'TOOL gated__echo {"text": "not this"}')
    page.get_by_role("article", name="Approve echo", exact=True).get_by_role("button", name="Deny").click()
    expect(page.get_by_text(re.compile(r"The tool said: .*Denied by the user"))).to_be_visible()
    tool = page.get_by_role("article", name="Tool echo on gated")
    # Denied is no failure, and the time spent waiting for the person is no run time.
    expect(tool.get_by_text("denied", exact=True)).to_be_visible()
    expect(tool.get_by_text("You denied this call: it did not run.")).to_be_visible()
    expect(tool.get_by_text("failed")).to_have_count(0)
    expect(tool.get_by_text(re.compile(r"^\d+(\.\d)? (ms|s)$"))).to_have_count(0)
    page.reload()
    tool = page.get_by_role("article", name="Tool echo on gated")
    expect(tool.get_by_text("denied", exact=True)).to_be_visible()
    expect(tool.get_by_text(re.compile(r"^\d+(\.\d)? (ms|s)$"))).to_have_count(0)


def test_each_call_keeps_its_own_result_and_decision_when_the_model_reuses_call_ids(page: Page, chatd: Chatd, gated: dict[str, Any]) -> None:
    # The scripted model names its call `call_1` in every step, as some OpenAI-compatible backends
    # do. QA saw an earlier card show a later call's result, and one denial make every earlier
    # `call_1` card read "denied" after a reload although those calls ran.
    gated_chat(page, chatd, 'TOOL gated__echo {"text": "first"}')
    asked = page.get_by_role("article", name="Approve echo", exact=True)
    asked.get_by_label("Always allow echo in this chat").check()
    asked.get_by_role("button", name="Approve").click()
    expect(page.get_by_text(re.compile(r"The tool said: .*first"))).to_be_visible()
    # The second call runs unasked (always allowed).
    send(page, 'TOOL gated__echo {"text": "second"}')
    expect(page.get_by_text(re.compile(r"The tool said: .*second"))).to_be_visible()
    tools = page.get_by_role("article", name="Tool echo on gated")
    expect(tools).to_have_count(2)
    expect(tools.nth(0).locator("details").last).to_contain_text("first")
    expect(tools.nth(0).locator("details").last).not_to_contain_text("second")
    expect(tools.nth(1).locator("details").last).to_contain_text("second")
    # Asked again, and denied: only that call reads "denied", live and after a reload.
    page.get_by_text(re.compile(r"Always allowed in this chat")).click()
    page.get_by_role("button", name="Revoke always allow for echo").click()
    expect(page.get_by_role("list", name="Always allowed tools")).to_have_count(0)
    send(page, 'TOOL gated__echo {"text": "third"}')
    expect(tools.nth(2).get_by_text("waiting for your answer")).to_be_visible()
    for earlier in (tools.nth(0), tools.nth(1)):
        expect(earlier.get_by_text("done", exact=True)).to_be_visible()
    page.get_by_role("article", name="Approve echo", exact=True).get_by_role("button", name="Deny").click()
    expect(page.get_by_text(re.compile(r"The tool said: .*Denied by the user"))).to_be_visible()
    for reloaded in (False, True):
        if reloaded:
            page.reload()
        tools = page.get_by_role("article", name="Tool echo on gated")
        expect(tools).to_have_count(3)
        expect(tools.nth(2).get_by_text("denied", exact=True)).to_be_visible()
        for i, text in enumerate(("first", "second")):
            expect(tools.nth(i).get_by_text("done", exact=True)).to_be_visible()
            expect(tools.nth(i).locator("details").last).to_contain_text(text)
        expect(tools.nth(0).locator("details").last).not_to_contain_text("second")


def test_bad_edited_arguments_are_refused_on_the_page(page: Page, chatd: Chatd, gated: dict[str, Any]) -> None:
    gated_chat(page, chatd, 'TOOL gated__echo {"text": "x"}')
    card = page.get_by_role("article", name="Approve echo", exact=True)
    card.get_by_label("Arguments").fill("[1, 2]")
    card.get_by_role("button", name="Approve").click()
    expect(card.get_by_role("alert")).to_have_text("The arguments must be a JSON object.")
    expect(status(page).get_by_text("waiting for you")).to_be_visible()


def test_an_admin_sets_a_servers_approval_policy_in_its_form(page: Page, chatd: Chatd) -> None:
    sign_in(page, chatd)
    page.get_by_role("link", name="MCP servers").click()
    page.get_by_role("button", name="Add MCP server").click()
    form = page.get_by_role("form", name="New MCP server")
    form.get_by_label("Display name").fill("Careful tools")
    form.get_by_label("Slug").fill("careful")
    form.get_by_label("Transport").select_option(label="stdio (a local command)")
    form.get_by_label("Command", exact=True).fill(sys.executable)
    form.get_by_label("Arguments (one per line)").fill(str(MCP_SERVER_SCRIPT))
    form.get_by_label("Approval before a tool runs").select_option(label="Unless read-only")
    form.get_by_label("Approval per tool").fill("echo=never\ndelete_note=always")
    form.get_by_role("button", name="Add and test").click()
    expect(page.get_by_role("status").filter(has_text="Careful tools works")).to_be_visible(timeout=30_000)
    [server] = [s for s in chatd.ok("GET", "/mcp-servers") if s["slug"] == "careful"]
    try:
        assert (server["approval"], server["approval_overrides"]) == ("unless_read_only", {"echo": "never", "delete_note": "always"})
    finally:
        chatd.ok("DELETE", f"/mcp-servers/{server['id']}")


@pytest.fixture(scope="module")
def forms(chatd: Chatd) -> Iterator[dict[str, Any]]:
    """The MCP test server, whose `register` tool asks the user for a form."""
    server = chatd.ok("POST", "/mcp-servers", json={
        "slug": "forms", "display_name": "Form tools", "transport": "stdio", "command": sys.executable,
        "args": [str(MCP_SERVER_SCRIPT)], "enabled": True, "availability": "default_off",
    })  # fmt: skip
    yield dict(server)
    chatd.ok("DELETE", f"/mcp-servers/{server['id']}")


def test_an_mcp_servers_form_is_filled_in_while_its_call_waits(page: Page, chatd: Chatd, forms: dict[str, Any]) -> None:
    sign_in(page, chatd)
    page.get_by_text(re.compile(r"Tools: \d+ of \d+ servers")).click()
    page.get_by_role("checkbox", name="Form tools").check()
    new_chat(page, "TOOL forms__register {}")
    card = page.get_by_role("article", name="Input for forms", exact=True)
    expect(card.get_by_text("Who is registering?")).to_be_visible()
    expect(card.get_by_label("Team")).to_have_value("platform")
    card.get_by_label("Name *").fill("Ada")
    card.get_by_role("button", name="Send").click()
    expect(page.get_by_text(re.compile(r"The tool said: .*registered Ada in platform"))).to_be_visible()
