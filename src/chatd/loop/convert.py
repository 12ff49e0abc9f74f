"""Domain parts <-> pydantic-ai messages (reference §6.3), including the repair passes providers need."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from pydantic_ai import messages as pm

from chatd.domain.chat import Role
from chatd.domain.parts import (
    FilePart,
    Part,
    ReasoningPart,
    SourcePart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from chatd.loop.types import FileResolver, PromptMessage, ResolvedFile, ToolImages
from chatd.providers.streams import call_args as call_args  # shared with the stream readers

log = logging.getLogger(__name__)

_UNSAFE_ID = re.compile(r"[^A-Za-z0-9_-]")
MISSING_RESULT_TEXT = "tool call was interrupted and did not receive a result"


def sanitize_tool_call_id(tool_call_id: str) -> str:
    # Anthropic rejects ids outside [A-Za-z0-9_-]; ids from other providers may contain them.
    return _UNSAFE_ID.sub("_", tool_call_id) or "call"


# ----------------------------------------------------------------------------- domain -> model


async def to_model_messages(
    prompt: Sequence[PromptMessage],
    resolver: FileResolver | None = None,
    *,
    awaiting: Collection[str] = (),
    images: ToolImages | None = None,
) -> list[pm.ModelMessage]:
    """`awaiting`: ids of the last step's calls whose results the caller is about to add (the
    answers of a chat that waited for them); they get no synthetic result. `images`: how images
    tool results name go to the model (None: tool results as stored)."""
    files = await _resolve_files(prompt, resolver, images)
    out: list[pm.ModelMessage] = []
    for message in prompt:
        converted = _convert(message, files, images)
        if converted is not None:
            out.append(converted)
    return repair(out, awaiting=awaiting)


async def _resolve_files(
    prompt: Sequence[PromptMessage], resolver: FileResolver | None, images: ToolImages | None
) -> dict[str, ResolvedFile]:
    # User attachments, and the images tool results name when the model takes them.
    ids = [p.file_id for m in prompt if m.role is Role.USER for p in m.parts if isinstance(p, FilePart)]
    if images is not None and images.accepted:
        ids += [
            fid for m in prompt if m.role is Role.TOOL for p in m.parts
            if isinstance(p, ToolResultPart) and not p.provider_executed and not p.is_error
            for fid, _ in tool_images(p.result)
        ]  # fmt: skip
    if not ids or resolver is None:
        return {}
    found = dict(await resolver(ids))
    for missing in set(ids) - found.keys():
        log.warning("file %s is missing; left out of the prompt", missing)
    return found


def _convert(message: PromptMessage, files: dict[str, ResolvedFile], images: ToolImages | None) -> pm.ModelMessage | None:
    if message.role is Role.SYSTEM:
        text = "\n\n".join(p.text for p in message.parts if isinstance(p, TextPart) and p.text.strip())
        return pm.ModelRequest(parts=[pm.SystemPromptPart(text)]) if text else None
    if message.role is Role.USER:
        return _user(message.parts, files)
    if message.role is Role.ASSISTANT:
        parts = [p for part in message.parts if (p := _assistant_part(part)) is not None]
        return pm.ModelResponse(parts=parts) if parts else None
    returns = [
        tool_return(p, files, images) for p in message.parts if isinstance(p, ToolResultPart) and not p.provider_executed
    ]
    return pm.ModelRequest(parts=returns) if returns else None


def _user(parts: Sequence[Part], files: dict[str, ResolvedFile]) -> pm.ModelRequest | None:
    content: list[pm.UserContent] = []
    for part in parts:
        if isinstance(part, TextPart) and part.text.strip():
            content.append(part.text)
        elif isinstance(part, FilePart) and (f := files.get(part.file_id)) is not None:
            content.append(pm.BinaryContent(f.data, media_type=f.media_type, identifier=part.file_id))
    if not content:
        return None
    if len(content) == 1 and isinstance(content[0], str):
        return pm.ModelRequest(parts=[pm.UserPromptPart(content[0])])
    return pm.ModelRequest(parts=[pm.UserPromptPart(content)])


def _assistant_part(part: Part) -> pm.ModelResponsePart | None:
    if isinstance(part, TextPart):
        return pm.TextPart(part.text) if part.text.strip() else None
    if isinstance(part, ReasoningPart):
        if part.signature and part.provider:
            return pm.ThinkingPart(part.text, signature=part.signature, provider_name=part.provider)
        return pm.ThinkingPart(part.text) if part.text.strip() else None
    if isinstance(part, ToolCallPart):
        # Provider-executed calls (web search) are not replayed: their opaque result blocks only
        # round-trip to the same provider, and the answer text already carries what was found.
        if part.provider_executed:
            return None
        return pm.ToolCallPart(part.tool_name, dict(part.args), sanitize_tool_call_id(part.tool_call_id))
    # Sources are UI-only; provider-executed results are skipped with their calls.
    if isinstance(part, SourcePart | ToolResultPart | FilePart):
        return None
    return None


# Image types every provider with image input takes.
_MODEL_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})


def tool_images(result: Any) -> list[tuple[str, str]]:
    """(file id, media type) of the images a tool result names (stored from an MCP result)."""
    if not isinstance(result, dict) or not isinstance(result.get("attachments"), list):
        return []
    return [
        (a["file_id"], a["media_type"])
        for a in result["attachments"]
        if isinstance(a, dict) and isinstance(a.get("file_id"), str) and a.get("media_type") in _MODEL_IMAGE_TYPES
    ]


def tool_return(
    part: ToolResultPart, files: Mapping[str, ResolvedFile], images: ToolImages | None, *, sanitize: bool = True
) -> pm.ToolReturnPart:
    """The model's view of a tool result: with the images it names as image parts when the model
    takes images, else with a note in place of each (never silently left out)."""
    result = part.result if part.result is not None else {}
    found = tool_images(result) if images is not None and not part.is_error else []
    content: Any = result
    if found:
        assert images is not None
        notes: dict[str, str] = {}
        binaries: list[pm.BinaryContent] = []
        for fid, media_type in found:
            f = files.get(fid)
            if not images.accepted:
                notes[fid] = "not shown to you: this model does not accept images (the user sees it in the chat)"
            elif f is None:
                notes[fid] = "not shown to you: the image file is no longer available"
            elif len(f.data) > images.max_bytes:
                notes[fid] = f"not shown to you: {len(f.data)} bytes, over the {images.max_bytes} bytes an image may have (the user sees it in the chat)"
            else:
                binaries.append(pm.BinaryContent(f.data, media_type=media_type, identifier=fid))
                notes[fid] = "attached below"
        described = dict(result)
        described["attachments"] = [
            {**a, "note": notes[a["file_id"]]} if isinstance(a, dict) and a.get("file_id") in notes else a
            for a in result["attachments"]
        ]
        content = [described, *binaries] if binaries else described
    if part.is_error:
        content = _error_text(result)
    return pm.ToolReturnPart(
        part.tool_name,
        content,
        sanitize_tool_call_id(part.tool_call_id) if sanitize else part.tool_call_id,
        outcome="failed" if part.is_error else "success",
    )


def _error_text(result: Any) -> Any:
    """A failed result as the model gets it: pydantic-ai wraps a failed return in `{"error": …}`
    itself (or uses the provider's own error flag), so chatd's `{"error": text}` goes in as its
    text; anything else the result says follows the text as JSON. Without this the model read
    `{"error": "{\"error\": …}"}`, every quote escaped."""
    if isinstance(result, dict) and isinstance(result.get("error"), str):
        rest = {k: v for k, v in result.items() if k != "error"}
        return result["error"] + (f" {json.dumps(rest, ensure_ascii=False, default=str)}" if rest else "")
    return result


def repair(messages: list[pm.ModelMessage], *, awaiting: Collection[str] = ()) -> list[pm.ModelMessage]:
    """Pair every tool call with a result and drop orphan results; providers reject either.

    A missing result (the turn died between the call and its result) gets a synthetic error
    result right after the call, so the conversation stays valid for any provider.
    """
    out: list[pm.ModelMessage] = []
    pending: dict[str, str] = {}  # tool_call_id -> tool name, calls of the last response
    for message in messages:
        if isinstance(message, pm.ModelResponse):
            _close_pending(out, pending)
            pending = {p.tool_call_id: p.tool_name for p in message.parts if isinstance(p, pm.ToolCallPart)}
            out.append(message)
            continue
        returns = [p for p in message.parts if isinstance(p, pm.ToolReturnPart)]
        if not returns:
            _close_pending(out, pending)
            pending = {}
            out.append(message)
            continue
        kept: list[pm.ModelRequestPart] = []
        for part in message.parts:
            if isinstance(part, pm.ToolReturnPart) and pending.pop(part.tool_call_id, None) is None:
                log.warning("dropping tool result %s without a matching call", part.tool_call_id)
                continue
            kept.append(part)
        if kept:
            # Results of one call batch belong in one request; Anthropic wants them together.
            last = out[-1] if out else None
            if isinstance(last, pm.ModelRequest) and all(isinstance(p, pm.ToolReturnPart) for p in last.parts):
                out[-1] = pm.ModelRequest(parts=[*last.parts, *kept])
            else:
                out.append(pm.ModelRequest(parts=kept))
    _close_pending(out, {k: v for k, v in pending.items() if k not in awaiting})
    return out


def _close_pending(out: list[pm.ModelMessage], pending: dict[str, str]) -> None:
    if not pending:
        return
    synthetic = [
        pm.ToolReturnPart(name, {"error": MISSING_RESULT_TEXT}, call_id, outcome="failed")
        for call_id, name in pending.items()
    ]
    last = out[-1] if out else None
    if isinstance(last, pm.ModelRequest) and last.parts and all(isinstance(p, pm.ToolReturnPart) for p in last.parts):
        out[-1] = pm.ModelRequest(parts=[*last.parts, *synthetic])
    else:
        out.append(pm.ModelRequest(parts=synthetic))
    pending.clear()


# ----------------------------------------------------------------------------- model -> domain


def response_parts(response: pm.ModelResponse) -> list[Part]:
    """The assistant message parts of a (possibly partial) model response."""
    out: list[Part] = []
    for part in response.parts:
        if isinstance(part, pm.TextPart):
            if part.content:
                out.append(TextPart(text=part.content))
            out.extend(_sources(part))
        elif isinstance(part, pm.ThinkingPart):
            if part.content or part.signature:
                out.append(
                    ReasoningPart(
                        text=part.content,
                        signature=part.signature,
                        provider=part.provider_name if part.signature else None,
                    )
                )
        elif isinstance(part, pm.NativeToolCallPart):
            args, _ = call_args(part)
            out.append(ToolCallPart(tool_call_id=part.tool_call_id, tool_name=part.tool_name, args=args, provider_executed=True))
        elif isinstance(part, pm.ToolCallPart):
            args, _ = call_args(part)
            out.append(ToolCallPart(tool_call_id=part.tool_call_id, tool_name=part.tool_name, args=args))
        elif isinstance(part, pm.NativeToolReturnPart):
            out.append(
                ToolResultPart(
                    tool_call_id=part.tool_call_id,
                    tool_name=part.tool_name,
                    result=_jsonable(part.content),
                    is_error=part.outcome != "success",
                    provider_executed=True,
                )
            )
    return out


def _sources(part: pm.TextPart) -> list[SourcePart]:
    seen: set[str] = set()
    out: list[SourcePart] = []
    for citation in part.citations or []:
        for source in citation.sources:
            url = getattr(source, "url", None)
            if isinstance(url, str) and url not in seen:
                seen.add(url)
                title = getattr(source, "title", None)
                out.append(SourcePart(url=url, title=title if isinstance(title, str) else None))
    return out


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)


def estimate_tokens(messages: Sequence[pm.ModelMessage]) -> int:
    """A cheap over-the-thumb count (4 characters a token) to compact before overflowing."""
    chars = 0
    for message in messages:
        for part in message.parts:
            if isinstance(part, pm.UserPromptPart):
                if isinstance(part.content, str):
                    chars += len(part.content)
                else:
                    for item in part.content:
                        # An image costs roughly a thousand tokens whatever its byte size.
                        chars += len(item) if isinstance(item, str) else 4000
            elif isinstance(part, pm.SystemPromptPart | pm.TextPart | pm.ThinkingPart):
                chars += len(part.content)
            elif isinstance(part, pm.BaseToolCallPart):
                chars += len(part.tool_name) + len(part.args_as_json_str())
            elif isinstance(part, pm.BaseToolReturnPart):
                chars += len(part.model_response_str())
    return chars // 4
