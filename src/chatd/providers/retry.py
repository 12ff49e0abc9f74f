"""Which model-call failures are worth retrying, and how long to wait (reference §5.5).

Classification looks at exception types and HTTP status first (pydantic-ai's categorised errors,
the provider SDKs' status errors, httpx2 transport errors, our own stream checks) and falls back
to matching the message text only when nothing structured is known.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import httpx2
from pydantic_ai import exceptions as pa

RetryKind = Literal[
    "rate_limit",
    "overloaded",
    "unavailable",
    "server_error",
    "connection",
    "timeout",
    "truncated",
    "stall",
    "auth",
    "quota",
    "context_length",
    "not_found",
    "invalid_request",
    "cancelled",
    "unknown",
]

BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0
# A provider asking for more than this is treated as asking for this: a chat should not sit
# silent for an hour because of one header; the attempt cap still bounds the total.
RETRY_AFTER_CAP_S = 300.0
RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})


class TruncatedStream(Exception):
    """The stream ended without its terminal event: the answer is not complete."""


class StallTimeout(Exception):
    """No chunk arrived from the provider for `stall_timeout` seconds."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"model stream stalled: no data for {seconds:g}s")
        self.seconds = seconds


@dataclass(frozen=True, slots=True)
class RetryDecision:
    retryable: bool
    kind: RetryKind
    status_code: int | None = None
    retry_after_s: float | None = None
    message: str = ""


_NEVER_TEXT: tuple[tuple[str, RetryKind], ...] = (
    ("context canceled", "cancelled"),
    ("context deadline exceeded", "timeout"),
    ("context length exceeded", "context_length"),
    ("context_length_exceeded", "context_length"),
    ("context_exceeded", "context_length"),
    ("maximum context length", "context_length"),
    ("prompt is too long", "context_length"),
    ("invalid api key", "auth"),
    ("invalid_api_key", "auth"),
    ("authentication", "auth"),
    ("unauthorized", "auth"),
    ("forbidden", "auth"),
    ("invalid model", "not_found"),
    ("model not found", "not_found"),
    ("model_not_found", "not_found"),
    ("quota", "quota"),
    ("billing", "quota"),
)
_RETRY_TEXT: tuple[tuple[str, RetryKind], ...] = (
    ("overloaded", "overloaded"),
    ("rate limit", "rate_limit"),
    ("rate_limit", "rate_limit"),
    ("too many requests", "rate_limit"),
    ("server error", "server_error"),
    ("status 500", "server_error"),
    ("status 502", "server_error"),
    ("status 503", "unavailable"),
    ("status 529", "overloaded"),
    ("service unavailable", "unavailable"),
    ("unavailable", "unavailable"),
    ("connection reset", "connection"),
    ("connection refused", "connection"),
    ("broken pipe", "connection"),
    ("eof", "connection"),
    ("timeout", "timeout"),
    ("timed out", "timeout"),
    ("ended without a `finish_reason`", "truncated"),
)


def _status_kind(status: int) -> RetryKind:
    if status == 429:
        return "rate_limit"
    if status == 529:
        return "overloaded"
    if status in (502, 503, 504):
        return "unavailable"
    if status >= 500:
        return "server_error"
    if status in (401, 403):
        return "auth"
    if status == 402:
        return "quota"
    if status == 404:
        return "not_found"
    if status in (408, 425):
        return "timeout"
    return "invalid_request"


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        if (ms := lowered.get("retry-after-ms")) is not None:
            return max(float(ms) / 1000, 0.0)
        if (s := lowered.get("retry-after")) is not None:
            return max(float(s), 0.0)
    except ValueError:
        return None
    return None


def _from_status(status: int, retry_after: float | None, message: str) -> RetryDecision:
    return RetryDecision(status in RETRYABLE_STATUS, _status_kind(status), status, retry_after, message)


def _structured(exc: BaseException) -> RetryDecision | None:
    # Imported here, not at start (they cost a second or more of start-up CPU); by the time a
    # model call failed, its SDK is loaded anyway.
    import anthropic
    import openai

    """Decide from the exception's type and status alone; None when they say nothing."""
    msg = str(exc) or type(exc).__name__
    if isinstance(exc, asyncio.CancelledError):
        return RetryDecision(False, "cancelled", message=msg)
    if isinstance(exc, TruncatedStream):
        return RetryDecision(True, "truncated", message=msg)
    if isinstance(exc, StallTimeout):
        return RetryDecision(True, "stall", message=msg)
    if isinstance(exc, pa.ModelAPIError):
        status = exc.status_code if isinstance(exc, pa.ModelHTTPError) else None
        after = exc.retry_after
        # Order matters: the category classes overlap (an overloaded error is also "unavailable").
        categories: tuple[tuple[type[pa.ModelAPIError], bool, RetryKind], ...] = (
            (pa.ModelQuotaExceededError, False, "quota"),
            (pa.ModelContextWindowExceededError, False, "context_length"),
            (pa.ModelAuthenticationError, False, "auth"),
            (pa.ModelNotFoundError, False, "not_found"),
            (pa.ModelRequestRejectedError, False, "invalid_request"),
            (pa.ModelRateLimitError, True, "rate_limit"),
            (pa.ModelOverloadedError, True, "overloaded"),
            (pa.ModelUnavailableError, True, "unavailable"),
            (pa.ModelServerError, True, "server_error"),
            (pa.ModelTimeoutError, True, "timeout"),
            (pa.ModelConnectionError, True, "connection"),
            (pa.ModelRequestTimeout, True, "timeout"),
        )
        for cls, retryable, kind in categories:
            if isinstance(exc, cls):
                return RetryDecision(retryable, kind, status, after, msg)
        if status is not None:
            return _from_status(status, after, msg)
        return None
    if isinstance(exc, openai.APIStatusError | anthropic.APIStatusError):
        return _from_status(exc.status_code, _retry_after(exc.response.headers), msg)
    if isinstance(exc, openai.APITimeoutError | anthropic.APITimeoutError):
        return RetryDecision(True, "timeout", message=msg)
    if isinstance(exc, openai.APIConnectionError | anthropic.APIConnectionError):
        return RetryDecision(True, "connection", message=msg)
    if isinstance(exc, httpx2.HTTPStatusError):
        return _from_status(exc.response.status_code, _retry_after(exc.response.headers), msg)
    if isinstance(exc, httpx2.TimeoutException):
        return RetryDecision(True, "timeout", message=msg)
    if isinstance(exc, httpx2.TransportError):
        return RetryDecision(True, "connection", message=msg)
    if isinstance(exc, ConnectionError):
        return RetryDecision(True, "connection", message=msg)
    return None


def classify(exc: BaseException) -> RetryDecision:
    """Whether retrying the same model call may succeed, and why."""
    # Walk the cause chain: SDKs and pydantic-ai wrap transport errors, and the innermost
    # structured answer is the most specific one.
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        decision = _structured(current)
        if decision is not None:
            return RetryDecision(
                decision.retryable, decision.kind, decision.status_code, decision.retry_after_s, str(exc) or decision.message
            )
        if current.__cause__ is not None:
            current = current.__cause__
        else:
            current = None if current.__suppress_context__ else current.__context__
    return classify_text(str(exc) or type(exc).__name__)


def classify_text(message: str) -> RetryDecision:
    text = message.lower()
    for needle, kind in _NEVER_TEXT:
        if needle in text:
            return RetryDecision(False, kind, message=message)
    for needle, kind in _RETRY_TEXT:
        if needle in text:
            return RetryDecision(True, kind, message=message)
    return RetryDecision(False, "unknown", message=message)


def backoff_delay(attempt: int, retry_after_s: float | None = None, jitter: float = 0.5) -> float:
    """Seconds to wait before retry number `attempt` (0-based).

    1 s x 2^attempt capped at 60 s, spread by +-20 % (`jitter` in [0, 1)) so many chats hit by the
    same outage do not retry in lockstep; never shorter than the provider's Retry-After.
    """
    base: float = min(BACKOFF_BASE_S * float(2 ** min(attempt, 16)), BACKOFF_CAP_S)
    delay = min(base * (0.8 + 0.4 * jitter), BACKOFF_CAP_S)
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, RETRY_AFTER_CAP_S))
    return delay
