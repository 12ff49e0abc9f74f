"""Model resolution: provider keys and model configs -> pydantic-ai models, cost, retry classification,
and the readers that turn a model's stream into chatd's parts (`providers.streams`).

Independent of the database: callers hand in plain `ProviderConfig` / `ModelSpec` values.
"""

from chatd.providers.clients import ProviderClients, ProviderLease
from chatd.providers.config import ModelSpec, Pricing, ProviderConfig
from chatd.providers.cost import context_tokens, cost_micros, usage_from_pydantic
from chatd.providers.models import (
    ProviderNotConfigured,
    ResolvedModel,
    build_model,
    build_provider,
    check_provider,
    model_settings,
    native_tools,
    quick_model_name,
    resolve_model,
)
from chatd.providers.registry import (
    KINDS,
    PROVIDERS,
    ProviderSpec,
    UnknownProvider,
    deployment_keys,
    provider_spec,
)
from chatd.providers.retry import (
    RetryDecision,
    RetryKind,
    StallTimeout,
    TruncatedStream,
    backoff_delay,
    classify,
)

__all__ = [
    "KINDS",
    "PROVIDERS",
    "ModelSpec",
    "Pricing",
    "ProviderClients",
    "ProviderConfig",
    "ProviderLease",
    "ProviderNotConfigured",
    "ProviderSpec",
    "ResolvedModel",
    "RetryDecision",
    "RetryKind",
    "StallTimeout",
    "TruncatedStream",
    "UnknownProvider",
    "backoff_delay",
    "build_model",
    "build_provider",
    "check_provider",
    "classify",
    "context_tokens",
    "cost_micros",
    "deployment_keys",
    "model_settings",
    "native_tools",
    "provider_spec",
    "quick_model_name",
    "resolve_model",
    "usage_from_pydantic",
]
