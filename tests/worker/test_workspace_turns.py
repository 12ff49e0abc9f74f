"""A chat with a scripted model that creates a workspace from a template, writes, edits,
executes and reads a background process's output — through the real worker, a real workspace
agent process and real files."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from chatd.bootstrap import turn_deps
from chatd.domain.chat import ChatStatus, Role
from chatd.domain.parts import TextPart, ToolResultPart
from chatd.worker import Workers
from chatd.workspace.provisioner import LocalProvisioner
from tests.fakes.llm_server import Reply, ToolCall
from tests.worker.conftest import Rig


def results(msgs: list[Any]) -> dict[str, ToolResultPart]:
    out: dict[str, ToolResultPart] = {}
    for m in msgs:
        for p in m.content:
            if isinstance(p, ToolResultPart):
                out[p.tool_call_id] = p
    return out


async def test_a_chat_creates_a_workspace_and_works_in_it(rig: Rig, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "README.md").write_text("hello from the template\n")
    (src / "AGENTS.md").write_text("Always run the tests.\n")
    template = await rig.app.service.create_template(rig.people.admin.user, {"name": "proj", "source_path": str(src)})
    # This test runs commands: it opts in to unsandboxed ones, as an admin would without bubblewrap.
    rig.app.workspaces.provisioners["local"] = LocalProvisioner(rig.app.settings.data_dir, sandbox="none")
    deps = turn_deps(rig.app)
    deps.sleep = rig.sleep
    workers = Workers(deps, worker_id=uuid.uuid4())
    rig.llm.script(
        Reply(tool_calls=[ToolCall("c1", "create_workspace", {"template_id": str(template.id)})]),
        Reply(tool_calls=[
            ToolCall("c2", "write_file", {"path": "notes.txt", "content": "one\ntwo\n"}),
            ToolCall("c3", "read_file", {"path": "README.md"}),
        ]),
        Reply(tool_calls=[ToolCall("c4", "edit_files", {"files": [{"path": "notes.txt", "edits": [{"search": "two", "replace": "three"}]}]})]),
        Reply(tool_calls=[ToolCall("c5", "execute", {"command": "cat notes.txt; echo done"})]),
        Reply(tool_calls=[ToolCall("c6", "execute", {"command": "sleep 0.2; echo background-out", "run_in_background": True})]),
        Reply(text="All set."),
    )
    chat = await rig.chat("set up the project")
    try:
        await rig.run(workers)
        done = await rig.get(chat.id)
        assert done.status is ChatStatus.WAITING, done.last_error
        r = results(await rig.messages(chat.id))
        assert not r["c1"].is_error, r["c1"].result
        assert "hello from the template" in json.dumps(r["c3"].result)
        out = json.dumps(r["c5"].result)
        assert "one" in out and "three" in out and "done" in out
        assert not r["c6"].is_error
        workspaces = await rig.app.service.list_workspaces(rig.people.alice.user)
        assert len(workspaces) == 1
        directory = Path(workspaces[0].directory)
        assert (directory / "notes.txt").read_text() == "one\nthree\n"
        # The next turn's prompt states the workspace is attached and carries its AGENTS.md.
        rig.llm.script(Reply(text="ok"))
        await rig.app.service.send_message(rig.people.alice.user, chat.id, content=[TextPart(text="again")])
        await rig.run(workers)
        system = " ".join(str(m["content"]) for m in rig.llm.requests[-1].body["messages"] if m["role"] == "system")
        assert "attached to a workspace" in system and "Always run the tests." in system
        assert "no workspace yet" not in system
        tools = [t["function"]["name"] for t in rig.llm.requests[-1].body["tools"]]
        assert {"read_file", "write_file", "edit_files", "execute", "process_output", "create_workspace"} <= set(tools)
        assert [m.role for m in await rig.messages(chat.id)][-1] is Role.ASSISTANT
    finally:
        await workers.shutdown()
