"""A model's tool definitions prepared once, not for every request.

pydantic-ai runs each tool's JSON schema through the model profile's transformer on every
request (`Model.customize_request_parameters`): a walk of the whole schema per tool per step. With
MCP servers a turn offers dozens of tools, and the walk was ~5% of a served replica's CPU at 100
chats with one MCP server's 13 tools (65 tools cost 7–10 ms of CPU per turn). The tool
definitions themselves live as long as their source (an MCP connection's listing, a turn's
built-in tools), so the prepared form is kept per model and per definition, checked to be still
the definition it was made from, and the transformer runs again only for a new or changed one.
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

from pydantic_ai.models import Model, ModelRequestParameters
from pydantic_ai.models import _customize_tool_def as customize_tool_def  # pyright: ignore[reportPrivateUsage]
from pydantic_ai.tools import ToolDefinition

# Prepared definitions kept per model: a deployment's MCP tools and built-ins, with room for
# listings that change (a changed definition is a new entry; the oldest go first).
LIMIT = 2048


class PreparedTools:
    __slots__ = ("_entries", "_original", "_transformer")

    def __init__(self, transformer: Any, original: Callable[[ModelRequestParameters], ModelRequestParameters]) -> None:
        self._transformer = transformer
        self._original = original
        # id(definition) -> (the definition, a copy of it as it was, its prepared form)
        self._entries: OrderedDict[int, tuple[ToolDefinition, ToolDefinition, ToolDefinition]] = OrderedDict()

    def customize(self, params: ModelRequestParameters) -> ModelRequestParameters:
        if params.output_tools or params.output_object is not None:
            # Not a request chatd makes (no structured output): pydantic-ai's own hook.
            return self._original(params)
        return replace(params, function_tools=[self._prepared(t) for t in params.function_tools])

    def _prepared(self, tool: ToolDefinition) -> ToolDefinition:
        entry = self._entries.get(id(tool))
        # The same object, unchanged since (a definition is a dataclass holding dicts: equality
        # compares them all, far cheaper than the transformer's walk).
        if entry is not None and entry[0] is tool and entry[1] == tool:
            self._entries.move_to_end(id(tool))
            return entry[2]
        prepared = customize_tool_def(self._transformer, tool)
        self._entries[id(tool)] = (tool, copy.deepcopy(tool), prepared)
        if len(self._entries) > LIMIT:
            self._entries.popitem(last=False)
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
