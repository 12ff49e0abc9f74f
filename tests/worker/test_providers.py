"""Provider resolution in real turns: the Anthropic wire, deployment keys merged with stored
ones (the stored key wins), provider-native web search, and the default config as fallback."""

from __future__ import annotations

from chatd.domain.chat import ChatStatus, Role
from chatd.domain.config import ModelOptions, Pricing
from chatd.domain.parts import TextPart
from tests.fakes.llm_server import FakeLLMServer, RecordedRequest, Reply
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


async def test_two_providers_of_one_kind_each_serve_their_own_models_with_their_own_key(rig: Rig) -> None:
    """Issue 12: Ollama and vLLM both as `openai-compatible`. Each model's turns go to its own
    provider's server with that provider's key, and the two share no SDK client (alternating
    turns do not retire one another's)."""
    admin, svc = rig.people.admin.user, rig.app.service
    async with FakeLLMServer() as other:
        vllm = await svc.create_provider(admin, provider="openai-compatible", name="vllm", display_name=None, api_key="sk-vllm", base_url=other.openai_base_url, enabled=True)
        on_vllm = await svc.create_model_config(
            admin, provider_id=vllm.id, model="fake-model", display_name="Same model on vLLM", context_limit=100_000,
            compression_threshold=0, is_default=False, options=ModelOptions(), pricing=Pricing(),
        )
        assert (on_vllm.provider, on_vllm.provider_name) == ("openai-compatible", "vllm")
        built = rig.app.providers.clients_built
        for n in range(2):
            rig.llm.script(Reply(text=f"first {n}"))
            other.script(Reply(text=f"second {n}"))
            a = await rig.chat("hello", model_config_id=rig.model_config_id)
            b = await rig.chat("hello", model_config_id=on_vllm.id)
            await rig.run()
            for chat, text in ((a, f"first {n}"), (b, f"second {n}")):
                answer = next(m for m in await rig.messages(chat.id) if m.role is Role.ASSISTANT)
                assert answer.content == [TextPart(text=text)]
        assert [key_of(r) for r in rig.llm.requests] == ["sk-test", "sk-test"]
        assert [key_of(r) for r in other.requests] == ["sk-vllm", "sk-vllm"]
        # One client each, built once: neither retired the other.
        assert rig.app.providers.clients_built - built <= 2
