"""Plain values describing a provider and a model config; built by the service from the database."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

DEFAULT_MAX_OUTPUT_TOKENS = 32_000
DEFAULT_COMPRESSION_THRESHOLD = 70


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    # A key of `providers.registry.PROVIDERS`.
    kind: str
    api_key: str | None = None
    base_url: str | None = None
    # The provider record it was read from (several may share a kind); None: built for one call.
    source: uuid.UUID | None = None

    def __repr__(self) -> str:
        # Keys end up in logs through reprs of larger objects; never print them.
        return (
            f"ProviderConfig(kind={self.kind!r}, base_url={self.base_url!r}, api_key={'***' if self.api_key else None}, "
            f"source={self.source!r})"
        )


@dataclass(frozen=True, slots=True)
class Pricing:
    """Prices in micro-dollars per million tokens ($3 / Mtok = 3_000_000); None = not priced.

    With this unit, tokens x price / 1e6 is the cost in micro-dollars.
    """

    input: int | None = None
    output: int | None = None
    cache_read: int | None = None
    cache_write: int | None = None
    # Reasoning tokens are part of output tokens; when set, they are billed at this price instead.
    reasoning: int | None = None

    @property
    def is_set(self) -> bool:
        return any(
            p is not None for p in (self.input, self.output, self.cache_read, self.cache_write, self.reasoning)
        )


@dataclass(frozen=True, slots=True)
class ModelSpec:
    model: str
    context_limit: int
    # Percent of context_limit at which the history is summarised; 0 = never.
    compression_threshold: int = DEFAULT_COMPRESSION_THRESHOLD
    max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS
    temperature: float | None = None
    # "none" | "minimal" | "low" | "medium" | "high" | "xhigh" | "max"; None = the model's default.
    reasoning_effort: str | None = None
    web_search: bool = False
    pricing: Pricing = field(default_factory=Pricing)
