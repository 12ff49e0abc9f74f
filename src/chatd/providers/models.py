"""Build pydantic-ai models from provider + model configs."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, cast

import httpx2
from pydantic_ai.models import Model
from pydantic_ai.native_tools import AbstractNativeTool, WebSearchTool
from pydantic_ai.providers import Provider
from pydantic_ai.settings import ModelSettings, ThinkingLevel

from chatd.errors import InvalidInput
from chatd.providers.config import ModelSpec, ProviderConfig, ProviderKind

log = logging.getLogger(__name__)

_KEY_ENV = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY", "google": "GOOGLE_API_KEY"}
_EFFORTS = {"minimal", "low", "medium", "high", "xhigh", "max"}

# Cheap models for titles and push summaries (reference §11.2); None = use the chat's own model.
_QUICK_MODELS: dict[ProviderKind, str | None] = {
    "anthropic": "claude-haiku-4-5",
    "openai": "gpt-4o-mini",
    "google": "gemini-2.5-flash",
    "openai-compatible": None,
}


class ProviderNotConfigured(InvalidInput):
    code = "provider_not_configured"


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """Everything the loop needs to call one configured model."""

    model: Model
    spec: ModelSpec
    provider_kind: ProviderKind
    settings: ModelSettings = field(default_factory=lambda: ModelSettings())
    native_tools: tuple[AbstractNativeTool, ...] = ()

    @property
    def name(self) -> str:
        return self.spec.model


def _thinking(effort: str | None) -> ThinkingLevel | None:
    if effort is None:
        return None
    if effort == "none":
        return False
    if effort in _EFFORTS:
        return cast(ThinkingLevel, effort)
    raise InvalidInput(f"unknown reasoning effort {effort!r}")


def model_settings(spec: ModelSpec) -> ModelSettings:
    settings = ModelSettings(
        max_tokens=spec.max_output_tokens,
        # The loop owns retries (backoff, Retry-After, retry events); SDK retries would hide
        # failures from it and multiply the attempt count.
        max_retries=0,
    )
    if spec.temperature is not None:
        settings["temperature"] = spec.temperature
    if (thinking := _thinking(spec.reasoning_effort)) is not None:
        settings["thinking"] = thinking
    return settings


def native_tools(provider: ProviderConfig, spec: ModelSpec) -> tuple[AbstractNativeTool, ...]:
    if not spec.web_search:
        return ()
    if provider.kind in ("anthropic", "google"):
        return (WebSearchTool(),)
    # Chat Completions has no native web search (only the Responses API does); omitting it keeps
    # the call working instead of failing every turn of a misconfigured model.
    log.warning("web search is not supported for %s chat-completions models; omitted", provider.kind)
    return ()


def check_provider(provider: ProviderConfig) -> None:
    """Raises ProviderNotConfigured when calls through `provider` cannot work (no key, no URL)."""
    kind = provider.kind
    if kind in _KEY_ENV and not provider.api_key:
        raise ProviderNotConfigured(f"{_KEY_ENV[kind]} is not set")
    if kind == "openai-compatible" and not provider.base_url:
        raise ProviderNotConfigured("an openai-compatible provider needs a base URL")
    if kind not in _QUICK_MODELS:
        raise ProviderNotConfigured(f"unknown provider kind {kind!r}")


def build_provider(provider: ProviderConfig, http_client: httpx2.AsyncClient | None = None) -> Provider[Any]:
    """The SDK client for `provider` (pydantic-ai `Provider`); it uses `http_client` when given."""
    check_provider(provider)
    # Each SDK is imported when a provider of its kind is first built, not at start: together
    # they are ~40% of `chatd serve`'s start-up CPU (tests/test_startup.py keeps it so).
    kind = provider.kind
    if kind == "anthropic":
        from pydantic_ai.providers.anthropic import AnthropicProvider

        return AnthropicProvider(api_key=provider.api_key, base_url=provider.base_url, http_client=http_client)
    if kind == "google":
        from pydantic_ai.providers.google import GoogleProvider

        return GoogleProvider(api_key=provider.api_key, base_url=provider.base_url, http_client=http_client)
    from pydantic_ai.providers.openai import OpenAIProvider

    return OpenAIProvider(base_url=provider.base_url, api_key=provider.api_key or "not-needed", http_client=http_client)


def build_model(provider: ProviderConfig, model_name: str, sdk: Provider[Any]) -> Model:
    """A pydantic-ai model called `model_name` through the SDK client `sdk` built for `provider`."""
    kind = provider.kind
    if kind == "anthropic":
        from pydantic_ai.models.anthropic import AnthropicModel
        from pydantic_ai.providers.anthropic import AnthropicProvider

        return AnthropicModel(model_name, provider=cast(AnthropicProvider, sdk))
    if kind == "google":
        from pydantic_ai.models.google import GoogleModel
        from pydantic_ai.providers.google import GoogleProvider

        return GoogleModel(model_name, provider=cast(GoogleProvider, sdk))
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.profiles.openai import OpenAIModelProfile
    from pydantic_ai.providers.openai import OpenAIProvider

    # Without this, a stream cut before its finish_reason reads as a complete "stop" answer.
    profile = OpenAIModelProfile(openai_chat_streaming_requires_finish_reason=True)
    return OpenAIChatModel(model_name, provider=cast(OpenAIProvider, sdk), profile=profile)


def resolve_model(
    provider: ProviderConfig, spec: ModelSpec, *, model: Model | None = None, http_client: httpx2.AsyncClient | None = None
) -> ResolvedModel:
    """Everything a turn needs for `spec`; `model` is a shared one (see `ProviderClients`), else
    one is built with its own SDK client (tests, one-off calls)."""
    if model is None:
        model = build_model(provider, spec.model, build_provider(provider, http_client))
    return ResolvedModel(
        model=model,
        spec=spec,
        provider_kind=provider.kind,
        settings=model_settings(spec),
        native_tools=native_tools(provider, spec),
    )


def quick_model_name(kind: ProviderKind) -> str | None:
    """The cheap model used for titles and push summaries on this provider, if there is one."""
    return _QUICK_MODELS.get(kind)
