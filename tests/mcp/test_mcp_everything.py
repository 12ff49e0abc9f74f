"""connect_all against the reference server @modelcontextprotocol/server-everything (npm), on
127.0.0.1 over streamable HTTP, SSE and stdio. A handshake-era (TypeScript SDK) server, so these
tests also cover the initialize fallback of the SDK's protocol probe."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from chatd.domain.mcp import McpServerConfig
from chatd.domain.parts import FilePart, ToolProgressPart
from chatd.domain.tools import Tool
from chatd.mcp import connect_all, system_prompt_section
from conftest import NODE_DIR, Emitted, FileStore, NodeServer, _node_env, make_config, make_ctx

pytestmark = pytest.mark.usefixtures("no_leaked_tasks")


@pytest.fixture(params=["streamableHttp", "sse", "stdio"])
def everything_config(
    request: pytest.FixtureRequest,
    start_everything: Callable[[str], NodeServer],
    everything_entry: Path,
) -> McpServerConfig:
    mode: str = request.param
    if mode == "stdio":
        env = _node_env()
        return make_config(
            slug="every",
            transport="stdio",
            command="node",
            args=(str(everything_entry), "stdio"),
            env={"NODE_OPTIONS": env["NODE_OPTIONS"]},
        )
    server = start_everything(mode)
    transport = "sse" if mode == "sse" else "streamable_http"
    return make_config(server.url, slug="every", transport=transport)


def by_name(tools: list[Tool]) -> dict[str, Tool]:
    return {t.name: t for t in tools}


async def test_reference_server_tools_round_trip(
    everything_config: McpServerConfig, file_store: FileStore
) -> None:
    tools, close = await connect_all(
        [everything_config], {}, store_file=file_store, call_timeout=20
    )
    try:
        named = by_name(tools)
        assert {
            "every__echo",
            "every__get-sum",
            "every__get-tiny-image",
            "every__get-structured-content",
        } <= set(named)
        ctx = make_ctx()

        echo = await named["every__echo"].call({"message": "hi"}, ctx)
        assert echo.result == "Echo: hi" and not echo.is_error

        total = await named["every__get-sum"].call({"a": 2, "b": 3}, ctx)
        assert "5" in str(total.result)

        image = await named["every__get-tiny-image"].call({}, ctx)
        files = [p for p in image.files if isinstance(p, FilePart)]
        assert [f.media_type for f in files] == ["image/png"]
        assert file_store.files[files[0].file_id][0].startswith(b"\x89PNG")

        structured = await named["every__get-structured-content"].call(
            {"location": "New York"}, ctx
        )
        assert set(structured.result["structured_content"]) == {
            "temperature",
            "conditions",
            "humidity",
        }

        reference = await named["every__get-resource-reference"].call(
            {"resourceType": "Text", "resourceId": 1}, ctx
        )
        resources = [a for a in reference.result["attachments"] if a["type"] == "resource"]
        assert resources and resources[0]["uri"].startswith("demo://resource/")

        section = system_prompt_section(close)
        assert "every__echo" in section
    finally:
        await close()


async def test_reference_server_progress_is_emitted(everything_config: McpServerConfig) -> None:
    # 3 steps of 0.3 s each against a 0.7 s timeout: only progress keeps the call alive.
    tools, close = await connect_all([everything_config], {}, call_timeout=0.7)
    emitted = Emitted()
    try:
        long_op = by_name(tools)["every__trigger-long-running-operation"]
        result = await long_op.call({"duration": 0.9, "steps": 3}, make_ctx(emitted))
    finally:
        await close()
    assert not result.is_error, result.result
    assert "completed" in str(result.result)
    assert [p.progress for p in emitted.parts if isinstance(p, ToolProgressPart)] == [1, 2, 3]


async def test_reference_server_invalid_arguments_are_caught_locally(
    everything_config: McpServerConfig,
) -> None:
    tools, close = await connect_all([everything_config], {})
    try:
        result = await by_name(tools)["every__get-sum"].call({"a": "two"}, make_ctx())
    finally:
        await close()
    assert result.is_error
    assert "Invalid arguments for every__get-sum" in str(result.result)


def test_node_fixture_files_are_committed() -> None:
    assert (NODE_DIR / "package.json").exists()
    assert (NODE_DIR / "package-lock.json").exists()
    assert (NODE_DIR / "loopback.cjs").exists()
