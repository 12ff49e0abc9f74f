"""`chatd serve` as an operator runs it: a real process on a loopback port, on SQLite (the default,
in the data dir) and on PostgreSQL (`--database-url`). First start makes an admin and prints a
login URL; later starts make none but print the link again while the token file is there; a taken
port is one line; SIGTERM stops the process cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from chatd.store import users as user_store
from chatd.store.database import Database

pytestmark = pytest.mark.slow

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
LISTENING = re.compile(r"chatd is listening on (http://\S+)")
LOGIN = re.compile(r"^Open (http://\S+/#token=(\S+))$")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    """A running `chatd serve` with its stdout read line by line on a thread."""

    proc: subprocess.Popen[str]
    stderr: Path
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        threading.Thread(target=self._pump, name="chatd-stdout", daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, pattern: re.Pattern[str], timeout: float = START_TIMEOUT) -> re.Match[str]:
        """The first stdout line matching `pattern`; fails if the process ends first."""
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                pytest.fail(f"no line matching {pattern.pattern!r} within {timeout}s; stdout: {self.seen}\n{self.log()}")
            if line is None:
                pytest.fail(f"chatd exited ({self.proc.wait()}) before printing {pattern.pattern!r}; stdout: {self.seen}\n{self.log()}")
            self.seen.append(line)
            if m := pattern.search(line):
                return m

    def log(self) -> str:
        return "stderr:\n" + self.stderr.read_text(errors="replace")[-4000:]

    def stop(self) -> tuple[int, list[str]]:
        """SIGTERM, then the exit code and the rest of stdout."""
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=STOP_TIMEOUT)
        while (line := self.lines.get(timeout=STOP_TIMEOUT)) is not None:
            self.seen.append(line)
        return code, self.seen


@contextlib.contextmanager
def chatd_serve(data_dir: Path, database_url: str | None, port: int, stderr: Path) -> Iterator[Served]:
    args = [sys.executable, "-m", "chatd.cli", "serve", "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", str(port)]
    if database_url:
        args += ["--database-url", database_url]
    # Only what this test sets: no CHATD_* from the developer's shell. No workers: nothing here
    # needs a model, and the process must come up and go down on its own.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATD_")}
    env.update(CHATD_RUN_WORKERS="false", CHATD_LOG_LEVEL="warning", PYTHONUNBUFFERED="1")
    with stderr.open("w") as err:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    try:
        yield Served(proc, stderr)
    finally:
        # Never leave a process behind, whatever failed above.
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)
        if proc.stdout is not None:
            proc.stdout.close()


def count_users(url: str) -> int:
    async def go() -> int:
        db = Database(url)
        try:
            return await user_store.count_users(db)
        finally:
            await db.dispose()

    return asyncio.run(go())


# Three starts of a real process: minutes on a busy shared machine.
@pytest.mark.timeout(600)
def test_serve_prints_the_sign_in_link_on_every_start_while_the_token_file_exists(db_url: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    # SQLite is the default (a file in the data dir); PostgreSQL is a fresh migrated database.
    database_url = None if db_url.startswith("sqlite") else db_url
    token_file = data_dir / "admin-token"

    port = free_port()
    with chatd_serve(data_dir, database_url, port, tmp_path / "first.log") as served:
        base = served.wait_for(LISTENING).group(1)
        assert base == f"http://127.0.0.1:{port}"
        login = served.wait_for(LOGIN)
        assert login.group(1).startswith(f"{base}/#token=")
        token = login.group(2)

        assert token_file.stat().st_mode & 0o777 == 0o600
        assert token_file.read_text().strip() == token
        health = httpx.get(f"{base}/healthz", timeout=10)
        assert health.status_code == 200
        assert health.json()["status"] == "ok" and health.json()["database"] == "ok"
        me = httpx.get(f"{base}/api/v1/me", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert me.status_code == 200 and me.json()["role"] == "admin" and me.json()["username"] == "admin"
        assert httpx.get(f"{base}/api/v1/me", timeout=10).status_code == 401
        # The web UI is served at the URL printed for the admin.
        index = httpx.get(f"{base}/", timeout=10)
        assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
        # An idle keep-alive connection outlives a client's idle expiry (httpx: 5 s), so the
        # client, not chatd, closes it: a reused connection never races chatd's close (that race
        # once failed a POST under load with a ReadError).
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/healthz")
            answer = conn.getresponse()
            assert answer.status == 200 and answer.getheader("connection", "").lower() != "close"
            answer.read()
            time.sleep(6)
            conn.request("GET", "/healthz")
            assert conn.getresponse().status == 200
        finally:
            conn.close()

        code, stdout = served.stop()
        assert code == 0, (stdout, served.log())

    # A second start on the same data: no new admin; the same sign-in link is printed again (the
    # admin token file is still there), and the old token still works.
    port = free_port()
    with chatd_serve(data_dir, database_url, port, tmp_path / "second.log") as served:
        base = served.wait_for(LISTENING).group(1)
        again = served.wait_for(LOGIN)
        assert again.group(1) == f"{base}/#token={token}"
        me = httpx.get(f"{base}/api/v1/me", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert me.status_code == 200 and me.json()["role"] == "admin"
        # The CLI finds this server by its data dir alone, though it listens on another port than
        # the settings' default (the address is written into the data dir on start).
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHATD_")}
        cli = subprocess.run(
            [sys.executable, "-m", "chatd.cli", "users", "list", "--json", "--data-dir", str(data_dir)],
            capture_output=True, text=True, env=env, timeout=START_TIMEOUT,
        )
        assert cli.returncode == 0, (cli.stdout, cli.stderr)
        assert [u["username"] for u in json.loads(cli.stdout)] == ["admin"]
        code, stdout = served.stop()
        assert code == 0, (stdout, served.log())
        assert not any("First start" in line for line in stdout), stdout
    assert token_file.read_text().strip() == token
    assert count_users(database_url or f"sqlite:///{data_dir / 'chatd.db'}") == 1

    # Without the token file (the operator moved it away) a start prints no link.
    token_file.unlink()
    with chatd_serve(data_dir, database_url, free_port(), tmp_path / "third.log") as served:
        served.wait_for(LISTENING)
        code, stdout = served.stop()
        assert code == 0, (stdout, served.log())
        assert not any("#token=" in line for line in stdout), stdout


def test_serve_on_a_taken_port_says_so_in_one_line_and_how_to_pick_another(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with chatd_serve(data_dir, None, port, tmp_path / "busy.log") as served:
            code = served.proc.wait(timeout=START_TIMEOUT)
            assert served.proc.stdout is not None
            stdout = served.proc.stdout.read()
    stderr = (tmp_path / "busy.log").read_text()
    assert code != 0
    lines = [line for line in (stdout + stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert f"port {port}" in lines[0] and "in use" in lines[0], lines
    assert "--port" in lines[0] and "CHATD_PORT" in lines[0], lines
    # Nothing was set up on the way: the port is checked first.
    assert not (data_dir / "admin-token").exists()


@pytest.mark.timeout(300)
def test_a_stop_ends_open_streams_cleanly_and_the_process_exits(db_url: str, tmp_path: Path) -> None:
    # uvicorn's shutdown waits for every connection to close: an open stream (a browser tab on a
    # chat) kept a stopped chatd alive until the tab closed, and the tab on the dying process.
    database_url = None if db_url.startswith("sqlite") else db_url
    with chatd_serve(tmp_path / "data", database_url, free_port(), tmp_path / "serve.log") as served:
        base = served.wait_for(LISTENING).group(1)
        token = served.wait_for(LOGIN).group(2)
        opened = threading.Event()
        ended: queue.Queue[BaseException | None] = queue.Queue()

        def follow() -> None:
            try:
                headers = {"Authorization": f"Bearer {token}"}
                with httpx.stream("GET", f"{base}/api/v1/chats/watch", headers=headers, timeout=STOP_TIMEOUT) as r:
                    assert r.status_code == 200
                    opened.set()
                    for _ in r.iter_raw():
                        pass
                ended.put(None)
            except BaseException as exc:  # reported to the test thread
                ended.put(exc)

        threading.Thread(target=follow, name="watch", daemon=True).start()
        assert opened.wait(START_TIMEOUT)
        code, stdout = served.stop()
        assert code == 0, (stdout, served.log())
        # The stream ended as a response ends (its last chunk sent), not cut off by a cancel.
        assert ended.get(timeout=STOP_TIMEOUT) is None
