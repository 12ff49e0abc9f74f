"""Token usage normalisation and cost in micro-dollars (reference §9.2)."""

from __future__ import annotations

from pydantic_ai.usage import RequestUsage

from chatd.domain.chat import Usage
from chatd.providers.config import Pricing


def usage_from_pydantic(usage: RequestUsage) -> Usage:
    """Domain usage from pydantic-ai's.

    pydantic-ai counts cached tokens inside `input_tokens`; chatd stores the uncached part in
    `input_tokens` (as Anthropic reports it) so each category is billed once at its own price.
    """
    cached = usage.cache_read_tokens + usage.cache_write_tokens
    return Usage(
        input_tokens=max(usage.input_tokens - cached, 0),
        output_tokens=usage.output_tokens,
        total_tokens=usage.input_tokens + usage.output_tokens,
        reasoning_tokens=usage.output_reasoning_tokens,
        cache_creation_tokens=usage.cache_write_tokens,
        cache_read_tokens=usage.cache_read_tokens,
    )


def context_tokens(usage: Usage) -> int:
    """Tokens the prompt occupied in the context window for one step."""
    tokens = usage.input_tokens + usage.cache_read_tokens + usage.cache_creation_tokens
    return tokens or max(usage.total_tokens - usage.output_tokens, 0)


def cost_micros(usage: Usage, pricing: Pricing | None) -> int | None:
    """Cost of one model call in micro-dollars, rounded up; None when it cannot be priced.

    None when no price is set, or when every category that used tokens lacks a price (so the
    answer would be a misleading 0). Zero tokens with a price set cost 0.
    """
    if pricing is None or not pricing.is_set:
        return None
    output = usage.output_tokens
    reasoning = 0
    if pricing.reasoning is not None:
        # Reasoning is included in output tokens; bill it once, at its own price.
        reasoning = min(usage.reasoning_tokens, output)
        output -= reasoning
    categories = (
        (usage.input_tokens, pricing.input),
        (output, pricing.output),
        (usage.cache_read_tokens, pricing.cache_read),
        (usage.cache_creation_tokens, pricing.cache_write),
        (reasoning, pricing.reasoning),
    )
    used = [(tokens, price) for tokens, price in categories if tokens > 0]
    if used and all(price is None for _, price in used):
        return None
    total = sum(tokens * price for tokens, price in used if price is not None)
    return -(-total // 1_000_000)
