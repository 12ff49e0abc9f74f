"""The workspace tools through the `Tool` protocol, against real agents and real files."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from chatd.domain.chat import UserRole
from chatd.domain.clock import ManualClock
from chatd.domain.parts import TextPart
from chatd.domain.tools import Tool, ToolContext, ToolResult
from chatd.domain.workspace import InstructionFile, Instructions
from chatd.store import chats as chat_store
from chatd.store import users as user_store
from chatd.store import workspaces as ws_store
from chatd.store.database import Database
from chatd.tools.instructions import instructions_section, load_instructions, workspace_note
from chatd.tools.workspace import workspace_tools
from chatd.tools.workspace.processes import parse_duration, split_background
from chatd.workspace.manager import WorkspaceManager
from chatd.workspace.provisioner import LocalProvisioner

from .conftest import RunningAgent

CTX = ToolContext(chat_id=uuid.uuid4(), owner_id=uuid.uuid4(), tool_call_id="call-1")
FILE_AND_PROCESS_TOOLS = ["read_file", "write_file", "edit_files", "execute", "process_output", "process_list", "process_signal"]


def by_name(tools: list[Tool]) -> dict[str, Tool]:
    return {t.name: t for t in tools}


@pytest.fixture
def tools(agent: RunningAgent) -> dict[str, Tool]:
    return by_name(workspace_tools(None, workspace_id=None, is_root=False, agent=agent.client))


async def call(tool: Tool, args: dict[str, Any], ctx: ToolContext = CTX) -> ToolResult:
    return await tool.call(args, ctx)


def test_root_chats_get_the_provisioning_tools_and_sub_agents_do_not() -> None:
    class NoWorkspaces:  # only its presence matters to the factory
        pass

    manager: Any = NoWorkspaces()
    root = [t.name for t in workspace_tools(manager, workspace_id=None, is_root=True)]
    child = [t.name for t in workspace_tools(manager, workspace_id=None, is_root=False)]
    assert root == [*FILE_AND_PROCESS_TOOLS, "list_templates", "read_template", "create_workspace", "start_workspace"]
    assert child == FILE_AND_PROCESS_TOOLS
    for t in workspace_tools(manager, workspace_id=None, is_root=True):
        assert t.parameters["type"] == "object" and t.description


async def test_file_tools_read_write_and_edit(tools: dict[str, Tool], agent: RunningAgent) -> None:
    assert await call(tools["write_file"], {"path": "app/main.py", "content": "def main():\n    return 1\n"}) == ToolResult({"ok": True})
    read = await call(tools["read_file"], {"path": "app/main.py"})
    assert read == ToolResult({"content": "     1\tdef main():\n     2\t    return 1", "file_size": 25, "total_lines": 2, "lines_read": 2})
    edited = await call(tools["edit_files"], {"files": [{"path": "app/main.py", "edits": [{"search": "return 1", "replace": "return 42"}]}]})
    assert edited == ToolResult({"ok": True})
    assert (agent.directory / "app/main.py").read_text() == "def main():\n    return 42\n"
    page = await call(tools["read_file"], {"path": "app/main.py", "offset": 2, "limit": 1})
    assert page.result["content"] == "     2\t    return 42"


async def test_file_tool_failures_are_error_results(tools: dict[str, Tool], agent: RunningAgent) -> None:
    (agent.directory / "a.txt").write_text("alpha\n")
    failed = await call(tools["edit_files"], {"files": [{"path": "a.txt", "edits": [{"search": "beta", "replace": "x"}]}]})
    assert failed == ToolResult({"error": "edit 1 for a.txt: search text not found"}, is_error=True)
    outside = await call(tools["read_file"], {"path": "../../etc/passwd"})
    assert outside.is_error and "outside the workspace directory" in outside.result["error"]
    missing_arg = await call(tools["write_file"], {"path": "x"})
    assert missing_arg.is_error and missing_arg.result["error"].startswith("Invalid arguments: content")


async def test_writes_and_edits_of_one_path_in_one_step_run_in_call_order(tools: dict[str, Tool], agent: RunningAgent) -> None:
    # As the loop runs one step's calls: all started at once, in call order.
    calls = [
        (tools["write_file"], {"path": "f.txt", "content": "v1\n"}),
        (tools["edit_files"], {"files": [{"path": "./f.txt", "edits": [{"search": "v1", "replace": "v2"}]}]}),
        (tools["edit_files"], {"files": [{"path": "f.txt", "edits": [{"search": "v2", "replace": "v3"}]}]}),
        (tools["write_file"], {"path": "f.txt", "content": "v3\nv4\n"}),
        (tools["edit_files"], {"files": [{"path": "f.txt", "edits": [{"search": "v4", "replace": "v5"}]}]}),
    ]
    results = await asyncio.gather(*(call(t, a) for t, a in calls))
    assert all(r == ToolResult({"ok": True}) for r in results), results
    assert (agent.directory / "f.txt").read_text() == "v3\nv5\n"
    assert tools["write_file"].concurrency_key({"path": "./f.txt"}) == tools["write_file"].concurrency_key({"path": "f.txt"})  # type: ignore[attr-defined]


async def test_execute_returns_exit_code_and_output(tools: dict[str, Tool]) -> None:
    ok = await call(tools["execute"], {"command": "echo hello; echo $CHATD_CHAT_ID"})
    assert ok.result["success"] is True and ok.result["exit_code"] == 0
    assert ok.result["output"] == f"hello\n{CTX.chat_id}\n"
    assert isinstance(ok.result["wall_duration_ms"], int)
    bad = await call(tools["execute"], {"command": "exit 2"})
    assert (bad.is_error, bad.result["success"], bad.result["exit_code"]) == (False, False, 2)
    dump = await call(tools["execute"], {"command": "cat /dev/null"})
    assert "read_file" in dump.result["note"]


async def test_execute_caps_output_at_32_kb_with_a_note(tools: dict[str, Tool]) -> None:
    big = await call(tools["execute"], {"command": "head -c 100000 /dev/zero | tr '\\0' a; echo; echo END"})
    assert big.result["exit_code"] == 0
    assert big.result["truncated"]["original_bytes"] == 100005
    assert big.result["truncated"]["shown_bytes"] <= 32 * 1024
    assert len(big.result["output"].encode()) <= 33 * 1024 and big.result["output"].endswith("END\n")


async def test_execute_timeout_keeps_the_process_running(tools: dict[str, Tool]) -> None:
    slow = await call(tools["execute"], {"command": "echo working; sleep 60", "timeout": "300ms"})
    assert slow.result["success"] is False and slow.result["exit_code"] == -1
    assert slow.result["error"] == "command timed out after 300ms"
    assert slow.result["output"] == "working\n"
    pid = slow.result["background_process_id"]
    still = await call(tools["process_output"], {"process_id": pid, "wait_timeout": "0s"})
    assert (still.result["running"], still.result["note"]) == (True, "process is still running")
    stop = await call(tools["process_signal"], {"process_id": pid, "signal": "kill"})
    assert stop == ToolResult({"success": True, "message": f"sent SIGKILL to process {pid}"})
    done = await call(tools["process_output"], {"process_id": pid, "wait_timeout": "30s"})
    assert (done.result["success"], done.result["exit_code"]) == (False, 137)


async def test_background_processes_by_flag_or_trailing_ampersand(tools: dict[str, Tool], agent: RunningAgent) -> None:
    flagged = await call(tools["execute"], {"command": "while [ ! -f go ]; do sleep 0.02; done; echo one", "run_in_background": True})
    amp = await call(tools["execute"], {"command": "while [ ! -f go ]; do sleep 0.02; done; echo two &"})
    for r in (flagged, amp):
        assert r.result["success"] is True and r.result["background_process_id"].startswith("proc-")
    listed = await call(tools["process_list"], {})
    assert [(p["process_id"], p["running"]) for p in listed.result["processes"]] == [
        (flagged.result["background_process_id"], True),
        (amp.result["background_process_id"], True),
    ]
    (agent.directory / "go").touch()
    outputs = [await call(tools["process_output"], {"process_id": r.result["background_process_id"], "wait_timeout": "30s"}) for r in (flagged, amp)]
    assert [(o.result["success"], o.result["output"]) for o in outputs] == [(True, "one\n"), (True, "two\n")]
    unknown = await call(tools["process_output"], {"process_id": "proc-none"})
    assert unknown.is_error


def test_trailing_ampersand_and_durations() -> None:
    assert split_background("npm run dev &") == ("npm run dev", True)
    assert split_background("a && b") == ("a && b", False)
    assert split_background("a |& b") == ("a |& b", False)
    assert split_background("make 2>&1") == ("make 2>&1", False)
    assert [parse_duration(v, 10) for v in (None, "30s", "1m30s", "500ms", "2m", 5, "7")] == [10, 30, 90, 0.5, 120, 5, 7]
    with pytest.raises(ValueError):
        parse_duration("soon", 10)


async def test_instructions_section_and_current_workspace_note(agent: RunningAgent) -> None:
    (agent.directory / "AGENTS.md").write_text("<!-- hidden -->\r\nUse uv.\u200b\r\n")
    section = instructions_section(await load_instructions(agent.client))
    lines = section.splitlines()
    assert lines[0] == "<workspace-context>" and lines[-1] == "</workspace-context>"
    assert lines[1].startswith("Operating System: ")
    assert lines[2] == f"Working Directory: {agent.directory}"
    assert lines[-3:-1] == [f"Source: {agent.directory / 'AGENTS.md'}", "Use uv."]
    truncated = Instructions(os=None, directory=None, files=[InstructionFile(path="/h/AGENTS.md", content="x", truncated=True)])
    assert instructions_section(truncated) == "<workspace-context>\nSource: /h/AGENTS.md (truncated to 64KiB)\nx\n</workspace-context>"
    assert instructions_section(None) == "" and instructions_section(Instructions()) == ""
    assert await load_instructions(None) is None
    assert "create_workspace" in workspace_note(attached=False)
    assert "create_workspace" not in workspace_note(attached=False, can_create=False)
    assert "attached to a workspace" in workspace_note(attached=True)


# --- a root chat that has no workspace yet ---------------------------------------------------------


@pytest.fixture
async def manager(db: Database, tmp_path: Path) -> AsyncIterator[WorkspaceManager]:
    m = WorkspaceManager(
        ws_store.SqlWorkspaceRecords(db, ManualClock()), {"local": LocalProvisioner(tmp_path / "data", sandbox="none")}
    )
    try:
        yield m
    finally:
        await m.close()


async def test_root_chat_creates_a_workspace_and_uses_it_in_the_same_turn(db: Database, manager: WorkspaceManager, tmp_path: Path) -> None:
    clock = ManualClock()
    user = await user_store.create_user(db, clock.now(), "alice", UserRole.MEMBER)
    chat = (await chat_store.create_chat(db, clock.now(), owner_id=user.id, title="t", content=[TextPart(text="hi")])).chat
    source = tmp_path / "template-src"
    source.mkdir()
    (source / "README.md").write_text("template readme\n")
    py = await ws_store.create_template(db, clock.now(), name="python", description="d" * 500, source_path=str(source))
    await ws_store.create_template(db, clock.now(), name="go", display_name="Go")
    ctx = ToolContext(chat_id=chat.id, owner_id=user.id, tool_call_id="c")
    tools = by_name(workspace_tools(manager, workspace_id=chat.workspace_id, is_root=True))

    before = await call(tools["read_file"], {"path": "README.md"}, ctx)
    assert before == ToolResult(
        {"error": "This chat has no workspace yet. Create one with create_workspace first."}, is_error=True
    )
    no_ws = await call(tools["start_workspace"], {}, ctx)
    assert no_ws.result == {"error": "This chat has no workspace; use create_workspace first."}

    listed = await call(tools["list_templates"], {"query": "PY"}, ctx)
    assert listed.result == {
        "templates": [{"id": str(py.id), "name": "python", "description": "d" * 199 + "…"}],
        "count": 1, "page": 1, "total_pages": 1, "total_count": 1,
    }  # fmt: skip
    read = await call(tools["read_template"], {"template_id": str(py.id)}, ctx)
    assert read.result == {"template": {"id": str(py.id), "name": "python", "description": "d" * 500}, "parameters": []}

    created = await call(tools["create_workspace"], {"template_id": str(py.id), "name": "demo"}, ctx)
    ws_id = await ws_store.chat_workspace_id(db, chat.id)
    assert created == ToolResult({"created": True, "workspace_name": "demo", "workspace_id": str(ws_id)})
    # The same turn's file tools now act in it.
    after = await call(tools["read_file"], {"path": "README.md"}, ctx)
    assert after.result["content"] == "     1\ttemplate readme"
    again = await call(tools["create_workspace"], {"template_id": str(py.id)}, ctx)
    assert (again.result["created"], again.result["status"], again.result["workspace_id"]) == (False, "already_exists", str(ws_id))

    # The agent dies (server restart): the next call restarts it once and succeeds.
    assert ws_id is not None
    await manager.stop_workspace(ws_id)
    revived = await call(tools["execute"], {"command": "cat README.md"}, ctx)
    assert revived.result["output"] == "template readme\n"
    started = await call(tools["start_workspace"], {}, ctx)
    assert started == ToolResult({"started": True, "workspace_name": "demo", "workspace_id": str(ws_id)})
