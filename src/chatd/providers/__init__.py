"""Model resolution: provider keys and model configs -> pydantic-ai models, cost, retry classification.

Independent of the database: callers hand in plain `ProviderConfig` / `ModelSpec` values.
"""

from chatd.providers.clients import ProviderClients, ProviderLease
from chatd.providers.config import ModelSpec, Pricing, ProviderConfig, ProviderKind
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
from chatd.providers.retry import (
    RetryDecision,
    RetryKind,
    StallTimeout,
    TruncatedStream,
    backoff_delay,
    classify,
)

__all__ = [
    "ModelSpec",
    "Pricing",
    "ProviderClients",
    "ProviderConfig",
    "ProviderKind",
    "ProviderLease",
    "ProviderNotConfigured",
    "ResolvedModel",
    "RetryDecision",
    "RetryKind",
    "StallTimeout",
    "TruncatedStream",
    "backoff_delay",
    "build_model",
    "build_provider",
    "check_provider",
    "classify",
    "context_tokens",
    "cost_micros",
    "model_settings",
    "native_tools",
    "quick_model_name",
    "resolve_model",
    "usage_from_pydantic",
]
