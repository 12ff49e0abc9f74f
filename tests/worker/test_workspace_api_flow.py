"""Issue 6's end-to-end case through the HTTP API alone: an admin registers a `local` template, a
user starts a chat whose (scripted) model creates a workspace, edits and runs code in it and
delegates part of the work to a sub-agent, and the user watches the sub-agent's chat."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import httpx

from chatd.domain.chat import ChatStatus
from chatd.workspace.provisioner import LocalProvisioner
from tests.fakes.llm_server import Reply, ToolCall
from tests.worker.conftest import Rig


def _tool_results(body: dict[str, Any]) -> list[str]:
    return [str(m.get("content")) for m in body["messages"] if m["role"] == "tool"]


def script(template_id: str) -> Any:
    def respond(body: dict[str, Any]) -> Reply:
        system = " ".join(str(m["content"]) for m in body["messages"] if m["role"] == "system")
        done = _tool_results(body)
        if "delegated sub-agent" in system:  # the child's turns
            if not done:
                return Reply(tool_calls=[ToolCall("k1", "execute", {"command": "echo child-was-here > child.txt && cat child.txt"})])
            return Reply(text="Wrote child.txt.")
        steps = [
            lambda: Reply(tool_calls=[ToolCall("r1", "create_workspace", {"template_id": template_id})]),
            lambda: Reply(tool_calls=[ToolCall("r2", "edit_files", {"files": [{"path": "app.py", "edits": [{"search": "print('hello')", "replace": "print('hello, world')"}]}]})]),
            lambda: Reply(tool_calls=[ToolCall("r3", "execute", {"command": "python3 app.py"})]),
            lambda: Reply(tool_calls=[ToolCall("r4", "spawn_agent", {"prompt": "Write child.txt in the workspace.", "title": "Helper"})]),
            lambda: Reply(tool_calls=[ToolCall("r5", "wait_agent", {"chat_id": re.findall(r'chat_id\W+([0-9a-f-]{36})', " ".join(done))[-1], "timeout_seconds": 60})]),
            lambda: Reply(text="Done: app prints hello, world; the helper wrote child.txt."),
        ]
        return steps[min(len(done), len(steps) - 1)]()

    return respond


async def test_through_the_api_a_chat_builds_in_a_workspace_and_a_sub_agent_helps(rig: Rig, client: httpx.AsyncClient, tmp_path: Path) -> None:
    src = tmp_path / "project"
    src.mkdir()
    (src / "app.py").write_text("print('hello')\n")
    admin, alice = rig.people.admin.headers, rig.people.alice.headers
    r = await client.post("/api/v1/templates", headers=admin, json={"name": "py-app", "source_path": str(src)})
    assert r.status_code == 201, r.text
    template_id = r.json()["id"]
    assert [t["name"] for t in (await client.get("/api/v1/templates", headers=alice)).json()] == ["py-app"]

    # This test runs commands: it opts in to unsandboxed ones, as an admin would without bubblewrap.
    rig.app.workspaces.provisioners["local"] = LocalProvisioner(rig.app.settings.data_dir, sandbox="none")
    rig.llm.responder = script(template_id)
    from chatd.bootstrap import make_workers, turn_deps

    deps = turn_deps(rig.app)  # the real tool providers: workspace and sub-agents
    deps.sleep = rig.sleep
    workers = make_workers(rig.app, deps)
    stop = asyncio.Event()
    runner = asyncio.create_task(workers.run(stop))
    try:
        r = await client.post("/api/v1/chats", headers=alice, json={"content": "Make app.py print hello, world and get a helper to write child.txt"})
        assert r.status_code == 201, r.text
        root = r.json()["id"]
        # Watch the sub-agent appear and finish, through the API.
        child: dict[str, Any] | None = None
        async with asyncio.timeout(60):
            while True:
                kids = (await client.get(f"/api/v1/chats?parent_chat_id={root}", headers=alice)).json()
                if kids and kids[0]["status"] == ChatStatus.WAITING.value:
                    child = kids[0]
                    break
                await asyncio.sleep(0.05)
            while (await client.get(f"/api/v1/chats/{root}", headers=alice)).json()["status"] != ChatStatus.WAITING.value:  # noqa: ASYNC110 - polls the API
                await asyncio.sleep(0.05)
        assert child is not None and child["root_chat_id"] == root and child["title"] == "Helper"
        child_msgs = (await client.get(f"/api/v1/chats/{child['id']}/messages", headers=alice)).json()["messages"]
        assert any("child-was-here" in json.dumps(m["content"]) for m in child_msgs)
        root_msgs = (await client.get(f"/api/v1/chats/{root}/messages", headers=alice)).json()["messages"]
        text = json.dumps(root_msgs)
        assert "hello, world" in text and "Wrote child.txt." in text
        [ws] = (await client.get("/api/v1/workspaces", headers=alice)).json()
        directory = Path(ws["directory"])
        assert (directory / "app.py").read_text() == "print('hello, world')\n"
        assert (directory / "child.txt").read_text() == "child-was-here\n"
        assert (await client.get(f"/api/v1/workspaces/{ws['id']}", headers=rig.people.bob.headers)).status_code == 404
    finally:
        stop.set()
        await asyncio.wait_for(runner, 20)
