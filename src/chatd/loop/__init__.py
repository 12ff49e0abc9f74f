"""The agent loop: model <-> tools, retries, interruption, compaction, titles. Never touches the database.

The worker calls::

    outcome = await run_turn(resolved_model, prompt, tools, options, sink, control)

- `resolved_model`: `chatd.providers.ResolvedModel` (model, spec, settings, native tools).
- `prompt`: `list[PromptMessage]` (role + domain parts), already assembled (system rows,
  per-turn instructions, history from the last summary on). Files resolve via
  `options.file_resolver`.
- `tools`: `chatd.domain.tools.Tool` objects. A tool may define `concurrency_key(args) -> str | None`
  so calls with the same key run one at a time.
- `sink`: a `TurnSink` the worker implements (publish parts, persist steps, retry events, steered
  messages, compaction rows). `persist_step` raises `Interrupted` when ownership was lost.
- `control`: a `TurnControl`; `control.interrupt()` ends the turn keeping the partial answer
  (outcome "interrupted"). Cancelling the task instead means shutdown: nothing more is written and
  `CancelledError` propagates.

Returns a `TurnOutcome` ("completed" | "interrupted" | "lost_ownership" | "max_steps"); raises
`TurnError` (`ModelCallFailed`, `RetriesExhausted`) with a readable message when the model call fails.
`generate_title` / `generate_push_summary` / `fallback_title` are the short side calls (§11).
"""

from chatd.domain.titles import fallback_title
from chatd.loop.quickgen import (
    generate_push_summary,
    generate_title,
    normalize_title,
)
from chatd.loop.turn import describe, run_turn
from chatd.loop.types import (
    INTERRUPTED_TOOL_RESULT,
    SUMMARY_TOOL_NAME,
    Compaction,
    FileResolver,
    Interrupted,
    ModelCallFailed,
    PromptMessage,
    ResolvedFile,
    RetriesExhausted,
    Step,
    ToolImages,
    TurnControl,
    TurnError,
    TurnOptions,
    TurnOutcome,
    TurnSink,
)

__all__ = [
    "INTERRUPTED_TOOL_RESULT",
    "SUMMARY_TOOL_NAME",
    "Compaction",
    "FileResolver",
    "Interrupted",
    "ModelCallFailed",
    "PromptMessage",
    "ResolvedFile",
    "RetriesExhausted",
    "Step",
    "ToolImages",
    "TurnControl",
    "TurnError",
    "TurnOptions",
    "TurnOutcome",
    "TurnSink",
    "describe",
    "fallback_title",
    "generate_push_summary",
    "generate_title",
    "normalize_title",
    "run_turn",
]
