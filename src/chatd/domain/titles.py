"""The fallback chat title (REFERENCE §11.1), shared by chat creation and the title generator."""

from __future__ import annotations

FALLBACK_TITLE = "New Chat"
TITLE_MAX_CHARS = 80
TITLE_FALLBACK_WORDS = 6


def fallback_title(text: str) -> str:
    """First 6 words (with an ellipsis when cut), at most 80 characters; "New Chat" when empty."""
    words = text.split()
    if not words:
        return FALLBACK_TITLE
    title = " ".join(words[:TITLE_FALLBACK_WORDS])
    if len(words) > TITLE_FALLBACK_WORDS:
        title += "…"
    return title if len(title) <= TITLE_MAX_CHARS else title[: TITLE_MAX_CHARS - 1].rstrip() + "…"
