"""Issue 12, "done when": an admin configures two OpenAI-compatible providers through the UI (say
Ollama and vLLM), each with its own name, base URL and key, adds a model under each, and a chat on
each model is answered by its own provider's server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import run_chatd, sign_in
from tests.browser.scripted import ModelThread
from tests.fakes.llm_server import FakeLLMServer, Reply


@pytest.fixture
def second() -> Iterator[FakeLLMServer]:
    """Another scripted LLM server (the "vLLM" one): it answers every turn in its own words."""
    thread = ModelThread()
    thread.server.responder = lambda body: Reply(text="the second server answers")
    with thread as server:
        yield server


def _shot(page: Page, name: str) -> None:
    if shots := os.environ.get("CHATD_UI_SCREENSHOTS"):
        Path(shots).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(shots) / f"{name}.png"), full_page=True)


def _add_provider(page: Page, name: str, url: str, key: str) -> None:
    page.get_by_role("button", name="Add provider").click()
    form = page.get_by_role("form", name="New provider")
    form.get_by_label("Provider kind").select_option(label="OpenAI-compatible (Ollama, vLLM, llama.cpp, …)")
    form.get_by_label("Name", exact=True).fill(name)
    form.get_by_label("Base URL").fill(url)
    form.get_by_label("API key").fill(key)
    form.get_by_role("button", name="Test connection").click()
    expect(form.get_by_role("status")).to_contain_text("Connected:")
    form.get_by_role("button", name="Add the provider").click()
    expect(page.get_by_role("button", name=f"Edit {name}", exact=True)).to_be_visible()


def _add_model(page: Page, provider_label: str, model: str, display: str) -> None:
    page.get_by_role("button", name="Add model").click()
    form = page.get_by_role("form", name="New model")
    form.get_by_label("Provider").select_option(label=provider_label)
    form.get_by_label("Model name").fill(model)
    form.get_by_label("Display name").fill(display)
    form.get_by_role("button", name="Add the model").click()
    expect(page.get_by_role("cell", name=display, exact=True)).to_be_visible()


def _chat(page: Page, base: str, option: str, text: str) -> None:
    page.goto(f"{base}/#/")
    expect(page.get_by_role("heading", name="New chat")).to_be_visible()
    page.get_by_label("Model", exact=True).select_option(label=option)
    box = page.get_by_label("Message", exact=True)
    expect(box).to_be_enabled()
    box.fill(text)
    box.press("Enter")


def _key(request: Any) -> str:
    return str(request.headers.get("authorization", "")).removeprefix("Bearer ")


# A server start, two providers and two models through the forms, two chats: more than the default
# 120 s on a busy machine.
@pytest.mark.timeout(360)
def test_an_admin_adds_two_openai_compatible_providers_and_each_model_answers_from_its_own_server(
    page: Page, tmp_path: Path, model: FakeLLMServer, second: FakeLLMServer
) -> None:
    with run_chatd(tmp_path, model, None) as server:
        sign_in(page, server)
        # No model yet: the admin lands on the setup first; providers can be added on their page too.
        expect(page.get_by_role("heading", name="Set up chatd")).to_be_visible()
        page.goto(f"{server.base}/#/admin/providers")
        expect(page.get_by_role("heading", name="Providers")).to_be_visible()
        _add_provider(page, "ollama", model.openai_base_url, "key-of-ollama")
        _add_provider(page, "vllm", second.openai_base_url, "key-of-vllm")
        # A name is unique: a third provider called "vllm" is refused, in words.
        page.get_by_role("button", name="Add provider").click()
        form = page.get_by_role("form", name="New provider")
        form.get_by_label("Name", exact=True).fill("vllm")
        form.get_by_label("Base URL").fill(second.openai_base_url)
        form.get_by_role("button", name="Add the provider").click()
        expect(form.get_by_role("alert")).to_contain_text("A provider named 'vllm' already exists")
        form.get_by_role("button", name="Cancel").click()
        _shot(page, "providers-two-openai-compatible")

        page.goto(f"{server.base}/#/admin/models")
        expect(page.get_by_role("heading", name="Models")).to_be_visible()
        _add_model(page, "ollama (openai-compatible)", "model-on-ollama", "Llama on Ollama")
        _add_model(page, "vllm (openai-compatible)", "model-on-vllm", "Llama on vLLM")
        expect(page.get_by_role("row", name="Llama on vLLM")).to_contain_text("vllm")
        _shot(page, "models-under-two-providers")

        # The picker names each model's provider; each chat is answered by its own server.
        _chat(page, server.base, "Llama on vLLM · vllm", "hello vllm")
        expect(page.get_by_role("list", name="Messages").get_by_text("the second server answers")).to_be_visible()
        _shot(page, "chat-on-vllm")
        _chat(page, server.base, "Llama on Ollama · ollama (default)", "hello ollama")
        expect(page.get_by_role("list", name="Messages").get_by_text("answer to: hello ollama")).to_be_visible()

        to_second = [r for r in second.requests if r.path.endswith("/chat/completions")]
        to_first = [r for r in model.requests if r.path.endswith("/chat/completions") and r.body.get("model") == "model-on-ollama"]
        assert {r.body["model"] for r in to_second} == {"model-on-vllm"} and {_key(r) for r in to_second} == {"key-of-vllm"}
        assert to_first and {_key(r) for r in to_first} == {"key-of-ollama"}
        providers = server.ok("GET", "/providers")
        assert [(p["name"], p["provider"], p["api_key_set"]) for p in providers] == [
            ("ollama", "openai-compatible", True), ("vllm", "openai-compatible", True),
        ]
        assert "key-of" not in str(providers)
