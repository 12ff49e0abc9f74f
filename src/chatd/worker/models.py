"""Model resolution for a turn: the chat's model config (or the default when it is gone), the
provider record it names and that provider's key (a stored key wins over the deployment's key of
its kind), as plain values for `chatd.providers`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from chatd.domain.config import ModelConfigRecord
from chatd.errors import InvalidInput, NotFound
from chatd.providers import (
    ModelSpec,
    Pricing,
    ProviderClients,
    ProviderConfig,
    ProviderLease,
    ResolvedModel,
    deployment_keys,
    quick_model_name,
    resolve_model,
)
from chatd.providers.config import DEFAULT_MAX_OUTPUT_TOKENS
from chatd.providers.registry import PROVIDERS
from chatd.settings import Settings
from chatd.worker.config_cache import ConfigCache


class NoModelConfigured(InvalidInput):
    code = "no_model_configured"


@dataclass(frozen=True, slots=True)
class TurnModel:
    config: ModelConfigRecord
    provider: ProviderConfig
    resolved: ResolvedModel
    # The turn's hold on the shared SDK client; released when the turn is over.
    lease: ProviderLease

    def quick(self) -> ResolvedModel:
        """The cheap model for titles and push summaries on the same provider, else the chat's own."""
        name = quick_model_name(self.provider.kind)
        if name is None or name == self.resolved.spec.model:
            return self.resolved
        spec = ModelSpec(model=name, context_limit=self.resolved.spec.context_limit, max_output_tokens=256, compression_threshold=0)
        return resolve_model(self.provider, spec, model=self.lease.model(name))


async def load_model_config(reads: ConfigCache, config_id: uuid.UUID | None) -> ModelConfigRecord:
    if config_id is not None:
        try:
            cfg = await reads.model_config(config_id)
            if cfg.enabled:
                return cfg
        except NotFound:
            pass
    default = await reads.default_model_config()
    if default is None:
        raise NoModelConfigured("No model is configured: an admin must add a model config (POST /api/v1/model-configs).")
    return default


async def resolve_turn_model(
    reads: ConfigCache, settings: Settings, clients: ProviderClients, config_id: uuid.UUID | None
) -> TurnModel:
    cfg = await load_model_config(reads, config_id)
    stored = await reads.provider(cfg.provider_id)
    kind = stored.provider
    if kind not in PROVIDERS:
        raise NoModelConfigured(f"Unknown provider kind {kind!r} of the provider {stored.name!r}.")
    if not stored.enabled:
        raise NoModelConfigured(f"The provider {stored.name!r} is disabled.")
    # The deployment's key of the kind (CHATD_OPENAI_API_KEY, ...) serves every provider of that
    # kind that has no key of its own (docs/configuration.md).
    api_key = stored.api_key or deployment_keys(settings).get(kind) or None
    provider = ProviderConfig(kind=kind, api_key=api_key, base_url=stored.base_url, source=stored.id)
    o, p = cfg.options, cfg.pricing
    spec = ModelSpec(
        model=cfg.model,
        context_limit=cfg.context_limit,
        compression_threshold=cfg.compression_threshold,
        max_output_tokens=o.max_output_tokens or min(DEFAULT_MAX_OUTPUT_TOKENS, settings.max_output_tokens),
        temperature=o.temperature,
        reasoning_effort=o.reasoning_effort,
        web_search=o.web_search,
        pricing=Pricing(input=p.input, output=p.output, cache_read=p.cache_read, cache_write=p.cache_write, reasoning=p.reasoning),
    )
    lease = await clients.lease(provider)
    try:
        resolved = resolve_model(provider, spec, model=lease.model(spec.model))
    except BaseException:
        await lease.release()
        raise
    return TurnModel(cfg, provider, resolved, lease)
