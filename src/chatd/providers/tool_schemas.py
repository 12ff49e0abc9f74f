"""A model's tool definitions prepared once, not for every request.

pydantic-ai runs each tool's JSON schema through the model profile's transformer on every
request (`Model.customize_request_parameters`): a walk of the whole schema per tool per step. With
MCP servers a turn offers dozens of tools, and the walk was ~5% of a served replica's CPU at 100
chats with one MCP server's 13 tools (65 tools cost 7–10 ms of CPU per turn). Definitions rarely
change (an MCP server's listing, the built-in tools), so the prepared form is kept per model and
per tool name with a copy of the definition it was made from: a definition equal to the copy
(whether or not the turn built it anew) gets it, and the transformer runs only for a new or
changed one.
pydantic-ai allows this: its `prepare_request` does not mutate what the hook returns, "which a
custom model may reuse across requests". tests/providers/test_tool_schemas.py compares the result
with pydantic-ai's own for every wire's model.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from pydantic_ai.models import (
    Model,
    ModelRequestParameters,
    _customize_tool_def,  # pyright: ignore[reportPrivateUsage]
)
from pydantic_ai.tools import ToolDefinition

# What pydantic-ai's hook does to each definition (a module attribute: tests count its calls).
customize_tool_def = _customize_tool_def

# Prepared definitions kept per model, by tool name: a deployment's MCP tools and built-ins,
# with room for listings that change (the names used longest ago go first), and a few versions
# of one name (the newest kept).
LIMIT = 2048
VARIANTS = 4


class PreparedTools:
    __slots__ = ("_entries", "_original", "_transformer")

    def __init__(self, transformer: Any, original: Callable[[ModelRequestParameters], ModelRequestParameters]) -> None:
        self._transformer = transformer
        self._original = original
        # tool name -> [(a copy of a definition as it was prepared, its prepared form)], a few
        # variants per name (two chats' client tools may share a name), most recent last.
        self._entries: OrderedDict[str, list[tuple[ToolDefinition, ToolDefinition]]] = OrderedDict()

    def customize(self, params: ModelRequestParameters) -> ModelRequestParameters:
        if params.output_tools or params.output_object is not None:
            # Not a request chatd makes (no structured output): pydantic-ai's own hook.
            return self._original(params)
        return replace(params, function_tools=[self._prepared(t) for t in params.function_tools])

    def _prepared(self, tool: ToolDefinition) -> ToolDefinition:
        # Matched by content, not identity: a turn builds its definitions anew (an MCP listing's
        # schema is one object per listing, but a tool's may be built per turn). A definition
        # is a dataclass holding dicts: comparing it with the kept copy is far cheaper than the
        # transformer's walk.
        variants = self._entries.get(tool.name)
        if variants is not None:
            for kept, prepared in variants:
                if kept == tool:
                    self._entries.move_to_end(tool.name)
                    return prepared
        prepared = customize_tool_def(self._transformer, tool)
        if variants is None:
            variants = self._entries[tool.name] = []
            if len(self._entries) > LIMIT:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(tool.name)
        variants.append((copy.deepcopy(tool), prepared))
        del variants[:-VARIANTS]
        return prepared


def prepare_tools_once(model: Model) -> Model:
    """`model`, its tool definitions prepared once each (a model whose profile transforms none is
    left as it is)."""
    transformer = model.profile.get("json_schema_transformer")
    # Only over pydantic-ai's own hook: a model class with a hook of its own keeps it.
    if transformer is not None and type(model).customize_request_parameters is Model.customize_request_parameters:
        prepared = PreparedTools(transformer, model.customize_request_parameters)
        # An instance attribute over the method: the model's class stays pydantic-ai's own (the
        # stream readers and pydantic-ai's wrappers look at it).
        model.customize_request_parameters = prepared.customize  # type: ignore[method-assign,assignment]
    return model
