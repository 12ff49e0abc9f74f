"""`ask_user_question`: the model asks the chat's user a question with a few suggested answers.
The call is not run: it becomes a pending action (domain/actions.py), the chat waits in
`requires_action`, and the user's answer (one of the options or free text) is the tool result."""

from __future__ import annotations

from typing import Any, ClassVar

from chatd.domain.actions import (
    MAX_QUESTION_OPTIONS,
    MIN_QUESTION_OPTIONS,
    ActionKind,
    ActionRequest,
)
from chatd.domain.tools import ToolContext, ToolResult

QUESTION_TOOL_NAME = "ask_user_question"
MAX_QUESTION_CHARS = 2000
MAX_OPTION_CHARS = 200

QUESTION_SECTION = (
    "When you need a decision or a fact only the user has, and guessing would waste their time, ask with "
    "`ask_user_question`: one clear question and 2-4 short suggested answers (the user may also type "
    "their own). The chat waits for the answer; do not ask what you can find out yourself."
)


class AskUserQuestion:
    name = QUESTION_TOOL_NAME
    description = (
        "Ask the user a question and wait for the answer. Give 2-4 short suggested answers in `options`; "
        "the user may pick one or write their own. The result is {\"answer\": \"...\"}."
    )
    parameters: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "question": {"type": "string", "description": "The question, complete and self-contained."},
            "options": {
                "type": "array",
                "items": {"type": "string"},
                "minItems": MIN_QUESTION_OPTIONS,
                "maxItems": MAX_QUESTION_OPTIONS,
                "description": "2-4 suggested answers.",
            },
        },
        "required": ["question", "options"],
    }
    # Nothing runs, so nothing can run twice.
    idempotent = True

    def action_for(self, args: dict[str, Any]) -> ActionRequest | None:
        question = args.get("question")
        options = args.get("options")
        if not isinstance(question, str) or not question.strip():
            return None  # `call` explains the mistake to the model
        if not isinstance(options, list) or not all(isinstance(o, str) and o.strip() for o in options):
            return None
        if not MIN_QUESTION_OPTIONS <= len(options) <= MAX_QUESTION_OPTIONS:
            return None
        return ActionRequest(
            ActionKind.QUESTION,
            message=question.strip()[:MAX_QUESTION_CHARS],
            options=[o.strip()[:MAX_OPTION_CHARS] for o in options],
        )

    async def call(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        # Reached only with arguments `action_for` refused.
        return ToolResult(
            {"error": f"ask_user_question needs a non-blank `question` and {MIN_QUESTION_OPTIONS}-{MAX_QUESTION_OPTIONS} "
             "non-blank strings in `options`; nothing was asked."},
            is_error=True,
        )
