"""The local provisioner with real directories, git repositories and agent processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chatd.domain.workspace import Template, TemplateParameter, Workspace, WorkspaceStatus
from chatd.errors import InvalidInput
from chatd.workspace.client import AgentClient
from chatd.workspace.provisioner import (
    UID_SPAN,
    LocalProvisioner,
    ProvisionFailed,
    adopt_uids,
    bwrap_argv,
    claim_uid,
    workspace_uid,
)

from .conftest import alive, wait_until_dead

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def template(**kw: object) -> Template:
    values: dict[str, object] = {
        "id": uuid.uuid4(),
        "name": "py",
        "display_name": "",
        "description": "",
        "provisioner": "local",
        "git_url": None,
        "source_path": None,
        "git_ref": None,
        "init_script": "",
        "parameters": [],
        "allow_outside": False,
        "deprecated": False,
        "created_at": NOW,
        "updated_at": NOW,
    }
    values.update(kw)
    return Template(**values)  # type: ignore[arg-type]


def workspace(p: LocalProvisioner, *, parameters: dict[str, str] | None = None) -> Workspace:
    wid = uuid.uuid4()
    return Workspace(
        id=wid,
        owner_id=uuid.uuid4(),
        template_id=None,
        name="ws-1",
        provisioner="local",
        directory=p.directory_for(wid),
        status=WorkspaceStatus.PROVISIONING,
        parameters=parameters or {},
        allow_outside=False,
        agent_url=None,
        last_error=None,
        created_at=NOW,
        updated_at=NOW,
    )


@pytest.fixture
async def provisioner(tmp_path: Path) -> AsyncIterator[LocalProvisioner]:
    # As root, unsandboxed commands run under the workspace's uid, which must be able to reach the
    # workspace by its absolute path (git does): pytest's own directories are 0700, so the data
    # directory lives in a directory of its own that others may enter (docs/security.md).
    parent = Path(tempfile.mkdtemp(prefix="chatd-ws-"))
    os.chmod(parent, 0o711)
    p = LocalProvisioner(parent / "data", sandbox="none")
    try:
        yield p
    finally:
        await p.close()
        shutil.rmtree(parent, ignore_errors=True)


def git_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "README.md").write_text("# demo\n")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    for args in (["init", "-q", "-b", "main"], ["add", "README.md"], ["commit", "-q", "-m", "first"]):
        subprocess.run(["git", *args], cwd=path, env=env, check=True)
    return path


async def test_workspace_from_a_path_runs_the_init_script_with_parameters(provisioner: LocalProvisioner, tmp_path: Path) -> None:
    source = tmp_path / "source"
    (source / "src").mkdir(parents=True)
    (source / "src" / "app.py").write_text("print('hi')\n")
    t = template(
        source_path=str(source),
        init_script='echo "$CHATD_PARAM_GREETING from $CHATD_WORKSPACE_NAME" > hello.txt; test "$GIT_TERMINAL_PROMPT" = 0',
        parameters=[TemplateParameter(name="greeting")],
    )
    ws = workspace(provisioner, parameters={"greeting": "hello"})
    await provisioner.provision(ws, t)
    directory = Path(ws.directory)
    assert (directory / "src" / "app.py").read_text() == "print('hi')\n"
    assert (directory / "hello.txt").read_text() == "hello from ws-1\n"
    assert (source / "hello.txt").exists() is False

    endpoint = await provisioner.start(ws)
    assert endpoint.url.startswith("http://127.0.0.1:")
    token_file = provisioner.state_root / str(ws.id) / "token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert token_file.read_text() == endpoint.token
    async with AgentClient(endpoint.url, endpoint.token) as client:
        assert (await client.read_file("src/app.py")).content == "     1\tprint('hi')"


async def test_workspace_from_a_git_repository(provisioner: LocalProvisioner, tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "repo")
    ws = workspace(provisioner)
    await provisioner.provision(ws, template(git_url=str(repo), git_ref="main", init_script="git log --oneline | wc -l > commits"))
    directory = Path(ws.directory)
    assert (directory / "README.md").read_text() == "# demo\n"
    assert (directory / ".git").is_dir()
    assert (directory / "commits").read_text().strip() == "1"


async def test_provisioning_failures_say_why(provisioner: LocalProvisioner, tmp_path: Path) -> None:
    with pytest.raises(ProvisionFailed) as err:
        await provisioner.provision(workspace(provisioner), template(init_script="echo 'no compiler here'; exit 4"))
    assert err.value.message == "The init script failed (exit code 4): no compiler here"
    with pytest.raises(ProvisionFailed) as err:
        await provisioner.provision(workspace(provisioner), template(git_url=str(tmp_path / "no-such-repo")))
    assert err.value.message.startswith("git clone of")
    marker = tmp_path / "pwned"
    with pytest.raises(ProvisionFailed) as err:
        await provisioner.provision(workspace(provisioner), template(git_url=f"ext::sh -c touch% {marker}"))
    assert "transport 'ext' not allowed" in err.value.message
    assert marker.name not in os.listdir(tmp_path)
    with pytest.raises(ProvisionFailed):
        await provisioner.provision(workspace(provisioner), template(source_path=str(tmp_path / "missing")))


async def test_restart_gives_a_new_agent_and_token(provisioner: LocalProvisioner) -> None:
    ws = workspace(provisioner)
    await provisioner.provision(ws, template())
    first = await provisioner.start(ws)
    assert await provisioner.start(ws) == first  # already running: the same agent
    await provisioner.stop(ws.id)
    assert not provisioner.is_running(ws.id)
    assert first.pid is not None and not alive(first.pid)
    second = await provisioner.start(ws)
    assert second.token != first.token and second.pid != first.pid
    async with AgentClient(second.url, second.token) as client:
        await client.write_file("kept.txt", "still here\n")
    await provisioner.stop(ws.id)
    third = await provisioner.start(ws)
    async with AgentClient(third.url, third.token) as client:
        assert (await client.read_file("kept.txt")).content == "     1\tstill here"


async def test_stop_leaves_no_process_behind(provisioner: LocalProvisioner) -> None:
    ws = workspace(provisioner)
    await provisioner.provision(ws, template())
    endpoint = await provisioner.start(ws)
    async with AgentClient(endpoint.url, endpoint.token) as client:
        server = await client.start_process("sleep 1000 & echo $!; wait", background=True)
        stubborn = await client.start_process("trap '' TERM; while :; do sleep 0.05; done", background=True)
        grandchild = int((await client.process_output(server.id, wait=0.5)).output.split()[0])
    pids = [endpoint.pid or 0, server.pid or 0, stubborn.pid or 0, grandchild]
    assert all(alive(p) for p in pids)
    await provisioner.stop(ws.id)
    for pid in pids:
        assert await wait_until_dead(pid), pid


async def test_close_stops_every_agent(tmp_path: Path) -> None:
    p = LocalProvisioner(tmp_path / "data", sandbox="none")
    spaces = [workspace(p), workspace(p)]
    endpoints = []
    for ws in spaces:
        await p.provision(ws, template())
        endpoints.append(await p.start(ws))
    await p.close()
    assert p.running == []
    for e in endpoints:
        assert await wait_until_dead(e.pid or 0)


async def test_agent_environment_leaves_server_secrets_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-secret")
    monkeypatch.setenv("CHATD_SECRET_KEY", "also-secret")
    # Unsandboxed (opted in): the case where the environment is all that stands between them.
    p = LocalProvisioner(tmp_path / "data", sandbox="none")
    try:
        ws = workspace(p)
        await p.provision(ws, template(init_script="env > init-env"))
        endpoint = await p.start(ws)
        async with AgentClient(endpoint.url, endpoint.token) as client:
            state = await client.start_process("env", wait=30)
        assert state.exit_code == 0
        for text in (state.output, (Path(ws.directory) / "init-env").read_text()):
            assert "sk-secret" not in text and "also-secret" not in text
            assert "PATH=" in text
    finally:
        await p.close()


def test_bwrap_prefix_hides_the_data_dir_and_binds_the_workspace_after_it(tmp_path: Path) -> None:
    data, ws, token = tmp_path / "data", tmp_path / "data" / "workspaces" / "w", tmp_path / "data" / "t"
    argv = bwrap_argv("/usr/bin/bwrap", data_dir=data, workspace_dir=ws, read_only=[token])
    assert argv[-1] == "--"
    hide = argv.index("--tmpfs", argv.index("/tmp"))
    assert argv[hide + 1] == str(data)
    assert argv.index("--bind") > hide and argv[argv.index("--bind") + 1 : argv.index("--bind") + 3] == [str(ws), str(ws)]
    assert argv[argv.index("--ro-bind", argv.index("--bind")) + 1] == str(token)
    assert "--die-with-parent" in argv and "--unshare-pid" in argv


@pytest.mark.skipif(os.geteuid() != 0, reason="commands under another uid need root")
async def test_file_tools_read_only_what_the_workspace_user_could(provisioner: LocalProvisioner) -> None:
    """A command could plant a hard link to (or race a symlink towards) a file only chatd may
    read; the file tools run as chatd's user, so they check the file they opened."""
    ws = workspace(provisioner)
    await provisioner.provision(ws, template())
    endpoint = await provisioner.start(ws)
    planted = Path(ws.directory) / "planted"
    planted.write_text("chatd-only secret\n")
    os.chown(planted, 0, 0)
    os.chmod(planted, 0o600)
    async with AgentClient(endpoint.url, endpoint.token) as client:
        with pytest.raises(InvalidInput) as err:
            await client.read_file("planted")
        assert "not readable by the workspace's user" in err.value.message
        await client.write_file("notes.txt", "mine\n")
        assert (await client.read_file("notes.txt")).content.endswith("mine")
        state = await client.start_process("cat notes.txt planted; id -u", wait=30)
    assert "mine" in state.output and "chatd-only secret" not in state.output and "Permission denied" in state.output


def test_two_workspaces_whose_ids_hash_alike_never_share_a_uid(tmp_path: Path) -> None:
    """Unsandboxed under root, a workspace's uid is what keeps other workspaces out of its files:
    ids equal modulo the uid span (a birthday collision among a few thousand workspaces) must
    still get different uids, each kept across restarts and claimed once across processes."""
    first = uuid.uuid4()
    twin = uuid.UUID(int=(first.int + UID_SPAN) % (1 << 128))
    assert workspace_uid(first) == workspace_uid(twin)
    a = claim_uid(tmp_path, first)
    b = claim_uid(tmp_path, twin)
    assert a == workspace_uid(first)  # the first keeps the uid it always had
    assert b != a
    # Remembered: the same uid again, from a fresh look at the state directory.
    assert claim_uid(tmp_path, first) == a and claim_uid(tmp_path, twin) == b
    (tmp_path / str(twin) / "uid").unlink()
    assert claim_uid(tmp_path, twin) == b  # its claim file still names it


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="giving a directory to another uid needs root")
def test_a_new_workspace_never_takes_the_uid_that_owns_an_older_workspace(tmp_path: Path) -> None:
    """A workspace made before uids were claimed holds its uid only by its files: at start the
    provisioner claims it for that workspace, so a newcomer whose id hashes alike gets another."""
    root, state = tmp_path / "workspaces", tmp_path / "state"
    old = uuid.uuid4()
    (root / str(old)).mkdir(parents=True)
    os.chown(root / str(old), workspace_uid(old), workspace_uid(old))
    adopt_uids(state, root)
    newcomer = uuid.UUID(int=(old.int + UID_SPAN) % (1 << 128))
    assert claim_uid(state, newcomer) != workspace_uid(old)
    assert claim_uid(state, old) == workspace_uid(old)
