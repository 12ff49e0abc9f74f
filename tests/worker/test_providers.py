"""Provider resolution in real turns: the Anthropic wire, deployment keys merged with stored
ones (the stored key wins), provider-native web search, and the default config as fallback."""

from __future__ import annotations

from chatd.domain.chat import ChatStatus, Role
from chatd.domain.config import ModelOptions, Pricing
from chatd.domain.parts import TextPart
from tests.fakes.llm_server import RecordedRequest, Reply
from tests.worker.conftest import Rig


def key_of(req: RecordedRequest) -> str | None:
    """The API key the SDK sent (Anthropic's x-api-key, or a bearer token)."""
    h = req.headers
    return h.get("x-api-key") or (h.get("authorization", "").removeprefix("Bearer ") or None)


async def anthropic_config(rig: Rig, *, web_search: bool = False, stored_key: str | None = None) -> object:
    admin = rig.people.admin.user
    await rig.app.service.create_provider(admin, provider="anthropic", display_name=None, api_key=stored_key, base_url=rig.llm.anthropic_base_url, enabled=True)
    return await rig.app.service.create_model_config(
        admin, provider="anthropic", model="claude-sonnet-4-5", display_name=None, context_limit=200_000, compression_threshold=0,
        is_default=False, options=ModelOptions(web_search=web_search, max_output_tokens=1234), pricing=Pricing(),
    )


async def test_deployment_key_is_used_when_no_key_is_stored(rig: Rig) -> None:
    rig.app.settings.anthropic_api_key = "sk-ant-deployment"
    cfg = await anthropic_config(rig)
    rig.llm.script(Reply(text="hi from claude"))
    chat = await rig.chat("hello", model_config_id=cfg.id)  # type: ignore[attr-defined]
    await rig.run()
    assert (await rig.get(chat.id)).status is ChatStatus.WAITING
    req = rig.llm.requests[0]
    assert req.wire == "anthropic", req.headers
    assert key_of(req) == "sk-ant-deployment"
    assert req.body["max_tokens"] == 1234
    answer = next(m for m in await rig.messages(chat.id) if m.role is Role.ASSISTANT)
    assert answer.content == [TextPart(text="hi from claude")]


async def test_a_stored_key_wins_over_the_deployment_key(rig: Rig) -> None:
    rig.app.settings.anthropic_api_key = "sk-ant-deployment"
    cfg = await anthropic_config(rig, stored_key="sk-ant-stored")
    rig.llm.script(Reply(text="ok"))
    await rig.chat("hello", model_config_id=cfg.id)  # type: ignore[attr-defined]
    await rig.run()
    assert key_of(rig.llm.requests[0]) == "sk-ant-stored"


async def test_web_search_is_offered_as_the_providers_native_tool(rig: Rig) -> None:
    cfg = await anthropic_config(rig, web_search=True, stored_key="k")
    rig.llm.script(Reply(text="searched"))
    await rig.chat("news?", model_config_id=cfg.id)  # type: ignore[attr-defined]
    await rig.run()
    tools = rig.llm.requests[0].body.get("tools", [])
    assert any(str(t.get("type", "")).startswith("web_search") for t in tools), tools


async def test_a_deleted_model_config_falls_back_to_the_default(rig: Rig) -> None:
    cfg = await anthropic_config(rig, stored_key="k")
    rig.llm.script(Reply(text="first"), Reply(text="second, on the default"))
    chat = await rig.chat("hello", model_config_id=cfg.id)  # type: ignore[attr-defined]
    await rig.run()
    await rig.app.service.delete_model_config(rig.people.admin.user, cfg.id)  # type: ignore[attr-defined]
    await rig.app.service.send_message(rig.people.alice.user, chat.id, content=[TextPart(text="again")])
    await rig.run()
    assert [r.wire for r in rig.llm.requests] == ["anthropic", "openai"]
    assert (await rig.get(chat.id)).status is ChatStatus.WAITING
