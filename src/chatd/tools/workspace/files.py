"""The file tools: read_file, write_file, edit_files."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from chatd.domain.tools import ToolContext, ToolResult
from chatd.domain.workspace import FileEdits
from chatd.tools.workspace.link import PathLocks, WorkspaceLink
from chatd.tools.workspace.tool import Args, WorkspaceTool, parse_args, schema


class _ReadArgs(Args):
    path: str = Field(min_length=1)
    offset: int = Field(default=1, ge=1)
    limit: int | None = Field(default=None, ge=1)


class ReadFile(WorkspaceTool):
    name = "read_file"
    idempotent = True
    description = (
        "Read a text file in the workspace. Returns the content with line numbers, the file size, "
        "the total number of lines and how many were read. Reads at most 2000 lines per call by "
        "default: for large files, read a range with offset (1-based line) and limit, and continue "
        "with a larger offset."
    )
    parameters = schema(
        {
            "path": {"type": "string", "description": "Path of the file, relative to the workspace directory or absolute."},
            "offset": {"type": "integer", "minimum": 1, "description": "First line to read (1-based). Default 1."},
            "limit": {"type": "integer", "minimum": 1, "description": "Maximum number of lines. Default 2000."},
        },
        ["path"],
    )

    def __init__(self, link: WorkspaceLink) -> None:
        self.link = link

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        a: _ReadArgs = parse_args(_ReadArgs, args)
        result = await self.link.call(lambda agent: agent.read_file(a.path, offset=a.offset, limit=a.limit))
        return ToolResult(result.model_dump(exclude_none=True))


class _WriteArgs(Args):
    path: str = Field(min_length=1)
    content: str


class WriteFile(WorkspaceTool):
    name = "write_file"
    description = (
        "Create or overwrite a file in the workspace with the given content (parent directories "
        "are created). To change part of an existing file, prefer edit_files."
    )
    parameters = schema(
        {
            "path": {"type": "string", "description": "Path of the file, relative to the workspace directory or absolute."},
            "content": {"type": "string", "description": "The complete new content of the file."},
        },
        ["path", "content"],
    )

    def __init__(self, link: WorkspaceLink, locks: PathLocks) -> None:
        self.link = link
        self.locks = locks

    def concurrency_key(self, args: dict[str, Any]) -> str | None:
        path = args.get("path")
        return f"path:{PathLocks.key(path)}" if isinstance(path, str) else None

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        a: _WriteArgs = parse_args(_WriteArgs, args)
        async with self.locks.hold([a.path]):
            await self.link.call(lambda agent: agent.write_file(a.path, a.content))
        return ToolResult({"ok": True})


class _EditArgs(Args):
    files: list[FileEdits] = Field(min_length=1)

    @field_validator("files")
    @classmethod
    def _edits_present(cls, files: list[FileEdits]) -> list[FileEdits]:
        for f in files:
            if not f.edits:
                raise ValueError(f"no edits given for {f.path}")
        return files


class EditFiles(WorkspaceTool):
    name = "edit_files"
    description = (
        "Edit existing files by search and replace. Each edit's search text must match the file "
        "exactly once (include enough surrounding lines to make it unique); edits of one file apply "
        "in order. All edits of a call are applied atomically: if any edit does not apply, no file "
        "is changed and the error says which edit failed."
    )
    parameters = schema(
        {
            "files": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "properties": {
                        "path": {"type": "string"},
                        "edits": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "properties": {
                                    "search": {"type": "string", "description": "Exact text to find."},
                                    "replace": {"type": "string", "description": "Text to put in its place."},
                                },
                                "required": ["search", "replace"],
                                "additionalProperties": False,
                            },
                        },
                    },
                    "required": ["path", "edits"],
                    "additionalProperties": False,
                },
            }
        },
        ["files"],
    )

    def __init__(self, link: WorkspaceLink, locks: PathLocks) -> None:
        self.link = link
        self.locks = locks

    def concurrency_key(self, args: dict[str, Any]) -> str | None:
        files = args.get("files")
        if not isinstance(files, list):
            return None
        paths = sorted({PathLocks.key(f["path"]) for f in files if isinstance(f, dict) and isinstance(f.get("path"), str)})
        return "paths:" + "\0".join(paths) if paths else None

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        a: _EditArgs = parse_args(_EditArgs, args)
        async with self.locks.hold(f.path for f in a.files):
            await self.link.call(lambda agent: agent.edit_files(a.files))
        return ToolResult({"ok": True})
