"""The command tools: execute, process_output, process_list, process_signal (REFERENCE §7.3)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field

from chatd.domain.tools import ToolContext, ToolResult
from chatd.domain.workspace import ProcessState, Signal
from chatd.errors import ChatdError
from chatd.tools.workspace.link import NoWorkspace, WorkspaceLink
from chatd.tools.workspace.tool import Args, WorkspaceTool, error_result, parse_args, schema

DEFAULT_EXECUTE_TIMEOUT = 10.0  # REFERENCE §7.3
MAX_EXECUTE_TIMEOUT = 600.0
DEFAULT_OUTPUT_WAIT = 10.0
OUTPUT_CAP = 32 * 1024  # bytes of command output sent to the model


# --- durations ------------------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(value: object, default: float) -> float:
    """Seconds from a Go-style duration ("10s", "1m30s", "500ms") or a number of seconds."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise ValueError("a duration must be a string like '30s' or a number of seconds")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip().replace(" ", "")
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        else:
            parts = _DURATION.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ValueError(f"invalid duration {value!r}; use e.g. '30s', '2m' or '1m30s'")
            scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
            seconds = sum(float(n) * scale[u] for n, u in parts)
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{int(seconds * 1000)}ms"
    if seconds < 60 or seconds % 60:
        return f"{seconds:g}s"
    return f"{int(seconds // 60)}m"


# --- processes ------------------------------------------------------------------------------------

_FILE_DUMP = re.compile(r"^\s*cat\s|^\s*(grep|rg)\b.*\s(-l|--files-with-matches|--include-all)(\s|$)")
_FILE_DUMP_NOTE = (
    "To read a file, use read_file instead of cat: it numbers lines and pages large files. "
    "To find files, prefer a search that prints matching lines with context."
)


def split_background(command: str) -> tuple[str, bool]:
    """Strip a trailing single `&` (not `&&`, not `|&`): such a command runs in the background."""
    stripped = command.rstrip()
    if stripped.endswith("&") and not stripped.endswith("&&") and not stripped.endswith("|&") and not stripped.endswith("\\&"):
        return stripped[:-1].rstrip(), True
    return command, False


def _finished(state: ProcessState) -> dict[str, Any]:
    result: dict[str, Any] = {
        "success": state.exit_code == 0,
        "exit_code": state.exit_code,
        "output": state.output,
        "wall_duration_ms": state.wall_duration_ms,
    }
    if state.truncated is not None:
        result["truncated"] = state.truncated.model_dump()
    return result


class _ExecuteArgs(Args):
    command: str = Field(min_length=1)
    timeout: str | float | None = None
    workdir: str | None = None
    run_in_background: bool = False


class Execute(WorkspaceTool):
    name = "execute"
    description = (
        "Run a shell command (sh -c) in the workspace and return its exit code and output "
        "(stdout and stderr together, at most 32 KB: the middle of longer output is cut). The "
        "environment is non-interactive: no editors, pagers or prompts. Waits up to `timeout` "
        "(default 10s); a command still running then keeps running and you get its "
        "background_process_id for process_output. For servers and other long-running commands, "
        "set run_in_background (or end the command with a single &) and poll with process_output."
    )
    parameters = schema(
        {
            "command": {"type": "string", "description": "The shell command."},
            "timeout": {"type": "string", "description": "How long to wait, e.g. '30s' or '5m'. Default '10s', at most '10m'."},
            "workdir": {"type": "string", "description": "Working directory (default: the workspace directory)."},
            "run_in_background": {"type": "boolean", "description": "Start it and return at once with a process id."},
        },
        ["command"],
    )

    def __init__(self, link: WorkspaceLink) -> None:
        self.link = link

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        a: _ExecuteArgs = parse_args(_ExecuteArgs, args)
        try:
            timeout = min(parse_duration(a.timeout, DEFAULT_EXECUTE_TIMEOUT), MAX_EXECUTE_TIMEOUT)
        except ValueError as exc:
            return error_result(str(exc))
        command, background = a.command, a.run_in_background
        if not background:
            command, background = split_background(command)
        env = {"CHATD_CHAT_ID": str(ctx.chat_id)}
        try:
            state = await self.link.call(
                lambda agent: agent.start_process(
                    command,
                    workdir=a.workdir,
                    background=background,
                    wait=0.0 if background else timeout,
                    max_output_bytes=OUTPUT_CAP,
                    env=env,
                )
            )
        except NoWorkspace:
            raise
        except ChatdError as exc:
            if getattr(exc, "agent_code", None) == "commands_disabled":
                raise  # the server's policy, not this command's failure: a tool error
            # Start failures are results, not tool errors (REFERENCE §7.3).
            return ToolResult({"success": False, "error": exc.message})
        if background:
            return ToolResult(
                {
                    "success": True,
                    "background_process_id": state.id,
                    "note": "Started in the background. Use process_output to read its output and process_signal to stop it.",
                }
            )
        if state.running:
            result: dict[str, Any] = {
                "success": False,
                "exit_code": -1,
                "error": f"command timed out after {format_duration(timeout)}",
                "output": state.output,
                "background_process_id": state.id,
                "note": "The command is still running. Use process_output to wait for it or process_signal to stop it.",
            }
            if state.truncated is not None:
                result["truncated"] = state.truncated.model_dump()
            return ToolResult(result)
        result = _finished(state)
        if _FILE_DUMP.search(command):
            result["note"] = _FILE_DUMP_NOTE
        return ToolResult(result)


class _OutputArgs(Args):
    process_id: str = Field(min_length=1)
    wait_timeout: str | float | None = None


class ProcessOutput(WorkspaceTool):
    name = "process_output"
    idempotent = True
    description = (
        "Read the output of a process started by execute (background or timed out). Waits up to "
        "wait_timeout (default 10s; '0s' for a snapshot) for it to finish. Output is capped at 32 KB."
    )
    parameters = schema(
        {
            "process_id": {"type": "string"},
            "wait_timeout": {"type": "string", "description": "How long to wait for it to exit, e.g. '30s'. Default '10s'."},
        },
        ["process_id"],
    )

    def __init__(self, link: WorkspaceLink) -> None:
        self.link = link

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        a: _OutputArgs = parse_args(_OutputArgs, args)
        try:
            wait = min(parse_duration(a.wait_timeout, DEFAULT_OUTPUT_WAIT), MAX_EXECUTE_TIMEOUT)
        except ValueError as exc:
            return error_result(str(exc))
        state = await self.link.call(lambda agent: agent.process_output(a.process_id, wait=wait, max_output_bytes=OUTPUT_CAP))
        if state.running:
            result: dict[str, Any] = {
                "success": True,
                "running": True,
                "output": state.output,
                "wall_duration_ms": state.wall_duration_ms,
                "note": "process is still running",
            }
            if state.truncated is not None:
                result["truncated"] = state.truncated.model_dump()
            return ToolResult(result)
        return ToolResult(_finished(state))


class ProcessList(WorkspaceTool):
    name = "process_list"
    idempotent = True
    description = "List the processes started with execute in this workspace: id, command, whether it runs, exit code."
    parameters = schema({})

    def __init__(self, link: WorkspaceLink) -> None:
        self.link = link

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        states = await self.link.call(lambda agent: agent.list_processes())
        return ToolResult(
            {
                "processes": [
                    {
                        "process_id": s.id,
                        "command": s.command,
                        "running": s.running,
                        "exit_code": s.exit_code,
                        "background": s.background,
                        "wall_duration_ms": s.wall_duration_ms,
                    }
                    for s in states
                ]
            }
        )


class _SignalArgs(Args):
    process_id: str = Field(min_length=1)
    signal: str = Field(pattern="^(terminate|kill)$")


class ProcessSignal(WorkspaceTool):
    name = "process_signal"
    description = "Stop a process started with execute: 'terminate' (SIGTERM, lets it clean up) or 'kill' (SIGKILL)."
    parameters = schema(
        {"process_id": {"type": "string"}, "signal": {"type": "string", "enum": ["terminate", "kill"]}},
        ["process_id", "signal"],
    )

    def __init__(self, link: WorkspaceLink) -> None:
        self.link = link

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        a: _SignalArgs = parse_args(_SignalArgs, args)
        sig: Signal = "kill" if a.signal == "kill" else "terminate"
        message = await self.link.call(lambda agent: agent.signal_process(a.process_id, sig))
        return ToolResult({"success": True, "message": message})
