"""Pure rules of the MCP client: names, slugs, redaction, auth headers, result conversion."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import mcp_types as types
import pytest

from chatd.domain.parts import FilePart
from chatd.domain.tools import ToolResult
from chatd.errors import InvalidInput
from chatd.mcp import OAuthToken, redact_url, validate_slug
from chatd.mcp.config import auth_headers, redact_text
from chatd.mcp.connection import filter_tools, with_defaults
from chatd.mcp.naming import NAME_RE, ToolNamer, sanitize_tool_name
from chatd.mcp.results import convert_result
from conftest import FileStore, make_config

# -- names ----------------------------------------------------------------------------------


def test_plain_names_are_slug_double_underscore_tool() -> None:
    assert sanitize_tool_name("github", "create_issue") == "github__create_issue"


@pytest.mark.parametrize("tool", ["files.read", "a/b", "résumé", "has space", "x" * 100, "emoji😀"])
def test_unsafe_or_long_names_are_rewritten_to_the_provider_rule(tool: str) -> None:
    name = sanitize_tool_name("srv", tool)
    assert NAME_RE.match(name), name
    assert name.startswith("srv__")


def test_names_differing_only_in_unsafe_characters_stay_distinct() -> None:
    assert sanitize_tool_name("s", "a.b") != sanitize_tool_name("s", "a/b")
    long_a, long_b = "x" * 80 + "a", "x" * 80 + "b"
    assert sanitize_tool_name("s", long_a) != sanitize_tool_name("s", long_b)


def test_namer_resolves_collisions_and_maps_back_through_its_table() -> None:
    namer = ToolNamer()
    clean = namer.assign("s", "a_b")
    # "a.b" sanitises to a hashed name; force a collision by pre-taking that exact name.
    hashed = sanitize_tool_name("s", "a.b")
    squatter = namer.assign("s", hashed.removeprefix("s__"))
    assert squatter == hashed
    other = namer.assign("s", "a.b")
    assert other != hashed and NAME_RE.match(other)
    assert len({clean, squatter, other}) == 3
    assert namer.lookup(other) == ("s", "a.b")
    assert namer.lookup("s__missing") is None


def test_namer_is_stable_and_never_splits_on_double_underscore() -> None:
    first, second = ToolNamer(), ToolNamer()
    tools = ["get__item", "get", "x.y", "z" * 70]
    assert [first.assign("s", t) for t in tools] == [second.assign("s", t) for t in tools]
    assert first.assign("s", "get__item") == "s__get__item"
    assert first.lookup("s__get__item") == ("s", "get__item")
    assert first.assign("s", "get__item") == "s__get__item"  # idempotent


# -- slugs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("slug", ["github", "my-server", "a", "s3", "a" * 32])
def test_valid_slugs_are_accepted(slug: str) -> None:
    assert validate_slug(slug) == slug


@pytest.mark.parametrize(
    "slug", ["", "a__b", "__", "Upper", "has space", "-lead", "trail-", "dot.s", "a" * 33, "a_b"]
)
def test_invalid_slugs_are_refused(slug: str) -> None:
    with pytest.raises(InvalidInput):
        validate_slug(slug)


# -- redaction ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://mcp.example.com/mcp", "https://mcp.example.com/mcp"),
        ("https://user:pw@mcp.example.com/mcp", "https://mcp.example.com/mcp"),
        ("https://mcp.example.com/mcp?token=abc", "https://mcp.example.com/mcp"),
        (
            "https://user:pw@mcp.example.com:8443/mcp?token=abc#frag",
            "https://mcp.example.com:8443/mcp",
        ),
        ("http://[::1]:9000/x#frag", "http://[::1]:9000/x"),
        ("not a url with secret", "<invalid url>"),
        ("http://host:notaport/", "<invalid url>"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_text_scrubs_urls_and_secrets() -> None:
    config = make_config(
        "https://u:p@h.example/mcp?k=1",
        auth_type="api_key",
        api_key_header="X-Key",
        api_key_value="sekrit-value",
    )
    text = "failed https://u:p@h.example/mcp?k=1 and http://other/x?sig=2 with sekrit-value"
    assert redact_text(text, config) == "failed https://h.example/mcp and http://other/x with ***"


# -- auth headers ---------------------------------------------------------------------------


def test_auth_headers_per_auth_type() -> None:
    token = OAuthToken(access_token="t0k", token_type="bearer")
    assert auth_headers(make_config(auth_type="oauth2"), token) == {"Authorization": "Bearer t0k"}
    assert auth_headers(
        make_config(auth_type="oauth2"), OAuthToken(access_token="t", token_type="MAC")
    ) == {"Authorization": "MAC t"}
    assert auth_headers(make_config(auth_type="oauth2"), None) == {}
    assert auth_headers(make_config(auth_type="oauth2"), OAuthToken(access_token="")) == {}
    assert auth_headers(
        make_config(auth_type="api_key", api_key_header="X-API-Key", api_key_value="v"), None
    ) == {"X-API-Key": "v"}
    assert (
        auth_headers(make_config(auth_type="api_key", api_key_header="", api_key_value="v"), None)
        == {}
    )
    assert auth_headers(
        make_config(auth_type="custom_headers", custom_headers={"A": "1", "B": "2"}), token
    ) == {
        "A": "1",
        "B": "2",
    }
    assert auth_headers(make_config(auth_type="none", custom_headers={"A": "1"}), token) == {}


# -- filtering ------------------------------------------------------------------------------


def _tool(name: str) -> types.Tool:
    return types.Tool(name=name, input_schema={"type": "object"})


def test_allow_list_then_deny_list_by_exact_name() -> None:
    tools = [_tool(n) for n in ("a", "b", "c", "A")]
    assert [t.name for t in filter_tools(make_config(), tools)] == ["a", "b", "c", "A"]
    assert [t.name for t in filter_tools(make_config(tool_allow_list=("a", "b")), tools)] == [
        "a",
        "b",
    ]
    assert [t.name for t in filter_tools(make_config(tool_deny_list=("a",)), tools)] == [
        "b",
        "c",
        "A",
    ]
    both = make_config(tool_allow_list=("a", "b"), tool_deny_list=("b",))
    assert [t.name for t in filter_tools(both, tools)] == ["a"]


# -- results --------------------------------------------------------------------------------

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)


async def _convert(content: list[Any], store: FileStore | None = None, **kw: Any) -> ToolResult:
    max_chars = kw.pop("max_chars", 100_000)
    result = types.CallToolResult(content=content, **kw)
    return await convert_result(result, tool_name="s__t", store_file=store, max_chars=max_chars)


async def test_text_items_are_joined() -> None:
    result = await _convert([types.TextContent(text="a"), types.TextContent(text="b")])
    assert result == ToolResult(result="a\nb")


async def test_empty_result_is_an_empty_string() -> None:
    assert await _convert([]) == ToolResult(result="")


async def test_is_error_is_propagated() -> None:
    assert await _convert([types.TextContent(text="bad")], is_error=True) == ToolResult(
        result="bad", is_error=True
    )


async def test_every_image_and_audio_item_is_kept_as_a_file() -> None:
    store = FileStore()
    b64 = base64.b64encode(PNG).decode()
    result = await _convert(
        [
            types.TextContent(text="two pictures and a sound"),
            types.ImageContent(data=b64, mime_type="image/png"),
            types.ImageContent(data=b64, mime_type="image/png"),
            types.AudioContent(data=base64.b64encode(b"RIFF").decode(), mime_type="audio/wav"),
        ],
        store,
    )
    assert [p.media_type for p in result.files if isinstance(p, FilePart)] == [
        "image/png",
        "image/png",
        "audio/wav",
    ]
    assert [a["type"] for a in result.result["attachments"]] == ["image", "image", "audio"]
    assert result.result["text"] == "two pictures and a sound"
    assert sorted(v[0] for v in store.files.values()) == sorted([PNG, PNG, b"RIFF"])


async def test_undecodable_image_is_described_not_fatal() -> None:
    result = await _convert(
        [types.ImageContent(data="!!!notbase64", mime_type="image/png")], FileStore()
    )
    assert result.files == []
    assert "decode error" in result.result["attachments"][0]["error"]


async def test_images_without_a_file_store_are_described() -> None:
    result = await _convert(
        [types.ImageContent(data=base64.b64encode(PNG).decode(), mime_type="image/png")]
    )
    assert result.files == []
    assert result.result["attachments"][0] == {
        "type": "image",
        "media_type": "image/png",
        "name": "s__t-0.png",
        "size": len(PNG),
        "note": "not stored",
    }


async def test_json_text_copy_of_structured_content_is_not_repeated() -> None:
    result = await _convert([types.TextContent(text='{"a": 1}')], structured_content={"a": 1})
    assert result.result == {"structured_content": {"a": 1}}
    different = await _convert([types.TextContent(text="summary")], structured_content={"a": 1})
    assert different.result == {"text": "summary", "structured_content": {"a": 1}}


async def test_oversized_text_is_truncated_with_a_note() -> None:
    result = await _convert([types.TextContent(text="y" * 5000)], max_chars=500)
    assert len(result.result) <= 500
    assert result.result.endswith("of 5000 characters]")


async def test_oversized_structured_content_is_cut_to_fit() -> None:
    big = {"rows": [{"i": i, "v": "z" * 50} for i in range(500)]}
    result = await _convert(
        [types.TextContent(text="t" * 3000)], structured_content=big, max_chars=2000
    )
    import json

    assert len(json.dumps(result.result)) <= 2000
    assert result.result["structured_content"]["truncated"] is True


async def test_unique_file_id_per_tool_result_store_failure_is_described() -> None:
    async def broken(data: bytes, media_type: str, name: str) -> str:
        raise RuntimeError("disk full")

    result = await convert_result(
        types.CallToolResult(
            content=[types.ImageContent(data=base64.b64encode(PNG).decode(), mime_type="image/png")]
        ),
        tool_name="s__t",
        store_file=broken,
    )
    assert result.files == []
    assert result.result["attachments"][0]["error"] == "could not be stored"


def test_oauth_token_expiry_margin() -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime(2026, 1, 1, tzinfo=UTC)
    token = OAuthToken(access_token="a", expires_at=now + timedelta(seconds=30))
    assert token.expires_within(now, timedelta(seconds=60))
    assert not token.expires_within(now, timedelta(seconds=10))
    assert not OAuthToken(access_token="a").expires_within(now, timedelta(days=1))
    assert uuid.UUID(int=0) is not None


async def test_small_overflow_cuts_text_and_keeps_structured_content_whole() -> None:
    result = await _convert(
        [types.TextContent(text="t" * 3000)], structured_content={"ok": True}, max_chars=1000
    )
    assert result.result["structured_content"] == {"ok": True}
    assert "[truncated: showing" in result.result["text"]


def test_an_accepted_form_gets_the_schemas_defaults_for_the_fields_it_leaves_out() -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "default": "John"}, "age": {"type": "integer", "default": 30}, "note": {"type": "string"}},
    }
    assert with_defaults({"name": "Ada"}, schema) == {"name": "Ada", "age": 30}
    assert with_defaults({}, {"type": "object"}) == {}
    # Keys the form did not ask for are not passed on to the server.
    assert with_defaults({"name": "Ada", "extra": "y"}, schema) == {"name": "Ada", "age": 30}
