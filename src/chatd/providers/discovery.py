"""Model discovery: the models a provider offers, read from its own models endpoint with its
official SDK. It doubles as the connection test an admin runs before saving a provider: a wrong
key, a wrong base URL or an unreachable server comes back as a sentence, not a stack trace."""

from __future__ import annotations

import asyncio
import importlib
import logging

import httpx2

from chatd.errors import Upstream
from chatd.providers.config import ProviderConfig
from chatd.providers.registry import PROVIDERS
from chatd.providers.wire import DiscoveredModel, HttpFailure

log = logging.getLogger(__name__)

DISCOVERY_TIMEOUT_S = 15.0
# A listing is for a person picking models; a provider with thousands (OpenRouter) is cut here.
MAX_MODELS = 2000


class ProviderCheckFailed(Upstream):
    """The provider could not be reached or refused; `message` says why, for a person."""

    code = "provider_check_failed"

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message, {"status": status} if status is not None else None)
        self.status = status


async def list_models(provider: ProviderConfig, *, timeout: float = DISCOVERY_TIMEOUT_S) -> list[DiscoveredModel]:
    """The provider's models, sorted by id. Raises ProviderCheckFailed with a readable reason."""
    spec = PROVIDERS.get(provider.kind)
    if spec is None:
        raise ProviderCheckFailed(f"Unknown provider kind {provider.kind!r}.")
    if spec.needs_key and not provider.api_key:
        raise ProviderCheckFailed(f"The {provider.kind} provider needs an API key.")
    if spec.needs_base_url and not provider.base_url:
        example = f" (for example {spec.example_base_url})" if spec.example_base_url else ""
        raise ProviderCheckFailed(f"An {spec.label} provider needs a base URL{example}.")
    where = provider.base_url or f"the {provider.kind} API"
    # Only this provider's SDK, imported on first use and off the event loop: an import is
    # seconds of CPU on a busy host (all three took ~15 s), and the server must keep answering.
    await asyncio.to_thread(importlib.import_module, spec.wire.sdk_module)
    try:
        models = await spec.wire.list_models(provider, timeout)
    except HttpFailure as exc:
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
