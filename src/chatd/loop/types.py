"""The loop's contract with its caller: inputs, the sink it reports to, and what it returns."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from chatd.domain.actions import ActionRequest, Answer, NewAction, PendingAction
from chatd.domain.chat import Role, Usage
from chatd.domain.parts import Part, ToolCallPart, ToolResultPart
from chatd.errors import ChatdError
from chatd.providers.retry import RetryDecision
from chatd.tools.output import ToolOutputs

SUMMARY_TOOL_NAME = "chat_summarized"
INTERRUPTED_TOOL_RESULT = "tool call was interrupted before it produced a result"


@dataclass(frozen=True, slots=True)
class PromptMessage:
    """One message of the prompt, in domain parts (rows the worker loaded, or steered input)."""

    role: Role
    parts: list[Part]


@dataclass(frozen=True, slots=True)
class ResolvedFile:
    data: bytes
    media_type: str


# Batch lookup of file bytes by id (user-message attachments); missing ids are skipped.
FileResolver = Callable[[Sequence[str]], Awaitable[Mapping[str, ResolvedFile]]]


@dataclass(frozen=True, slots=True)
class ToolImages:
    """Whether images tools returned (stored files named in their results) go to the model."""

    # The model accepts images; when False it reads a note in their place.
    accepted: bool = True
    # Larger images are left out, with a note (a provider's per-image limit).
    max_bytes: int = 3_750_000


@dataclass(frozen=True, slots=True)
class Step:
    """One model call and the tool calls it asked for, ready to persist in one transaction.

    `assistant_parts` become the assistant message (text, reasoning, tool calls, and results of
    provider-executed tools); each of `tool_results` becomes one `tool` message.
    """

    index: int
    assistant_parts: list[Part]
    tool_results: list[ToolResultPart]
    usage: Usage
    cost_micros: int | None
    context_tokens: int
    context_limit: int
    runtime_ms: int
    model_name: str | None
    provider_name: str | None
    finish_reason: str | None
    # True when the step was cut short by an interrupt (partial text, synthetic tool results).
    interrupted: bool = False
    # Calls of this step that wait for a person or a client instead of a result (their tools
    # have not run): persisted with the step, and the turn ends (`requires_action`).
    actions: list[NewAction] = field(default_factory=list)
    # A resumed turn's first write: the results of answered actions (no assistant message; the
    # calls are in the history already). The ids of those actions, done with this write.
    resolves: list[uuid.UUID] = field(default_factory=list)
    # The loop asks `take_steered` right after this step, with nothing written in between (the
    # step has tool calls, no actions, and no compaction follows): the sink may look for steered
    # messages in the step's own transaction and skip a second one when there are none.
    steer_next: bool = False


@dataclass(frozen=True, slots=True)
class Compaction:
    """A summary that replaces the history before it (reference §5.7).

    The sink stores `summary_prompt_text` hidden (model visibility, the new prompt boundary),
    `call` as a user-visible assistant message and `result` as a visible tool message.
    """

    summary: str
    summary_prompt_text: str
    tool_call_id: str
    call: ToolCallPart
    result: ToolResultPart
    threshold_percent: int
    usage_percent: float
    context_tokens: int
    context_limit: int
    # The summary call's own usage and cost; store them on the visible assistant row.
    usage: Usage = field(default_factory=Usage)
    cost_micros: int | None = None


class Interrupted(Exception):
    """Raised by `TurnSink.persist_step` when this worker no longer owns the chat: stop, write nothing."""


class TurnSink(Protocol):
    """What the worker implements to receive a turn's output. The loop never touches storage."""

    async def publish_part(self, role: Role, part: Part) -> None:
        """A transient streamed part (text delta, reasoning delta, tool-call args delta, ...)."""
        ...

    async def persist_step(self, step: Step) -> None:
        """Write the step in one transaction; raise `Interrupted` if the chat is no longer ours."""
        ...

    async def on_retry(self, attempt: int, delay_s: float, error: RetryDecision) -> None:
        """A transient model error; the loop sleeps `delay_s` next. Clear the part buffer, publish `retry`."""
        ...

    async def take_steered(self) -> list[PromptMessage]:
        """Messages steered into the running turn since the last call; persisted by the sink."""
        ...

    async def persist_compaction(self, compaction: Compaction) -> None:
        """Write the summary rows (hidden summary, visible chat_summarized call + result)."""
        ...


class TurnControl:
    """How the worker interrupts a running turn.

    `interrupt()` cancels the turn's task after marking it as an interrupt: the loop keeps the
    partial answer and returns `TurnOutcome(reason="interrupted")`. Cancelling the task any other
    way (server shutdown) writes nothing more and lets `CancelledError` propagate, so the chat
    goes back to pending and the step is re-run elsewhere.
    """

    def __init__(self) -> None:
        self._task: asyncio.Task[Any] | None = None
        self.interrupted = False

    def _attach(self, task: asyncio.Task[Any]) -> None:
        if self._task is not None:
            raise RuntimeError("a TurnControl drives one turn")
        self._task = task
        if self.interrupted:
            task.cancel()

    def _detach(self) -> None:
        """The loop is over: a later interrupt (e.g. the worker hearing its own final `waiting`
        status) must not cancel the task while it settles and announces the chat's status."""
        self._task = None

    def interrupt(self) -> None:
        if self.interrupted:
            return
        self.interrupted = True
        if self._task is not None and not self._task.done():
            self._task.cancel()


def _default_jitter() -> float:
    return random.random()


@dataclass(frozen=True, slots=True)
class TurnOptions:
    chat_id: uuid.UUID
    owner_id: uuid.UUID
    max_steps: int = 1200
    max_attempts: int = 25
    stall_timeout: float = 120.0
    compaction_timeout: float = 90.0
    file_resolver: FileResolver | None = None
    # Injected so tests control time: `sleep` waits between retries, `clock` measures runtime.
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    clock: Callable[[], float] = time.monotonic
    jitter: Callable[[], float] = _default_jitter
    # Only these tools are offered to the model, when set.
    active_tools: frozenset[str] | None = None
    # Read the model's stream with chatd's own reader where there is one for its wire format
    # (`chatd.providers.streams`); False always uses pydantic-ai's.
    fast_streams: bool = True
    # Answered actions of the last persisted step: the turn turns them into the calls' results
    # (running approved tools) before it calls the model.
    resume: Sequence[PendingAction] = ()
    # Where results over the size limit are stored (None: results go to the model as they are).
    tool_outputs: ToolOutputs | None = None
    # Images in tool results go to the model (None: tool results are sent as stored, no images).
    tool_images: ToolImages | None = None
    # Why a tool the model called is not there (its MCP server is down this turn), if known.
    explain_missing_tool: Callable[[str], str | None] | None = None
    # Asks the user while a tool call runs (elicitation): (tool call id, tool name, args, request).
    ask: Callable[[str, str, dict[str, Any], ActionRequest], Awaitable[Answer]] | None = None


OutcomeReason = Literal["completed", "interrupted", "lost_ownership", "max_steps", "requires_action"]


@dataclass(frozen=True, slots=True)
class TurnOutcome:
    reason: OutcomeReason
    steps: int
    usage: Usage
    cost_micros: int | None
    # The last assistant text of the turn, for the push-notification summary.
    final_text: str
    compactions: int = 0


class TurnError(ChatdError):
    """The turn failed; `message` is readable and goes to the chat's last error."""

    code = "turn_failed"

    def __init__(self, message: str, decision: RetryDecision | None = None, attempts: int = 0) -> None:
        super().__init__(
            message,
            {
                "kind": decision.kind if decision else None,
                "status_code": decision.status_code if decision else None,
                "attempts": attempts,
            },
        )
        self.decision = decision
        self.attempts = attempts


class ModelCallFailed(TurnError):
    """The provider returned an error that retrying will not fix (auth, context length, ...)."""

    code = "model_call_failed"


class RetriesExhausted(TurnError):
    """A transient error persisted through every allowed attempt."""

    code = "retries_exhausted"
