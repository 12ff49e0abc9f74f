"""MCP Apps (the `io.modelcontextprotocol/ui` extension, 2026-01-26): which tools carry a view,
who may call them (the model, the app, or both), and how a view's HTML is read and fenced.

A tool names its view in `_meta.ui.resourceUri` (a `ui://` resource on the same server); the web
UI shows it in the tool card, and the view may call the tools of its own server back through
chatd. The view's document is served with a Content-Security-Policy built here from what the
resource declares in `_meta.ui.csp`: nothing is allowed that the resource did not ask for.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

import mcp_types as types

EXTENSION_ID = "io.modelcontextprotocol/ui"
APP_MIME_TYPE = "text/html;profile=mcp-app"
# What the client announces under `capabilities.extensions` (the view formats it can show).
CAPABILITY: dict[str, Any] = {"mimeTypes": [APP_MIME_TYPE]}

_DEFAULT_VISIBILITY = frozenset({"model", "app"})
# A CSP source as the extension lets a server declare it: a scheme-qualified origin, optionally
# with a `*.` subdomain wildcard and a port. Anything else (keywords, paths, `;`) is dropped, so a
# server cannot smuggle a directive or 'unsafe-eval' into the policy.
_ORIGIN = re.compile(r"^(https?|wss?)://(\*\.)?[A-Za-z0-9.-]+(:\d{1,5})?$")


class AppResourceError(Exception):
    """The tool's view cannot be shown (missing, not HTML, too large); the message says why."""


def _ui_meta(meta: Any) -> dict[str, Any]:
    if not isinstance(meta, dict):
        return {}
    ui = meta.get("ui")
    return ui if isinstance(ui, dict) else {}


def _tool_meta(tool: types.Tool) -> dict[str, Any]:
    return tool.meta or {}


def resource_uri(tool: types.Tool) -> str | None:
    """The tool's view (`_meta.ui.resourceUri`, or the deprecated flat `_meta["ui/resourceUri"]`)."""
    meta = _tool_meta(tool)
    uri = _ui_meta(meta).get("resourceUri", meta.get("ui/resourceUri"))
    return uri if isinstance(uri, str) and uri.startswith("ui://") else None


def visibility(tool: types.Tool) -> frozenset[str]:
    value = _ui_meta(_tool_meta(tool)).get("visibility")
    if not isinstance(value, list):
        return _DEFAULT_VISIBILITY
    return frozenset(v for v in value if isinstance(v, str))


def for_model(tool: types.Tool) -> bool:
    """The spec: a tool whose visibility leaves out "model" is not in the agent's tool list."""
    return "model" in visibility(tool)


def for_app(tool: types.Tool) -> bool:
    """The spec: an app's tools/call of a tool whose visibility leaves out "app" is refused."""
    return "app" in visibility(tool)


@dataclass(frozen=True, slots=True)
class AppView:
    """A view ready to serve: its HTML and the policy its document runs under."""

    html: str
    csp: str
    prefers_border: bool | None


def _sources(csp: dict[str, Any], key: str) -> list[str]:
    value = csp.get(key)
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, str) and _ORIGIN.match(v)]


def content_security_policy(ui: dict[str, Any]) -> str:
    """The view's policy: the extension's restrictive default, widened only by the origins the
    resource declares (`connectDomains`, `resourceDomains`, `frameDomains`, `baseUriDomains`).

    The document is also a sandbox without same-origin (`sandbox allow-scripts`), so even opened
    on its own it cannot read chatd's storage or call chatd's API as the user."""
    csp = ui.get("csp") if isinstance(ui.get("csp"), dict) else {}
    assert isinstance(csp, dict)
    connect = _sources(csp, "connectDomains")
    resources = _sources(csp, "resourceDomains")
    frames = _sources(csp, "frameDomains")
    bases = _sources(csp, "baseUriDomains")

    def directive(name: str, base: list[str], extra: list[str]) -> str:
        return " ".join([name, *base, *extra]) if base or extra else f"{name} 'none'"

    return "; ".join(
        (
            "default-src 'none'",
            directive("script-src", ["'unsafe-inline'"], resources),
            directive("style-src", ["'unsafe-inline'"], resources),
            directive("img-src", ["data:"], resources),
            directive("font-src", ["data:"], resources),
            directive("media-src", ["data:"], resources),
            directive("connect-src", [], connect),
            directive("frame-src", [], frames),
            directive("base-uri", [], bases),
            "object-src 'none'",
            "form-action 'none'",
            "frame-ancestors 'self'",
            "sandbox allow-scripts",
        )
    )


def check_size(result: types.ReadResourceResult, uri: str, max_bytes: int) -> None:
    """A resources/read answer an app asked for is relayed whole or not at all: raises
    AppResourceError when its contents (text as UTF-8, blobs decoded) pass `max_bytes`."""
    size = 0
    for content in result.contents:
        if isinstance(content, types.TextResourceContents):
            size += len(content.text.encode())
        else:
            size += len(content.blob) * 3 // 4
    if size > max_bytes:
        raise AppResourceError(f"the resource {uri} is {size} bytes, over the mcp_app_max_bytes limit of {max_bytes}")


def view_from(result: types.ReadResourceResult, uri: str, max_bytes: int) -> AppView:
    """The view in a resources/read answer: HTML (`text` or base64 `blob`) up to `max_bytes`."""
    for content in result.contents:
        if str(content.uri) != uri:
            continue
        mime = (content.mime_type or "").replace(" ", "").lower()
        if not mime.startswith("text/html"):
            raise AppResourceError(f"the view {uri} is {content.mime_type or 'untyped'}, not {APP_MIME_TYPE}")
        if isinstance(content, types.TextResourceContents):
            raw = content.text.encode()
        else:
            try:
                raw = base64.b64decode(content.blob, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise AppResourceError(f"the view {uri} is not valid base64") from exc
        if len(raw) > max_bytes:
            raise AppResourceError(
                f"the view {uri} is {len(raw)} bytes, over the mcp_app_max_bytes limit of {max_bytes}"
            )
        ui = _ui_meta(content.meta or {})
        border = ui.get("prefersBorder")
        return AppView(
            raw.decode("utf-8", errors="replace"),
            content_security_policy(ui),
            border if isinstance(border, bool) else None,
        )
    raise AppResourceError(f"the server returned no content for {uri}")
