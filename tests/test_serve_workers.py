"""`chatd serve --workers 2` as a user runs it: one real supervisor process on a fresh PostgreSQL
database, two worker processes behind one port, driven over the HTTP API only.

The database is read only to learn which process runs a chat (the API does not say). The worker
processes' replica ids follow from CHATD_REPLICA_ID (chatd.supervisor: uuid5 of it), and their
pids and relay ports are on the supervisor's stdout. The server is started once for the module
(each process spends seconds importing); the tests run in order and the last one stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from cryptography.fernet import Fernet

from tests.conftest import _create_pg_database, _drop_pg_database, _dsn
from tests.fakes.llm_server import Reply
from tests.test_multiprocess import (
    REPLICA_ENV,
    TERMINAL,
    Api,
    Subscriber,
    _stream,
    ended_turn,
    eventually,
    fake_llm,
    free_port,
    new_member,
    request_tag,
    text_of,
)

# Generous: three processes start on a shared, loaded 2-core machine (setup counts towards the
# first test).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

START_TIMEOUT = 240.0  # three processes importing the provider SDKs on a shared 2-core machine
STOP_TIMEOUT = 60.0
LINE = re.compile(r"^worker process (\d+) \(pid (\d+), replica ([0-9a-f-]+)\) relays on (\S+)$")


@dataclass
class Served:
    """The running `chatd serve --workers 2` (the `Cluster` shape the shared helpers expect)."""

    proc: subprocess.Popen[bytes]
    root: Path
    url: str
    database_url: str
    replica_id: uuid.UUID
    admin: dict[str, str]
    provider_id: str

    @property
    def replicas(self) -> list[Served]:
        return [self]  # fake_llm patches the provider through replicas[0].url

    @property
    def stdout(self) -> str:
        return (self.root / "stdout").read_text(errors="replace")

    def tails(self) -> str:
        return f"== stdout\n{self.stdout[-3000:]}\n== stderr\n{(self.root / 'stderr').read_text(errors='replace')[-6000:]}"

    def processes(self) -> dict[int, tuple[int, uuid.UUID, str]]:
        """Worker process number -> (pid, replica id, relay URL), as last announced."""
        out: dict[int, tuple[int, uuid.UUID, str]] = {}
        for line in self.stdout.splitlines():
            if m := LINE.match(line):
                out[int(m[1])] = (int(m[2]), uuid.UUID(m[3]), m[4])
        return out

    def child_id(self, index: int, generation: int = 0) -> uuid.UUID:
        return uuid.uuid5(self.replica_id, f"worker-process-{index}-{generation}")


def start(root: Path, database_url: str, port: int, *extra: str, **env: str) -> subprocess.Popen[bytes]:
    args = [
        sys.executable, "-m", "chatd.cli", "serve", "--workers", "2", "--database-url", database_url,
        "--data-dir", str(root / "data"), "--host", "127.0.0.1", "--port", str(port), *extra,
    ]  # fmt: skip
    full = {k: v for k, v in os.environ.items() if not k.startswith("CHATD_")}
    # Replica death judged after 20 s, not 4: on a loaded machine a heartbeat can lag seconds,
    # and a live process judged dead has its chats run again elsewhere (fenced, but asked twice).
    full.update(REPLICA_ENV, CHATD_REPLICA_STALE_AFTER="20")
    full.update(env)
    with (root / "stdout").open("ab") as out, (root / "stderr").open("ab") as err:
        return subprocess.Popen(args, stdout=out, stderr=err, env=full, start_new_session=True)


def wait_for_line(proc: subprocess.Popen[bytes], path: Path, needle: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while needle not in path.read_text(errors="replace"):
        if proc.poll() is not None:
            pytest.fail(f"chatd serve exited ({proc.returncode}) before printing {needle!r}\n{path.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {needle!r} within {timeout}s\n{path.read_text()}")
        time.sleep(0.2)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone as far as serving goes (its parent has not reaped it yet).
    with contextlib.suppress(FileNotFoundError):
        return " Z " not in Path(f"/proc/{pid}/stat").read_text().split(")", 1)[1][:4]
    return False


@pytest.fixture(scope="module")
def served(pg_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    name, url = asyncio.run(_create_pg_database(pg_admin_url))
    root = tmp_path_factory.mktemp("workers")
    port, replica_id = free_port(), uuid.uuid4()
    proc = start(root, url, port, CHATD_SECRET_KEY=Fernet.generate_key().decode(), CHATD_REPLICA_ID=str(replica_id))
    try:
        wait_for_line(proc, root / "stdout", "chatd is listening on", START_TIMEOUT)
        base = f"http://127.0.0.1:{port}"
        token = (root / "data" / "admin-token").read_text().strip()
        admin = {"Authorization": f"Bearer {token}"}
        provider = httpx.post(
            f"{base}/api/v1/providers", headers=admin, timeout=30,
            json={"provider": "openai-compatible", "api_key": "k", "base_url": "http://127.0.0.1:9/v1"},
        )  # fmt: skip
        assert provider.status_code == 201, provider.text
        model = httpx.post(
            f"{base}/api/v1/model-configs", headers=admin, timeout=30,
            json={"provider": "openai-compatible", "model": "m", "context_limit": 100_000, "compression_threshold": 0, "is_default": True},
        )  # fmt: skip
        assert model.status_code == 201, model.text
        print(f"chatd serve --workers 2 output in {root}")
        yield Served(proc, root, base, url, replica_id, admin, provider.json()["id"])
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=STOP_TIMEOUT)
        asyncio.run(_drop_pg_database(pg_admin_url, name))


def test_the_start_up_lines_are_printed_once_and_name_each_worker_process(served: Served) -> None:
    out = served.stdout.splitlines()
    processes = served.processes()
    assert sorted(processes) == [1, 2]
    assert {rid for _, rid, _ in processes.values()} == {served.child_id(1), served.child_id(2)}
    # Each process has a relay address of its own, not the shared port.
    relays = {relay for _, _, relay in processes.values()}
    assert len(relays) == 2 and f"http://127.0.0.1:{served.url.rsplit(':', 1)[1]}" not in relays
    assert [line for line in out if not LINE.match(line)] == [
        f"chatd is listening on {served.url} (database: postgresql, 2 worker processes)",
        f"First start: an admin was created; its token is in {served.root / 'data' / 'admin-token'}",
        f"Open {served.url}/#token={served.admin['Authorization'].removeprefix('Bearer ')}",
    ]
    # Both processes answer on the one port (the kernel hands connections to either).
    seen: set[str] = set()
    deadline = time.monotonic() + 60
    while len(seen) < 2 and time.monotonic() < deadline:
        with httpx.Client(timeout=10) as http:  # a new connection each time
            seen.add(http.get(f"{served.url}/healthz").json()["replica_id"])
    assert seen == {str(served.child_id(1)), str(served.child_id(2))}


async def test_chats_created_over_the_shared_port_each_run_exactly_once_on_both_processes(served: Served) -> None:
    n_users, per_user = 4, 15  # 60 chats: enough for both processes to run some, light enough for CI
    n = n_users * per_user
    conn = await asyncpg.connect(_dsn(served.database_url))
    runners: set[uuid.UUID] = set()
    try:
        async with fake_llm(served, token_delay=0.005) as llm, httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=40)) as http:
            llm.script(*(Reply(text="done " * 4, chunk_chars=5) for _ in range(n)))
            users = [await new_member(http, served, f"load{u}") for u in range(n_users)]
            gate = asyncio.Semaphore(20)

            async def create(i: int) -> str:
                async with gate:
                    return str((await users[i % n_users].call("POST", f"{served.url}/api/v1/chats", json={"content": f"job-{i:03d}"}, expect=201))["id"])

            async def sample() -> None:
                while True:
                    rows = await conn.fetch("SELECT DISTINCT worker_id FROM chats WHERE worker_id IS NOT NULL")
                    runners.update(r["worker_id"] for r in rows)
                    await asyncio.sleep(0.02)

            async def all_done() -> bool | None:
                listed = await asyncio.gather(*(u.call("GET", f"{served.url}/api/v1/chats") for u in users))
                return True if sum(1 for chats in listed for c in chats if c["status"] in TERMINAL) == n else None

            sampler = asyncio.create_task(sample())
            try:
                ids = await asyncio.gather(*(create(i) for i in range(n)))
                await eventually(all_done, 600, f"{n} chats to finish", interval=0.5)
            finally:
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler

            async def check(i: int, chat_id: str) -> tuple[str, list[tuple[str, str]]]:
                async with gate:
                    api = users[i % n_users]
                    chat = await api.call("GET", f"{served.url}/api/v1/chats/{chat_id}")
                    msgs = (await api.call("GET", f"{served.url}/api/v1/chats/{chat_id}/messages"))["messages"]
                return chat["status"], [(m["role"], text_of(m)) for m in msgs]

            results = await asyncio.gather(*(check(i, c) for i, c in enumerate(ids)))
            per_chat = Counter(request_tag(r.body) for r in llm.requests)
        ran_by = Counter(r["worker_id"] for r in await conn.fetch("SELECT worker_id FROM chats WHERE id = ANY($1::uuid[])", [uuid.UUID(i) for i in ids]))
    finally:
        await conn.close()
    assert Counter(status for status, _ in results) == {"waiting": n}, served.tails()
    for i, (_status, msgs) in enumerate(results):
        assert msgs == [("user", f"job-{i:03d}"), ("assistant", "done " * 4)], (ids[i], msgs)
    # Exactly once: the scripted model was asked once per chat, and every chat has one answer.
    assert per_chat == {f"job-{i:03d}": 1 for i in range(n)}
    # Both worker processes ran chats (and nothing else did).
    both = {served.child_id(1), served.child_id(2)}
    assert runners == both, (runners, ran_by)


async def test_a_stream_through_the_shared_port_sees_the_whole_answer_whichever_process_runs_the_chat(served: Served) -> None:
    answer = "The quick brown fox jumps over the lazy dog. " * 8
    async with fake_llm(served) as llm, httpx.AsyncClient(timeout=60) as http:
        api: Api = await new_member(http, served, "streamer")
        conn = await asyncpg.connect(_dsn(served.database_url))
        clients: list[httpx.AsyncClient] = []
        try:
            for round_ in range(3):
                llm.clear_script()
                llm.script(Reply(text="hello"), Reply(text=answer, chunk_chars=3))
                llm.token_delay = 0.0
                chat = await api.call("POST", f"{served.url}/api/v1/chats", json={"content": f"stream-{round_}"}, expect=201)
                await eventually(lambda chat_id=chat["id"]: _status_in(api, served, chat_id, {"waiting"}), 60, "the first turn")
                # One connection per subscriber, pinned (a pool of one): its /healthz says which
                # process accepted it, and the stream then goes over that same connection. Until
                # both processes hold a subscriber.
                subs: list[tuple[str, Subscriber, httpx.AsyncClient]] = []
                while {rid for rid, _, _ in subs} != {str(served.child_id(1)), str(served.child_id(2))} or len(subs) < 4:
                    if len(subs) >= 24:
                        pytest.fail(f"24 connections to the shared port all went to one process: {Counter(r for r, _, _ in subs)}")
                    client = httpx.AsyncClient(timeout=httpx.Timeout(60, read=None), limits=httpx.Limits(max_connections=1))
                    clients.append(client)
                    rid = (await client.get(f"{served.url}/healthz")).json()["replica_id"]
                    sub = Subscriber(served)
                    sub.task = asyncio.create_task(_stream(client, api, sub, chat["id"], ended_turn))
                    await sub.wait(lambda x: x.ready.is_set(), 30, "first event")
                    subs.append((rid, sub, client))
                llm.token_delay = 0.02  # ~120 parts over ~2.5 s
                await api.call("POST", f"{served.url}/api/v1/chats/{chat['id']}/messages", json={"content": "again"})

                async def owner(chat_id: str = chat["id"]) -> uuid.UUID | None:
                    row = await conn.fetchrow("SELECT status, worker_id FROM chats WHERE id = $1", uuid.UUID(chat_id))
                    return row["worker_id"] if row is not None and row["status"] == "running" else None

                runner = await eventually(owner, 60, "the second turn to run")
                for _, sub, _ in subs:
                    await sub.wait(ended_turn, 60, "the end of the turn")
                elsewhere = [s for rid, s, _ in subs if rid != str(runner)]
                assert elsewhere, "no subscriber on the process that does not run the chat"
                # Every subscriber, local or relayed from the other process: the whole answer once.
                assert [s.text() for _, s, _ in subs] == [answer] * len(subs), [(rid, len(s.text())) for rid, s, _ in subs]
                assert all(s.statuses()[-1] == "waiting" for _, s, _ in subs)
        finally:
            await conn.close()
            for c in clients:
                await c.aclose()


async def _status_in(api: Api, served: Served, chat_id: str, statuses: set[str]) -> bool | None:
    chat = await api.call("GET", f"{served.url}/api/v1/chats/{chat_id}")
    return True if chat["status"] in statuses else None


async def test_a_worker_process_that_dies_is_reported_and_replaced(served: Served) -> None:
    pid, rid, _ = served.processes()[1]
    assert rid == served.child_id(1)
    os.kill(pid, signal.SIGKILL)
    replacement = served.child_id(1, generation=1)

    async def replaced() -> bool | None:
        if served.proc.poll() is not None:
            pytest.fail(f"the supervisor exited ({served.proc.returncode}) after one worker process died\n{served.tails()}")
        async with httpx.AsyncClient(timeout=10) as http:
            with contextlib.suppress(httpx.HTTPError):
                return True if (await http.get(f"{served.url}/healthz")).json()["replica_id"] == str(replacement) else None
        return None

    await eventually(replaced, START_TIMEOUT, "the replacement worker process to serve")
    stderr = (served.root / "stderr").read_text(errors="replace")
    assert f"worker process 1 (pid {pid}, replica {rid}) exited (killed by SIGKILL)" in stderr
    assert not pid_alive(pid)
    # Still working: a chat runs to the end.
    async with fake_llm(served) as llm, httpx.AsyncClient(timeout=60) as http:
        llm.script(Reply(text="after the restart"))
        api = await new_member(http, served, "after")
        chat = await api.call("POST", f"{served.url}/api/v1/chats", json={"content": "after"}, expect=201)
        await eventually(lambda: _status_in(api, served, chat["id"], TERMINAL), 60, "the chat to finish")
        msgs = (await api.call("GET", f"{served.url}/api/v1/chats/{chat['id']}/messages"))["messages"]
        assert [(m["role"], text_of(m)) for m in msgs] == [("user", "after"), ("assistant", "after the restart")]


def test_sigterm_to_chatd_stops_every_worker_process_and_exits_0(served: Served) -> None:
    children = [pid for pid, _, _ in served.processes().values()]
    assert len(children) == 2 and all(pid_alive(p) for p in children), served.tails()
    served.proc.send_signal(signal.SIGTERM)  # the supervisor only, not its process group
    code = served.proc.wait(timeout=STOP_TIMEOUT)
    assert code == 0, served.tails()
    assert [p for p in children if pid_alive(p)] == []
    with pytest.raises(httpx.ConnectError):  # nothing listens on the port any more
        httpx.get(f"{served.url}/healthz", timeout=5)


def test_more_than_one_worker_process_on_sqlite_is_refused_at_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATD_")}
    done = subprocess.run(
        [sys.executable, "-m", "chatd.cli", "serve", "--workers", "2", "--data-dir", str(tmp_path / "data"), "--port", str(free_port())],
        capture_output=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stdout == b""
    assert b"error: --workers 2 needs PostgreSQL" in done.stderr
    assert not (tmp_path / "data" / "chatd.db").exists()


def test_a_worker_process_that_cannot_start_stops_chatd_with_exit_code_1(pg_admin_url: str, tmp_path: Path) -> None:
    name, url = asyncio.run(_create_pg_database(pg_admin_url))
    try:
        # The supervisor does not read CHATD_OTEL_ENDPOINT; each worker process refuses it.
        proc = start(tmp_path, url, free_port(), CHATD_SECRET_KEY=Fernet.generate_key().decode(), CHATD_OTEL_ENDPOINT="ftp://nowhere")
        try:
            code = proc.wait(timeout=START_TIMEOUT)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        stderr = (tmp_path / "stderr").read_text(errors="replace")
        assert code == 1, stderr
        assert "before it was ready; stopping the others" in stderr
        assert "chatd is listening" not in (tmp_path / "stdout").read_text()
    finally:
        asyncio.run(_drop_pg_database(pg_admin_url, name))
