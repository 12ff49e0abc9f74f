"""The Chat Completions request body without the openai SDK's type-driven walk over it.

`AsyncCompletions.create` passes the body it assembles (model, messages, tools, settings, in its own
key order) through `async_maybe_transform`, which walks every message against the union of
message TypedDicts (six of them, each key looked up in its type hints) to rename aliased keys,
format dates and files, dump pydantic models and drop omitted values. For a body of plain JSON
values it changes nothing but the omitted keys at the top: the chat parameter types declare no
alias and no format (tests/providers/test_openai_body.py checks both, and requires the same body
as the SDK's transform for the histories pydantic-ai builds). It cost ~1.4 ms of CPU for a
10-message history, per model call, growing with the history: 6-7% of the daemon's CPU at 100
concurrent chats (issue 15).

`install()` puts `plain_or_transform` in place of the SDK's transform for that one call site (the
module global `create` looks up at call time). A body that is not plain JSON (a pydantic model,
an iterator, an omitted value below the top, any other type) goes through the SDK's transform as
before, as does every other expected type.
"""

from __future__ import annotations

from typing import Any, Final

from openai._types import NotGiven, Omit
from openai._utils import async_maybe_transform
from openai.resources.chat.completions import completions as _completions
from openai.types.chat import completion_create_params

_PARAMS: Final = (
    completion_create_params.CompletionCreateParamsStreaming,
    completion_create_params.CompletionCreateParamsNonStreaming,
)
_SCALARS: Final = (str, int, float, bool, type(None))


def is_plain(value: object) -> bool:
    """Whether `value` is JSON made of exactly dicts (str keys), lists and scalars: what the
    SDK's transform returns unchanged (bar the top's omitted keys)."""
    kind = type(value)
    if kind in _SCALARS:
        return True
    if kind is list:
        return all(is_plain(v) for v in value)  # type: ignore[attr-defined]
    if kind is dict:
        return all(type(k) is str and is_plain(v) for k, v in value.items())  # type: ignore[attr-defined]
    return False


def _given(value: object) -> bool:
    return not isinstance(value, NotGiven | Omit)


async def plain_or_transform(data: object, expected_type: object) -> Any:
    """`async_maybe_transform`, skipping the walk for a plain Chat Completions body."""
    if expected_type in _PARAMS and type(data) is dict:
        body = {k: v for k, v in data.items() if _given(v)}
        if is_plain(body):
            return body
    return await async_maybe_transform(data, expected_type)


def install() -> None:
    """Idempotent: the first call replaces the SDK's transform at `create`'s call site."""
    if getattr(_completions, "async_maybe_transform", None) is async_maybe_transform:
        _completions.async_maybe_transform = plain_or_transform  # type: ignore[attr-defined]


def installed() -> bool:
    return getattr(_completions, "async_maybe_transform", None) is plain_or_transform
