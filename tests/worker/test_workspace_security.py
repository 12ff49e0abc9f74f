"""A member's chat must not read chatd's secrets through workspace commands (issue 9, item 2).

The attack, as the drill ran it: a member's chat creates a workspace and runs `execute` with
`cat <data dir>/admin-token`, `cat /proc/<chatd pid>/environ`, other users' workspaces and the
SQLite file. These tests run it through the real worker, a real workspace agent and real `sh`.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from chatd.bootstrap import turn_deps, write_secret_file
from chatd.domain.chat import ChatStatus
from chatd.domain.parts import ToolResultPart
from chatd.worker import Workers
from chatd.workspace.manager import WorkspaceManager
from chatd.workspace.processes import NON_INTERACTIVE_ENV
from chatd.workspace.provisioner import LocalProvisioner, sandbox_works
from tests.fakes.llm_server import Reply, ToolCall
from tests.worker.conftest import Rig

# CI installs bubblewrap; elsewhere a bwrap outside PATH can be named (so the default tests still
# see a machine without one).
BWRAP = os.environ.get("CHATD_TEST_BWRAP") or shutil.which("bwrap")
ADMIN_TOKEN = "chatd_admin-token-canary-" + uuid.uuid4().hex


def _server_environment() -> list[str]:
    """`KEY=VALUE` entries of this process's environment as /proc shows it (its initial block),
    except the few variables an agent passes on by design (PATH, HOME, LANG, ...)."""
    inherited = {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "PYTHONPATH", "PWD", "SHLVL", "_"}
    raw = Path(f"/proc/{os.getpid()}/environ").read_bytes().split(b"\0")
    entries = [e.decode(errors="replace") for e in raw if b"=" in e]
    # Entries the agent sets on every command itself (DEBIAN_FRONTEND=noninteractive, ...) prove nothing.
    own = {f"{k}={v}" for k, v in NON_INTERACTIVE_ENV.items()}
    return [
        e for e in entries
        if e.split("=", 1)[0] not in inherited and not e.startswith("LC_") and len(e.split("=", 1)[1]) >= 4 and e not in own
    ]  # fmt: skip


def _results(msgs: list[Any]) -> dict[str, ToolResultPart]:
    return {p.tool_call_id: p for m in msgs for p in m.content if isinstance(p, ToolResultPart)}


async def _attack(rig: Rig, tmp_path: Path) -> tuple[dict[str, ToolResultPart], Path]:
    """Alice (a member) runs the drill's commands in her own workspace; returns the tool results."""
    data = rig.app.settings.data_dir
    write_secret_file(data / "admin-token", ADMIN_TOKEN)
    # Another user's workspace, as the provisioner leaves it (private to its owner).
    other = data / "workspaces" / str(uuid.uuid4())
    other.mkdir(parents=True, mode=0o700)
    (other / "secret.txt").write_text("bobs-private-notes\n")
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "README.md").write_text("hello\n")
    template = await rig.app.service.create_template(rig.people.admin.user, {"name": "proj", "source_path": str(src)})
    db_file = rig.app.db.url.split("///", 1)[1] if rig.app.db.is_sqlite else "/nonexistent"
    steal = (
        f"cat {data}/admin-token; cat {data}/secret-key; cat {other}/secret.txt; "
        f"head -c 64 {db_file} | od -c | head -2; "
        f"for p in /proc/[0-9]*; do cat $p/environ 2>/dev/null | tr '\\0' '\\n'; done; env"
    )
    rig.llm.script(
        Reply(tool_calls=[ToolCall("c1", "create_workspace", {"template_id": str(template.id)})]),
        Reply(tool_calls=[ToolCall("c2", "execute", {"command": steal})]),
        Reply(tool_calls=[ToolCall("c3", "execute", {"command": "ls -l /proc/self/fd/; echo uid=$(id -u); grep -E 'NoNewPrivs|CapEff' /proc/self/status"})]),
        Reply(tool_calls=[ToolCall("c4", "process_list", {})]),
        Reply(text="done"),
    )
    deps = turn_deps(rig.app)
    deps.sleep = rig.sleep
    workers = Workers(deps, worker_id=uuid.uuid4())
    chat = await rig.chat("build it")
    try:
        await rig.run(workers)
    finally:
        await workers.shutdown()
    done = await rig.get(chat.id)
    assert done.status is ChatStatus.WAITING, done.last_error
    r = _results(await rig.messages(chat.id))
    assert not r["c1"].is_error, r["c1"].result
    return r, other


def _assert_nothing_leaked(rig: Rig, out: str) -> None:
    secret_key = (rig.app.settings.data_dir / "secret-key").read_text().strip()
    assert ADMIN_TOKEN not in out
    assert secret_key not in out
    assert "bobs-private-notes" not in out
    assert "S   Q   L   i   t   e" not in out
    environment = _server_environment()
    assert environment, "this process has no environment entry a leak would show"
    leaked = [e for e in environment if e in out]
    assert leaked == []


def _use_provisioner(rig: Rig, provisioner: LocalProvisioner) -> None:
    manager = rig.app.workspaces
    assert isinstance(manager, WorkspaceManager)
    manager.provisioners["local"] = provisioner


async def test_a_members_commands_are_refused_by_default_without_a_working_sandbox(rig: Rig, tmp_path: Path) -> None:
    assert rig.app.settings.workspace_sandbox == "auto"
    _use_provisioner(rig, LocalProvisioner(rig.app.settings.data_dir, sandbox="auto", bwrap=None))
    r, _ = await _attack(rig, tmp_path)
    for call in ("c2", "c3", "c4"):
        assert r[call].is_error, r[call].result
        assert "CHATD_WORKSPACE_SANDBOX=none" in json.dumps(r[call].result)
    _assert_nothing_leaked(rig, json.dumps({k: v.result for k, v in r.items()}))


async def test_the_default_server_gives_a_members_commands_no_secret(rig: Rig, tmp_path: Path) -> None:
    """Whatever this machine has (bubblewrap or not), the default install leaks nothing."""
    r, _ = await _attack(rig, tmp_path)
    _assert_nothing_leaked(rig, json.dumps({k: v.result for k, v in r.items()}))


@pytest.mark.skipif(os.geteuid() != 0, reason="runs commands under another uid, which needs root")
async def test_commands_opted_in_without_a_sandbox_run_as_another_user_with_a_clean_environment(rig: Rig, tmp_path: Path) -> None:
    _use_provisioner(rig, LocalProvisioner(rig.app.settings.data_dir, sandbox="none"))
    r, _ = await _attack(rig, tmp_path)
    steal = json.dumps(r["c2"].result)
    assert not r["c2"].is_error, steal
    assert "Permission denied" in steal  # it ran, and the files were closed to it
    _assert_nothing_leaked(rig, steal)
    probe = str(r["c3"].result.get("output", "")) if isinstance(r["c3"].result, dict) else ""
    assert "uid=0" not in probe and "uid=" in probe
    assert "NoNewPrivs:\t1" in probe
    # stdin, stdout, stderr and the fd `ls` opens for /proc/self/fd: nothing inherited from chatd.
    fds = sorted(int(line.split(" -> ")[0].split()[-1]) for line in probe.splitlines() if " -> " in line)
    assert fds == [0, 1, 2, 3]
    assert not r["c4"].is_error


@pytest.mark.skipif(not sandbox_works(BWRAP), reason="bubblewrap is not installed or cannot run here")
async def test_sandboxed_commands_see_no_data_directory_and_no_server_environment(rig: Rig, tmp_path: Path) -> None:
    _use_provisioner(rig, LocalProvisioner(rig.app.settings.data_dir, sandbox="bwrap", bwrap=BWRAP))
    r, _ = await _attack(rig, tmp_path)
    steal = json.dumps(r["c2"].result)
    assert not r["c2"].is_error, steal
    _assert_nothing_leaked(rig, steal)
    probe = json.dumps(r["c3"].result)
    assert "NoNewPrivs:\\t1" in probe
    assert "CapEff:\\t0000000000000000" in probe  # not root's capabilities, even when chatd is root
