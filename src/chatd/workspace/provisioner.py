"""Provisioners make workspaces and run their agents. `local` is the first; `ssh` or container
provisioners implement the same `Provisioner` protocol.

The `local` provisioner
-----------------------
A workspace is a directory `<data dir>/workspaces/<id>`, made empty, cloned from a git URL or
copied from a path, then prepared by the template's init script (`sh -c`, in the directory,
parameters as `CHATD_PARAM_<NAME>`). Its agent is a child process
(`python -m chatd.cli workspace-agent`) on a free loopback port with a fresh random token in a
0600 file under `<data dir>/workspace-agents/<id>/`; the agent announces its address on stdout.

Commands (`execute`, process tools) run only where chatd can keep them from its own secrets
(docs/security.md):
- `sandbox="auto"` (default): with a working bubblewrap, commands run in it. Without one,
  commands are refused (the agent runs with `--no-commands`); the file tools still work.
- `sandbox="bwrap"`: bubblewrap is required; chatd does not start without a working one.
- `sandbox="none"`: the admin's explicit opt-in to unsandboxed commands (a loud warning at start).

What it isolates, and what it does not:
- Always: the file tools stay inside the workspace directory (unless the template allows more);
  the agent only listens on loopback and needs the token; commands get a scrubbed environment
  (no provider keys, database URL or CHATD_* settings), no inherited file descriptors, and
  `no_new_privs`; every process an agent started is stopped with it.
- With bubblewrap: the agent and its commands see the host read-only, the workspace directory
  read-write, a private /tmp, /dev and /proc, and their own PID namespace; chatd's data directory
  (database, secret key, other workspaces) is hidden. They die with the server.
- Unsandboxed (`none`) with chatd running as root: commands run under the workspace's own
  unprivileged uid (`claim_uid`: claimed once, never shared), which owns the workspace directory (mode 0700); the data
  directory is only traversable (0711) and chatd's files in it are 0600, so commands cannot read
  the database, the keys, the admin token, other workspaces or chatd's /proc environment.
- Unsandboxed with chatd running as an ordinary user: commands run as that user and can read
  everything it can, including the database and the secret key: only for trusted users.
- Never isolated: the network (commands can reach anything the host can, including loopback
  services), CPU/memory/disk use.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from chatd.domain.workspace import Template, Workspace
from chatd.errors import ChatdError
from chatd.workspace.processes import NON_INTERACTIVE_ENV

log = logging.getLogger(__name__)

Sandbox = Literal["auto", "bwrap", "none"]

# Variables of the server's environment an agent (and so every command) inherits; everything else
# (API keys, CHATD_*, database URLs) stays out.
_INHERITED_ENV = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "PYTHONPATH")
_LOG_TAIL = 4000
# Unsandboxed workspaces of a root chatd run under uid/gid UID_BASE + (id mod UID_SPAN): a range no
# distribution hands out to users, one uid per workspace so workspaces cannot read each other.
UID_BASE = 1_000_000_000
UID_SPAN = 1_000_000_000
_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class ProvisionFailed(ChatdError):
    """A workspace could not be made or its agent could not be started."""

    code = "workspace_failed"


@dataclass(frozen=True, slots=True)
class AgentEndpoint:
    url: str
    token: str
    pid: int | None = None


class Provisioner(Protocol):
    """Makes workspaces of one kind and runs their agents."""

    @property
    def kind(self) -> str: ...

    def directory_for(self, workspace_id: uuid.UUID) -> str: ...

    async def provision(self, workspace: Workspace, template: Template) -> None:
        """Make the workspace's files (clone/copy, init script). Raises `ProvisionFailed`."""
        ...

    async def start(self, workspace: Workspace) -> AgentEndpoint:
        """Start the agent (or return the running one). Raises `ProvisionFailed`."""
        ...

    def is_running(self, workspace_id: uuid.UUID) -> bool: ...

    async def stop(self, workspace_id: uuid.UUID) -> None: ...

    async def close(self) -> None:
        """Stop every agent this provisioner started."""
        ...


def _tail(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _LOG_TAIL else "…" + text[-_LOG_TAIL:]


def base_environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in _INHERITED_ENV or k.startswith("LC_")}
    env.setdefault("PATH", os.defpath)
    return env


# What chatd keeps in its data directory besides `workspaces/` (the SQLite files take the mode of
# chatd.db when SQLite creates them).
_CHATD_FILES = (
    "admin-token", "secret-key", "vapid-private.pem", "chatd.db", "chatd.db-wal", "chatd.db-shm",
    "chatd.db-journal", "workspace-agents", "chat-history",
)  # fmt: skip


def workspace_uid(workspace_id: uuid.UUID) -> int:
    """The uid a workspace's commands would run under if no other workspace has claimed it first
    (`LocalProvisioner._owner` probes on from here): stable, so older workspaces keep theirs."""
    return UID_BASE + workspace_id.int % UID_SPAN


def adopt_uids(state_root: Path, root: Path) -> None:
    """Claim, for each workspace directory already on disk, the uid that owns it: workspaces made
    before uids were claimed hold theirs only by their files, and a new workspace must not be
    handed one of those before its owner runs again."""
    for directory in sorted(root.iterdir()) if root.is_dir() else []:
        try:
            workspace_id = uuid.UUID(directory.name)
            owner = directory.lstat().st_uid
        except (ValueError, OSError):
            continue
        if not UID_BASE <= owner < UID_BASE + UID_SPAN or (state_root / str(workspace_id) / "uid").exists():
            continue
        claims = state_root / "uids"
        claims.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(claims / str(owner), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue  # two old workspaces shared this uid: the second gets a new one when it starts
        with os.fdopen(fd, "w") as f:
            f.write(str(workspace_id))
        state = state_root / str(workspace_id)
        state.mkdir(parents=True, exist_ok=True, mode=0o700)
        (state / "uid").write_text(str(owner))


def claim_uid(state_root: Path, workspace_id: uuid.UUID) -> int:
    """This workspace's own uid, claimed once and remembered in its state directory. Hashing alone
    would give two workspaces of a few thousand the same uid by chance (a birthday collision), and
    then each could read the other's files; a claim is a file created with O_EXCL under
    `state_root/uids`, so it is exclusive across processes too."""
    state = state_root / str(workspace_id)
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    remembered = state / "uid"
    try:
        return int(remembered.read_text())
    except (FileNotFoundError, ValueError):
        pass
    claims = state_root / "uids"
    claims.mkdir(exist_ok=True, mode=0o700)
    offset = workspace_id.int % UID_SPAN
    for step in range(UID_SPAN):
        uid = UID_BASE + (offset + step) % UID_SPAN
        claim = claims / str(uid)
        try:
            fd = os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            if claim.read_text().strip() != str(workspace_id):
                continue  # another workspace's
        else:
            with os.fdopen(fd, "w") as f:
                f.write(str(workspace_id))
        remembered.write_text(str(uid))
        return uid
    raise ProvisionFailed("No free workspace uid is left.")  # pragma: no cover - a billion workspaces


def sandbox_works(bwrap: str | None) -> bool:
    """Whether bubblewrap can make a sandbox here: it may be installed but refused (no user
    namespaces in a container, a restrictive AppArmor profile)."""
    if bwrap is None:
        return False
    import subprocess

    argv = [bwrap, "--die-with-parent", "--unshare-pid", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--", "true"]
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.lchown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, gid)


def _private(path: Path, mode: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        st = path.lstat()
        if not path.is_symlink() and st.st_mode & 0o777 != mode:
            os.chmod(path, mode)


def _set_not_dumpable() -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE


def _reachable_by_others(path: Path) -> bool:
    """Every directory from / down to `path` lets other users enter it (o+x)."""
    return all(os.stat(p).st_mode & 0o001 for p in [path, *path.parents])


def _runtime_paths() -> list[Path]:
    import chatd

    paths = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix), Path(chatd.__file__).resolve().parents[1]}
    return sorted(p.resolve() for p in paths)


def bwrap_argv(
    bwrap: str, *, data_dir: Path, workspace_dir: Path, read_only: Sequence[Path] = (), chdir: Path | None = None
) -> list[str]:
    """The bubblewrap prefix: host read-only, workspace read-write, data dir hidden."""
    argv = [
        bwrap,
        "--die-with-parent",
        # Run as root, bwrap would leave the sandbox nearly every capability of the host (load a
        # kernel module, mknod a disk, reconfigure the network): none for the agent or commands.
        *(["--cap-drop", "ALL"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),
        "--unshare-pid",
        "--unshare-ipc",
        "--ro-bind", "/", "/",
        "--dev", "/dev",
        "--proc", "/proc",
        "--tmpfs", "/tmp",
    ]  # fmt: skip
    # The agent's own Python must stay visible when it lives under /tmp (a CI checkout's venv).
    for p in _runtime_paths():
        if p.is_relative_to("/tmp") and not p.is_relative_to(data_dir):
            argv += ["--ro-bind", str(p), str(p)]
    argv += [
        # Mounted after /tmp so a data dir under /tmp is hidden too.
        "--tmpfs", str(data_dir),
        "--bind", str(workspace_dir), str(workspace_dir),
    ]  # fmt: skip
    for p in read_only:
        argv += ["--ro-bind", str(p), str(p)]
    argv += ["--chdir", str(chdir or workspace_dir), "--"]
    return argv


def _kill_session(sid: int) -> None:
    """SIGKILL every process still in session `sid` (Linux /proc; a no-op elsewhere).

    The agent leads its own session and its commands stay in it (each in its own process group),
    so this reaches what a killed agent could not clean up itself: a command whose shell ignored
    SIGTERM, or children left behind by a background job.
    """
    try:
        entries = os.listdir("/proc")
    except OSError:
        return
    me = os.getpid()
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may contain spaces and parentheses: fields start after the last ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 3 and int(fields[3]) == sid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry), signal.SIGKILL)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


@dataclass
class _Agent:
    proc: asyncio.subprocess.Process
    endpoint: AgentEndpoint


class LocalProvisioner:
    """Workspaces as directories under the data dir; agents as child processes."""

    kind = "local"

    def __init__(
        self,
        data_dir: Path,
        *,
        sandbox: Sandbox = "auto",
        bwrap: str | Literal["detect"] | None = "detect",
        python: str = sys.executable,
        init_timeout: float = 600.0,
        start_timeout: float = 30.0,
        stop_timeout: float = 5.0,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.root = self.data_dir / "workspaces"
        self.state_root = self.data_dir / "workspace-agents"
        self.python = python
        self.init_timeout = init_timeout
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        found = shutil.which("bwrap") if bwrap == "detect" else bwrap
        working = sandbox != "none" and sandbox_works(found)
        if sandbox == "bwrap" and not working:
            raise ValueError(
                "CHATD_WORKSPACE_SANDBOX=bwrap but bubblewrap (bwrap) is "
                + ("not installed" if found is None else f"not working here ({found} cannot create a sandbox)")
            )
        self.bwrap = found if working else None
        # Unsandboxed commands only on the admin's explicit word.
        self.commands = working or sandbox == "none"
        # As root, unsandboxed commands run under a per-workspace uid instead of root.
        self.run_as_workspace_user = self.bwrap is None and self.commands and hasattr(os, "geteuid") and os.geteuid() == 0
        if sandbox == "none":
            log.warning(
                "CHATD_WORKSPACE_SANDBOX=none: workspace commands run WITHOUT a sandbox. %s "
                "Install bubblewrap and use 'auto' unless every user is trusted.",
                "They run under a separate uid per workspace, but see the host's files and network."
                if self.run_as_workspace_user
                else "They run as chatd's own user and can read chatd's database, secret key and admin token.",
            )
        elif not working:
            log.warning(
                "bubblewrap is %s: workspace commands (execute) are disabled. Install bubblewrap, or set "
                "CHATD_WORKSPACE_SANDBOX=none to allow unsandboxed commands (unsafe with untrusted users).",
                "not installed" if found is None else f"not working here ({found})",
            )
        self._secure_data_dir()
        if self.commands and self.bwrap is None and not self.run_as_workspace_user:
            # Commands share chatd's uid: at least its /proc/<pid>/environ and memory are closed
            # to them (a non-dumpable process's /proc files belong to root).
            _set_not_dumpable()
        if self.run_as_workspace_user and not _reachable_by_others(self.root):
            log.warning(
                "workspace commands run under their own uid but cannot reach %s by its path (a parent "
                "directory is closed to other users): tools that use absolute paths (git, venvs) will "
                "fail. Put the data directory where others may enter, e.g. CHATD_DATA_DIR=/var/lib/chatd.",
                self.root,
            )
        self._agents: dict[uuid.UUID, _Agent] = {}
        self._locks: dict[uuid.UUID, asyncio.Lock] = {}

    @property
    def sandboxed(self) -> bool:
        return self.bwrap is not None

    def _secure_data_dir(self) -> None:
        """The data directory is chatd's alone: 0700, or 0711 (enter, not list) when commands run
        under workspace uids that must reach their own directory below it; then chatd's files in
        it are closed to other users, whatever umask made them."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.root.mkdir(exist_ok=True)
        self.state_root.mkdir(exist_ok=True)
        traversable = 0o711 if self.run_as_workspace_user else 0o700
        _private(self.data_dir, traversable)
        _private(self.root, traversable)
        # chatd's own files only: the data directory may be shared with other things.
        for name in _CHATD_FILES:
            entry = self.data_dir / name
            if entry.exists() and not entry.is_symlink():
                _private(entry, 0o700 if entry.is_dir() else 0o600)
        if self.run_as_workspace_user:
            adopt_uids(self.state_root, self.root)

    def _owner(self, workspace_id: uuid.UUID) -> tuple[int, int] | None:
        if not self.run_as_workspace_user:
            return None
        uid = claim_uid(self.state_root, workspace_id)
        return uid, uid

    def _give_directory(self, workspace_id: uuid.UUID, directory: Path) -> None:
        """The workspace directory (0700) and everything in it belong to the workspace's uid."""
        owner = self._owner(workspace_id)
        if owner is None:
            return
        st = directory.stat()
        if (st.st_uid, st.st_gid) != owner:
            _chown_tree(directory, *owner)
        _private(directory, 0o700)

    def directory_for(self, workspace_id: uuid.UUID) -> str:
        return str(self.root / str(workspace_id))

    def _state_dir(self, workspace_id: uuid.UUID) -> Path:
        d = self.state_root / str(workspace_id)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        return d

    def _wrap(self, argv: list[str], workspace_dir: Path, read_only: Sequence[Path] = ()) -> list[str]:
        if self.bwrap is None:
            return argv
        return bwrap_argv(self.bwrap, data_dir=self.data_dir, workspace_dir=workspace_dir, read_only=read_only) + argv

    # --- provisioning -----------------------------------------------------------------------------

    async def provision(self, workspace: Workspace, template: Template) -> None:
        directory = Path(workspace.directory)
        await asyncio.to_thread(self._prepare_directory, directory, template)
        if template.git_url:
            # As chatd's user: the admin's URL may be a local path only it can read. Cloning runs
            # no code from the repository (no hooks; `ext::` is not an allowed transport).
            await self._clone(template.git_url, template.git_ref, directory)
        await asyncio.to_thread(self._give_directory, workspace.id, directory)
        owner = self._owner(workspace.id)
        if template.init_script.strip():
            await self._init(workspace, template.init_script, directory, owner)

    def _prepare_directory(self, directory: Path, template: Template) -> None:
        directory.parent.mkdir(parents=True, exist_ok=True)
        if directory.exists() and any(directory.iterdir()):
            raise ProvisionFailed(f"The workspace directory {directory} already exists and is not empty.")
        if template.git_url:
            return  # git clone makes it
        if template.source_path:
            source = Path(template.source_path)
            if not source.is_dir():
                raise ProvisionFailed(f"The template's source path {source} is not a directory.")
            shutil.copytree(source, directory, symlinks=True, dirs_exist_ok=True)
        else:
            directory.mkdir(parents=True, exist_ok=True)

    async def _clone(self, url: str, ref: str | None, directory: Path) -> None:
        # --no-hardlinks: the tree is then chowned to the workspace's uid, which must not change
        # the owner of a local source repository's objects through shared inodes.
        argv = ["git", "clone", "--quiet", "--no-hardlinks"]
        if ref:
            argv += ["--branch", ref]
        argv += ["--", url, str(directory)]
        env = {
            **base_environment(),
            "GIT_TERMINAL_PROMPT": "0",
            # No `ext::` (runs commands) or other exotic transports from a template's URL.
            "GIT_ALLOW_PROTOCOL": "file:git:http:https:ssh",
        }
        code, output = await self._run(argv, cwd=self.root, env=env, timeout=self.init_timeout)
        if code != 0:
            raise ProvisionFailed(f"git clone of {url} failed (exit code {code}): {_tail(output)}")

    async def _init(self, workspace: Workspace, script: str, directory: Path, owner: tuple[int, int] | None) -> None:
        env = {
            **base_environment(),
            **({"HOME": str(directory)} if owner else {}),
            **NON_INTERACTIVE_ENV,
            "CHATD_WORKSPACE_ID": str(workspace.id),
            "CHATD_WORKSPACE_NAME": workspace.name,
            "CHATD_WORKSPACE_DIR": str(directory),
        }
        for name, value in workspace.parameters.items():
            if _PARAM_NAME.match(name):
                env[f"CHATD_PARAM_{name.upper()}"] = value
        argv = self._wrap(["sh", "-c", script], directory)
        code, output = await self._run(argv, cwd=directory, env=env, timeout=self.init_timeout, owner=owner)
        await asyncio.to_thread(self._write_log, workspace.id, "init.log", output)
        if code != 0:
            raise ProvisionFailed(f"The init script failed (exit code {code}): {_tail(output)}")

    def _write_log(self, workspace_id: uuid.UUID, name: str, text: str) -> None:
        (self._state_dir(workspace_id) / name).write_text(text)

    async def _run(
        self, argv: list[str], *, cwd: Path, env: Mapping[str, str], timeout: float, owner: tuple[int, int] | None = None
    ) -> tuple[int, str]:
        identity: dict[str, Any] = {"user": owner[0], "group": owner[1], "extra_groups": []} if owner else {}
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=cwd,
                env=dict(env),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                **identity,
            )
        except OSError as exc:
            raise ProvisionFailed(f"Cannot run {argv[0]}: {exc.strerror}") from exc
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            _kill_session(proc.pid)
            await proc.wait()
            raise ProvisionFailed(f"{argv[0]} did not finish within {timeout:.0f} s and was killed.") from None
        except asyncio.CancelledError:
            _kill_session(proc.pid)
            await proc.wait()
            raise
        return proc.returncode or 0, out.decode("utf-8", errors="replace")

    # --- agents -----------------------------------------------------------------------------------

    def _lock(self, workspace_id: uuid.UUID) -> asyncio.Lock:
        return self._locks.setdefault(workspace_id, asyncio.Lock())

    def is_running(self, workspace_id: uuid.UUID) -> bool:
        agent = self._agents.get(workspace_id)
        return agent is not None and agent.proc.returncode is None

    async def start(self, workspace: Workspace) -> AgentEndpoint:
        async with self._lock(workspace.id):
            agent = self._agents.get(workspace.id)
            if agent is not None and agent.proc.returncode is None:
                return agent.endpoint
            if agent is not None:
                await self._reap(workspace.id, agent)
            return await self._start(workspace)

    def _prepare_start(self, workspace: Workspace) -> tuple[str, Path, Path]:
        """A fresh token every start, in a file readable by this user only; the log path."""
        if not Path(workspace.directory).is_dir():
            raise ProvisionFailed(f"The workspace directory {workspace.directory} does not exist.")
        self._give_directory(workspace.id, Path(workspace.directory))
        state = self._state_dir(workspace.id)
        token = secrets.token_urlsafe(32)
        token_file = state / "token"
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, token.encode())
        finally:
            os.close(fd)
        return token, token_file, state / "agent.log"

    async def _start(self, workspace: Workspace) -> AgentEndpoint:
        directory = Path(workspace.directory)
        token, token_file, log_path = await asyncio.to_thread(self._prepare_start, workspace)
        argv = [
            self.python, "-m", "chatd.cli", "workspace-agent",
            "--dir", str(directory),
            "--listen", "127.0.0.1:0",
            "--token-file", str(token_file),
        ]  # fmt: skip
        if workspace.allow_outside:
            argv.append("--allow-outside")
        if not self.commands:
            argv.append("--no-commands")
        owner = self._owner(workspace.id)
        if owner is not None:
            argv += ["--run-as", f"{owner[0]}:{owner[1]}"]
        argv = self._wrap(argv, directory, read_only=[token_file])
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    cwd=directory,
                    env=base_environment(),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=log_fd,
                    # Its own session: the agent and everything it runs can be found and stopped as one.
                    start_new_session=True,
                )
            except OSError as exc:
                raise ProvisionFailed(f"Cannot start the workspace agent: {exc.strerror}") from exc
        finally:
            os.close(log_fd)
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), self.start_timeout)
        except TimeoutError:
            await self._reap(workspace.id, _Agent(proc, AgentEndpoint("", "")))
            raise ProvisionFailed(f"The workspace agent did not start within {self.start_timeout:.0f} s.") from None
        except asyncio.CancelledError:
            await self._reap(workspace.id, _Agent(proc, AgentEndpoint("", "")))
            raise
        try:
            ready = json.loads(line)
            endpoint = AgentEndpoint(url=str(ready["url"]), token=token, pid=proc.pid)
        except (ValueError, KeyError, TypeError):
            await self._reap(workspace.id, _Agent(proc, AgentEndpoint("", "")))
            log_text = await asyncio.to_thread(_read_text, log_path)
            raise ProvisionFailed(f"The workspace agent did not start: {_tail(log_text) or 'no output'}") from None
        self._agents[workspace.id] = _Agent(proc, endpoint)
        return endpoint

    async def stop(self, workspace_id: uuid.UUID) -> None:
        async with self._lock(workspace_id):
            agent = self._agents.get(workspace_id)
            if agent is not None:
                await self._reap(workspace_id, agent)

    async def _reap(self, workspace_id: uuid.UUID, agent: _Agent) -> None:
        """SIGTERM (the agent stops its processes), then SIGKILL whatever is left of its session."""
        proc = agent.proc
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(proc.wait()), self.stop_timeout)
            except TimeoutError:
                log.warning("workspace agent %s did not stop on SIGTERM; killing it", workspace_id)
        _kill_session(proc.pid)
        await proc.wait()
        if self._agents.get(workspace_id) is agent:
            del self._agents[workspace_id]

    async def close(self) -> None:
        async with asyncio.TaskGroup() as group:
            for workspace_id in list(self._agents):
                group.create_task(self.stop(workspace_id), name=f"stop-workspace:{workspace_id}")

    @property
    def running(self) -> list[uuid.UUID]:
        return [wid for wid in self._agents if self.is_running(wid)]
