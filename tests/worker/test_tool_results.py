"""Large and rich tool results in real turns (issue 12, item 6), against the SDK test server over
streamable HTTP and the scripted model server: a result over CHATD_TOOL_RESULT_MAX_CHARS is
stored as a chat file, the model gets its head and reads the rest with read_tool_output; an
image a tool returns reaches a model that takes images as an image part and any other as a note;
structured content the server also sent as text reaches the model once."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from chatd.domain.chat import ChatStatus, Role
from chatd.domain.config import ModelOptions, Pricing
from chatd.domain.parts import TextPart, ToolResultPart
from chatd.store import files as file_store
from tests.fakes.llm_server import Reply, ToolCall
from tests.mcp.mcp_test_servers import PNG_BYTES, ServerState, build_server, serve
from tests.worker.conftest import Rig


@pytest.fixture
def mcp_url() -> Iterator[str]:
    with serve(build_server(ServerState()).streamable_http_app()) as running:
        yield running.url


async def add_server(rig: Rig, url: str) -> Any:
    return await rig.app.service.create_mcp_server(
        rig.people.admin.user, {"slug": "t", "display_name": "T", "url": url, "enabled": True}
    )


def tool_messages(rig: Rig, request: int) -> list[dict[str, Any]]:
    return [m for m in rig.llm.requests[request].body["messages"] if m["role"] == "tool"]


def offered(rig: Rig, request: int) -> list[str]:
    return [t["function"]["name"] for t in rig.llm.requests[request].body.get("tools", [])]


async def results(rig: Rig, chat_id: uuid.UUID) -> list[ToolResultPart]:
    return [p for m in await rig.messages(chat_id) if m.role is Role.TOOL for p in m.content if isinstance(p, ToolResultPart)]


def file_id_in(text: str) -> str:
    return json.loads(text)["output_file"]["file_id"]


async def test_a_long_result_is_stored_whole_and_the_model_reads_the_rest(rig: Rig, mcp_url: str) -> None:
    rig.app.settings.tool_result_max_chars = 5000
    server = await add_server(rig, mcp_url)
    n = 12_345

    def respond(body: dict[str, Any]) -> Reply:
        # The model reads on from where the preview stopped, naming the file the result announced.
        last = body["messages"][-1]
        if last["role"] == "tool" and "output_file" in last["content"]:
            fid = file_id_in(last["content"])
            return Reply(tool_calls=[ToolCall("r0", "read_tool_output", {"file_id": fid, "offset": 4000, "length": 9000})])
        if last["role"] == "tool" and (got := json.loads(last["content"])).get("next_offset"):
            args = {"file_id": got["file_id"], "offset": got["next_offset"]}
            return Reply(tool_calls=[ToolCall(f"r{got['next_offset']}", "read_tool_output", args)])
        return Reply(text="read it all")

    rig.llm.responder = respond
    rig.llm.script(Reply(tool_calls=[ToolCall("c1", "t__big", {"n": n})]))
    chat = await rig.chat("make it big", mcp_server_ids=[server.id])
    await rig.run()
    assert (await rig.get(chat.id)).status is ChatStatus.WAITING
    [big, *reads] = await results(rig, chat.id)
    fid = big.result["output_file"]["file_id"]
    assert big.result["output_file"]["total_chars"] == n and big.result["preview"] == "x" * 4000
    f = await file_store.get_file(rig.app.db, uuid.UUID(fid))
    assert f.data == b"x" * n and f.media_type == "text/plain" and f.owner_id == rig.people.alice.user.id
    # The model saw the preview, the size and the file id, and was offered the reader from then on.
    seen = tool_messages(rig, 1)[0]["content"]
    assert fid in seen and str(n) in seen and "read_tool_output" in seen and len(seen) < 5000
    assert "read_tool_output" not in offered(rig, 0) and "read_tool_output" in offered(rig, 1)
    # It read the rest from offset 4000, at most limit - 500 characters a call, to the end.
    assert [(r.result["offset"], r.result["length"], r.result["next_offset"]) for r in reads] == [(4000, 4500, 8500), (8500, 3845, None)]
    assert "".join(r.result["text"] for r in reads) == "x" * (n - 4000)
    assert json.loads(tool_messages(rig, 3)[-1]["content"])["text"] == "x" * 3845
    # A later turn still offers the reader (the history holds a stored output).
    rig.llm.script(Reply(text="still here"))
    await rig.app.service.send_message(rig.people.alice.user, chat.id, content=[TextPart(text="again")])
    await rig.run()
    assert "read_tool_output" in offered(rig, 4)


async def test_the_reader_reads_only_the_owners_text_files(rig: Rig, mcp_url: str) -> None:
    server = await add_server(rig, mcp_url)
    rig.app.settings.tool_result_max_chars = 1000
    other = await file_store.save_file(rig.app.db, rig.app.clock.now(), rig.people.bob.user.id, "b.txt", "text/plain", b"secret")
    rig.llm.script(
        Reply(tool_calls=[ToolCall("c1", "t__big", {"n": 2000})]),
        Reply(tool_calls=[ToolCall("c2", "read_tool_output", {"file_id": str(other.id)})]),
        Reply(tool_calls=[ToolCall("c3", "read_tool_output", {"file_id": "not-a-uuid", "offset": -1})]),
        Reply(text="ok"),
    )
    chat = await rig.chat("big", mcp_server_ids=[server.id])
    await rig.run()
    [_, bobs, bad] = await results(rig, chat.id)
    assert bobs.is_error and "No stored output" in bobs.result["error"] and "secret" not in json.dumps(bobs.result)
    assert bad.is_error and "offset" in bad.result["error"]


def image_urls(body: dict[str, Any]) -> list[str]:
    return [
        c["image_url"]["url"]
        for m in body["messages"] if isinstance(m.get("content"), list)
        for c in m["content"] if isinstance(c, dict) and c.get("type") == "image_url"
    ]  # fmt: skip


async def test_an_image_a_tool_returns_reaches_a_vision_model_as_an_image_part(rig: Rig, mcp_url: str) -> None:
    server = await add_server(rig, mcp_url)
    rig.llm.script(Reply(tool_calls=[ToolCall("c1", "t__image", {})]), Reply(text="a pixel"))
    chat = await rig.chat("show me", mcp_server_ids=[server.id])
    await rig.run()
    [result] = await results(rig, chat.id)
    [attachment] = result.result["attachments"]
    f = await file_store.get_file(rig.app.db, uuid.UUID(attachment["file_id"]))
    assert f.data == PNG_BYTES and f.media_type == "image/png"
    body = rig.llm.requests[1].body
    assert image_urls(body) == [f"data:image/png;base64,{base64.b64encode(PNG_BYTES).decode()}"]
    # A later turn sends it again from the stored file (the history as the model saw it).
    rig.llm.script(Reply(text="still a pixel"))
    await rig.app.service.send_message(rig.people.alice.user, chat.id, content=[TextPart(text="and now?")])
    await rig.run()
    assert image_urls(rig.llm.requests[2].body) == image_urls(body)


async def test_a_model_without_image_input_reads_a_note_instead(rig: Rig, mcp_url: str) -> None:
    server = await add_server(rig, mcp_url)
    text_only = await rig.app.service.create_model_config(
        rig.people.admin.user, provider="openai-compatible", model="text-only", display_name=None, context_limit=100_000,
        compression_threshold=70, is_default=False, options=ModelOptions(images=False), pricing=Pricing(),
    )
    rig.llm.script(Reply(tool_calls=[ToolCall("c1", "t__image", {})]), Reply(text="cannot see it"))
    await rig.chat("show me", mcp_server_ids=[server.id], model_config_id=text_only.id)
    await rig.run()
    body = rig.llm.requests[1].body
    assert body["model"] == "text-only" and image_urls(body) == []
    [tool] = tool_messages(rig, 1)
    assert "this model does not accept images" in tool["content"] and "image/png" in tool["content"]


async def test_an_image_over_the_size_limit_is_shown_in_the_chat_only(rig: Rig, mcp_url: str) -> None:
    rig.app.settings.tool_image_max_bytes = 10
    server = await add_server(rig, mcp_url)
    rig.llm.script(Reply(tool_calls=[ToolCall("c1", "t__image", {})]), Reply(text="too big"))
    chat = await rig.chat("show me", mcp_server_ids=[server.id])
    await rig.run()
    assert image_urls(rig.llm.requests[1].body) == []
    assert "over the 10 bytes" in tool_messages(rig, 1)[0]["content"]
    [result] = await results(rig, chat.id)
    assert result.result["attachments"][0]["file_id"]  # still stored for the chat


async def test_structured_content_reaches_the_model_once(rig: Rig, mcp_url: str) -> None:
    server = await add_server(rig, mcp_url)
    rig.llm.script(Reply(tool_calls=[ToolCall("c1", "t__weather", {"city": "Oslo"})]), Reply(text="mild"))
    await rig.chat("weather?", mcp_server_ids=[server.id])
    await rig.run()
    [tool] = tool_messages(rig, 1)
    # The server sent {"city": "Oslo", "celsius": 21.5} as structuredContent and as JSON text.
    assert json.loads(tool["content"]) == {"structured_content": {"city": "Oslo", "celsius": 21.5}}
    assert tool["content"].count("Oslo") == 1


async def test_on_anthropic_the_image_travels_inside_the_tool_result(rig: Rig, mcp_url: str) -> None:
    admin = rig.people.admin.user
    await rig.app.service.create_provider(admin, provider="anthropic", display_name=None, api_key="sk-ant", base_url=rig.llm.anthropic_base_url, enabled=True)
    claude = await rig.app.service.create_model_config(
        admin, provider="anthropic", model="claude-sonnet-4-5", display_name=None, context_limit=200_000, compression_threshold=0,
        is_default=False, options=ModelOptions(), pricing=Pricing(),
    )
    server = await add_server(rig, mcp_url)
    rig.llm.script(Reply(tool_calls=[ToolCall("c1", "t__image", {})]), Reply(text="a pixel"))
    await rig.chat("show me", mcp_server_ids=[server.id], model_config_id=claude.id)
    await rig.run()
    body = rig.llm.requests[1].body
    [result] = [b for m in body["messages"] if isinstance(m["content"], list) for b in m["content"] if b.get("type") == "tool_result"]
    images = [b for b in result["content"] if b.get("type") == "image"]
    assert [i["source"]["data"] for i in images] == [base64.b64encode(PNG_BYTES).decode()]
