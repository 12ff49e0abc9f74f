"""Large tool results: never cut, stored as a chat file, with a preview and a tool to read on.

A result whose text (or JSON, for a structured result) is longer than the limit
(`CHATD_TOOL_RESULT_MAX_CHARS`) is saved whole as a file of the chat's owner. The model gets the
head of it, its size and the file id (`spill`); `read_tool_output` reads any range of it by
character offset and length. The web UI shows the same preview and links the file.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from chatd.domain.tools import ToolContext, ToolResult

log = logging.getLogger(__name__)

READ_TOOL_OUTPUT = "read_tool_output"
# Characters of a stored output the model sees in the tool result itself.
PREVIEW_CHARS = 4000
# Room `read_tool_output` keeps under the limit for its own fields.
_READ_MARGIN = 500

StoreOutput = Callable[[bytes, str, str], Awaitable[str]]
"""store(data, media_type, name) -> file id (a file of the chat's owner)."""
ReadOutput = Callable[[str], Awaitable[tuple[bytes, str] | None]]
"""read(file_id) -> (data, media_type), or None when the chat's owner has no such file."""


@dataclass(frozen=True, slots=True)
class ToolOutputs:
    """A turn's store for large tool results."""

    max_chars: int
    store: StoreOutput
    read: ReadOutput

    def too_long(self, result: Any) -> tuple[str, str] | None:
        """(full text, media type) when `result` is over the limit, else None."""
        if isinstance(result, str):
            return (result, "text/plain") if len(result) > self.max_chars else None
        text = json.dumps(result, ensure_ascii=False, default=str)
        return (text, "application/json") if len(text) > self.max_chars else None

    async def spill(self, tool_name: str, result: ToolResult) -> ToolResult:
        """`result` as it is when it fits; else stored whole and replaced by a preview."""
        over = self.too_long(result.result)
        if over is None:
            return result
        text, media_type = over
        ext = "json" if media_type == "application/json" else "txt"
        name = f"{tool_name}-output.{ext}"
        try:
            file_id = await self.store(text.encode(), media_type, name)
        except Exception as exc:
            # Without the store the model still gets the head and is told the rest is lost.
            log.warning("storing a large output of %s failed", tool_name, exc_info=True)
            return dataclasses.replace(result, result={
                "preview": text[:PREVIEW_CHARS],
                "total_chars": len(text),
                "note": f"The output has {len(text)} characters; only the first {PREVIEW_CHARS} are shown "
                f"because it could not be stored ({type(exc).__name__}).",
            })
        shown = min(PREVIEW_CHARS, self.max_chars)
        body: dict[str, Any] = {
            "output_file": {"file_id": file_id, "name": name, "media_type": media_type, "total_chars": len(text)},
            "preview": text[:shown],
            "note": (
                f"The output has {len(text)} characters, more than the {self.max_chars} a tool result may have, "
                f"so it was stored as file {file_id}; `preview` holds its first {shown}. Call {READ_TOOL_OUTPUT} with "
                f'file_id "{file_id}", offset and length to read more of it.'
            ),
        }
        # Images and other files a tool returned stay listed (the chat shows them; the model may see them).
        if isinstance(result.result, dict) and isinstance(result.result.get("attachments"), list):
            body["attachments"] = result.result["attachments"]
        # Only the model's part changes: the error flag, files and an MCP App view stay.
        return dataclasses.replace(result, result=body)


def spilled_file(result: Any) -> str | None:
    """The file id of a stored output (a result `spill` replaced), else None."""
    if isinstance(result, dict) and isinstance(out := result.get("output_file"), dict):
        fid = out.get("file_id")
        return fid if isinstance(fid, str) else None
    return None


class ReadToolOutput:
    """The model reads a stored tool output by character offset and length."""

    name = READ_TOOL_OUTPUT
    # Its own result is bounded by the limit: never stored again.
    keeps_output = True

    def __init__(self, outputs: ToolOutputs) -> None:
        self.outputs = outputs
        self.max_length = max(self.outputs.max_chars - _READ_MARGIN, 500)

    @property
    def description(self) -> str:
        return (
            "Read part of a tool output that was too long to show whole and was stored as a file "
            "(the tool result named its file_id). Returns `length` characters from `offset` (0-based) "
            f"and the next offset; at most {self.max_length} characters a call."
        )

    @property
    def parameters(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {
                "file_id": {"type": "string", "description": "The stored output's file id."},
                "offset": {"type": "integer", "minimum": 0, "description": "First character to read (0-based). Default 0."},
                "length": {
                    "type": "integer", "minimum": 1, "maximum": self.max_length,
                    "description": f"How many characters to read. Default and most: {self.max_length}.",
                },
            },
            "required": ["file_id"],
            "additionalProperties": False,
        }

    async def call(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        file_id = args.get("file_id")
        offset, length = args.get("offset", 0), args.get("length", self.max_length)
        if not isinstance(file_id, str) or not file_id:
            return ToolResult({"error": "file_id is required."}, is_error=True)
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            return ToolResult({"error": "offset must be an integer of at least 0."}, is_error=True)
        if not isinstance(length, int) or isinstance(length, bool) or length < 1:
            return ToolResult({"error": "length must be a positive integer."}, is_error=True)
        found = await self.outputs.read(file_id)
        if found is None:
            return ToolResult({"error": f"No stored output with file_id {file_id}."}, is_error=True)
        data, media_type = found
        if not (media_type.startswith("text/") or media_type == "application/json"):
            return ToolResult({"error": f"File {file_id} is {media_type}, not a text output."}, is_error=True)
        text = data.decode("utf-8", errors="replace")
        length = min(length, self.max_length)
        piece = text[offset : offset + length]
        end = offset + len(piece)
        return ToolResult({
            "file_id": file_id, "offset": offset, "length": len(piece), "total_chars": len(text),
            "next_offset": end if end < len(text) else None, "text": piece,
        })  # fmt: skip
