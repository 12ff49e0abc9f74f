"""Faithful conversion of an MCP `CallToolResult` into a chatd `ToolResult`.

Every content item is kept: text is joined, images, audio and binary resources become file parts
(the bytes go to the files table through `store_file`), text resources and resource links are
described, structured content is preserved. The model sees a plain string when the result is
text only, and a JSON object otherwise. Nothing is cut unless the caller asks for `max_chars`: the
agent loop stores a result too long for the model as a file instead (`chatd.tools.output`).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import mimetypes
from collections.abc import Awaitable, Callable
from typing import Any

import mcp_types as types

from chatd.domain.parts import FilePart, Part
from chatd.domain.tools import ToolResult

log = logging.getLogger(__name__)

StoreFile = Callable[[bytes, str, str], Awaitable[str]]
"""store_file(data, media_type, name) -> file id; persists bytes produced by a tool."""


def _file_name(tool_name: str, index: int, media_type: str) -> str:
    ext = mimetypes.guess_extension(media_type.split(";")[0].strip()) or ".bin"
    return f"{tool_name}-{index}{ext}"


async def _keep_bytes(
    b64: str,
    media_type: str,
    name: str,
    store_file: StoreFile | None,
    files: list[Part],
) -> dict[str, Any]:
    """Decode and store one binary item; return how the model should see it."""
    described: dict[str, Any] = {"media_type": media_type, "name": name}
    try:
        data = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        described["error"] = f"decode error: {exc}"
        return described
    described["size"] = len(data)
    if store_file is None:
        described["note"] = "not stored"
        return described
    try:
        file_id = await store_file(data, media_type, name)
    except Exception as exc:  # a failing file store costs this attachment, not the tool result
        log.warning("storing an MCP tool file failed: %s", exc, exc_info=True)
        described["error"] = "could not be stored"
        return described
    files.append(FilePart(file_id=file_id, media_type=media_type, name=name))
    described["file_id"] = file_id
    return described


async def convert_result(
    result: types.CallToolResult,
    *,
    tool_name: str,
    store_file: StoreFile | None,
    max_chars: int | None = None,
) -> ToolResult:
    texts: list[str] = []
    attachments: list[dict[str, Any]] = []
    files: list[Part] = []
    for index, item in enumerate(result.content):
        if isinstance(item, types.TextContent):
            texts.append(item.text)
        elif isinstance(item, types.ImageContent | types.AudioContent):
            name = _file_name(tool_name, index, item.mime_type)
            kept = await _keep_bytes(item.data, item.mime_type, name, store_file, files)
            attachments.append({"type": item.type, **kept})
        elif isinstance(item, types.EmbeddedResource):
            res = item.resource
            entry: dict[str, Any] = {"type": "resource", "uri": res.uri}
            if res.mime_type:
                entry["media_type"] = res.mime_type
            if isinstance(res, types.TextResourceContents):
                entry["text"] = res.text
            else:
                media_type = res.mime_type or "application/octet-stream"
                name = _resource_name(res.uri) or _file_name(tool_name, index, media_type)
                entry.update(await _keep_bytes(res.blob, media_type, name, store_file, files))
            attachments.append(entry)
        elif isinstance(item, types.ResourceLink):
            link: dict[str, Any] = {"type": "resource_link", "uri": item.uri, "name": item.name}
            for key, value in (
                ("title", item.title),
                ("description", item.description),
                ("media_type", item.mime_type),
                ("size", item.size),
            ):
                if value is not None:
                    link[key] = value
            attachments.append(link)
        else:  # pragma: no cover - the SDK validates content against the known union
            attachments.append(
                {"type": str(getattr(item, "type", "unknown")), "note": "unsupported content"}
            )

    text = "\n".join(texts)
    structured = result.structured_content
    if structured is not None and len(texts) == 1:
        texts, structured = _drop_duplicate(texts[0], structured)
        text = "\n".join(texts)
    if not attachments and structured is None:
        return ToolResult(
            result=text if max_chars is None else _truncate_text(text, max_chars),
            is_error=result.is_error,
            files=files,
        )

    body: dict[str, Any] = {}
    if texts:
        body["text"] = text
    if structured is not None:
        body["structured_content"] = structured
    if attachments:
        body["attachments"] = attachments
    return ToolResult(
        result=body if max_chars is None else _fit(body, max_chars), is_error=result.is_error, files=files
    )


def _drop_duplicate(text: str, structured: Any) -> tuple[list[str], Any]:
    """Servers send structured content twice (the spec asks for a JSON text copy); keep one."""
    try:
        if json.loads(text) == structured:
            return [], structured
    except ValueError:
        pass
    # The Python SDK wraps a plain return value as {"result": value} next to its text form.
    if isinstance(structured, dict) and set(structured) == {"result"}:
        value = structured["result"]
        if text == (value if isinstance(value, str) else json.dumps(value)):
            return [text], None
    return [text], structured


def _resource_name(uri: str) -> str | None:
    tail = uri.rstrip("/").rsplit("/", 1)[-1]
    return tail or None


def _note(shown: int, total: int) -> str:
    return f"\n[truncated: showing {shown} of {total} characters]"


def _truncate_text(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    keep = max(0, limit - len(_note(limit, len(text))))
    return text[:keep] + _note(keep, len(text))


def _size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, default=str))


def _fit(body: dict[str, Any], limit: int) -> dict[str, Any]:
    """Shrink the largest pieces of `body` until its JSON fits in `limit` characters."""
    # Each round cuts the largest text (the main text, a resource text, or structured content
    # turned into a JSON preview) by the overflow plus room for the note. Cutting n raw
    # characters shrinks the JSON by at least n, so every round makes progress. File and link
    # descriptors are small and stay, so the model still knows what exists.
    for _ in range(32):
        over = _size(body) - limit
        if over <= 0:
            return body
        holders: list[tuple[dict[str, Any], str]] = []
        if "text" in body:
            holders.append((body, "text"))
        for entry in body.get("attachments", []):
            if isinstance(entry.get("text"), str):
                holders.append((entry, "text"))
        structured = body.get("structured_content")
        holders = [h for h in holders if h[0][h[1]]]
        largest_text = max((_size(h[0][h[1]]) for h in holders), default=0)
        if (
            structured is not None
            and not _is_preview(structured)
            and _size(structured) >= largest_text
        ):
            raw = json.dumps(structured, ensure_ascii=False, default=str)
            body["structured_content"] = {
                "truncated": True,
                "preview": raw,
                "total_chars": len(raw),
            }
            continue
        if isinstance(structured, dict) and _is_preview(structured) and structured["preview"]:
            holders.append((structured, "preview"))
        if not holders:
            break
        holder, key = max(holders, key=lambda h: _size(h[0][h[1]]))
        current: str = holder[key]
        if key == "preview":
            holder[key] = current[: max(0, len(current) - over - 16)]
        else:
            holder[key] = _truncate_text(current, max(0, len(current) - over - 80))
            if holder[key] == current:  # too short to cut further
                holder[key] = ""
    if "attachments" in body and _size(body) > limit:
        total = len(body["attachments"])
        while body["attachments"] and _size(body) > limit:
            body["attachments"].pop()
        body["attachments_truncated"] = total - len(body["attachments"])
    return body


def _is_preview(value: Any) -> bool:
    return isinstance(value, dict) and value.get("truncated") is True and "preview" in value
