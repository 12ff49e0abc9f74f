"""Browser tests: Debian's Chromium driven by Playwright against a real `chatd serve` process that
chats with the scripted model (scripted.py). One server per database for the whole session (a
start costs seconds; every test works in chats of its own, or restores what it changes); one
browser per session; a fresh browser context (no token, no storage) per test.

Tests act and assert as a person does: roles, labels and visible text."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

from tests.browser.scripted import ModelThread
from tests.conftest import _create_pg_database, _drop_pg_database
from tests.fakes.llm_server import FakeLLMServer
from tests.test_serve_blackbox import LISTENING, LOGIN, STOP_TIMEOUT, Served, free_port

pytestmark = pytest.mark.slow
T = TypeVar("T")

CHROMIUM = os.environ.get("CHATD_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]
MCP_SERVER_SCRIPT = Path(__file__).parents[1] / "mcp" / "mcp_test_servers.py"
# The machine running the suite may be busy (a turn with an MCP server starts a process): waits
# are generous, and each one still ends as soon as the page shows what is expected.
expect.set_options(timeout=20_000)
SCREENSHOTS = Path(os.environ.get("CHATD_UI_SCREENSHOTS", "")) if os.environ.get("CHATD_UI_SCREENSHOTS") else None


@dataclass
class Chatd:
    """A running `chatd serve` with a provider and a model configured by its admin."""

    base: str
    admin_token: str
    served: Served
    model: FakeLLMServer
    data: dict[str, Any] = field(default_factory=dict)

    def api(self, method: str, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token or self.admin_token}"}
        return httpx.request(method, f"{self.base}/api/v1{path}", headers=headers, timeout=30, **kw)

    def ok(self, method: str, path: str, token: str | None = None, **kw: Any) -> Any:
        r = self.api(method, path, token, **kw)
        assert r.is_success, (method, path, r.status_code, r.text)
        return r.json() if r.content else None

    def member(self, name: str) -> str:
        """A new member's token."""
        user = self.ok("POST", "/users", json={"username": name, "role": "member"})
        return str(self.ok("POST", f"/users/{user['id']}/tokens", json={"name": "browser"})["token"])

    def configure_model(self) -> dict[str, Any]:
        self.ok("POST", "/providers", json={"provider": "openai-compatible", "display_name": "Scripted", "api_key": "k", "base_url": self.model.openai_base_url})
        model = self.ok("POST", "/model-configs", json={
            "provider": "openai-compatible", "model": "scripted-1", "display_name": "Scripted model",
            "context_limit": 100_000, "is_default": True, "pricing": {"input": 1_000_000, "output": 2_000_000},
        })
        return dict(model)

    def add_mcp_server(self, slug: str = "tests", availability: str = "force_on") -> dict[str, Any]:
        return dict(self.ok("POST", "/mcp-servers", json={
            "slug": slug, "display_name": "Test tools", "description": "echo, add, fail, image",
            "transport": "stdio", "command": sys.executable, "args": [str(MCP_SERVER_SCRIPT)],
            "enabled": True, "availability": availability,
        }))


@contextlib.contextmanager
def run_chatd(tmp: Path, model: FakeLLMServer, database_url: str | None, settings: dict[str, str] | None = None) -> Iterator[Chatd]:
    """`settings`: CHATD_* variables of this server (a short wait a test must see run out)."""
    port = free_port()
    args = [sys.executable, "-m", "chatd.cli", "serve", "--data-dir", str(tmp / "data"), "--host", "127.0.0.1", "--port", str(port)]
    if database_url:
        args += ["--database-url", database_url]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATD_")}
    # Workers poll quickly so a test never waits on the acquire interval.
    env.update(CHATD_LOG_LEVEL="warning", PYTHONUNBUFFERED="1", CHATD_ACQUIRE_INTERVAL="0.2")
    env.update(settings or {})
    stderr = tmp / "chatd.log"
    with stderr.open("w") as err:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=Path(__file__).parents[2])
    served = Served(proc, stderr)
    try:
        base = served.wait_for(LISTENING).group(1)
        token = served.wait_for(LOGIN).group(2)
        yield Chatd(base, token, served, model)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture(scope="session")
def model() -> Iterator[FakeLLMServer]:
    with ModelThread() as server:
        yield server


# Package scope, not session: Playwright's sync API marks its event loop as running in this
# thread while it is open, and every test after the browser package (asyncio.run, pytest-asyncio)
# would then fail with "cannot be called from a running event loop".
@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    b = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(scope="session")
def chatd(tmp_path_factory: pytest.TempPathFactory, model: FakeLLMServer) -> Iterator[Chatd]:
    """`chatd serve` on SQLite with a configured model (modules on PostgreSQL use `chatd_pg`)."""
    with run_chatd(tmp_path_factory.mktemp("chatd"), model, None) as server:
        server.data["model"] = server.configure_model()
        yield server


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run() where Playwright's sync API already runs a loop in this thread."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture(scope="session", autouse=True)
def _postgres_before_the_browser(request: pytest.FixtureRequest) -> None:
    # The shared PostgreSQL fixture calls asyncio.run(), which cannot run once Playwright's loop
    # runs in this thread: set it up first when any selected test needs it.
    if any("chatd_pg" in getattr(item, "fixturenames", ()) for item in request.session.items):
        request.getfixturevalue("pg_admin_url")


@pytest.fixture(scope="session")
def chatd_pg(tmp_path_factory: pytest.TempPathFactory, model: FakeLLMServer, pg_admin_url: str) -> Iterator[Chatd]:
    name, url = _run(_create_pg_database(pg_admin_url))
    try:
        with run_chatd(tmp_path_factory.mktemp("chatd-pg"), model, url) as server:
            server.data["model"] = server.configure_model()
            yield server
    finally:
        _run(_drop_pg_database(pg_admin_url, name))


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 860})
    ctx.set_default_timeout(15_000)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if report.when == "call":
        item.stash[FAILED] = report.failed
    return report


FAILED = pytest.StashKey[bool]()


@pytest.fixture
def page(context: BrowserContext, request: pytest.FixtureRequest) -> Iterator[Page]:
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    yield p
    if SCREENSHOTS is not None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^\w-]", "_", request.node.name)
        p.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    if request.node.stash.get(FAILED, False):
        # What the server said while the test failed (the page's state is in the assertion).
        for name in ("chatd", "chatd_pg"):
            if name in request.fixturenames:
                server: Chatd = request.getfixturevalue(name)
                print(f"--- {name} log (tail) ---\n{server.served.log()}")
    # An uncaught script error is a bug even when the test's assertions passed.
    assert not errors, errors


# A chat page's heading before its chat is there: the new-chat page's, or a chat's while it is read.
CHAT_NOT_THERE = re.compile(r"^(New chat|Loading…)$")


def sign_in(page: Page, server: Chatd, token: str | None = None) -> None:
    """Open the sign-in link `chatd serve` prints (or the same link with another user's token)."""
    page.goto(f"{server.base}/#token={token or server.admin_token}")
    page.get_by_role("button", name="Sign out").wait_for()
