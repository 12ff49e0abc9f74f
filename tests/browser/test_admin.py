"""An admin sets chatd up in the browser: the first-run setup on a fresh server (provider and model
through the UI, then a chat streams an answer), an MCP server added and tested, a user and a token
created and revoked; and a member on an unconfigured server is told to ask an admin."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import MCP_SERVER_SCRIPT, Chatd, run_chatd, sign_in
from tests.conftest import _create_pg_database, _drop_pg_database, run_sync
from tests.fakes.llm_server import FakeLLMServer


@pytest.fixture(params=["sqlite", "postgres"])
def fresh(request: pytest.FixtureRequest, tmp_path: Path, model: FakeLLMServer) -> Iterator[Chatd]:
    """A `chatd serve` just started on an empty database: no provider, no model."""
    if request.param == "sqlite":
        with run_chatd(tmp_path, model, None) as server:
            yield server
        return
    admin = request.getfixturevalue("pg_admin_url")
    name, url = run_sync(_create_pg_database(admin))
    try:
        with run_chatd(tmp_path, model, url) as server:
            yield server
    finally:
        run_sync(_drop_pg_database(admin, name))


def test_first_run_an_admin_sets_up_a_provider_and_model_in_the_ui_then_chats(page: Page, fresh: Chatd, model: FakeLLMServer) -> None:
    sign_in(page, fresh)
    # No model yet: the admin's first screen is the setup.
    expect(page.get_by_role("heading", name="Set up chatd")).to_be_visible()
    page.get_by_label("Provider kind").select_option(label="OpenAI-compatible (Ollama, vLLM, llama.cpp, …)")
    # The provider's name is optional (empty, it is named after its kind); here it is given.
    expect(page.get_by_label("Name", exact=True)).to_have_attribute("placeholder", "openai-compatible")
    page.get_by_label("Name", exact=True).fill("local-llm")
    # A wrong address first: the test says why in words and nothing is saved.
    page.get_by_label("Base URL").fill("http://127.0.0.1:9/v1")
    page.get_by_role("button", name="Test connection").click()
    expect(page.get_by_role("alert")).to_contain_text("Connection failed: Cannot connect to http://127.0.0.1:9/v1")
    page.get_by_label("Base URL").fill(model.openai_base_url)
    page.get_by_label("API key").fill("any-key")
    page.get_by_role("button", name="Test connection").click()
    expect(page.get_by_role("status")).to_have_text("Connected: 2 models found.")
    page.get_by_role("checkbox", name="fake-large").check()
    # A model the list does not show can be typed.
    page.get_by_label("Model name").fill("typed-model")
    page.get_by_role("button", name="Add model").click()
    expect(page.get_by_role("radio", name="Default for fake-large")).to_be_checked()
    page.get_by_label("Context limit of fake-large (tokens)").fill("64000")
    page.get_by_role("button", name="Save and start chatting").click()

    # The new-chat page offers the configured models, and a chat streams its answer.
    expect(page.get_by_role("heading", name="New chat")).to_be_visible()
    box = page.get_by_label("Message", exact=True)
    expect(box).to_be_enabled()
    box.fill("hello from the first run")
    box.press("Enter")
    expect(page.get_by_text("answer to: hello from the first run")).to_be_visible()
    configs = {m["model"]: m for m in fresh.ok("GET", "/model-configs")}
    assert set(configs) == {"fake-large", "typed-model"}
    assert configs["fake-large"]["is_default"] is True and configs["fake-large"]["context_limit"] == 64000
    [provider] = fresh.ok("GET", "/providers")
    assert provider["base_url"] == model.openai_base_url and provider["api_key_set"] is True
    assert (provider["name"], provider["provider"]) == ("local-llm", "openai-compatible")


def test_a_member_on_an_unconfigured_server_is_told_to_ask_an_admin(page: Page, tmp_path: Path, model: FakeLLMServer) -> None:
    with run_chatd(tmp_path, model, None) as server:
        sign_in(page, server, server.member("newcomer"))
        expect(page.get_by_role("alert")).to_have_text("No model is configured on this server yet. Ask an admin to add a provider and a model.")
        expect(page.get_by_label("Message", exact=True)).to_be_disabled()
        # The setup is an admin's page: a member is told so, in words.
        page.goto(f"{server.base}/#/admin/setup")
        expect(page.get_by_text("Only admins can open this page.")).to_be_visible()


def test_an_admin_adds_a_stdio_mcp_server_with_env_tests_it_and_a_chat_uses_it(page: Page, chatd: Chatd) -> None:
    sign_in(page, chatd)
    page.get_by_role("link", name="MCP servers").click()
    expect(page.get_by_role("heading", name="MCP servers")).to_be_visible()
    page.get_by_role("button", name="Add MCP server").click()
    form = page.get_by_role("form", name="New MCP server")
    form.get_by_label("Display name").fill("Browser tools")
    form.get_by_label("Slug").fill("browser-tools")
    form.get_by_label("Transport").select_option(label="stdio (a local command)")
    form.get_by_label("Command", exact=True).fill(sys.executable)
    form.get_by_label("Arguments (one per line)").fill(str(MCP_SERVER_SCRIPT))
    form.get_by_label("Environment variables (NAME=value, one per line)").fill("GREETING=hello-from-env")
    form.get_by_label("Availability").select_option(label="Offered, off by default")
    form.get_by_role("button", name="Add and test").click()
    # Saving tests it: the tools the server offers are listed.
    expect(page.get_by_role("status").filter(has_text="Browser tools works")).to_be_visible(timeout=30_000)
    tools = page.get_by_role("list", name="Tools of Browser tools")
    expect(tools.get_by_text("browser-tools__getenv")).to_be_visible()
    expect(tools.get_by_text("browser-tools__echo")).to_be_visible()
    # The card's buttons say what they do; the server's name is only in their accessible names.
    card = page.get_by_role("listitem", name="Browser tools")
    for verb in ("Test", "Edit", "Delete"):
        expect(card.get_by_role("button", name=f"{verb} Browser tools")).to_have_text(verb)
    [server] = [s for s in chatd.ok("GET", "/mcp-servers") if s["slug"] == "browser-tools"]
    try:
        assert server["env_names"] == ["GREETING"] and "hello-from-env" not in str(server)
        # The environment reached the process: a chat that turns the server on calls the tool.
        page.get_by_role("link", name="New chat").click()
        page.get_by_text(re.compile(r"^Tools: ")).click()
        page.get_by_role("checkbox", name=re.compile("Browser tools")).check()
        box = page.get_by_label("Message", exact=True)
        box.fill('TOOL browser-tools__getenv {"name": "GREETING"}')
        box.press("Enter")
        expect(page.get_by_text("The tool said: hello-from-env")).to_be_visible(timeout=30_000)

        # A server that cannot be reached: the test shows the connection error in words.
        page.get_by_role("link", name="MCP servers").click()
        page.get_by_role("button", name="Add MCP server").click()
        form = page.get_by_role("form", name="New MCP server")
        form.get_by_label("Display name").fill("Nowhere")
        form.get_by_label("Slug").fill("nowhere")
        form.get_by_label("URL").fill("http://127.0.0.1:9/mcp")
        form.get_by_role("button", name="Add and test").click()
        expect(page.get_by_role("alert").filter(has_text="cannot connect")).to_be_visible(timeout=30_000)
    finally:
        for s in chatd.ok("GET", "/mcp-servers"):
            if s["slug"] in ("browser-tools", "nowhere"):
                chatd.ok("DELETE", f"/mcp-servers/{s['id']}")


def test_an_admin_creates_a_user_and_a_token_that_signs_them_in_then_revokes_it(page: Page, chatd: Chatd, browser: Browser) -> None:
    sign_in(page, chatd)
    page.get_by_role("link", name="Users and tokens").click()
    page.get_by_label("Username").fill("carol")
    page.get_by_role("button", name="Create user").click()
    expect(page.get_by_role("status").filter(has_text="Created carol")).to_be_visible()
    tokens = page.get_by_role("region", name="Tokens of carol")
    tokens.get_by_label("Token name").fill("laptop")
    tokens.get_by_role("button", name="Create token for carol").click()
    token = tokens.get_by_label("New token", exact=True).inner_text().strip()
    assert token.startswith("chatd_")

    other = browser.new_context()
    try:
        carol = other.new_page()
        sign_in(carol, chatd, token)
        expect(carol.get_by_text("carol", exact=True)).to_be_visible()
    finally:
        other.close()

    page.once("dialog", lambda d: d.accept())
    tokens.get_by_role("button", name="Revoke laptop").click()
    expect(tokens.get_by_text("carol has no token.")).to_be_visible()
    assert chatd.api("GET", "/me", token).status_code == 401


def test_an_admin_disables_a_user_whose_token_stops_working_at_once_and_enables_them_again(page: Page, chatd: Chatd) -> None:
    token = chatd.member("dora")
    assert chatd.api("GET", "/me", token).status_code == 200
    theirs = page.context.browser.new_page()  # type: ignore[union-attr]
    sign_in(theirs, chatd, token)
    sign_in(page, chatd)
    page.get_by_role("link", name="Users and tokens").click()
    row = page.get_by_role("row").filter(has_text="dora")
    expect(row.get_by_role("cell", name="active")).to_be_visible()
    # An admin cannot lock themself out: no such button on their own row.
    expect(page.get_by_role("row").filter(has_text="admin").get_by_role("button", name=re.compile("^Disable"))).to_have_count(0)
    # The row's buttons say what they do; the user's name is only in their accessible names.
    expect(row.get_by_role("button", name="Disable dora")).to_have_text("Disable")
    expect(row.get_by_role("button", name="Tokens of dora")).to_have_text("Tokens")
    page.once("dialog", lambda d: d.accept())
    row.get_by_role("button", name="Disable dora").click()
    expect(row.get_by_text("disabled", exact=True)).to_be_visible()
    assert chatd.api("GET", "/me", token).status_code == 401
    # Dora, signed in elsewhere, is told why she was signed out (not only that her token is bad).
    theirs.reload()
    expect(theirs.get_by_role("alert")).to_contain_text("an admin disabled your account")
    theirs.close()
    row.get_by_role("button", name="Enable dora").click()
    expect(row.get_by_role("cell", name="active")).to_be_visible()
    assert chatd.api("GET", "/me", token).status_code == 200


def test_an_admin_creates_edits_deprecates_and_deletes_a_template(page: Page, chatd: Chatd) -> None:
    sign_in(page, chatd)
    page.get_by_role("link", name="Templates").click()
    form = page.get_by_role("form", name="New template")
    form.get_by_label("Template name").fill("pyproj")
    form.get_by_label("Description").fill("Python project")
    form.get_by_label("Init script").fill("echo hi")
    form.get_by_role("button", name="Create template").click()
    expect(page.get_by_role("status").filter(has_text="Created the template pyproj")).to_be_visible()
    row = page.get_by_role("row").filter(has_text="pyproj")
    expect(row.get_by_text("Python project")).to_be_visible()

    row.get_by_role("button", name="Edit pyproj").click()
    edit = page.get_by_role("form", name="Edit pyproj")
    expect(edit.get_by_label("Init script")).to_have_value("echo hi")
    edit.get_by_label("Description").fill("Python 3.13 project")
    edit.get_by_role("button", name="Save template").click()
    expect(page.get_by_role("status").filter(has_text="Saved the template pyproj")).to_be_visible()
    expect(row.get_by_text("Python 3.13 project")).to_be_visible()
    saved = [t for t in chatd.ok("GET", "/templates") if t["name"] == "pyproj"]
    assert [(t["description"], t["init_script"]) for t in saved] == [("Python 3.13 project", "echo hi")]

    row.get_by_role("button", name="Deprecate pyproj").click()
    expect(page.get_by_role("status").filter(has_text="Deprecated the template pyproj")).to_be_visible()
    # Still listed for the admin, marked, with a way back; members no longer see it.
    expect(row.get_by_text("deprecated")).to_be_visible()
    member = chatd.member("templ-reader")
    assert "pyproj" not in [t["name"] for t in chatd.ok("GET", "/templates?include_deprecated=true", member)]
    row.get_by_role("button", name="Restore pyproj").click()
    expect(page.get_by_role("status").filter(has_text="Restored the template pyproj")).to_be_visible()
    expect(row.get_by_role("button", name="Deprecate pyproj")).to_be_visible()
    assert "pyproj" in [t["name"] for t in chatd.ok("GET", "/templates", member)]
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("row").filter(has_text="pyproj").get_by_role("button", name="Delete pyproj").click()
    expect(page.get_by_role("status").filter(has_text="Deleted the template pyproj")).to_be_visible()
    expect(page.get_by_role("row").filter(has_text="pyproj")).to_have_count(0)
    assert chatd.api("GET", f"/templates/{saved[0]['id']}").status_code == 404


def test_mcp_servers_show_their_status_to_the_admin_and_a_member_sees_which_is_unreachable(page: Page, chatd: Chatd, browser: Browser) -> None:
    working = chatd.add_mcp_server("status-ok", availability="default_off")
    down = chatd.ok("POST", "/mcp-servers", json={
        "slug": "status-down", "display_name": "Down server", "url": "http://127.0.0.1:9/mcp", "availability": "default_off",
    })
    try:
        sign_in(page, chatd)
        page.get_by_role("link", name="MCP servers").click()
        card = page.get_by_role("listitem", name="Down server")
        expect(card.get_by_text("not tried yet")).to_be_visible()
        card.get_by_role("button", name="Test Down server").click()
        # The check is recorded: the card says the server fails, when, and why (admins only).
        expect(card.get_by_text("failing", exact=True)).to_be_visible(timeout=30_000)
        expect(card.get_by_role("note")).to_contain_text("Last error")
        # The test's error is shown once (the recorded last error says when; the alert says what).
        expect(card.get_by_role("alert")).to_contain_text("cannot connect")
        expect(card.get_by_text(re.compile("cannot connect"))).to_have_count(1)
        # Opened again, without a test: the card says why itself, once.
        page.reload()
        expect(card.get_by_role("note")).to_contain_text("cannot connect")
        expect(card.get_by_text(re.compile("cannot connect"))).to_have_count(1)
        ok_card = page.get_by_role("listitem", name="Test tools")
        ok_card.get_by_role("button", name="Test Test tools").click()
        expect(ok_card.get_by_text(re.compile(r"^connected, \d+ tools?$"))).to_be_visible(timeout=30_000)

        # A member choosing servers for a chat sees that one is not reachable now, but not why.
        member = browser.new_page()
        try:
            sign_in(member, chatd, chatd.member("status-viewer"))
            member.get_by_role("link", name="New chat").click()
            member.get_by_text(re.compile(r"^Tools: ")).click()
            down_row = member.locator(".server").filter(has_text="Down server")
            expect(down_row.get_by_text("(not reachable now)")).to_be_visible()
            expect(member.locator(".server").filter(has_text="Test tools").get_by_text("(not reachable now)")).to_have_count(0)
            expect(member.get_by_text("cannot connect")).to_have_count(0)
        finally:
            member.close()
    finally:
        for s in (working, down):
            chatd.ok("DELETE", f"/mcp-servers/{s['id']}")


def test_provider_and_model_rows_show_verbs_the_form_marks_what_it_needs_and_the_picker_shows_display_names(page: Page, chatd: Chatd) -> None:
    provider = chatd.ok("POST", "/providers", json={
        "provider": "openai-compatible", "name": "second-box", "display_name": "Second box", "api_key": "k",
        "base_url": chatd.model.openai_base_url,
    })
    config = chatd.ok("POST", "/model-configs", json={
        "provider_id": provider["id"], "model": "scripted-1", "display_name": "Model on the second box", "context_limit": 100_000,
    })
    try:
        sign_in(page, chatd)
        # A table row's buttons say what they do; whose they are is in their accessible names only.
        page.get_by_role("link", name="Providers").click()
        row = page.get_by_role("row").filter(has_text="second-box")
        for name, text in (("Models of second-box", "Models"), ("Edit second-box", "Edit"), ("Delete second-box", "Delete")):
            expect(row.get_by_role("button", name=name, exact=True)).to_have_text(text)

        # Base URL is marked required exactly when the kind needs one, and its hint agrees.
        page.get_by_role("button", name="Add provider").click()
        form = page.get_by_role("form", name="New provider")
        url = form.get_by_label("Base URL")
        marked = form.locator(".admin-field").filter(has=page.get_by_label("Base URL")).locator(".admin-required")
        expect(url).to_have_js_property("required", True)
        expect(marked).to_have_count(1)
        expect(url).to_have_accessible_description(re.compile("usually ending in /v1"))
        form.get_by_label("Provider kind").select_option(label="OpenAI")
        expect(url).to_have_js_property("required", False)
        expect(marked).to_have_count(0)
        expect(url).to_have_accessible_description("Empty uses the provider's public API.")
        form.get_by_role("button", name="Cancel").click()

        page.get_by_role("link", name="Models").click()
        row = page.get_by_role("row").filter(has_text="Model on the second box")
        for name, text in (("Make default: Model on the second box", "Make default"), ("Edit Model on the second box", "Edit"),
                           ("Delete Model on the second box", "Delete")):
            expect(row.get_by_role("button", name=name, exact=True)).to_have_text(text)

        # With several providers the picker names each model's provider as people know it.
        page.get_by_role("link", name="New chat").click()
        picker = page.get_by_label("Model", exact=True)
        expect(picker.get_by_role("option", name="Model on the second box · Second box", exact=True)).to_have_count(1)
        expect(picker.get_by_role("option", name=re.compile(r"^Scripted model · Scripted\b"))).to_have_count(1)
        expect(picker.get_by_role("option", name=re.compile("second-box"))).to_have_count(0)

        # At phone width a wide table scrolls in its box; the page stays as wide as the screen (the
        # table's visually hidden "Actions" header made it 550 px wide at 390).
        page.set_viewport_size({"width": 390, "height": 844})
        for link in ("Providers", "Models"):
            page.goto(f"{chatd.base}/#/admin/{link.lower()}")
            expect(page.get_by_role("heading", name=link, level=1)).to_be_visible()
            expect(page.get_by_role("row").nth(1)).to_be_visible()
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
    finally:
        chatd.ok("DELETE", f"/model-configs/{config['id']}")
        chatd.ok("DELETE", f"/providers/{provider['id']}")
