"""Human in the loop: what a turn waits for when it stops in `requires_action`, the answers a
person (or a client) may give, and the tool result each answer becomes. Pure rules, no I/O.

A tool call that needs an answer is not run when the model makes it: the step is persisted with
the call and no result, the call becomes a `PendingAction`, and the chat waits holding no worker.
Answering every pending action of the chat makes it `pending` again (a new turn generation); the
next turn first turns each answer into the call's result (`result_for`, or running the approved
tool), then calls the model. See ARCHITECTURE.md, "Human in the loop".
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from chatd.errors import InvalidInput


class ActionKind(enum.StrEnum):
    # A tool the deployment (or an MCP server's policy) wants a person to approve before it runs.
    TOOL_APPROVAL = "tool_approval"
    # An MCP server asks the user for structured input (form) or to visit a URL.
    ELICITATION = "elicitation"
    # The model asks the user a question (the `ask_user_question` tool).
    QUESTION = "question"
    # A tool the chat's client runs (declared with the chat's `client_tools`).
    CLIENT_TOOL = "client_tool"


class Decision(enum.StrEnum):
    APPROVE = "approve"
    DENY = "deny"
    ACCEPT = "accept"
    DECLINE = "decline"
    CANCEL = "cancel"
    # Not an answer anyone sends: the deadline passed (client tools).
    TIMEOUT = "timeout"


ANSWERS = frozenset(Decision) - {Decision.TIMEOUT}

_ALLOWED: dict[ActionKind, frozenset[Decision]] = {
    ActionKind.TOOL_APPROVAL: frozenset({Decision.APPROVE, Decision.DENY}),
    ActionKind.QUESTION: frozenset({Decision.ACCEPT, Decision.DECLINE, Decision.CANCEL}),
    ActionKind.CLIENT_TOOL: frozenset({Decision.ACCEPT, Decision.DECLINE, Decision.CANCEL}),
    ActionKind.ELICITATION: frozenset({Decision.ACCEPT, Decision.DECLINE, Decision.CANCEL}),
}


class ActionState(enum.StrEnum):
    # Waiting for its answer; the chat is `requires_action`.
    PENDING = "pending"
    # Answered; the next turn turns the answer into the call's result.
    ANSWERED = "answered"
    # The result is in the history.
    DONE = "done"
    # Dropped with the chat's history (edit) or cancelled (interrupt, archive): a result saying so
    # is in the history unless the call itself was edited away.
    CANCELLED = "cancelled"


class ApprovalPolicy(enum.StrEnum):
    NEVER = "never"
    ALWAYS = "always"
    # Ask unless the MCP tool says it only reads (`readOnlyHint`); a tool that says it is not
    # destructive (`destructiveHint: false`) and not read-only still asks: it writes something.
    UNLESS_READ_ONLY = "unless_read_only"


def needs_approval(policy: ApprovalPolicy, *, read_only: bool | None) -> bool:
    if policy is ApprovalPolicy.ALWAYS:
        return True
    if policy is ApprovalPolicy.UNLESS_READ_ONLY:
        return read_only is not True
    return False


@dataclass(frozen=True, slots=True)
class ActionRequest:
    """What a tool asks of a person (or client) instead of running now."""

    kind: ActionKind
    message: str | None = None
    # A JSON Schema the answer's `content` must satisfy (elicitation forms).
    schema: dict[str, Any] | None = None
    url: str | None = None
    # The choices offered (questions); free text is always allowed too.
    options: list[str] | None = None
    # Seconds until the model gets a timeout result instead (client tools); None waits forever.
    timeout_s: float | None = None
    # The MCP server's slug, for MCP tools.
    server: str | None = None
    # What the asking tool needs to carry on once answered (a 2026-07-28 server's `requestState`
    # and the key of its input request): stored with the action, never shown to anyone. Such a
    # question is durable: the call ended when it asked, and the resumed turn calls again with
    # the answer. Without it an elicitation is asked inside a running call (see `in_call`).
    resume: dict[str, Any] | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class NewAction:
    """A pending action about to be stored with its step."""

    tool_call_id: str
    tool_name: str
    args: dict[str, Any]
    request: ActionRequest


@dataclass(frozen=True, slots=True)
class Answer:
    decision: Decision
    # Edited arguments of an approved call.
    args: dict[str, Any] | None = None
    # The user's answer: a question's text, an elicitation form's object.
    content: Any = None
    # A client tool's result.
    result: Any = None
    # Approve this tool for the rest of the chat.
    always_allow: bool = False


@dataclass(frozen=True, slots=True)
class PendingAction:
    id: uuid.UUID
    chat_id: uuid.UUID
    kind: ActionKind
    tool_call_id: str
    tool_name: str
    args: dict[str, Any]
    state: ActionState
    created_at: datetime
    server: str | None = None
    message: str | None = None
    schema: dict[str, Any] | None = None
    url: str | None = None
    options: list[str] | None = None
    deadline: datetime | None = None
    decision: Decision | None = None
    answer: dict[str, Any] = field(default_factory=dict)
    resolved_at: datetime | None = None
    resume: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def in_call(self) -> bool:
        """Asked by a call that is still running and waits for the answer (an MCP server's form
        on a 2025-11-25 session, or one a 2026-07-28 server asks with several others at once):
        the chat stays `running`, the answer goes into that call, and the call's own result
        answers the model. Every other action waits in `requires_action` with its call ended."""
        return self.kind is ActionKind.ELICITATION and self.resume is None

    @property
    def approved_args(self) -> dict[str, Any]:
        """The arguments an approved call runs with (edited by the user, or the model's)."""
        edited = self.answer.get("args")
        return edited if isinstance(edited, dict) else self.args


@dataclass(frozen=True, slots=True)
class Resumption:
    """An answered durable question handed back to the tool call that asked it (the resumed
    turn calls the tool again with this in its context)."""

    # What the tool stored when it asked (`ActionRequest.resume`): a server's requestState.
    state: dict[str, Any] = field(repr=False)
    decision: Decision
    content: Any = None
    schema: dict[str, Any] | None = None

    @classmethod
    def of(cls, action: PendingAction) -> Resumption:
        assert action.resume is not None and action.decision is not None
        return cls(action.resume, action.decision, action.answer.get("content"), action.schema)


@dataclass(frozen=True, slots=True)
class ClientTool:
    """A tool the chat's client (an IDE, a script) runs: the model's call waits for its result."""

    name: str
    description: str
    input_schema: dict[str, Any]


MAX_QUESTION_OPTIONS = 4
MIN_QUESTION_OPTIONS = 2

DENIED_TEXT = "Denied by the user: the tool call was not run."
DECLINED_TEXT = "The user declined to answer."
CANCELLED_TEXT = "The user dismissed the question without answering."
CLIENT_DECLINED_TEXT = "The client declined to run this tool; it was not run."
# When a new message (busy_behavior=interrupt), an interrupt, a promote or an archive ends the wait.
CANCELLED_BY_USER_TEXT = (
    "Cancelled by the user: the chat moved on before this was answered, so the tool call was not run."
)
# The same for a call that was answered but whose result was not saved yet (its turn had not run
# it, or was still running it: the journal keeps an approved tool from running twice).
CANCELLED_AFTER_ANSWER_TEXT = (
    "Cancelled by the user: the chat moved on after this was answered and before its result was saved."
)


def timeout_text(deadline: datetime | None) -> str:
    at = f" ({deadline.isoformat()})" if deadline is not None else ""
    return f"Timed out: the client did not return a result before the deadline{at}; the tool may not have run."


def check_answer(action: PendingAction, answer: Answer) -> None:
    """Refuse an answer that does not fit the action (400 before anything is written)."""
    allowed = _ALLOWED[action.kind]
    if answer.decision not in allowed:
        names = ", ".join(sorted(d.value for d in allowed))
        raise InvalidInput(f"A {action.kind.value} action takes the decision {names}.", {"decision": answer.decision.value})
    if answer.always_allow and not (action.kind is ActionKind.TOOL_APPROVAL and answer.decision is Decision.APPROVE):
        raise InvalidInput("always_allow goes with approving a tool call.")
    if answer.args is not None and not (action.kind is ActionKind.TOOL_APPROVAL and answer.decision is Decision.APPROVE):
        raise InvalidInput("Edited args go with approving a tool call.")
    if answer.args is not None and action.schema is not None:
        check_against_schema(answer.args, action.schema, "The edited arguments do not match the tool's input schema")
    if answer.decision is not Decision.ACCEPT:
        if answer.content is not None or answer.result is not None:
            raise InvalidInput("content and result go with the decision accept.")
        return
    if action.kind is ActionKind.QUESTION:
        if not isinstance(answer.content, str) or not answer.content.strip():
            raise InvalidInput("A question's answer is a non-blank string in content.")
        if answer.result is not None:
            raise InvalidInput("A question is answered with content, not result.")
    elif action.kind is ActionKind.CLIENT_TOOL:
        if answer.content is not None:
            raise InvalidInput("A client tool is answered with result, not content.")
    elif action.kind is ActionKind.ELICITATION:
        if answer.result is not None:
            raise InvalidInput("A form is answered with content, not result.")
        if action.schema is not None:
            check_against_schema(answer.content, action.schema)


def check_against_schema(value: Any, schema: dict[str, Any], what: str = "The answer does not match the requested form") -> None:
    from jsonschema import exceptions as schema_errors  # type: ignore[import-untyped]
    from jsonschema import validators

    try:
        cls = validators.validator_for(schema)
        errors = sorted(cls(schema).iter_errors(value), key=lambda e: list(e.absolute_path))
    except schema_errors.SchemaError:
        return  # the requester's schema is broken: nothing to hold the answer to
    if errors:
        where = "/".join(str(p) for p in errors[0].absolute_path) or "(root)"
        raise InvalidInput(f"{what}: {where}: {errors[0].message}")


@dataclass(frozen=True, slots=True)
class ResultOf:
    """The tool result an answer becomes; `run` means: run the tool with `args`."""

    result: Any = None
    is_error: bool = False
    run: bool = False
    args: dict[str, Any] = field(default_factory=dict)


def result_for(action: PendingAction) -> ResultOf:
    """What the model reads for an answered (or timed-out) action."""
    d, kind = action.decision, action.kind
    if kind is ActionKind.TOOL_APPROVAL and d is Decision.APPROVE:
        return ResultOf(run=True, args=action.approved_args)
    if action.resume is not None:
        # A durable question of a tool: every answer (a timeout too) goes back to the tool,
        # which decides what it means (an MCP server reads decline and cancel itself).
        return ResultOf(run=True, args=action.args)
    if d is Decision.DENY:
        return ResultOf({"error": DENIED_TEXT}, is_error=True)
    if d is Decision.TIMEOUT:
        return ResultOf({"error": timeout_text(action.deadline)}, is_error=True)
    if kind is ActionKind.CLIENT_TOOL:
        if d is Decision.ACCEPT:
            return ResultOf(action.answer.get("result"))
        return ResultOf({"error": CLIENT_DECLINED_TEXT}, is_error=True)
    if d is Decision.ACCEPT:
        return ResultOf({"answer": action.answer.get("content")})
    if d is Decision.DECLINE:
        return ResultOf({"error": DECLINED_TEXT, "decision": "decline"}, is_error=True)
    return ResultOf({"error": CANCELLED_TEXT, "decision": "cancel"}, is_error=True)


def action_prompt(actions: list[PendingAction]) -> str:
    """One line for a notification: what the chat waits for."""
    first = actions[0]
    if first.kind is ActionKind.QUESTION:
        what = first.message or "The agent has a question."
    elif first.kind is ActionKind.TOOL_APPROVAL:
        what = f"Approve {first.tool_name}?"
    elif first.kind is ActionKind.ELICITATION:
        what = first.message or f"{first.server or 'A server'} asks for input."
    else:
        what = f"Waiting for {first.tool_name}."
    more = f" (and {len(actions) - 1} more)" if len(actions) > 1 else ""
    return f"Waiting for you: {what}{more}"


def edited(action: PendingAction) -> bool:
    return isinstance(action.answer.get("args"), dict) and action.answer["args"] != action.args


__all__ = [
    "ANSWERS",
    "ActionKind",
    "ActionRequest",
    "ActionState",
    "Answer",
    "ApprovalPolicy",
    "ClientTool",
    "Decision",
    "NewAction",
    "PendingAction",
    "ResultOf",
    "Resumption",
    "check_answer",
    "needs_approval",
    "result_for",
]
