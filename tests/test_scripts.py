"""The README's first command, `./scripts/serve`, as a new user runs it: it has its own
environment (so `./scripts/test` and the developer's `.venv` keep their dev packages), and a
restart with nothing changed neither syncs nor needs uv."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_serve_blackbox import LISTENING, LOGIN, Served, free_port

REPO = Path(__file__).resolve().parent.parent
SERVE_ENV = REPO / ".venv-serve"

pytestmark = pytest.mark.slow


def start_script(data_dir: Path, port: int, log: Path, env: dict[str, str]) -> Served:
    with log.open("w") as err:
        proc = subprocess.Popen(
            [str(REPO / "scripts" / "serve"), "--port", str(port), "--data-dir", str(data_dir)],
            stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd="/",
        )
    return Served(proc, log)


def stop(served: Served) -> None:
    code, stdout = served.stop()
    assert code == 0, (stdout, served.log())


# A first start may install every runtime package into .venv-serve: minutes on a busy machine.
@pytest.mark.timeout(900)
def test_scripts_serve_runs_in_its_own_environment_and_restarts_without_uv(tmp_path: Path) -> None:
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATD_", "UV_PROJECT", "VIRTUAL_ENV"))}
    base_env.update(CHATD_RUN_WORKERS="false", CHATD_LOG_LEVEL="warning", PYTHONUNBUFFERED="1")
    data_dir = tmp_path / "data"

    served = start_script(data_dir, free_port(), tmp_path / "first.log", base_env)
    try:
        served.wait_for(LISTENING, timeout=600)
        served.wait_for(LOGIN)
    finally:
        stop(served)
    assert (SERVE_ENV / "bin" / "chatd").exists()
    # The test environment this suite runs in still has its dev packages (the script used to
    # `uv sync --no-dev` the shared .venv, uninstalling pytest under a running ./scripts/test).
    done = subprocess.run([sys.executable, "-c", "import pytest, mypy, ruff"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert Path(sys.prefix).resolve() != SERVE_ENV.resolve()

    # Nothing changed: the restart needs no uv at all (no PATH to it, an empty HOME), installs
    # nothing, and prints the same sign-in link.
    bare = dict(base_env, HOME=str(tmp_path / "home"), PATH=os.pathsep.join(p for p in ("/usr/bin", "/bin") if Path(p).is_dir()))
    served = start_script(data_dir, free_port(), tmp_path / "second.log", bare)
    try:
        served.wait_for(LISTENING, timeout=300)
        served.wait_for(LOGIN)
    finally:
        stop(served)
    assert "Installing uv" not in (tmp_path / "second.log").read_text()
    assert not (tmp_path / "home" / ".local").exists()
