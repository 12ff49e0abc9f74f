"""Model-facing tool names for MCP tools: `slug__tool`, safe for every provider, never ambiguous.

Providers accept tool names matching `^[a-zA-Z0-9_-]{1,64}$` (OpenAI's rule is the strictest).
MCP tool names may be longer or contain dots, slashes or any Unicode, so a name that does not
fit is rewritten: unsafe characters become `_`, and it is truncated with a short hash of the
original appended so two different tools never end up with the same name. Callers map names
back through the lookup table this module builds, never by splitting on `__` (a tool name may
itself contain `__`).
"""

from __future__ import annotations

import hashlib
import re

NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_NAME_LEN = 64
SEPARATOR = "__"
_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")
_HASH_LEN = 8


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:_HASH_LEN]


def sanitize_tool_name(slug: str, tool_name: str) -> str:
    """The preferred exposed name of `tool_name` on server `slug` (may collide; see ToolNamer)."""
    full = f"{slug}{SEPARATOR}{tool_name}"
    if NAME_RE.match(full):
        return full
    # Hash the original, not the cleaned text: "a.b" and "a/b" clean to the same string.
    suffix = "_" + _short_hash(full)
    cleaned = _UNSAFE.sub("_", full)
    return cleaned[: MAX_NAME_LEN - len(suffix)] + suffix


class ToolNamer:
    """Assigns unique exposed names across all servers of one connection set.

    The same (slug, tool) pair always gets the same name within a namer, and the result depends
    only on the order of assignment, which follows configuration and listing order, so names are
    stable from one turn to the next for an unchanged tool list.
    """

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], str] = {}
        self._taken: dict[str, tuple[str, str]] = {}

    def assign(self, slug: str, tool_name: str) -> str:
        key = (slug, tool_name)
        if (name := self._by_key.get(key)) is not None:
            return name
        name = sanitize_tool_name(slug, tool_name)
        attempt = 0
        while name in self._taken:
            # A collision needs a different but deterministic name; salt the hash with a counter.
            attempt += 1
            suffix = "_" + _short_hash(f"{slug}{SEPARATOR}{tool_name}#{attempt}")
            name = (
                _UNSAFE.sub("_", f"{slug}{SEPARATOR}{tool_name}")[: MAX_NAME_LEN - len(suffix)]
                + suffix
            )
        self._by_key[key] = name
        self._taken[name] = key
        return name

    def lookup(self, exposed_name: str) -> tuple[str, str] | None:
        """(slug, original tool name) for an exposed name, or None."""
        return self._taken.get(exposed_name)
