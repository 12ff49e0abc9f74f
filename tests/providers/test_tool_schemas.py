"""A model's tool definitions prepared once (providers/tool_schemas.py) are exactly what
pydantic-ai's per-request preparation makes of them, for every wire's models, however often they
are asked for, and a definition changed in place is prepared again."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic_ai.models import Model, ModelRequestParameters
from pydantic_ai.tools import ToolDefinition

from chatd.providers import tool_schemas
from chatd.providers.config import ProviderConfig
from chatd.providers.models import build_model, build_provider

MODELS = [
    ("openai", "gpt-4o-mini", "https://api.openai.com/v1"),
    ("openai-compatible", "qwen3:8b", "http://127.0.0.1:9/v1"),
    ("anthropic", "claude-sonnet-4-5", None),
    ("google", "gemini-2.5-flash", None),
]

# Shapes MCP servers send: references, nullable unions, formats, defaults, free-form objects,
# titles and descriptions the transformers drop or keep, `strict` unset and set.
SCHEMAS: list[dict[str, Any]] = [
    {"type": "object", "properties": {"text": {"type": "string", "description": "what to echo"}}, "required": ["text"]},
    {
        "type": "object",
        "title": "Args",
        "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "number"}, "y": {"type": "number", "default": 0}}}},
        "properties": {
            "at": {"$ref": "#/$defs/Point"},
            "path": {"type": "array", "items": {"$ref": "#/$defs/Point"}, "minItems": 1},
            "label": {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}], "default": None},
            "extra": {"type": "object", "additionalProperties": True},
        },
        "required": ["at"],
        "additionalProperties": False,
    },
    {"type": "object", "properties": {}},
    {"type": "object", "properties": {"kind": {"enum": ["a", "b"]}, "n": {"type": "integer", "minimum": 1, "maximum": 9}}},
]


def _tools() -> list[ToolDefinition]:
    return [
        ToolDefinition(name=f"srv__tool{i}", description=f"tool {i}", parameters_json_schema=copy.deepcopy(schema), strict=strict)
        for i, schema in enumerate(SCHEMAS)
        for strict in (None, True, False)
    ]


def _model(kind: str, name: str, base_url: str | None) -> Model:
    provider = ProviderConfig(kind, "sk-test", base_url)
    return build_model(provider, name, build_provider(provider))


def _reference(model: Model, params: ModelRequestParameters) -> ModelRequestParameters:
    return Model.customize_request_parameters(model, params)


@pytest.mark.filterwarnings("ignore:`dict` fields are not supported by Anthropic")
@pytest.mark.parametrize(("kind", "name", "base_url"), MODELS)
def test_prepared_tools_are_pydantic_ais(kind: str, name: str, base_url: str | None) -> None:
    model = _model(kind, name, base_url)
    assert isinstance(model.customize_request_parameters.__self__, tool_schemas.PreparedTools)  # type: ignore[attr-defined]
    tools = _tools()
    params = ModelRequestParameters(function_tools=tools)
    expected = _reference(model, params)
    for _ in range(3):  # prepared once, then reused
        assert model.customize_request_parameters(params) == expected
        assert model.customize_request_parameters(ModelRequestParameters(function_tools=list(reversed(tools)))).function_tools == list(
            reversed(expected.function_tools)
        )


def test_a_definition_changed_in_place_is_prepared_again() -> None:
    model = _model("openai", "gpt-4o-mini", "https://api.openai.com/v1")
    tool = _tools()[3]
    first = model.customize_request_parameters(ModelRequestParameters(function_tools=[tool])).function_tools[0]
    tool.parameters_json_schema["properties"]["at"] = {"type": "string"}
    tool.description = "changed"
    again = model.customize_request_parameters(ModelRequestParameters(function_tools=[tool]))
    assert again == _reference(model, ModelRequestParameters(function_tools=[tool]))
    assert again.function_tools[0] != first


def test_definitions_built_anew_each_turn_are_prepared_once(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model("openai", "gpt-4o-mini", "https://api.openai.com/v1")
    calls: list[str] = []
    real = tool_schemas.customize_tool_def

    def counting(transformer: Any, tool: ToolDefinition) -> ToolDefinition:
        calls.append(tool.name)
        return real(transformer, tool)

    monkeypatch.setattr(tool_schemas, "customize_tool_def", counting)
    model.customize_request_parameters(ModelRequestParameters(function_tools=_tools()))
    assert len(calls) == 12
    # The next turn's definitions: equal, but new objects.
    again = ModelRequestParameters(function_tools=_tools())
    assert model.customize_request_parameters(again) == _reference(model, again)
    assert len(calls) == 12
    changed = _tools()
    changed[0].description = "another description"
    model.customize_request_parameters(ModelRequestParameters(function_tools=changed))
    assert calls[12:] == [changed[0].name]


def test_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tool_schemas, "LIMIT", 2)
    monkeypatch.setattr(tool_schemas, "VARIANTS", 2)
    model = _model("openai", "gpt-4o-mini", "https://api.openai.com/v1")
    tools = _tools()  # four names, three variants each (strict None, True, False)
    params = ModelRequestParameters(function_tools=tools)
    assert model.customize_request_parameters(params) == _reference(model, params)
    prepared = model.customize_request_parameters.__self__  # type: ignore[attr-defined]
    assert len(prepared._entries) == 2
    assert all(len(variants) == 2 for variants in prepared._entries.values())
    # Still right when what it kept is not what is asked for.
    assert model.customize_request_parameters(params) == _reference(model, params)
