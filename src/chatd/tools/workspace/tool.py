"""What every workspace tool shares: argument parsing, and errors turned into error results (a
tool error goes back to the model; it never ends the turn)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from chatd.domain.tools import ToolContext, ToolResult
from chatd.errors import ChatdError


class Args(BaseModel):
    model_config = ConfigDict(extra="ignore")


def error_result(message: str) -> ToolResult:
    return ToolResult({"error": message}, is_error=True)


def parse_args(model: type[Any], args: dict[str, Any]) -> Any:
    try:
        return model.model_validate(args)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'arguments'}: {e['msg']}" for e in exc.errors())
        raise BadArgs(f"Invalid arguments: {problems}") from None


class BadArgs(Exception):
    pass


class WorkspaceTool:
    """Shared by every tool here: argument parsing and error conversion.

    Tool errors go back to the model as error results; they never end the turn.
    """

    name: str
    description: str
    parameters: dict[str, Any]
    # Reads are safe to run again after a crash; the rest run at most once (chatd.worker.journal).
    idempotent: bool = False

    async def call(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        try:
            return await self.run(args, ctx)
        except BadArgs as exc:
            return error_result(str(exc))
        except ChatdError as exc:
            return error_result(exc.message)

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        raise NotImplementedError


def schema(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema
