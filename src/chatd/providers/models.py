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
from chatd.providers.config import ModelSpec, ProviderConfig
from chatd.providers.registry import PROVIDERS, UnknownProvider, provider_spec
from chatd.providers.tool_schemas import prepare_tools_once

log = logging.getLogger(__name__)

_EFFORTS = {"minimal", "low", "medium", "high", "xhigh", "max"}


class ProviderNotConfigured(InvalidInput):
    code = "provider_not_configured"


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """Everything the loop needs to call one configured model."""

    model: Model
    spec: ModelSpec
    provider_kind: str
    settings: ModelSettings = field(default_factory=lambda: ModelSettings())
    native_tools: tuple[AbstractNativeTool, ...] = ()

    @property
    def name(self) -> str:
        return self.spec.model

    @property
    def otel_provider(self) -> str:
        """The provider's GenAI `gen_ai.provider.name` (traces)."""
        spec = PROVIDERS.get(self.provider_kind)
        return (spec.otel_name if spec is not None else None) or self.provider_kind


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


def sdk_retries(model: Model) -> int | None:
    """How often the model's SDK client retries a request itself (the OpenAI and Anthropic SDKs
    count per client), or None when the client does not say (Google)."""
    retries = getattr(getattr(model, "client", None), "max_retries", None)
    return retries if isinstance(retries, int) else None


def native_tools(provider: ProviderConfig, spec: ModelSpec) -> tuple[AbstractNativeTool, ...]:
    if not spec.web_search:
        return ()
    if provider_spec(provider.kind).web_search:
        return (WebSearchTool(),)
    # Omitting it keeps the call working instead of failing every turn of a misconfigured model.
    log.warning("web search is not supported for %s models; omitted", provider.kind)
    return ()


def check_provider(provider: ProviderConfig) -> None:
    """Raises ProviderNotConfigured when calls through `provider` cannot work (no key, no URL)."""
    try:
        kind = provider_spec(provider.kind)
    except UnknownProvider as exc:
        raise ProviderNotConfigured(f"unknown provider kind {provider.kind!r}") from exc
    if kind.needs_key and not provider.api_key:
        raise ProviderNotConfigured(f"{kind.key_name} is not set")
    if kind.needs_base_url and not provider.base_url:
        raise ProviderNotConfigured(f"an {kind.kind} provider needs a base URL")


def build_provider(provider: ProviderConfig, http_client: httpx2.AsyncClient | None = None) -> Provider[Any]:
    """The SDK client for `provider` (pydantic-ai `Provider`); it uses `http_client` when given."""
    check_provider(provider)
    return provider_spec(provider.kind).wire.build_provider(provider, http_client)


def build_model(provider: ProviderConfig, model_name: str, sdk: Provider[Any]) -> Model:
    """A pydantic-ai model called `model_name` through the SDK client `sdk` built for `provider`,
    its tool definitions prepared once each (`tool_schemas`)."""
    return prepare_tools_once(provider_spec(provider.kind).wire.build_model(model_name, sdk))


def resolve_model(
    provider: ProviderConfig, spec: ModelSpec, *, model: Model | None = None, http_client: httpx2.AsyncClient | None = None
) -> ResolvedModel:
    """Everything a turn needs for `spec`; `model` is a shared one (see `ProviderClients`), else
    one is built with its own SDK client (tests, one-off calls)."""
    if model is None:
        model = build_model(provider, spec.model, build_provider(provider, http_client))
    settings = model_settings(spec)
    if sdk_retries(model) == settings.get("max_retries"):
        # The client already makes no retries: the setting would only make pydantic-ai copy the
        # client for every request (see `wire._no_sdk_retries`).
        del settings["max_retries"]
    return ResolvedModel(
        model=model,
        spec=spec,
        provider_kind=provider.kind,
        settings=settings,
        native_tools=native_tools(provider, spec),
    )


def quick_model_name(kind: str) -> str | None:
    """The cheap model used for titles and push summaries on this provider, if there is one."""
    spec = PROVIDERS.get(kind)
    return spec.quick_model if spec is not None else None
