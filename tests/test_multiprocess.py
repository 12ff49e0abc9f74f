"""Real `chatd serve` processes on one PostgreSQL, driven through the HTTP API only.

Three replicas share a fresh database; the scripted LLM server runs in the test process. The tests
read the database only to learn which replica runs a chat (the API does not say) and to see which
replicas ran chats. Intervals are short (heartbeat 0.5 s, replica stale after 4 s, chat stale after
30 s) so crashes are recovered within seconds. The last test runs its own PostgreSQL server so that
it can restart it without disturbing anything else on the machine.

Replica logs stay in the test's temporary directory (printed on failure); set
CHATD_TEST_REPLICA_LOG_LEVEL=info for more. Each `chatd serve` spends ~7 s of CPU importing the
provider SDKs, so the three replicas are started once for the module.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
from cryptography.fernet import Fernet

from tests.conftest import _create_pg_database, _drop_pg_database, _dsn
from tests.fakes.llm_server import FakeLLMServer, Reply, ToolCall

pytestmark = pytest.mark.slow

T = TypeVar("T")

# Short intervals so that the crash and recovery tests take seconds (SPEC numbers are 1/30/300 s).
REPLICA_ENV = {
    "CHATD_ACQUIRE_INTERVAL": "0.2",
    "CHATD_HEARTBEAT_INTERVAL": "0.5",
    # A replica's heartbeat can lag a second or two on a loaded 2-core machine (then its chats would
    # be recovered while it still runs them: fenced, but the scripted model is asked twice).
    "CHATD_STALE_AFTER": "30",
    "CHATD_REPLICA_STALE_AFTER": "4",
    "CHATD_GENERATE_TITLES": "false",
    "CHATD_LOG_LEVEL": os.environ.get("CHATD_TEST_REPLICA_LOG_LEVEL", "warning"),
    "PYTHONUNBUFFERED": "1",
}
START_TIMEOUT = 90.0  # importing the provider SDKs alone takes ~7 s of CPU per process
STOP_TIMEOUT = 15.0
TERMINAL = {"waiting", "error"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- replicas: `chatd serve` processes ----------------------------------------------------------


@dataclass
class Replica:
    name: str
    root: Path
    database_url: str
    secret_key: str
    env: dict[str, str] = field(default_factory=dict)
    extra_args: tuple[str, ...] = ()
    port: int = 0
    replica_id: uuid.UUID = field(default_factory=uuid.uuid4)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.root / self.name

    @property
    def log(self) -> Path:
        return self.root / f"{self.name}.log"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """A fresh process with a fresh replica id (as a restarted deployment would get)."""
        self.port, self.replica_id = free_port(), uuid.uuid4()
        args = [
            sys.executable, "-m", "chatd.cli", "serve", "--database-url", self.database_url,
            "--data-dir", str(self.data_dir), "--host", "127.0.0.1", "--port", str(self.port), *self.extra_args,
        ]  # fmt: skip
        # Only what this test sets: no CHATD_* from the developer's shell.
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHATD_")}
        env.update(REPLICA_ENV, CHATD_SECRET_KEY=self.secret_key, CHATD_REPLICA_ID=str(self.replica_id))
        env.update(self.env)
        with self.log.open("ab") as out:
            out.write(f"--- start {self.name} as {self.replica_id} on {self.url}\n".encode())
            out.flush()
            # Its own process group, so that a kill reaches anything it started.
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def kill(self) -> None:
        """kill -9: no shutdown, no release of its chats, no goodbye in the replicas table."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=STOP_TIMEOUT)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
        # Anything left in its group (there should be nothing).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def tail(self, n: int = 4000) -> str:
        return f"== {self.name} ({self.log}):\n" + (self.log.read_text(errors="replace")[-n:] if self.log.exists() else "")


def wait_healthy(replicas: list[Replica], timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    pending = list(replicas)
    while pending:
        for r in list(pending):
            if not r.alive:
                pytest.fail(f"replica {r.name} exited before it was healthy\n{r.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                h = httpx.get(f"{r.url}/healthz", timeout=2)
                if h.status_code == 200 and h.json()["replica_id"] == str(r.replica_id):
                    pending.remove(r)
        if time.monotonic() > deadline:
            pytest.fail("replicas not healthy in time\n" + "\n".join(r.tail() for r in pending))
        time.sleep(0.1)


@dataclass
class Cluster:
    replicas: list[Replica]
    database_url: str
    admin: dict[str, str]
    provider_id: str

    def ensure_running(self) -> None:
        """Restart replicas an earlier test killed."""
        dead = [r for r in self.replicas if not r.alive]
        for r in dead:
            r.start()
        wait_healthy(dead)

    def stop(self) -> None:
        for r in self.replicas:
            r.stop()

    def by_id(self, replica_id: uuid.UUID | None) -> Replica:
        return next(r for r in self.replicas if r.replica_id == replica_id)

    def tails(self) -> str:
        return "\n".join(r.tail() for r in self.replicas)


@contextlib.contextmanager
def running_replicas(root: Path, database_url: str, n: int, **env: str) -> Iterator[Cluster]:
    key = Fernet.generate_key().decode()
    replicas = [Replica(f"replica-{i}", root, database_url, key, env) for i in range(n)]
    try:
        # All at once, as an orchestrator starts them: they migrate under an advisory lock and
        # exactly one of them creates the first admin.
        for r in replicas:
            r.start()
        wait_healthy(replicas)
        tokens = [(r.data_dir / "admin-token").read_text().strip() for r in replicas if (r.data_dir / "admin-token").exists()]
        assert len(tokens) == 1, f"expected one first-start admin, got {len(tokens)}"
        admin = {"Authorization": f"Bearer {tokens[0]}"}
        base = replicas[0].url
        provider = httpx.post(
            f"{base}/api/v1/providers", headers=admin, timeout=10,
            json={"provider": "openai-compatible", "api_key": "k", "base_url": "http://127.0.0.1:9/v1"},
        )  # fmt: skip
        assert provider.status_code == 201, provider.text
        model = httpx.post(
            f"{base}/api/v1/model-configs", headers=admin, timeout=10,
            json={"provider": "openai-compatible", "model": "m", "context_limit": 100_000, "compression_threshold": 0, "is_default": True},
        )  # fmt: skip
        assert model.status_code == 201, model.text
        print(f"replica logs in {root}")
        yield Cluster(replicas, database_url, admin, provider.json()["id"])
    finally:
        for r in replicas:
            r.stop()


@pytest.fixture(scope="module")
def cluster(pg_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three replicas on one fresh database, shared by the tests of this module (a start costs
    seconds of imports per process); a test that kills one gets it restarted for the next."""
    name, url = asyncio.run(_create_pg_database(pg_admin_url))
    try:
        with running_replicas(tmp_path_factory.mktemp("replicas"), url, 3) as c:
            yield c
    finally:
        asyncio.run(_drop_pg_database(pg_admin_url, name))


@contextlib.asynccontextmanager
async def fake_llm(c: Cluster, token_delay: float = 0.0) -> AsyncIterator[FakeLLMServer]:
    """The scripted LLM server, with the deployment's provider pointed at it."""
    async with FakeLLMServer(token_delay=token_delay) as llm:
        async with httpx.AsyncClient(timeout=30) as http:
            r = await http.patch(f"{c.replicas[0].url}/api/v1/providers/{c.provider_id}", headers=c.admin, json={"base_url": llm.openai_base_url})
            assert r.status_code == 200, r.text
        yield llm


@pytest.fixture
async def llm(cluster: Cluster) -> AsyncIterator[FakeLLMServer]:
    cluster.ensure_running()
    async with fake_llm(cluster) as server:
        yield server


# --- the HTTP API -------------------------------------------------------------------------------


class Api:
    """One user's view of the deployment, through any replica."""

    def __init__(self, http: httpx.AsyncClient, token: str) -> None:
        self.http = http
        self.headers = {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, url: str, *, expect: int = 200, retry_unavailable: bool = False, **kw: Any) -> Any:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = await self.http.request(method, url, headers=self.headers, **kw)
            except httpx.TransportError:
                if not retry_unavailable or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
                continue
            if r.status_code == 503 and retry_unavailable and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                continue
            assert r.status_code == expect, f"{method} {url}: {r.status_code} {r.text}"
            return r.json() if r.content else None

    async def create_chat(self, replica: Replica, content: str, **kw: Any) -> dict[str, Any]:
        return await self.call("POST", f"{replica.url}/api/v1/chats", json={"content": content}, expect=201, **kw)  # type: ignore[no-any-return]

    async def chat(self, replica: Replica, chat_id: str, **kw: Any) -> dict[str, Any]:
        return await self.call("GET", f"{replica.url}/api/v1/chats/{chat_id}", **kw)  # type: ignore[no-any-return]

    async def messages(self, replica: Replica, chat_id: str, **kw: Any) -> list[dict[str, Any]]:
        return (await self.call("GET", f"{replica.url}/api/v1/chats/{chat_id}/messages", **kw))["messages"]  # type: ignore[no-any-return]

    async def wait_status(self, replica: Replica, chat_id: str, statuses: set[str], timeout: float = 30, **kw: Any) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            chat = await self.chat(replica, chat_id, **kw)
            return chat if chat["status"] in statuses else None

        return await eventually(check, timeout, f"chat {chat_id} to be {statuses}")


async def new_member(http: httpx.AsyncClient, c: Cluster, name: str) -> Api:
    base = c.replicas[0].url
    u = await http.post(f"{base}/api/v1/users", headers=c.admin, json={"username": name, "role": "member"})
    assert u.status_code == 201, u.text
    t = await http.post(f"{base}/api/v1/users/{u.json()['id']}/tokens", headers=c.admin, json={"name": "test"})
    assert t.status_code == 201, t.text
    return Api(http, t.json()["token"])


async def eventually(check: Callable[[], Awaitable[T | None]], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll another process's state until `check` returns something (these are real processes:
    there is no in-process event to wait on)."""
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got is not None:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


# --- SSE subscribers ----------------------------------------------------------------------------


@dataclass
class Subscriber:
    """`GET /api/v1/chats/{id}/stream` on one replica, recorded until the chat ends a turn."""

    replica: Replica
    events: list[dict[str, Any]] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def durable(self) -> list[tuple[str, object]]:
        """Everything but the transient parts, as (type, message id | status | queue)."""
        out: list[tuple[str, object]] = []
        for e in self.events:
            if e["type"] == "message":
                out.append(("message", e["message"]["id"]))
            elif e["type"] == "status":
                out.append(("status", e["status"]))
            elif e["type"] == "queue_update":
                out.append(("queue_update", tuple(q["id"] for q in e["queued_messages"])))
            elif e["type"] != "message_part":
                out.append((e["type"], json.dumps(e, sort_keys=True)))
        return out

    def text(self) -> str:
        return "".join(e["part"]["text"] for e in self.events if e["type"] == "message_part" and e["part"]["type"] == "text")

    def message_ids(self) -> list[int]:
        return [e["message"]["id"] for e in self.events if e["type"] == "message"]

    def statuses(self) -> list[str]:
        return [e["status"] for e in self.events if e["type"] == "status"]

    async def wait(self, pred: Callable[[Subscriber], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not pred(self):
            if self.task is not None and self.task.done():
                self.task.result()
                pytest.fail(f"the stream on {self.replica.name} ended before {what}: {self.events[-5:]}")
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"{self.replica.name}: no {what} within {timeout}s; last events {self.events[-5:]}")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)


def any_assistant(s: Subscriber) -> bool:
    return any(e["type"] == "message" and e["message"]["role"] == "assistant" for e in s.events)


def ended_turn(s: Subscriber) -> bool:
    """Saw `running` and then `waiting`/`error`."""
    st = s.statuses()
    return "running" in st and any(x in TERMINAL for x in st[st.index("running") :])


async def _stream(http: httpx.AsyncClient, api: Api, sub: Subscriber, chat_id: str, stop: Callable[[Subscriber], bool]) -> None:
    url = f"{sub.replica.url}/api/v1/chats/{chat_id}/stream"
    async with http.stream("GET", url, headers=api.headers, timeout=httpx.Timeout(10, read=None)) as resp:
        assert resp.status_code == 200, await resp.aread()
        data: list[str] = []
        async for line in resp.aiter_lines():
            if line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
            elif line == "" and data:
                sub.events.append(json.loads("\n".join(data)))
                data = []
                sub.ready.set()
                sub.changed.set()
                if stop(sub):
                    return


@contextlib.asynccontextmanager
async def subscribed(api: Api, replicas: list[Replica], chat_id: str, stop: Callable[[Subscriber], bool] = ended_turn) -> AsyncIterator[list[Subscriber]]:
    """One SSE subscriber per replica given, each past its snapshot's first event on exit."""
    subs = [Subscriber(r) for r in replicas]
    for s in subs:
        s.task = asyncio.create_task(_stream(api.http, api, s, chat_id, stop), name=f"sse-{s.replica.name}")
    try:
        for s in subs:
            await s.wait(lambda x: x.ready.is_set(), 20, "first event")
        yield subs
    finally:
        for s in subs:
            assert s.task is not None
            if not s.task.done():
                s.task.cancel()
        await asyncio.gather(*(s.task for s in subs if s.task is not None), return_exceptions=True)


# --- the database, read only to see which replica runs a chat -----------------------------------


async def running_on(c: Cluster, chat_id: str, timeout: float = 20) -> Replica:
    conn = await asyncpg.connect(_dsn(c.database_url))
    try:
        async def check() -> uuid.UUID | None:
            row = await conn.fetchrow("SELECT status, worker_id FROM chats WHERE id = $1", uuid.UUID(chat_id))
            return row["worker_id"] if row is not None and row["status"] == "running" else None

        return c.by_id(await eventually(check, timeout, f"chat {chat_id} to run"))
    finally:
        await conn.close()


def text_of(message: dict[str, Any]) -> str:
    return "".join(p["text"] for p in message["content"] if p["type"] == "text")


def request_tag(body: dict[str, Any]) -> str:
    """The first user message of a recorded LLM request (each test chat's is unique)."""
    for m in body["messages"]:
        if m["role"] == "user":
            content = m["content"]
            return content if isinstance(content, str) else "".join(p.get("text", "") for p in content)
    return ""


# --- the tests ----------------------------------------------------------------------------------


async def test_subscribers_on_every_replica_see_the_same_events_of_a_chat_running_elsewhere(cluster: Cluster, llm: FakeLLMServer) -> None:
    answer = "The quick brown fox jumps over the lazy dog. " * 10
    llm.script(Reply(text="hello"), Reply(text=answer, chunk_chars=3))
    async with httpx.AsyncClient(timeout=30) as http:
        api = await new_member(http, cluster, "ann")
        first, second, third = cluster.replicas
        chat = await api.create_chat(first, "job-a")
        await api.wait_status(first, chat["id"], {"waiting"})
        # The second turn streams ~150 parts over ~3 s: a relay that connects late gets the
        # owner's buffer of the step so far, but nothing of a step already persisted.
        llm.token_delay = 0.02

        # Two subscribers on each replica, all in place before the turn starts.
        async with subscribed(api, cluster.replicas * 2, chat["id"]) as subs:
            await api.call("POST", f"{second.url}/api/v1/chats/{chat['id']}/messages", json={"content": "again"})
            owner = await running_on(cluster, chat["id"])
            for s in subs:
                await s.wait(ended_turn, 30, "the end of the turn")

        elsewhere = [s for s in subs if s.replica is not owner]
        assert len(elsewhere) == 4
        assert [s.durable() for s in subs] == [subs[0].durable()] * len(subs)
        assert [s.text() for s in subs] == [answer] * len(subs), [(s.replica.name, s.replica is owner, len(s.text()), s.durable()) for s in subs]  # relayed: none lost, none twice
        msgs = await api.messages(third, chat["id"])
        assert [(m["role"], text_of(m)) for m in msgs] == [("user", "job-a"), ("assistant", "hello"), ("user", "again"), ("assistant", answer)]
        # Snapshot (the first turn), then the second turn's messages, each once, in order.
        assert subs[0].message_ids() == [m["id"] for m in msgs]
        assert subs[0].statuses()[0] == "waiting" and subs[0].statuses()[-1] == "waiting"
        assert "running" in subs[0].statuses()


async def test_interrupt_sent_to_a_replica_that_does_not_run_the_chat_stops_it(cluster: Cluster, llm: FakeLLMServer) -> None:
    full = "word " * 400
    llm.token_delay = 0.02  # 400 parts: ~8 s if nothing stops it
    llm.script(Reply(text=full, chunk_chars=5))
    async with httpx.AsyncClient(timeout=30) as http:
        api = await new_member(http, cluster, "bea")
        chat = await api.create_chat(cluster.replicas[0], "job-b")
        owner = await running_on(cluster, chat["id"])
        others = [r for r in cluster.replicas if r is not owner]

        def stopped(s: Subscriber) -> bool:
            # `waiting` comes from the interrupt itself; the owner then saves the partial answer.
            return "waiting" in s.statuses()[1:] and any_assistant(s)

        async with subscribed(api, others, chat["id"], stop=stopped) as subs:
            for s in subs:
                await s.wait(lambda x: len(x.text()) >= 50, 20, "some parts")
            t0 = time.monotonic()
            out = await api.call("POST", f"{others[0].url}/api/v1/chats/{chat['id']}/interrupt")
            assert out["status"] == "waiting"
            for s in subs:
                await s.wait(stopped, 10, "waiting and the partial answer")
            stopped_in = time.monotonic() - t0

        msgs = await api.messages(others[1], chat["id"])
        assert [m["role"] for m in msgs] == ["user", "assistant"]
        partial = text_of(msgs[1])
        assert 0 < len(partial) < len(full) and full.startswith(partial)
        assert (await api.chat(owner, chat["id"]))["status"] == "waiting"
        assert stopped_in < 5, stopped_in
        assert len(llm.requests) == 1 and llm.pending == 0


async def test_a_chat_on_a_killed_replica_is_resumed_elsewhere_without_loss_or_duplicates(cluster: Cluster, llm: FakeLLMServer) -> None:
    slow = "slow " * 300
    llm.token_delay = 0.02
    llm.script(
        # Step 1 (persisted before the crash): a read-only tool call and its result.
        Reply(tool_calls=[ToolCall("call_1", "list_agents", {})]),
        # Step 2 streams for ~6 s; its replica dies in the middle of it.
        Reply(text=slow, chunk_chars=5),
        # The resumed turn asks again from the last persisted step.
        Reply(text="resumed answer"),
    )
    async with httpx.AsyncClient(timeout=30) as http:
        api = await new_member(http, cluster, "cid")
        chat = await api.create_chat(cluster.replicas[0], "job-c")
        owner = await running_on(cluster, chat["id"])
        others = [r for r in cluster.replicas if r is not owner]

        def resumed(s: Subscriber) -> bool:
            return "resumed answer" in s.text() and s.statuses()[-1] in TERMINAL

        async with subscribed(api, others, chat["id"], stop=resumed) as subs:
            for s in subs:
                await s.wait(lambda x: "slow slow" in x.text(), 20, "the second step's parts")
            owner.kill()
            killed_at = time.monotonic()
            done = await api.wait_status(others[0], chat["id"], {"waiting", "error"}, timeout=30)
            resumed_in = time.monotonic() - killed_at
            for s in subs:
                await s.wait(resumed, 20, "the resumed answer")

        assert done["status"] == "waiting", done
        msgs = await api.messages(others[1], chat["id"])
        kinds = [(m["role"], [p["type"] for p in m["content"]]) for m in msgs]
        assert kinds == [("user", ["text"]), ("assistant", ["tool-call"]), ("tool", ["tool-result"]), ("assistant", ["text"])]
        assert text_of(msgs[-1]) == "resumed answer"
        # Every subscriber got each persisted message exactly once, in order (0 lost, 0 twice).
        ids = [m["id"] for m in msgs]
        for s in subs:
            assert s.message_ids() == ids, (s.replica.name, s.message_ids(), ids)
        # The resumed request carries the persisted step: the tool call is not redone.
        assert len(llm.requests) == 3 and llm.pending == 0
        roles = [m["role"] for m in llm.requests[2].body["messages"]]
        assert roles[-3:] == ["user", "assistant", "tool"], roles
        # Found dead by its replica heartbeat (4 s): the per-chat staleness (30 s) would take longer.
        assert resumed_in < 20, resumed_in


async def test_300_chats_over_3_replicas_each_run_exactly_once(cluster: Cluster, llm: FakeLLMServer) -> None:
    n_users, per_user = 10, 30
    n = n_users * per_user
    llm.script(*(Reply(text="done") for _ in range(n)))
    conn = await asyncpg.connect(_dsn(cluster.database_url))
    limits = httpx.Limits(max_connections=60)
    reps = cluster.replicas
    try:
        async with httpx.AsyncClient(timeout=30, limits=limits) as http:
            users = [await new_member(http, cluster, f"load{u}") for u in range(n_users)]
            gate = asyncio.Semaphore(30)
            # Which replicas ran chats, sampled while they run.
            runners: set[uuid.UUID] = set()

            async def create(i: int) -> str:
                async with gate:
                    chat = await users[i % n_users].create_chat(reps[i % len(reps)], f"job-{i:03d}")
                    return str(chat["id"])

            async def sample() -> None:
                while True:
                    rows = await conn.fetch("SELECT DISTINCT worker_id FROM chats WHERE worker_id IS NOT NULL")
                    runners.update(r["worker_id"] for r in rows)
                    await asyncio.sleep(0.02)

            async def all_done() -> bool | None:
                listed = await asyncio.gather(*(u.call("GET", f"{reps[k % len(reps)].url}/api/v1/chats") for k, u in enumerate(users)))
                statuses = Counter(c["status"] for chats in listed for c in chats)
                return True if sum(statuses[s] for s in TERMINAL) == n else None

            sampler = asyncio.create_task(sample())
            try:
                t0 = time.monotonic()
                ids = await asyncio.gather(*(create(i) for i in range(n)))
                created_in = time.monotonic() - t0
                await eventually(all_done, 90, f"{n} chats to finish", interval=0.2)
                print(f"{n} chats: created in {created_in:.1f}s, all finished after {time.monotonic() - t0:.1f}s")
            finally:
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler
            tag_of = {chat_id: f"job-{i:03d}" for i, chat_id in enumerate(ids)}

            async def check(i: int, chat_id: str) -> tuple[str, list[tuple[str, str]]]:
                async with gate:
                    api = users[i % n_users]
                    chat = await api.chat(reps[(i + 1) % len(reps)], chat_id)
                    msgs = await api.messages(reps[(i + 2) % len(reps)], chat_id)
                return chat["status"], [(m["role"], text_of(m)) for m in msgs]

            results = await asyncio.gather(*(check(i, c) for i, c in enumerate(ids)))
    except httpx.TransportError as exc:
        # Which replica dropped the connection, and whether it was still alive, is in its log.
        alive = {r.name: r.alive for r in reps}
        raise AssertionError(f"{exc!r} (replicas alive: {alive})\n{cluster.tails()}") from exc
    finally:
        await conn.close()

    assert Counter(status for status, _ in results) == {"waiting": n}
    for chat_id, (_status, msgs) in zip(ids, results, strict=True):
        assert msgs == [("user", tag_of[chat_id]), ("assistant", "done")], (chat_id, msgs)
    per_chat = Counter(request_tag(r.body) for r in llm.requests)
    assert per_chat == dict.fromkeys(tag_of.values(), 1)
    assert runners <= {r.replica_id for r in cluster.replicas}
    assert len(runners) >= 2, runners


# --- PostgreSQL restarted under the replicas ----------------------------------------------------


class PrivatePostgres:
    """A throwaway PostgreSQL server (the machine's binaries) on a free port, restartable without
    disturbing the server other tests use. Runs as `postgres` when the tests run as root."""

    def __init__(self) -> None:
        self.bin = Path(os.environ.get("CHATD_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
        self.root = Path(tempfile.mkdtemp(prefix="chatd-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user is not None:
            pw = pwd.getpwnam(self.user)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        subprocess.run(
            [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
            check=True, capture_output=True, user=self.user,
        )  # fmt: skip

    def start(self) -> None:
        log = (self.root / "postgres.log").open("ab")
        self.proc = subprocess.Popen(
            [
                str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port), "-h", "127.0.0.1",
                "-c", "unix_socket_directories=", "-c", "fsync=off", "-c", "max_connections=200",
            ],
            stdout=log, stderr=subprocess.STDOUT, user=self.user, start_new_session=True,
        )  # fmt: skip
        log.close()

    async def ready(self, timeout: float = 30) -> None:
        async def check() -> bool | None:
            if self.proc is None or self.proc.poll() is not None:
                pytest.fail("private PostgreSQL exited:\n" + (self.root / "postgres.log").read_text(errors="replace")[-3000:])
            try:
                conn = await asyncpg.connect(self.url(), timeout=2)
            except (OSError, asyncpg.PostgresError):
                return None
            await conn.close()
            return True

        await eventually(check, timeout, "PostgreSQL to accept connections")

    def stop(self, sig: int = signal.SIGINT) -> None:
        """SIGINT is PostgreSQL's fast shutdown: every client connection is cut."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def cleanup(self) -> None:
        self.stop()
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres()
    if not (pg.bin / "postgres").exists():
        pytest.fail(f"no PostgreSQL binaries in {pg.bin} (set CHATD_TEST_PG_BIN)")
    try:
        pg.init()
        pg.start()
        yield pg
    finally:
        pg.cleanup()


async def test_replicas_reconnect_and_finish_after_postgres_restarts(private_pg: PrivatePostgres, tmp_path: Path) -> None:
    await private_pg.ready()
    conn = await asyncpg.connect(private_pg.url())
    try:
        await conn.execute("CREATE DATABASE chatd")
    finally:
        await conn.close()
    n = 20
    body = "x" * 200
    # Chats must come back through the fast paths (a turn that could not settle is given back
    # when the database answers again; dead replicas are judged only after a full heartbeat
    # period), not through the per-chat staleness, set far out of reach here.
    with running_replicas(tmp_path, private_pg.url("chatd"), 2, CHATD_STALE_AFTER="120") as c:
        async with fake_llm(c, token_delay=0.05) as llm, httpx.AsyncClient(timeout=30) as http:
            # 20 parts of 0.05 s: each turn streams for ~1 s. Spare replies for turns that rerun.
            llm.script(*(Reply(text=body, chunk_chars=10) for _ in range(3 * n)))
            api = await new_member(http, c, "dee")
            a, b = c.replicas
            ids = [(await api.create_chat(c.replicas[i % 2], f"job-{i:03d}"))["id"] for i in range(n)]

            async def started() -> bool | None:
                return True if len(llm.requests) >= 4 else None

            await eventually(started, 20, "turns to start")

            await asyncio.to_thread(private_pg.stop)  # mid-run: turns are streaming, others are pending
            await asyncio.sleep(1.0)  # down for a while: pools, LISTEN and heartbeats all fail
            private_pg.start()
            await private_pg.ready()

            for chat_id in ids:
                done = await api.wait_status(a, chat_id, TERMINAL, timeout=30, retry_unavailable=True)
                assert done["status"] == "waiting", done
                msgs = await api.messages(b, chat_id, retry_unavailable=True)
                assert [(m["role"], text_of(m)) for m in msgs][1:] == [("assistant", body)], (chat_id, msgs)

            # A second restart in the middle of a turn streamed to subscribers on both replicas
            # (one local, one through the relay): both follow it to the end, across the pubsub
            # reconnect, and see exactly the answer that was saved.
            llm.clear_script()
            long = "streaming through a restart " * 8
            llm.script(Reply(text="warm"), Reply(text=long, chunk_chars=3))  # ~75 parts, ~3.7 s
            chat = await api.create_chat(a, "job-last")
            await api.wait_status(a, chat["id"], TERMINAL)
            async with subscribed(api, [a, b], chat["id"]) as subs:
                await api.call("POST", f"{b.url}/api/v1/chats/{chat['id']}/messages", json={"content": "again"})
                for s in subs:
                    await s.wait(lambda x: len(x.text()) >= 30, 20, "some parts")
                await asyncio.to_thread(private_pg.stop)
                await asyncio.sleep(1.0)
                private_pg.start()
                await private_pg.ready()
                for s in subs:
                    await s.wait(ended_turn, 30, "the end of the turn")
            last = (await api.messages(a, chat["id"], retry_unavailable=True))[-1]
            assert (last["role"], text_of(last)) == ("assistant", long)
            assert [s.text() for s in subs] == [long] * 2
            assert [s.statuses()[-1] for s in subs] == ["waiting"] * 2
            for r in c.replicas:
                h = (await http.get(f"{r.url}/healthz")).json()
                assert h["database"] == "ok", h
