"""What the admin pages need from the API: a provider connection test and model discovery against
the scripted LLM server speaking each provider's real models-endpoint format (through the official
SDKs), and every user's spend with the limit that applies."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from chatd.bootstrap import App
from chatd.domain.chat import Role
from chatd.domain.parts import TextPart
from chatd.store import turns
from tests.conftest import People
from tests.fakes.llm_server import FakeLLMServer

KEY = "sk-right-key-123456"


@pytest.fixture
async def llm() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer(models=("big-model", "small-model")) as server:
        server.models_key = KEY
        yield server


def base_url(llm: FakeLLMServer, kind: str) -> str:
    return llm.openai_base_url if kind in ("openai", "openai-compatible") else llm.base_url


@pytest.mark.parametrize("kind", ["openai-compatible", "openai", "anthropic", "google"])
async def test_testing_a_provider_lists_its_models_in_each_wire_format(
    client: httpx.AsyncClient, people: People, llm: FakeLLMServer, kind: str
) -> None:
    r = await client.post("/api/v1/providers/test", headers=people.admin.headers, json={"provider": kind, "base_url": base_url(llm, kind), "api_key": KEY})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ok"] is True and body["error"] is None
    assert [m["id"] for m in body["models"]] == ["big-model", "small-model"]
    if kind == "anthropic":
        assert body["models"][0] == {"id": "big-model", "display_name": "Big Model", "context_limit": 200_000}
    if kind == "google":
        # The embedding model cannot chat, so it is not offered.
        assert body["models"][0]["context_limit"] == 1_048_576


@pytest.mark.parametrize("kind", ["openai-compatible", "anthropic"])
async def test_a_refused_key_comes_back_in_words_without_the_key(
    client: httpx.AsyncClient, people: People, llm: FakeLLMServer, kind: str
) -> None:
    wrong = "sk-wrong-key-987654"
    r = await client.post("/api/v1/providers/test", headers=people.admin.headers, json={"provider": kind, "base_url": base_url(llm, kind), "api_key": wrong})
    body = r.json()
    assert r.status_code == 200 and body["ok"] is False and body["models"] == []
    assert body["error"]["status"] == 401
    assert "refused the API key (HTTP 401)" in body["error"]["message"]
    assert wrong not in r.text


async def test_an_unreachable_or_wrong_base_url_is_explained(client: httpx.AsyncClient, people: People, llm: FakeLLMServer) -> None:
    a = people.admin.headers
    closed = (await client.post("/api/v1/providers/test", headers=a, json={"provider": "openai-compatible", "base_url": "http://127.0.0.1:9/v1"})).json()
    assert closed["ok"] is False and closed["error"]["message"].startswith("Cannot connect to http://127.0.0.1:9/v1")
    # The server is there but the path is not an API root: its /models is a 404.
    wrong = (await client.post("/api/v1/providers/test", headers=a, json={"provider": "openai-compatible", "base_url": llm.base_url + "/nope", "api_key": KEY})).json()
    assert wrong["ok"] is False and wrong["error"]["status"] == 404 and "check the base URL" in wrong["error"]["message"]
    no_key = (await client.post("/api/v1/providers/test", headers=a, json={"provider": "anthropic"})).json()
    assert no_key == {"ok": False, "models": [], "error": {"message": "The anthropic provider needs an API key.", "status": None}}
    bad = await client.post("/api/v1/providers/test", headers=a, json={"provider": "nonsense"})
    assert bad.status_code == 400


async def test_a_saved_providers_models_use_its_stored_key_and_members_may_not_ask(
    client: httpx.AsyncClient, people: People, llm: FakeLLMServer
) -> None:
    a = people.admin.headers
    created = (await client.post("/api/v1/providers", headers=a, json={"provider": "openai-compatible", "base_url": llm.openai_base_url, "api_key": KEY})).json()
    models = (await client.get(f"/api/v1/providers/{created['id']}/models", headers=a)).json()
    assert models["ok"] is True and [m["id"] for m in models["models"]] == ["big-model", "small-model"]
    # The test endpoint without a key falls back to the saved key of that kind.
    retest = (await client.post("/api/v1/providers/test", headers=a, json={"provider": "openai-compatible", "base_url": llm.openai_base_url})).json()
    assert retest["ok"] is True
    assert (await client.get(f"/api/v1/providers/{created['id']}/models", headers=people.alice.headers)).status_code == 403
    assert (await client.post("/api/v1/providers/test", headers=people.alice.headers, json={"provider": "openai"})).status_code == 403
    assert (await client.get(f"/api/v1/providers/{uuid.uuid4()}/models", headers=a)).status_code == 404


async def test_spend_per_user_shows_each_users_period_and_the_limit_that_applies(
    client: httpx.AsyncClient, people: People, chatd: App
) -> None:
    a = people.admin.headers
    chat = await chatd.service.create_chat(people.alice.user, content=[TextPart(text="hi")])
    async with chatd.db.write() as conn:
        from chatd.store.chats import insert_messages

        await insert_messages(conn, chat.id, [turns.NewMessage(Role.ASSISTANT, [TextPart(text="answer")], total_cost_micros=1_250_000)], chatd.clock.now())
    await client.put("/api/v1/usage-limits", headers=a, json={"scope": "global", "period": "month", "limit_micros": 10_000_000})
    await client.put("/api/v1/usage-limits", headers=a, json={"scope": "user", "user_id": str(people.bob.user.id), "period": "day", "limit_micros": 2_000_000})
    r = await client.get("/api/v1/usage/users", headers=a)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["global_limit"] == {"period": "month", "limit_micros": 10_000_000}
    rows = {u["user"]["username"]: u for u in body["users"]}
    assert set(rows) == {"admin", "alice", "bob"}
    assert (rows["alice"]["spent_micros"], rows["alice"]["limit_micros"], rows["alice"]["limit_scope"], rows["alice"]["period"]) == (1_250_000, 10_000_000, "global", "month")
    assert (rows["bob"]["spent_micros"], rows["bob"]["limit_micros"], rows["bob"]["limit_scope"], rows["bob"]["period"]) == (0, 2_000_000, "user", "day")
    # Removing bob's own limit puts him back on the global one; removing that leaves no limit.
    assert (await client.delete("/api/v1/usage-limits", headers=a, params={"scope": "user", "user_id": str(people.bob.user.id)})).status_code == 204
    assert (await client.delete("/api/v1/usage-limits", headers=a, params={"scope": "global"})).status_code == 204
    rows = {u["user"]["username"]: u for u in (await client.get("/api/v1/usage/users", headers=a)).json()["users"]}
    assert (rows["bob"]["limit_micros"], rows["bob"]["limit_scope"]) == (None, None)
    assert (await client.get("/api/v1/usage", headers=people.alice.headers)).json()["limit_micros"] is None
    assert (await client.get("/api/v1/usage/users", headers=people.alice.headers)).status_code == 403


async def test_testing_another_base_url_without_a_key_never_sends_the_saved_key_there(
    client: httpx.AsyncClient, people: People, llm: FakeLLMServer
) -> None:
    # A stored key is write-only: typing a base URL one controls must not make chatd carry the
    # saved (or the deployment's) key to it.
    a = people.admin.headers
    await client.post("/api/v1/providers", headers=a, json={"provider": "openai-compatible", "base_url": llm.openai_base_url, "api_key": KEY})
    async with FakeLLMServer(models=("big-model",)) as elsewhere:
        elsewhere.models_key = KEY
        r = (await client.post("/api/v1/providers/test", headers=a, json={"provider": "openai-compatible", "base_url": elsewhere.openai_base_url})).json()
    assert r["ok"] is False and r["error"]["status"] == 401
    # The saved provider's own URL still reuses its key (an edit tested without typing it again).
    same = (await client.post("/api/v1/providers/test", headers=a, json={"provider": "openai-compatible", "base_url": llm.openai_base_url})).json()
    assert same["ok"] is True


async def test_templates_are_edited_deprecated_and_deleted_by_admins(client: httpx.AsyncClient, people: People) -> None:
    a = people.admin.headers
    made = await client.post("/api/v1/templates", headers=a, json={"name": "py", "description": "Python", "git_url": "https://example.com/r.git"})
    assert made.status_code == 201, made.text
    tid = made.json()["id"]
    other = await client.post("/api/v1/templates", headers=a, json={"name": "go"})
    assert other.status_code == 201

    changed = await client.patch(
        f"/api/v1/templates/{tid}", headers=a,
        json={"description": "Python 3.13", "init_script": "uv sync", "parameters": [{"name": "branch", "default": "main"}]},
    )  # fmt: skip
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["name"], body["description"], body["init_script"], body["git_url"]) == ("py", "Python 3.13", "uv sync", "https://example.com/r.git")
    assert body["parameters"] == [{"name": "branch", "description": "", "default": "main", "required": False}]
    assert (await client.get(f"/api/v1/templates/{tid}", headers=people.alice.headers)).json() == body

    # Refused, and nothing changes: a taken name, both sources, a null where a value is needed.
    for patch, status in (
        ({"name": "go"}, 409),
        ({"source_path": "/srv/src"}, 400),
        ({"name": None}, 400),
        ({"provisioner": "docker"}, 400),
    ):
        r = await client.patch(f"/api/v1/templates/{tid}", headers=a, json=patch)
        assert r.status_code == status, (patch, r.status_code, r.text)
        assert r.json()["message"]
    assert (await client.get(f"/api/v1/templates/{tid}", headers=a)).json() == body
    # Switching source: clear one, set the other, in one request.
    switched = await client.patch(f"/api/v1/templates/{tid}", headers=a, json={"git_url": None, "source_path": "/srv/src"})
    assert switched.status_code == 200 and (switched.json()["git_url"], switched.json()["source_path"]) == (None, "/srv/src")

    # Deprecated: off the list for new workspaces, still readable by id.
    assert (await client.patch(f"/api/v1/templates/{tid}", headers=a, json={"deprecated": True})).json()["deprecated"] is True
    assert [t["name"] for t in (await client.get("/api/v1/templates", headers=a)).json()] == ["go"]
    # An admin can list it to restore it; a member cannot see it either way.
    assert [t["name"] for t in (await client.get("/api/v1/templates?include_deprecated=true", headers=a)).json()] == ["go", "py"]
    member_view = await client.get("/api/v1/templates?include_deprecated=true", headers=people.alice.headers)
    assert [t["name"] for t in member_view.json()] == ["go"]
    assert (await client.get(f"/api/v1/templates/{tid}", headers=a)).status_code == 200
    # Members may not edit or delete.
    assert (await client.patch(f"/api/v1/templates/{tid}", headers=people.alice.headers, json={"description": "x"})).status_code == 403
    assert (await client.delete(f"/api/v1/templates/{tid}", headers=people.alice.headers)).status_code == 403
    assert (await client.delete(f"/api/v1/templates/{tid}", headers=a)).status_code == 204
    assert (await client.get(f"/api/v1/templates/{tid}", headers=a)).status_code == 404
    assert (await client.patch(f"/api/v1/templates/{tid}", headers=a, json={"description": "x"})).status_code == 404
