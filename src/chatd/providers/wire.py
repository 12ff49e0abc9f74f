"""Wire formats: how chatd talks to a provider's API through its official SDK. A wire builds the
SDK client (a pydantic-ai `Provider`), the pydantic-ai model on it, and lists the models the API
offers. Several provider kinds share one wire (OpenAI and every OpenAI-compatible server).

Each SDK is imported when a provider of its kind is first used, never at start: together they
are ~40% of `chatd serve`'s start-up CPU (tests/test_startup.py keeps it so)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import httpx2
from pydantic_ai.models import Model
from pydantic_ai.providers import Provider

from chatd.providers.config import ProviderConfig

if TYPE_CHECKING:
    import anthropic
    import openai


@dataclass(frozen=True, slots=True)
class DiscoveredModel:
    id: str
    display_name: str
    # The input context the provider reports (Anthropic, Google); None when it does not say.
    context_limit: int | None = None


class HttpFailure(Exception):
    """The provider answered a model listing with an error status (each SDK's own error, made plain)."""

    def __init__(self, status: int, said: str) -> None:
        super().__init__(said)
        self.status = status
        self.said = said


@dataclass(frozen=True, slots=True)
class Wire:
    name: str
    # The SDK a model listing imports first (off the event loop: an import is seconds of CPU on a
    # busy host), and the pydantic-ai model module `chatd serve` preloads once it listens.
    sdk_module: str
    model_module: str
    build_provider: Callable[[ProviderConfig, httpx2.AsyncClient | None], Provider[Any]]
    build_model: Callable[[str, Provider[Any]], Model]
    # The API's models; raises HttpFailure for an error status, TimeoutError or ConnectionError
    # for the SDK's own timeout and connection errors.
    list_models: Callable[[ProviderConfig, float], Awaitable[list[DiscoveredModel]]]


def _no_sdk_retries(sdk: Provider[Any]) -> Provider[Any]:
    """The provider with its SDK client retrying nothing itself: the loop owns retries (backoff,
    Retry-After, retry events). The SDKs take a retry count only per client, so a request whose
    settings carry one goes through a copy of the client (pydantic-ai's `with_max_retries`), and a
    copy probes its platform headers again in a thread: ~3% of the daemon's CPU at 100 chats.
    With the count in the client, `resolve_model` leaves it out of the settings and no copy is made.
    Titles and push summaries ask for the SDK's default retries per request (`loop/quickgen.py`)."""
    sdk.client.max_retries = 0
    return sdk


# --- OpenAI chat completions (OpenAI and OpenAI-compatible servers) -----------------------------


def _openai_provider(provider: ProviderConfig, http_client: httpx2.AsyncClient | None) -> Provider[Any]:
    from pydantic_ai.providers.openai import OpenAIProvider

    from chatd.providers import openai_body

    # The same request body without the SDK's walk over it (see openai_body).
    openai_body.install()
    sdk = OpenAIProvider(base_url=provider.base_url, api_key=provider.api_key or "not-needed", http_client=http_client)
    return _no_sdk_retries(sdk)


def _openai_model(name: str, sdk: Provider[Any]) -> Model:
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.profiles.openai import OpenAIModelProfile
    from pydantic_ai.providers.openai import OpenAIProvider

    # Without this, a stream cut before its finish_reason reads as a complete "stop" answer.
    profile = OpenAIModelProfile(openai_chat_streaming_requires_finish_reason=True)
    return OpenAIChatModel(name, provider=cast(OpenAIProvider, sdk), profile=profile)


async def _openai_models(provider: ProviderConfig, timeout: float) -> list[DiscoveredModel]:
    import openai

    client = openai.AsyncOpenAI(
        api_key=provider.api_key or "not-needed", base_url=provider.base_url, timeout=timeout, max_retries=0
    )
    try:
        return [DiscoveredModel(m.id, m.id) async for m in client.models.list()]
    except openai.APIStatusError as exc:
        raise HttpFailure(exc.status_code, _sdk_message(exc)) from exc
    except openai.APITimeoutError as exc:
        raise TimeoutError from exc
    except openai.APIConnectionError as exc:
        raise ConnectionError from exc
    finally:
        await client.close()


OPENAI_CHAT = Wire(
    "openai-chat", "openai", "pydantic_ai.models.openai", _openai_provider, _openai_model, _openai_models
)


# --- Anthropic messages ------------------------------------------------------------------------


def _anthropic_provider(provider: ProviderConfig, http_client: httpx2.AsyncClient | None) -> Provider[Any]:
    from pydantic_ai.providers.anthropic import AnthropicProvider

    return _no_sdk_retries(AnthropicProvider(api_key=provider.api_key, base_url=provider.base_url, http_client=http_client))


def _anthropic_model(name: str, sdk: Provider[Any]) -> Model:
    from pydantic_ai.models.anthropic import AnthropicModel
    from pydantic_ai.providers.anthropic import AnthropicProvider

    return AnthropicModel(name, provider=cast(AnthropicProvider, sdk))


async def _anthropic_models(provider: ProviderConfig, timeout: float) -> list[DiscoveredModel]:
    import anthropic

    client = anthropic.AsyncAnthropic(api_key=provider.api_key, base_url=provider.base_url, timeout=timeout, max_retries=0)
    try:
        return [
            DiscoveredModel(m.id, m.display_name or m.id, m.max_input_tokens)
            async for m in client.models.list(limit=1000)
        ]
    except anthropic.APIStatusError as exc:
        raise HttpFailure(exc.status_code, _sdk_message(exc)) from exc
    except anthropic.APITimeoutError as exc:
        raise TimeoutError from exc
    except anthropic.APIConnectionError as exc:
        raise ConnectionError from exc
    finally:
        await client.close()


ANTHROPIC = Wire(
    "anthropic", "anthropic", "pydantic_ai.models.anthropic", _anthropic_provider, _anthropic_model, _anthropic_models
)


# --- Google Gemini -------------------------------------------------------------------------------


def _google_provider(provider: ProviderConfig, http_client: httpx2.AsyncClient | None) -> Provider[Any]:
    from pydantic_ai.providers.google import GoogleProvider

    return GoogleProvider(api_key=provider.api_key, base_url=provider.base_url, http_client=http_client)


def _google_model(name: str, sdk: Provider[Any]) -> Model:
    from pydantic_ai.models.google import GoogleModel
    from pydantic_ai.providers.google import GoogleProvider

    return GoogleModel(name, provider=cast(GoogleProvider, sdk))


async def _google_models(provider: ProviderConfig, timeout: float) -> list[DiscoveredModel]:
    from google import genai
    from google.genai import errors as genai_errors
    from google.genai import types as genai_types

    options = genai_types.HttpOptions(timeout=int(timeout * 1000), base_url=provider.base_url)
    client = genai.Client(api_key=provider.api_key, http_options=options)
    out: list[DiscoveredModel] = []
    try:
        async for m in await client.aio.models.list(config={"page_size": 1000}):
            # Embedding and other non-chat models cannot answer a chat; leave them out.
            if m.supported_actions is not None and "generateContent" not in m.supported_actions:
                continue
            name = (m.name or "").removeprefix("models/")
            if name:
                out.append(DiscoveredModel(name, m.display_name or name, m.input_token_limit))
    except genai_errors.APIError as exc:
        raise HttpFailure(int(exc.code or 0), str(exc.message or exc.status or "")) from exc
    finally:
        await client.aio.aclose()
    return out


GOOGLE = Wire("google", "google.genai", "pydantic_ai.models.google", _google_provider, _google_model, _google_models)


def _sdk_message(exc: openai.APIStatusError | anthropic.APIStatusError) -> str:
    """The provider's own sentence from the error body (`{"error": {"message": ...}}` in both)."""
    body: Any = exc.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
        if isinstance(err, str):
            return err
    return exc.message
