"""Model discovery: the models a provider offers, read from its own models endpoint with its
official SDK. It doubles as the connection test an admin runs before saving a provider: a wrong
key, a wrong base URL or an unreachable server comes back as a sentence, not a stack trace."""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx2

from chatd.errors import Upstream
from chatd.providers.config import ProviderConfig

if TYPE_CHECKING:
    import anthropic
    import openai

log = logging.getLogger(__name__)

DISCOVERY_TIMEOUT_S = 15.0
# A listing is for a person picking models; a provider with thousands (OpenRouter) is cut here.
MAX_MODELS = 2000


@dataclass(frozen=True, slots=True)
class DiscoveredModel:
    id: str
    display_name: str
    # The input context the provider reports (Anthropic, Google); None when it does not say.
    context_limit: int | None = None


class ProviderCheckFailed(Upstream):
    """The provider could not be reached or refused; `message` says why, for a person."""

    code = "provider_check_failed"

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message, {"status": status} if status is not None else None)
        self.status = status


async def list_models(provider: ProviderConfig, *, timeout: float = DISCOVERY_TIMEOUT_S) -> list[DiscoveredModel]:
    """The provider's models, sorted by id. Raises ProviderCheckFailed with a readable reason."""
    if provider.kind in ("anthropic", "openai", "google") and not provider.api_key:
        raise ProviderCheckFailed(f"The {provider.kind} provider needs an API key.")
    if provider.kind == "openai-compatible" and not provider.base_url:
        raise ProviderCheckFailed("An OpenAI-compatible provider needs a base URL (for example http://localhost:11434/v1).")
    where = provider.base_url or f"the {provider.kind} API"
    lister = _LISTERS.get(provider.kind)
    if lister is None:
        raise ProviderCheckFailed(f"Unknown provider kind {provider.kind!r}.")
    # Only this provider's SDK, imported on first use and off the event loop: an import is
    # seconds of CPU on a busy host (all three took ~15 s), and the server must keep answering.
    await asyncio.to_thread(importlib.import_module, _SDK_MODULES[provider.kind])
    try:
        models = await lister(provider, timeout)
    except _HttpFailure as exc:
        raise _status_failure(exc.status, exc.said, where, provider) from exc
    except (TimeoutError, httpx2.TimeoutException) as exc:
        raise ProviderCheckFailed(f"{where} did not answer within {timeout:g} s.") from exc
    except (ConnectionError, httpx2.TransportError, OSError) as exc:
        raise ProviderCheckFailed(f"Cannot connect to {where}: {_cause(exc, provider)}") from exc
    except Exception as exc:  # an SDK surprise (malformed body): still an answer, never a 500
        log.warning("listing models of %s failed", provider, exc_info=True)
        raise ProviderCheckFailed(f"{where} answered something that is not a model list: {_redact(str(exc), provider)}") from exc
    models.sort(key=lambda m: m.id)
    return models[:MAX_MODELS]


class _HttpFailure(Exception):
    """The provider answered with an error status (each SDK's own error, made plain)."""

    def __init__(self, status: int, said: str) -> None:
        super().__init__(said)
        self.status = status
        self.said = said


async def _openai(provider: ProviderConfig, timeout: float) -> list[DiscoveredModel]:
    import openai

    client = openai.AsyncOpenAI(
        api_key=provider.api_key or "not-needed", base_url=provider.base_url, timeout=timeout, max_retries=0
    )
    try:
        return [DiscoveredModel(m.id, m.id) async for m in client.models.list()]
    except openai.APIStatusError as exc:
        raise _HttpFailure(exc.status_code, _sdk_message(exc)) from exc
    except openai.APITimeoutError as exc:
        raise TimeoutError from exc
    except openai.APIConnectionError as exc:
        raise ConnectionError from exc
    finally:
        await client.close()


async def _anthropic(provider: ProviderConfig, timeout: float) -> list[DiscoveredModel]:
    import anthropic

    client = anthropic.AsyncAnthropic(api_key=provider.api_key, base_url=provider.base_url, timeout=timeout, max_retries=0)
    try:
        return [
            DiscoveredModel(m.id, m.display_name or m.id, m.max_input_tokens)
            async for m in client.models.list(limit=1000)
        ]
    except anthropic.APIStatusError as exc:
        raise _HttpFailure(exc.status_code, _sdk_message(exc)) from exc
    except anthropic.APITimeoutError as exc:
        raise TimeoutError from exc
    except anthropic.APIConnectionError as exc:
        raise ConnectionError from exc
    finally:
        await client.close()


async def _google(provider: ProviderConfig, timeout: float) -> list[DiscoveredModel]:
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
        raise _HttpFailure(int(exc.code or 0), str(exc.message or exc.status or "")) from exc
    finally:
        await client.aio.aclose()
    return out


Lister = Callable[[ProviderConfig, float], Awaitable[list[DiscoveredModel]]]
_LISTERS: dict[str, Lister] = {"openai": _openai, "openai-compatible": _openai, "anthropic": _anthropic, "google": _google}
_SDK_MODULES = {"openai": "openai", "openai-compatible": "openai", "anthropic": "anthropic", "google": "google.genai"}


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


def _status_failure(status: int, message: str, where: str, provider: ProviderConfig) -> ProviderCheckFailed:
    said = _redact(message.strip(), provider)
    suffix = f": {said}" if said else "."
    if status == 401:
        text = f"{where} refused the API key (HTTP 401){suffix}"
    elif status == 403:
        text = f"The API key may not list models at {where} (HTTP 403){suffix}"
    elif status == 404:
        text = f"{where} has no models endpoint (HTTP 404); check the base URL (an OpenAI-compatible one usually ends in /v1)."
    else:
        text = f"{where} answered HTTP {status}{suffix}"
    return ProviderCheckFailed(text, status)


def _cause(exc: BaseException, provider: ProviderConfig) -> str:
    # The SDKs say "Connection error."; the transport error underneath names the real reason.
    inner: BaseException | None = exc
    text = ""
    while inner is not None:
        if str(inner):
            text = str(inner)
        inner = inner.__cause__ or inner.__context__
    return _redact(text or type(exc).__name__, provider)


def _redact(text: str, provider: ProviderConfig) -> str:
    key = provider.api_key or ""
    return text.replace(key, "***") if len(key) >= 4 else text
