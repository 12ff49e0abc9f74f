"""Client-side tools: declared by the chat's client (an IDE, a script) when it creates the chat.
The model's call is not run here: it becomes a pending action that waits for the client's POST of
the result, until a deadline after which the model reads a timeout result (domain/actions.py)."""

from __future__ import annotations

import copy
from typing import Any

from chatd.domain.actions import ActionKind, ActionRequest, ClientTool
from chatd.domain.tools import ToolContext, ToolResult


class ClientSideTool:
    # Nothing runs here, so nothing can run twice.
    idempotent = True

    def __init__(self, spec: ClientTool, timeout_s: float) -> None:
        self.spec = spec
        self.timeout_s = timeout_s
        params = copy.deepcopy(spec.input_schema) or {}
        params.setdefault("type", "object")
        if params.get("type") == "object":
            params.setdefault("properties", {})
        self._parameters = params

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def description(self) -> str:
        return self.spec.description

    @property
    def parameters(self) -> dict[str, Any]:
        return self._parameters

    def action_for(self, args: dict[str, Any]) -> ActionRequest:
        return ActionRequest(ActionKind.CLIENT_TOOL, schema=None, timeout_s=self.timeout_s)

    async def call(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        raise AssertionError("a client-side tool is run by the client, never here")  # action_for always asks
