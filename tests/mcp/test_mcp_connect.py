"""connect_all against real servers on 127.0.0.1: the Python SDK's MCPServer and broken servers."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from pathlib import Path
from typing import Any

import pytest
from mcp_test_servers import (
    INSTRUCTIONS,
    PNG_BYTES,
    RequireHeader,
    ScopeGate,
    build_server,
    free_port,
    garbage_app,
    paginated_server,
    serve,
    silent_listener,
)

from chatd.domain.mcp import McpServerConfig
from chatd.domain.parts import FilePart, ToolProgressPart
from chatd.domain.tools import Tool, ToolResult
from chatd.mcp import (
    McpAuthError,
    McpConnectError,
    OAuthToken,
    connect_all,
    list_tools_check,
    system_prompt_section,
)
from chatd.mcp.client import McpTool
from chatd.mcp.oauth import merge_scopes
from conftest import Emitted, FileStore, PyServer, make_config, make_ctx

pytestmark = pytest.mark.usefixtures("no_leaked_tasks")


class Errors:
    def __init__(self) -> None:
        self.reported: list[tuple[str, str]] = []

    def __call__(self, config: McpServerConfig, message: str) -> None:
        self.reported.append((config.slug, message))


def by_name(tools: list[Tool]) -> dict[str, Tool]:
    return {t.name: t for t in tools}


async def call(tool: Tool, args: dict[str, Any], emit: Emitted | None = None) -> ToolResult:
    return await tool.call(args, make_ctx(emit))


async def test_tools_are_namespaced_with_descriptions_and_parameters(py_server: PyServer) -> None:
    tools, close = await connect_all([make_config(py_server.url, slug="py")], {})
    try:
        named = by_name(tools)
        assert {"py__echo", "py__add", "py__fail", "py__weather"} <= set(named)
        assert all(t.name.startswith("py__") for t in tools)
        add = named["py__add"]
        assert add.description == "Add two integers."
        assert add.parameters["type"] == "object"
        assert set(add.parameters["properties"]) == {"a", "b"}
        assert sorted(add.parameters["required"]) == ["a", "b"]
    finally:
        await close()


async def test_call_round_trip_strips_the_prefix(py_server: PyServer) -> None:
    tools, close = await connect_all([make_config(py_server.url, slug="py")], {})
    try:
        result = await call(by_name(tools)["py__echo"], {"text": "hello"})
        assert result == ToolResult(result="hello", is_error=False, files=[])
        assert py_server.state.calls == ["echo"]
    finally:
        await close()


async def test_allow_list_keeps_only_listed_tools(py_server: PyServer) -> None:
    config = make_config(py_server.url, slug="py", tool_allow_list=("echo", "add"))
    tools, close = await connect_all([config], {})
    await close()
    assert sorted(t.name for t in tools) == ["py__add", "py__echo"]


async def test_deny_list_removes_tools_after_the_allow_list(py_server: PyServer) -> None:
    config = make_config(
        py_server.url, slug="py", tool_allow_list=("echo", "add"), tool_deny_list=("add",)
    )
    tools, close = await connect_all([config], {})
    await close()
    assert [t.name for t in tools] == ["py__echo"]

    config = make_config(py_server.url, slug="py", tool_deny_list=("fail", "slow"))
    tools, close = await connect_all([config], {})
    await close()
    names = {t.name for t in tools}
    assert "py__echo" in names and "py__fail" not in names and "py__slow" not in names


async def test_pagination_is_followed_to_the_last_page() -> None:
    with serve(paginated_server(pages=3, per_page=2).streamable_http_app()) as running:
        tools, close = await connect_all([make_config(running.url, slug="paged")], {})
        try:
            assert [t.name for t in tools] == [f"paged__t{i}" for i in range(6)]
            result = await call(by_name(tools)["paged__t5"], {})
            assert result.result == "called t5"
        finally:
            await close()


async def test_disabled_server_contributes_nothing(py_server: PyServer) -> None:
    tools, close = await connect_all([make_config(py_server.url, enabled=False)], {})
    await close()
    assert tools == []


@pytest.mark.parametrize(
    ("auth", "header", "value"),
    [
        (
            {"auth_type": "api_key", "api_key_header": "X-API-Key", "api_key_value": "k-123"},
            "X-API-Key",
            "k-123",
        ),
        ({"auth_type": "custom_headers", "custom_headers": {"X-Team": "blue"}}, "X-Team", "blue"),
        ({"auth_type": "oauth2"}, "Authorization", "Bearer tok-1"),
    ],
    ids=["api_key", "custom_headers", "oauth2_bearer"],
)
async def test_auth_headers_reach_the_server(auth: dict[str, Any], header: str, value: str) -> None:
    app = RequireHeader(build_server().streamable_http_app(), header, value)
    with serve(app) as running:
        config = make_config(running.url, slug="sec", **auth)
        tokens = {config.id: OAuthToken(access_token="tok-1", token_type="bearer")}
        errors = Errors()
        tools, close = await connect_all([config], tokens, on_server_error=errors)
        try:
            assert errors.reported == []
            result = await call(by_name(tools)["sec__header"], {"name": header})
            assert result.result == value
        finally:
            await close()
        assert set(app.seen) == {value.encode()}


async def test_wrong_credentials_are_reported_as_unauthorized_and_skipped(
    py_server: PyServer,
) -> None:
    app = RequireHeader(build_server().streamable_http_app(), "Authorization", "Bearer good")
    with serve(app) as running:
        bad = make_config(running.url, slug="sec", auth_type="oauth2")
        good = make_config(py_server.url, slug="py")
        errors = Errors()
        tools, close = await connect_all(
            [bad, good], {bad.id: OAuthToken(access_token="expired")}, on_server_error=errors
        )
        await close()
        assert errors.reported == [("sec", "unauthorized (HTTP 401)")]
        assert tools and all(t.name.startswith("py__") for t in tools)
        with pytest.raises(McpAuthError) as caught:
            await list_tools_check(bad, OAuthToken(access_token="expired"))
        assert caught.value.status == 401


async def test_empty_oauth_token_connects_without_authorization(py_server: PyServer) -> None:
    config = make_config(py_server.url, slug="py", auth_type="oauth2")
    tools, close = await connect_all([config], {config.id: OAuthToken(access_token="")})
    try:
        assert (await call(by_name(tools)["py__header"], {"name": "Authorization"})).result == ""
    finally:
        await close()


async def test_unreachable_server_is_skipped_while_others_work(py_server: PyServer) -> None:
    dead = make_config(
        f"http://user:secret@127.0.0.1:{free_port()}/mcp?token=abc#frag", slug="dead"
    )
    errors = Errors()
    tools, close = await connect_all(
        [dead, make_config(py_server.url, slug="py")], {}, on_server_error=errors
    )
    try:
        assert [slug for slug, _ in errors.reported] == ["dead"]
        message = errors.reported[0][1]
        assert "secret" not in message and "token=abc" not in message
        assert (
            await call(by_name(tools)["py__echo"], {"text": "still here"})
        ).result == "still here"
    finally:
        await close()


async def test_hanging_server_is_skipped_after_the_connect_timeout(py_server: PyServer) -> None:
    with silent_listener() as listener:
        hanging = make_config(f"http://127.0.0.1:{listener.port}/mcp", slug="hang")
        errors = Errors()
        started = time.monotonic()
        tools, close = await connect_all(
            [hanging, make_config(py_server.url, slug="py")],
            {},
            connect_timeout=0.5,
            on_server_error=errors,
        )
        elapsed = time.monotonic() - started
        await close()
    assert errors.reported == [("hang", "timed out after 0.5s (the server's connect_timeout_s setting)")]
    assert elapsed < 5
    assert "py__echo" in by_name(tools)


async def test_garbage_answering_server_is_skipped() -> None:
    with serve(garbage_app) as running:
        errors = Errors()
        tools, close = await connect_all(
            [make_config(running.url, slug="junk")], {}, connect_timeout=3, on_server_error=errors
        )
        await close()
    assert tools == []
    assert [slug for slug, _ in errors.reported] == ["junk"]


async def test_tool_error_is_marked_is_error(py_server: PyServer) -> None:
    tools, close = await connect_all([make_config(py_server.url, slug="py")], {})
    try:
        result = await call(by_name(tools)["py__fail"], {"message": "boom"})
        assert result.is_error
        assert "boom" in str(result.result)
    finally:
        await close()


async def test_invalid_arguments_are_rejected_before_calling(py_server: PyServer) -> None:
    tools, close = await connect_all([make_config(py_server.url, slug="py")], {})
    try:
        add = by_name(tools)["py__add"]
        result = await call(add, {"a": "one"})
        assert result.is_error
        assert "Invalid arguments for py__add" in result.result
        assert "'b' is a required property" in result.result
        not_an_object = await add.call("nope", make_ctx())  # type: ignore[arg-type]
        assert not_an_object.is_error
        assert py_server.state.calls == []
        assert (await call(add, {"a": 1, "b": 2})).result == "3"
    finally:
        await close()


async def test_image_result_becomes_a_file_part(py_server: PyServer, file_store: FileStore) -> None:
    tools, close = await connect_all(
        [make_config(py_server.url, slug="py")], {}, store_file=file_store
    )
    try:
        result = await call(by_name(tools)["py__image"], {})
    finally:
        await close()
    assert not result.is_error
    [file_part] = result.files
    assert isinstance(file_part, FilePart) and file_part.media_type == "image/png"
    data, media_type, name = file_store.files[file_part.file_id]
    assert (data, media_type) == (PNG_BYTES, "image/png")
    assert name.startswith("py__image")
    [attachment] = result.result["attachments"]
    assert attachment["file_id"] == file_part.file_id and attachment["type"] == "image"


async def test_structured_content_is_preserved(py_server: PyServer) -> None:
    tools, close = await connect_all([make_config(py_server.url, slug="py")], {})
    try:
        result = await call(by_name(tools)["py__weather"], {"city": "Oslo"})
    finally:
        await close()
    # The server's JSON text copy of the structured content is not repeated.
    assert result.result == {"structured_content": {"city": "Oslo", "celsius": 21.5}}


async def test_embedded_resources_and_links_are_kept(
    py_server: PyServer, file_store: FileStore
) -> None:
    tools, close = await connect_all(
        [make_config(py_server.url, slug="py")], {}, store_file=file_store
    )
    try:
        result = await call(by_name(tools)["py__resources"], {})
    finally:
        await close()
    text_res, blob_res, link = result.result["attachments"]
    assert result.result["text"] == "see attached"
    assert text_res == {
        "type": "resource",
        "uri": "file:///notes.txt",
        "media_type": "text/plain",
        "text": "hello notes",
    }
    assert blob_res["file_id"] == result.files[0].file_id  # type: ignore[union-attr]
    assert file_store.files[blob_res["file_id"]][0] == PNG_BYTES
    assert link == {
        "type": "resource_link",
        "uri": "https://example.com/doc",
        "name": "doc",
        "description": "A document",
    }


async def test_oversized_result_is_truncated_with_a_note(py_server: PyServer) -> None:
    tools, close = await connect_all(
        [make_config(py_server.url, slug="py")], {}, max_result_chars=1000
    )
    try:
        result = await call(by_name(tools)["py__big"], {"n": 50_000})
    finally:
        await close()
    text = result.result
    assert isinstance(text, str) and len(text) <= 1000
    assert "[truncated: showing" in text and "of 50000 characters]" in text


async def test_call_timeout_gives_an_error_and_the_connection_stays_usable(
    py_server: PyServer,
) -> None:
    tools, close = await connect_all([make_config(py_server.url, slug="py")], {}, call_timeout=0.3)
    try:
        named = by_name(tools)
        result = await call(named["py__slow"], {"seconds": 30})
        assert result.is_error and "timed out after 0.3s" in result.result
        # The courtesy cancel reaches the server, which stops the work.
        assert await asyncio.to_thread(py_server.state.cancelled.wait, 5)
        assert (await call(named["py__echo"], {"text": "after"})).result == "after"
    finally:
        await close()


async def test_progress_resets_the_call_timer_and_is_emitted(py_server: PyServer) -> None:
    tools, close = await connect_all([make_config(py_server.url, slug="py")], {}, call_timeout=0.6)
    emitted = Emitted()
    try:
        # 5 steps 0.2 s apart take 1 s in all, longer than the timeout but never silent for 0.6 s.
        result = await call(by_name(tools)["py__progress"], {"steps": 5, "delay": 0.2}, emitted)
    finally:
        await close()
    assert result.result == "finished"
    assert [p.progress for p in emitted.parts if isinstance(p, ToolProgressPart)] == [1, 2, 3, 4, 5]
    first = emitted.parts[0]
    assert first == ToolProgressPart(
        tool_call_id="call-1", tool_name="py__progress", progress=1, total=5, message="step 1"
    )


async def test_tool_list_is_reread_on_list_changed(py_server: PyServer) -> None:
    changed = asyncio.Event()
    tools, close = await connect_all(
        [make_config(py_server.url, slug="py")], {}, on_tools_changed=changed.set
    )
    try:
        assert "py__late" not in by_name(tools)
        await call(by_name(tools)["py__grow"], {})
        await asyncio.wait_for(changed.wait(), 5)
        current = by_name(close.tools())
        assert "py__late" in current
        assert (await call(current["py__late"], {})).result == "late"
        # Existing tool objects stay valid across the change.
        assert (await call(by_name(tools)["py__echo"], {"text": "x"})).result == "x"
    finally:
        await close()


async def test_sse_transport_round_trip(py_sse_server: PyServer) -> None:
    config = make_config(py_sse_server.url, slug="sse", transport="sse")
    tools, close = await connect_all([config], {})
    try:
        assert (await call(by_name(tools)["sse__echo"], {"text": "over sse"})).result == "over sse"
    finally:
        await close()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead but unreaped; the client must have reaped it.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists()


async def test_stdio_round_trip_and_close_ends_the_process(
    stdio_python_command: tuple[str, list[str]], tmp_path: Path
) -> None:
    command, args = stdio_python_command
    pid_file = tmp_path / "pid"
    config = make_config(
        slug="local", transport="stdio", command=command, args=(*args, str(pid_file))
    )
    tools, close = await connect_all([config], {})
    try:
        assert (await call(by_name(tools)["local__echo"], {"text": "piped"})).result == "piped"
        pid = int(pid_file.read_text())
        assert _pid_alive(pid)
    finally:
        await close()
    assert not _pid_alive(pid)


async def test_stdio_server_dying_mid_session_fails_the_running_call_and_the_next_restarts_it(
    stdio_python_command: tuple[str, list[str]], tmp_path: Path
) -> None:
    command, args = stdio_python_command
    pid_file = tmp_path / "pid"
    config = make_config(
        slug="local", transport="stdio", command=command, args=(*args, str(pid_file))
    )
    tools, close = await connect_all([config], {}, call_timeout=10)
    try:
        slow = by_name(tools)["local__slow"]
        pending = asyncio.create_task(call(slow, {"seconds": 30}))
        first = int(pid_file.read_text())
        os.kill(first, 9)
        result = await asyncio.wait_for(pending, 10)
        # A clean error, not a cancelled turn; not re-sent (it may have had effects).
        assert result.is_error and "closed" in str(result.result)
        again = await call(by_name(tools)["local__echo"], {"text": "x"})
        assert not again.is_error and again.result == "x"
        assert len(pid_file.read_text().split()) == 2
    finally:
        await close()


async def test_stdio_command_that_fails_is_reported_with_its_stderr() -> None:
    config = make_config(
        slug="bad", transport="stdio", command="sh", args=("-c", "echo no-such-thing >&2; exit 3")
    )
    errors = Errors()
    tools, close = await connect_all([config], {}, on_server_error=errors, connect_timeout=5)
    await close()
    assert tools == []
    [(slug, message)] = errors.reported
    assert slug == "bad" and "no-such-thing" in message


async def test_close_during_a_call_answers_the_caller(py_server: PyServer) -> None:
    tools, close = await connect_all([make_config(py_server.url, slug="py")], {})
    pending = asyncio.create_task(call(by_name(tools)["py__slow"], {"seconds": 30}))
    assert await asyncio.to_thread(py_server.state.slow_started.wait, 5)
    await close()
    result = await asyncio.wait_for(pending, 5)
    assert result.is_error


async def test_cancelling_connect_all_leaves_nothing_running(py_server: PyServer) -> None:
    with silent_listener() as listener:
        configs = [
            make_config(f"http://127.0.0.1:{listener.port}/mcp", slug="hang"),
            make_config(py_server.url, slug="py"),
        ]
        task = asyncio.create_task(connect_all(configs, {}, connect_timeout=30))
        # Cancel once a connection is really in progress (the hanging server accepted it).
        assert await asyncio.to_thread(listener.accepted.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # no_leaked_tasks checks that no owner task survived.


async def test_list_tools_check_returns_namespaced_tools(py_server: PyServer) -> None:
    infos = await list_tools_check(
        make_config(py_server.url, slug="py", tool_allow_list=("echo",)), None
    )
    assert [(i.name, i.original_name) for i in infos] == [("py__echo", "echo")]
    assert infos[0].input_schema["required"] == ["text"]
    with pytest.raises(McpConnectError):
        await list_tools_check(
            make_config(f"http://127.0.0.1:{free_port()}/mcp"), None, connect_timeout=2
        )


async def test_system_prompt_section_names_servers_tools_and_instructions(
    py_server: PyServer,
) -> None:
    config = make_config(
        py_server.url, slug="py", display_name="Python Test", tool_allow_list=("echo", "add")
    )
    _tools, close = await connect_all([config], {})
    try:
        section = system_prompt_section(close)
    finally:
        await close()
    assert "Python Test (py): py__echo, py__add" in section
    assert INSTRUCTIONS in section


async def test_tools_are_mcp_tools_exposing_their_origin(py_server: PyServer) -> None:
    tools, close = await connect_all([make_config(py_server.url, slug="py")], {})
    await close()
    echo = by_name(tools)["py__echo"]
    assert isinstance(echo, McpTool)
    assert (echo.server_slug, echo.original_name) == ("py", "echo")
    # After close, calling gives an error result, never an exception.
    result = await call(echo, {"text": "late"})
    assert result.is_error


def test_png_fixture_is_valid() -> None:
    assert base64.b64encode(PNG_BYTES).startswith(b"iVBOR")


async def test_a_call_refused_for_scope_says_which_scopes_the_server_wants() -> None:
    with serve(ScopeGate(build_server().streamable_http_app(), "files:write admin")) as running:
        tools, close = await connect_all([make_config(running.url, slug="gated")], {})
        try:
            result = await call(by_name(tools)["gated__echo"], {"text": "x"})
        finally:
            await close()
    assert result.is_error and "'files:write admin'" in str(result.result) and "connects again" in str(result.result)


def test_step_up_asks_for_the_granted_scopes_and_the_challenged_ones_once_each() -> None:
    assert merge_scopes("mcp:basic", "mcp:basic mcp:write") == "mcp:basic mcp:write"
    assert merge_scopes(None, "a") == "a" and merge_scopes(None, None) is None
