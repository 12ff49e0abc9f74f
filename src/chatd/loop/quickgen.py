"""Short side calls: chat titles and push-notification summaries (reference §11)."""

from __future__ import annotations

import asyncio
import logging
import re

from pydantic_ai import messages as pm
from pydantic_ai.direct import model_request
from pydantic_ai.models import Model
from pydantic_ai.settings import ModelSettings

from chatd.domain.titles import TITLE_MAX_CHARS, fallback_title
from chatd.loop.prompts import (
    FALLBACK_PUSH_BODY,
    PUSH_SYSTEM_PROMPT,
    TITLE_SYSTEM_PROMPT,
)
from chatd.providers.models import ResolvedModel, sdk_retries

log = logging.getLogger(__name__)

QUICK_TIMEOUT_S = 30.0
QUICK_MAX_TOKENS = 256
# Side calls keep the SDKs' own default retries (the turn's client makes none: the loop retries).
QUICK_SDK_RETRIES = 2
PUSH_MAX_CHARS = 160
_WS = re.compile(r"\s+")
# Models often answer `Title: "Foo"` (or `**Chat title:** Foo`, `# Foo`) although the prompt asks
# for the bare title: the label, markdown emphasis and the quotes are not part of it.
_TITLE_LABEL = re.compile(r"^(?:#+\s*)?[*_]*\s*(?:(?:chat|suggested|short)\s+)?title\s*[*_]*\s*[:\-–—]\s*[*_]*\s*", re.IGNORECASE)
_QUOTES = "\"'`“”‘’«»*"


def normalize_title(raw: str) -> str:
    title = _WS.sub(" ", raw).strip()
    # Repeated: a quoted label (`"Title: Foo"`) and a labelled quote (`Title: "Foo"`) both occur.
    for _ in range(3):
        before = title
        title = title.strip(_QUOTES).strip()
        title = _TITLE_LABEL.sub("", title, count=1).strip()
        title = title.lstrip("#").strip()
        if title == before:
            break
    title = title.rstrip(".!?:;,").strip().strip(_QUOTES).strip()
    return _cap(title, TITLE_MAX_CHARS)


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


async def _quick(model: ResolvedModel | Model, system: str, user: str, timeout_s: float) -> str:
    settings = ModelSettings(max_tokens=QUICK_MAX_TOKENS)
    target = model
    if isinstance(model, ResolvedModel):
        target = model.model
        if "temperature" in model.settings:
            settings["temperature"] = model.settings["temperature"]
    assert isinstance(target, Model)
    if sdk_retries(target) == 0:
        settings["max_retries"] = QUICK_SDK_RETRIES
    async with asyncio.timeout(timeout_s):
        response = await model_request(
            target,
            [pm.ModelRequest(parts=[pm.SystemPromptPart(system), pm.UserPromptPart(user)])],
            model_settings=settings,
        )
    return " ".join(p.content for p in response.parts if isinstance(p, pm.TextPart)).strip()


async def generate_title(model: ResolvedModel | Model, first_user_text: str, *, timeout_s: float = QUICK_TIMEOUT_S) -> str:
    """A 2-8 word title for the chat; the fallback title when the call fails or says nothing."""
    fallback = fallback_title(first_user_text)
    if not first_user_text.strip():
        return fallback
    try:
        title = normalize_title(await _quick(model, TITLE_SYSTEM_PROMPT, first_user_text[:4000], timeout_s))
    except Exception:
        # Titles are cosmetic; a failure must never affect the turn.
        log.warning("title generation failed", exc_info=True)
        return fallback
    return title or fallback


async def generate_push_summary(
    model: ResolvedModel | Model, chat_title: str, final_text: str, *, timeout_s: float = QUICK_TIMEOUT_S
) -> str:
    """One short sentence for the completion notification; a fixed text when that fails."""
    if not final_text.strip():
        return FALLBACK_PUSH_BODY
    try:
        body = await _quick(model, PUSH_SYSTEM_PROMPT, f"Chat title: {chat_title}\n\n{final_text[-4000:]}", timeout_s)
    except Exception:
        log.warning("push summary generation failed", exc_info=True)
        return FALLBACK_PUSH_BODY
    body = _WS.sub(" ", body).strip()
    return _cap(body, PUSH_MAX_CHARS) if body else FALLBACK_PUSH_BODY
