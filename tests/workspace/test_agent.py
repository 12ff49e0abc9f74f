"""The workspace agent as a real process, through its client and over raw HTTP."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from chatd.domain.workspace import Edit, FileEdits, InstructionFile
from chatd.errors import Unauthenticated
from chatd.workspace.client import AgentClient, AgentNotFound, AgentRequestFailed
from chatd.workspace.instructions import INSTRUCTION_CAP

from .conftest import RunningAgent, alive, start_agent, wait_until_dead


async def test_requests_without_or_with_a_wrong_token_are_refused(agent: RunningAgent) -> None:
    async with httpx.AsyncClient(base_url=agent.url) as http:
        missing = await http.get("/v1/health")
        wrong = await http.get("/v1/health", headers={"Authorization": "Bearer " + "x" * 43})
        not_bearer = await http.post("/v1/files/read", json={"path": "a"}, headers={"Authorization": agent.token})
        right = await http.get("/v1/health", headers={"Authorization": f"Bearer {agent.token}"})
    assert [missing.status_code, wrong.status_code, not_bearer.status_code] == [401, 401, 401]
    assert missing.json() == {"error": "missing or invalid agent token", "code": "unauthorized"}
    assert right.json() == {"ok": True}
    async with AgentClient(agent.url, "not-the-token-at-all") as bad:
        with pytest.raises(Unauthenticated):
            await bad.read_file("a.txt")
        assert await bad.ping() is False


async def test_agent_listens_on_loopback_only_unless_told_otherwise(tmp_path: Path) -> None:
    from chatd.workspace.agent import parse_listen

    assert parse_listen("127.0.0.1:0", allow_remote=False) == ("127.0.0.1", 0)
    assert parse_listen("[::1]:8000", allow_remote=False) == ("::1", 8000)
    with pytest.raises(ValueError):
        parse_listen("0.0.0.0:8000", allow_remote=False)
    assert parse_listen("0.0.0.0:8000", allow_remote=True) == ("0.0.0.0", 8000)


async def test_paths_that_escape_the_directory_are_refused(agent: RunningAgent, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret\n")
    (agent.directory / "link").symlink_to(outside)
    (agent.directory / "file-link").symlink_to(outside / "secret.txt")
    c = agent.client
    for path in ("../outside/secret.txt", str(outside / "secret.txt"), "link/secret.txt", "file-link", "a/../../outside/secret.txt"):
        with pytest.raises(AgentRequestFailed) as err:
            await c.read_file(path)
        assert (err.value.status, err.value.agent_code) == (403, "outside_workspace")
    with pytest.raises(AgentRequestFailed) as err:
        await c.write_file("file-link", "overwritten")
    assert err.value.agent_code == "outside_workspace"
    with pytest.raises(AgentRequestFailed) as err:
        await c.edit_files([FileEdits(path="link/secret.txt", edits=[Edit(search="secret", replace="x")])])
    assert err.value.agent_code == "outside_workspace"
    with pytest.raises(AgentRequestFailed) as err:
        await c.start_process("pwd", workdir="../outside")
    assert err.value.agent_code == "outside_workspace"
    assert (outside / "secret.txt").read_text() == "secret\n"
    # A symlink that stays inside is fine.
    (agent.directory / "real.txt").write_text("inside\n")
    (agent.directory / "inner-link").symlink_to(agent.directory / "real.txt")
    assert (await c.read_file("inner-link")).content == "     1\tinside"


async def test_allow_outside_lets_file_requests_leave_the_directory(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("out there\n")
    async with start_agent(tmp_path / "ws", allow_outside=True) as a:
        assert (await a.client.read_file(str(outside))).content == "     1\tout there"
        assert (await a.client.read_file("../elsewhere.txt")).lines_read == 1


async def test_read_file_numbers_lines_and_pages_large_files(agent: RunningAgent) -> None:
    (agent.directory / "big.txt").write_text("".join(f"line {i}\n" for i in range(1, 2501)))
    first = await agent.client.read_file("big.txt")
    assert (first.total_lines, first.lines_read) == (2500, 2000)
    assert first.content.splitlines()[0] == "     1\tline 1"
    assert first.content.splitlines()[-1] == "  2000\tline 2000"
    assert first.note is not None and "offset=2001" in first.note
    rest = await agent.client.read_file("big.txt", offset=2001)
    assert (rest.lines_read, rest.note) == (500, None)
    assert rest.content.splitlines()[0] == "  2001\tline 2001"
    window = await agent.client.read_file("big.txt", offset=10, limit=2)
    assert window.content == "    10\tline 10\n    11\tline 11"
    assert window.file_size == (agent.directory / "big.txt").stat().st_size
    with pytest.raises(AgentRequestFailed):
        await agent.client.read_file("big.txt", offset=3000)
    with pytest.raises(AgentNotFound):
        await agent.client.read_file("missing.txt")
    (agent.directory / "blob.bin").write_bytes(b"\x00\x01binary")
    with pytest.raises(AgentRequestFailed) as err:
        await agent.client.read_file("blob.bin")
    assert err.value.agent_code == "binary"


async def test_write_file_creates_directories_and_replaces_content(agent: RunningAgent) -> None:
    await agent.client.write_file("src/pkg/mod.py", "x = 1\n")
    await agent.client.write_file("src/pkg/mod.py", "x = 2\n")
    assert (agent.directory / "src/pkg/mod.py").read_text() == "x = 2\n"
    assert [p.name for p in (agent.directory / "src/pkg").iterdir()] == ["mod.py"]  # no temp files left


async def test_edit_files_applies_edits_to_several_files(agent: RunningAgent) -> None:
    (agent.directory / "a.py").write_text("def f():\n    return 1\n")
    (agent.directory / "b.py").write_text("A = 1\nB = 2\n")
    await agent.client.edit_files(
        [
            FileEdits(path="a.py", edits=[Edit(search="return 1", replace="return 2"), Edit(search="def f", replace="def g")]),
            FileEdits(path="b.py", edits=[Edit(search="B = 2", replace="B = 3")]),
        ]
    )
    assert (agent.directory / "a.py").read_text() == "def g():\n    return 2\n"
    assert (agent.directory / "b.py").read_text() == "A = 1\nB = 3\n"


async def test_edit_files_is_all_or_nothing(agent: RunningAgent) -> None:
    (agent.directory / "a.py").write_text("one\n")
    (agent.directory / "b.py").write_text("same\nsame\n")
    before = {p: (agent.directory / p).read_bytes() for p in ("a.py", "b.py")}
    cases = [
        [FileEdits(path="a.py", edits=[Edit(search="one", replace="two")]), FileEdits(path="b.py", edits=[Edit(search="absent", replace="x")])],
        [FileEdits(path="a.py", edits=[Edit(search="one", replace="two")]), FileEdits(path="b.py", edits=[Edit(search="same", replace="x")])],
        [FileEdits(path="a.py", edits=[Edit(search="one", replace="two")]), FileEdits(path="c.py", edits=[Edit(search="x", replace="y")])],
    ]
    codes = []
    for files in cases:
        with pytest.raises((AgentRequestFailed, AgentNotFound)) as err:
            await agent.client.edit_files(files)
        codes.append(err.value.agent_code)
    assert codes == ["edit_failed", "edit_failed", "not_found"]
    assert {p: (agent.directory / p).read_bytes() for p in ("a.py", "b.py")} == before
    assert sorted(p.name for p in agent.directory.iterdir()) == ["a.py", "b.py"]


async def test_execute_runs_sh_non_interactively(agent: RunningAgent) -> None:
    state = await agent.client.start_process(
        'echo "$GIT_EDITOR $EDITOR $VISUAL $GIT_TERMINAL_PROMPT $PAGER $GIT_PAGER $NO_COLOR $TERM $CI"; pwd; echo oops >&2; exit 3',
        wait=30,
    )
    assert state.running is False
    assert state.exit_code == 3
    assert state.output == f"true true true 0 cat cat 1 dumb true\n{agent.directory}\noops\n"
    sub = agent.directory / "sub"
    sub.mkdir()
    assert (await agent.client.start_process("pwd", workdir="sub", wait=30)).output == f"{sub}\n"


async def test_background_process_output_is_read_with_a_wait(agent: RunningAgent) -> None:
    started = await agent.client.start_process(
        "echo started; while [ ! -f go ]; do sleep 0.02; done; echo finished", background=True
    )
    assert started.running and started.background
    snapshot = await agent.client.process_output(started.id, wait=0)
    assert snapshot.running is True
    listed = await agent.client.list_processes()
    assert [(p.id, p.running) for p in listed] == [(started.id, True)]
    (agent.directory / "go").touch()
    done = await agent.client.process_output(started.id, wait=30)
    assert (done.running, done.exit_code, done.output) == (False, 0, "started\nfinished\n")
    with pytest.raises(AgentNotFound):
        await agent.client.process_output("proc-nope")


async def test_a_wait_that_times_out_leaves_the_process_running(agent: RunningAgent) -> None:
    state = await agent.client.start_process("echo begin; sleep 60", wait=0.3)
    assert (state.running, state.exit_code, state.output) == (True, None, "begin\n")
    assert alive(state.pid or 0)
    message = await agent.client.signal_process(state.id, "terminate")
    assert message == f"sent SIGTERM to process {state.id}"
    ended = await agent.client.process_output(state.id, wait=30)
    assert (ended.running, ended.exit_code) == (False, 128 + signal.SIGTERM)


async def test_kill_stops_a_process_that_ignores_terminate(agent: RunningAgent) -> None:
    state = await agent.client.start_process("trap '' TERM; echo ready; while :; do sleep 0.05; done", background=True)
    assert (await agent.client.process_output(state.id, wait=0.3)).running
    await agent.client.signal_process(state.id, "terminate")
    assert (await agent.client.process_output(state.id, wait=0.3)).running
    await agent.client.signal_process(state.id, "kill")
    ended = await agent.client.process_output(state.id, wait=30)
    assert (ended.running, ended.exit_code) == (False, 128 + signal.SIGKILL)
    assert await agent.client.signal_process(state.id, "kill") == f"process {state.id} has already exited with code 137"


async def test_long_output_keeps_both_ends_within_the_cap(agent: RunningAgent) -> None:
    state = await agent.client.start_process(
        "echo FIRST; i=0; while [ $i -lt 3000 ]; do echo 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'; i=$((i+1)); done; echo LAST",
        wait=60,
        max_output_bytes=32 * 1024,
    )
    assert state.exit_code == 0
    assert state.truncated is not None
    assert state.truncated.original_bytes == 6 + 3000 * 48 + 5
    assert state.truncated.shown_bytes <= 32 * 1024
    assert state.output.startswith("FIRST\n") and state.output.endswith("LAST\n")
    assert "bytes of output omitted" in state.output
    assert len(state.output.encode()) < 33 * 1024


async def test_instructions_are_capped_and_a_changed_file_is_seen(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".chatd").mkdir(parents=True)
    (home / ".chatd" / "Agents.md").write_text("Be careful.\n")
    async with start_agent(tmp_path / "ws", env={"HOME": str(home)}) as a:
        (a.directory / "AGENTS.md").write_text("x" * (INSTRUCTION_CAP + 100))
        got = await a.client.instructions()
        assert got.directory == str(a.directory)
        assert got.os
        assert got.files == [
            InstructionFile(path=str(home / ".chatd" / "Agents.md"), content="Be careful.\n", truncated=False),
            InstructionFile(path=str(a.directory / "AGENTS.md"), content="x" * INSTRUCTION_CAP, truncated=True),
        ]
        (a.directory / "AGENTS.md").write_text("Run the tests with make test.\n")
        again = await a.client.instructions()
        assert again.files[1] == InstructionFile(
            path=str(a.directory / "AGENTS.md"), content="Run the tests with make test.\n", truncated=False
        )


async def test_stopping_the_agent_stops_its_processes(tmp_path: Path) -> None:
    async with start_agent(tmp_path / "ws") as a:
        bg = await a.client.start_process("sleep 1000 & echo $!; wait", background=True)
        grandchild = int((await a.client.process_output(bg.id, wait=0.5)).output.split()[0])
        assert alive(bg.pid or 0) and alive(grandchild)
        a.proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully (the lifespan stops the processes), then re-raises the signal.
        assert await a.proc.wait() == -signal.SIGTERM
        assert await wait_until_dead(grandchild)
        assert await wait_until_dead(bg.pid or 0)
    assert not alive(grandchild)
