"""Units of large and rich tool results: `ToolOutputs.spill`, `read_tool_output` and the model's
view of a result that names images (`loop.convert.tool_return`). The turns themselves are in
tests/worker/test_tool_results.py."""

from __future__ import annotations

import json
import uuid

from pydantic_ai import messages as pm

from chatd.domain.parts import McpAppLink, ToolResultPart
from chatd.domain.tools import ToolContext, ToolResult
from chatd.loop.convert import tool_return
from chatd.loop.types import ResolvedFile, ToolImages
from chatd.tools.output import PREVIEW_CHARS, ReadToolOutput, ToolOutputs

CTX = ToolContext(chat_id=uuid.uuid4(), owner_id=uuid.uuid4(), tool_call_id="c1")


def outputs(max_chars: int = 1000, *, failing: bool = False) -> tuple[ToolOutputs, dict[str, tuple[bytes, str]]]:
    files: dict[str, tuple[bytes, str]] = {}

    async def store(data: bytes, media_type: str, name: str) -> str:
        if failing:
            raise OSError("disk full")
        fid = f"f{len(files)}"
        files[fid] = (data, media_type)
        return fid

    async def read(fid: str) -> tuple[bytes, str] | None:
        return files.get(fid)

    return ToolOutputs(max_chars, store, read), files


async def test_a_result_that_fits_is_left_as_it_is() -> None:
    out, files = outputs()
    result = ToolResult({"a": "b" * 900})
    assert await out.spill("t", result) is result and not files


async def test_a_structured_result_is_stored_as_json_and_keeps_its_attachments() -> None:
    out, files = outputs()
    image = {"type": "image", "media_type": "image/png", "file_id": "img", "name": "t-0.png", "size": 3}
    body = {"structured_content": {"rows": ["é" * 50] * 40}, "attachments": [image]}
    app = McpAppLink(server_id=str(uuid.uuid4()), resource_uri="ui://t/view", tool="t")
    spilled = await out.spill("t", ToolResult(body, is_error=True, app=app))
    assert spilled.is_error and spilled.app == app and spilled.result["attachments"] == [image]
    fid = spilled.result["output_file"]["file_id"]
    data, media_type = files[fid]
    assert media_type == "application/json" and json.loads(data) == body
    # The preview is PREVIEW_CHARS, or the limit when that is smaller.
    assert spilled.result["preview"] == json.dumps(body, ensure_ascii=False)[:1000]
    assert spilled.result["output_file"]["total_chars"] == len(json.dumps(body, ensure_ascii=False))


async def test_a_store_that_fails_says_so_rather_than_cutting_silently() -> None:
    out, _ = outputs(failing=True)
    spilled = await out.spill("t", ToolResult("x" * 5000))
    assert spilled.result["preview"] == "x" * PREVIEW_CHARS and "could not be stored (OSError)" in spilled.result["note"]


async def test_the_reader_pages_by_characters_and_refuses_binary_files() -> None:
    out, files = outputs(max_chars=1000)
    text = "añb" * 400
    files["t"] = (text.encode(), "text/plain")
    files["png"] = (b"\x89PNG", "image/png")
    reader = ReadToolOutput(out)
    got = await reader.call({"file_id": "t", "offset": 1190, "length": 50}, CTX)
    assert got.result == {"file_id": "t", "offset": 1190, "length": 10, "total_chars": 1200, "next_offset": None, "text": text[1190:]}
    assert (await reader.call({"file_id": "t"}, CTX)).result["length"] == reader.max_length == 500
    assert (await reader.call({"file_id": "png"}, CTX)).is_error
    assert (await reader.call({"file_id": "nope"}, CTX)).is_error
    assert (await reader.call({"file_id": "t", "length": 0}, CTX)).is_error


def result_with_image(*, is_error: bool = False) -> ToolResultPart:
    attachment = {"type": "image", "media_type": "image/png", "name": "t-0.png", "size": 4, "file_id": "img"}
    return ToolResultPart(tool_call_id="c1", tool_name="t", result={"text": "see", "attachments": [attachment]}, is_error=is_error)


def test_the_model_view_of_an_image_follows_the_policy() -> None:
    files = {"img": ResolvedFile(b"\x89PNG", "image/png")}
    sent = tool_return(result_with_image(), files, ToolImages())
    described, image = sent.content
    assert isinstance(image, pm.BinaryContent) and image.data == b"\x89PNG" and image.identifier == "img"
    assert described["attachments"][0]["note"] == "attached below"
    note = tool_return(result_with_image(), files, ToolImages(accepted=False)).content
    assert "does not accept images" in note["attachments"][0]["note"]
    small = tool_return(result_with_image(), files, ToolImages(max_bytes=3)).content
    assert "over the 3 bytes" in small["attachments"][0]["note"]
    gone = tool_return(result_with_image(), {}, ToolImages()).content
    assert "no longer available" in gone["attachments"][0]["note"]
    # Without a policy (and for a failed call) the result goes as stored.
    assert tool_return(result_with_image(), files, None).content == result_with_image().result
    assert tool_return(result_with_image(is_error=True), files, ToolImages()).content == result_with_image().result
