"""Load test of a running deployment, over its public HTTP API only (docs/performance.md: "Load test of a deployment").

    uv run --frozen python -m bench.llm --port 9100 --mcp-port 9101 &      # a scripted model
    uv run --frozen python -m bench.load --url http://127.0.0.1:8080 --token-file DATA/admin-token \\
        --setup-model http://127.0.0.1:9100/v1 --mcp-url http://127.0.0.1:9101/mcp \\
        --chats 100 --rate 10 --metrics http://127.0.0.1:8080,http://127.0.0.1:8081

What a user does, N times at a fixed rate: create a chat (`POST /api/v1/chats`), follow its stream
(`GET /api/v1/chats/{id}/stream`) until the chat is idle again. Measured from the moment the create
request is sent, per chat:

- `create`: until the 201 arrives;
- `running`: until the chat is reported `running` (a worker of some replica took it);
- `first token`: until the first assistant text part arrives on the chat's stream;
- `done`: until the chat is idle again (`waiting` with an empty queue) or in `error`.

Status changes are read from the member's `/chats/watch`, opened before the first create, so
they arrive in order however late a chat's own stream connects; each chat's stream (read to the
end, or with `--follow first-token` only to its first token) gives the first token.

Errors are counted by kind (an HTTP status of the create, a stream that broke or ended early, a
chat that ended in `error`, a chat not done within --timeout); a chat with an error has no
figures. Percentiles are over the chats that got that far.

The token (an admin's: `--token`, `CHATD_TOKEN` or `--token-file`) sets the deployment up and
scrapes `/metrics`; the chats are made by a member user created for the run (`bench-<run>`), as
real users would. `--setup-model URL` creates (or reuses) an `openai-compatible` provider at URL
and a default model config `bench-model` with a price (so cost is counted); without it the
deployment's default model answers. The chat's message holds the scripted model's directives
(bench/llm.py): `TOKENS n`; with --mcp-url a share of the chats also calls the MCP server's `add`
tool (`TOOL bench__add {...}`), a share starts with a refused model call (`FLAKY`: a retry), a
share has a second message queued behind the first (queue depth), a share lists an MCP
server that does not answer (connect failures); with --workspace-share a share creates a
workspace from an empty template (an agent process each), and with --slow N the first N chats
stream a long answer to a second subscriber that never reads (dropped parts and resyncs).

`--metrics` lists the replicas whose /metrics are scraped every `--scrape-every` seconds during
the run; the report says, for each series the operations issue names, whether it moved on any
replica (a gauge changed, a counter or histogram grew).

`--stream-urls` spreads the streams over several base URLs (round robin): with two replicas, half
the streams then follow chats that run on the other replica (the part relay).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

# The series of the operations issue (item 1), by name in docs/metrics.md.
WATCHED = (
    "chatd_chats",
    "chatd_turns_running",
    "chatd_queue_depth",
    "chatd_acquire_seconds",
    "chatd_time_to_first_token_seconds",
    "chatd_step_duration_seconds",
    "chatd_tokens_total",
    "chatd_cost_micros_total",
    "chatd_provider_errors_total",
    "chatd_provider_retries_total",
    "chatd_stream_subscribers",
    "chatd_stream_dropped_parts_total",
    "chatd_stream_resyncs_total",
    "chatd_relay_connections",
    "chatd_mcp_sessions_open",
    "chatd_mcp_connect_failures_total",
    "chatd_mcp_call_seconds",
    "chatd_workspace_agents_running",
    "chatd_db_pool_in_use",
    "chatd_db_pool_wait_seconds",
)


@dataclass
class ChatRun:
    index: int
    tool: bool = False
    flaky: bool = False
    queued: bool = False
    down: bool = False
    workspace: bool = False
    slow: bool = False
    chat_id: str | None = None
    create_s: float | None = None
    running_s: float | None = None
    first_token_s: float | None = None
    done_s: float | None = None
    error: str | None = None


@dataclass
class Scrapes:
    """Each replica's samples over the run: {url: [{(name, labels): value}, ...]}."""

    by_url: dict[str, list[dict[tuple[str, tuple[tuple[str, str], ...]], float]]] = field(default_factory=dict)
    failures: Counter[str] = field(default_factory=Counter)


# --- setup -------------------------------------------------------------------------------------


@dataclass
class Setup:
    member_token: str
    tool_servers: list[str]
    down_servers: list[str]
    template_id: str | None


async def setup(admin: httpx.AsyncClient, args: argparse.Namespace, run: str) -> Setup:
    """A member and its token; the bench model (if asked); the MCP servers and the workspace
    template (if asked)."""
    if args.setup_model:
        providers = (await _ok(admin.get("/api/v1/providers", params={"limit": 200}))).json()
        if not any(p["provider"] == "openai-compatible" for p in providers):
            await _ok(admin.post("/api/v1/providers", json={"provider": "openai-compatible", "base_url": args.setup_model, "api_key": "bench"}))
        else:
            pid = next(p["id"] for p in providers if p["provider"] == "openai-compatible")
            await _ok(admin.patch(f"/api/v1/providers/{pid}", json={"base_url": args.setup_model, "enabled": True}))
        configs = (await _ok(admin.get("/api/v1/model-configs", params={"limit": 200}))).json()
        mine = [c for c in configs if c["model"] == "bench-model" and c["provider"] == "openai-compatible"]
        if mine:
            await _ok(admin.patch(f"/api/v1/model-configs/{mine[0]['id']}", json={"is_default": True, "enabled": True}))
        else:
            await _ok(admin.post("/api/v1/model-configs", json={
                "provider": "openai-compatible", "model": "bench-model", "display_name": "Bench model", "context_limit": 100_000,
                "is_default": True, "pricing": {"input": 1_000_000, "output": 4_000_000},
            }))
    tool_servers: list[str] = []
    down_servers: list[str] = []
    if args.mcp_url:
        tool_servers.append(await _mcp_server(admin, "bench", args.mcp_url))
        if args.down_share > 0:
            # Nothing listens on port 9 (discard) of loopback: the connect fails at once.
            down_servers.append(await _mcp_server(admin, "bench-down", "http://127.0.0.1:9/mcp"))
    template_id: str | None = None
    if args.workspace_share > 0:
        templates = (await _ok(admin.get("/api/v1/templates", params={"limit": 200}))).json()
        found = [t for t in templates if t["name"] == "bench-empty"]
        template_id = str(found[0]["id"]) if found else str(
            (await _ok(admin.post("/api/v1/templates", json={"name": "bench-empty", "description": "An empty directory (load test)."}))).json()["id"]
        )
    user = (await _ok(admin.post("/api/v1/users", json={"username": f"bench-{run}", "role": "member"}))).json()
    token = (await _ok(admin.post(f"/api/v1/users/{user['id']}/tokens", json={"name": "load test"}))).json()["token"]
    return Setup(token, tool_servers, down_servers, template_id)


async def _mcp_server(admin: httpx.AsyncClient, slug: str, url: str) -> str:
    servers = (await _ok(admin.get("/api/v1/mcp-servers", params={"limit": 200}))).json()
    for s in servers:
        if s["slug"] == slug:
            await _ok(admin.patch(f"/api/v1/mcp-servers/{s['id']}", json={"url": url, "enabled": True}))
            return str(s["id"])
    created = (await _ok(admin.post("/api/v1/mcp-servers", json={"slug": slug, "display_name": slug, "url": url, "enabled": True}))).json()
    return str(created["id"])


async def _ok(request: Any) -> httpx.Response:
    r: httpx.Response = await request
    if r.status_code >= 400:
        raise SystemExit(f"setup failed: {r.request.method} {r.request.url.path}: {r.status_code} {r.text[:300]}")
    return r


# --- one chat ----------------------------------------------------------------------------------


class Watch:
    """The member's `/chats/watch`, opened before the first chat is created: every status change of
    every chat arrives in order there, whenever each chat's own stream connects. A chat is done at
    the first `waiting` (or `error`) with an empty queue after it was `running`."""

    def __init__(self) -> None:
        self.changes: dict[str, list[tuple[float, str, int]]] = {}
        self.changed: dict[str, asyncio.Event] = {}
        self.connected = asyncio.Event()

    def event(self, chat_id: str) -> asyncio.Event:
        return self.changed.setdefault(chat_id, asyncio.Event())

    async def run(self, api: httpx.AsyncClient) -> None:
        async with api.stream("GET", "/api/v1/chats/watch", headers={"Accept": "text/event-stream"}) as r:
            if r.status_code != 200:
                raise SystemExit(f"/chats/watch: HTTP {r.status_code}")
            self.connected.set()
            async for event in sse_events(r.aiter_lines()):
                chat = event.get("chat") or {}
                if "id" not in chat or "status" not in chat:
                    continue
                self.changes.setdefault(chat["id"], []).append((time.monotonic(), chat["status"], int(chat.get("queued_count") or 0)))
                self.event(chat["id"]).set()

    async def until_done(self, c: ChatRun, started: float, since: float) -> None:
        """Done at the first idle state with an empty queue reported after `since` (the create's,
        or the queued message's answer). The watch may leave out a state it never got to send
        (it re-reads changed chats after falling behind): a turn may then have no `running`."""
        assert c.chat_id is not None
        seen = 0
        while True:
            changes = self.changes.get(c.chat_id, [])
            for at, status, queued in changes[seen:]:
                if status == "running" and c.running_s is None:
                    c.running_s = at - started
                elif status in ("waiting", "error") and queued == 0 and at >= since:
                    if status == "error":
                        c.error = "chat error"
                    else:
                        c.done_s = at - started
                    return
            seen = len(changes)
            flag = self.event(c.chat_id)
            flag.clear()
            if len(self.changes.get(c.chat_id, [])) == seen:
                await flag.wait()


async def one_chat(c: ChatRun, api: httpx.AsyncClient, stream_base: str, args: argparse.Namespace, run: str, env: Setup, watch: Watch) -> None:
    lines = [f"bench {run} chat {c.index}", f"TOKENS {args.slow_tokens if c.slow else args.tokens}"]
    if c.slow:
        # Each token padded: megabytes that fill the stalled client's socket buffers (the
        # replica's send buffer grows to 4 MB on Linux), then its queue.
        lines.append(f"PAD {args.slow_pad}")
    servers: list[str] = []
    if c.workspace and env.template_id:
        lines.append("TOOL create_workspace " + json.dumps({"template_id": env.template_id}))
    elif c.tool and env.tool_servers:
        lines.append("TOOL bench__add " + json.dumps({"a": c.index, "b": 1}))
        servers += env.tool_servers
    if c.down and env.down_servers:
        servers += env.down_servers
    if c.flaky:
        lines.append("FLAKY")
    body: dict[str, Any] = {"content": "\n".join(lines)}
    if servers:
        body["mcp_server_ids"] = servers
    started = time.monotonic()
    try:
        r = await api.post("/api/v1/chats", json=body)
    except httpx.HTTPError as exc:
        c.error = f"create: {type(exc).__name__}"
        return
    if r.status_code != 201:
        c.error = f"create: HTTP {r.status_code}"
        return
    c.create_s = time.monotonic() - started
    c.chat_id = r.json()["id"]
    since = started
    if c.queued:
        # Sent at once, so it usually waits in the queue while the first turn runs: the chat is
        # done when it is idle with an empty queue, after both answers. (If the first turn was
        # over already, the message started a new one: only later states count.)
        q = await api.post(f"/api/v1/chats/{c.chat_id}/messages", json={"content": f"TOKENS {max(args.tokens // 4, 1)}", "busy_behavior": "queue"})
        if q.status_code != 200:
            c.error = f"queue: HTTP {q.status_code}"
            return
        since = time.monotonic()
    stream = asyncio.create_task(follow(c, api, stream_base, started, full=args.follow == "full"))
    release = asyncio.Event()
    stalled = asyncio.create_task(stalled_subscriber(stream_base, c.chat_id, api.headers["Authorization"], release)) if c.slow else None
    try:
        async with asyncio.timeout(args.timeout):
            await watch.until_done(c, started, since)
            if stalled is not None:
                release.set()
                await asyncio.wait_for(asyncio.shield(stalled), 60)
    except TimeoutError:
        c.error = "timeout"
    finally:
        for task in (stream, stalled):
            if task is None:
                continue
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            except (httpx.HTTPError, OSError) as exc:
                c.error = c.error or f"stream: {type(exc).__name__}"


async def stalled_subscriber(base: str, chat_id: str, authorization: str, release: asyncio.Event) -> None:
    """A client that stops reading (a stalled browser tab, a proxy that buffers): a tiny receive
    buffer and no reads, so the replica's send buffer, then the subscriber's queue fill up and
    parts are dropped for it (chatd_stream_dropped_parts_total). Once the chat is done it reads
    again, until the final `waiting`: the subscriber is re-read from the database first
    (chatd_stream_resyncs_total)."""
    url = httpx.URL(base)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (url.host, url.port or 80))
        request = (
            f"GET /api/v1/chats/{chat_id}/stream HTTP/1.1\r\nHost: {url.host}\r\nAuthorization: {authorization}\r\n"
            "Accept: text/event-stream\r\n\r\n"
        )
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(sock, request.encode())
        await release.wait()
        tail = b""
        while True:
            data = await loop.sock_recv(sock, 1 << 16)
            tail = (tail + data)[-4096:]
            if not data or b'"status": "waiting"' in tail or b'"status":"waiting"' in tail:
                return
    finally:
        sock.close()


async def follow(c: ChatRun, api: httpx.AsyncClient, base: str, started: float, *, full: bool) -> None:
    """The chat's own stream, as a user's page reads it: the first token's time. With `full`, it is
    read until the chat is done (the watch says when), else closed after the first token."""
    url = f"{base}/api/v1/chats/{c.chat_id}/stream"
    async with api.stream("GET", url, headers={"Accept": "text/event-stream"}) as r:
        if r.status_code != 200:
            c.error = f"stream: HTTP {r.status_code}"
            return
        async for event in sse_events(r.aiter_lines()):
            kind = event.get("type")
            if c.first_token_s is None and kind == "message_part":
                part = event.get("part") or {}
                if event.get("role") == "assistant" and part.get("type") == "text" and part.get("text"):
                    c.first_token_s = time.monotonic() - started
            elif c.first_token_s is None and kind == "message":
                # A subscriber that connects after the answer was saved gets the message, not its parts.
                message = event.get("message") or {}
                if message.get("role") == "assistant" and any(p.get("type") == "text" for p in message.get("content") or []):
                    c.first_token_s = time.monotonic() - started
            if c.first_token_s is not None and not full:
                return


async def sse_events(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    data: list[str] = []
    async for line in lines:
        if line == "":
            if data:
                with contextlib.suppress(ValueError):
                    yield json.loads("\n".join(data))
                data = []
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


# --- metrics -----------------------------------------------------------------------------------


async def scrape_loop(client: httpx.AsyncClient, urls: list[str], every: float, stop: asyncio.Event, out: Scrapes) -> None:
    while True:
        await asyncio.gather(*(scrape(client, u, out) for u in urls))
        if stop.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


async def scrape(client: httpx.AsyncClient, url: str, out: Scrapes) -> None:
    try:
        r = await client.get(f"{url}/metrics", timeout=10)
    except httpx.HTTPError as exc:
        out.failures[f"{url}: {type(exc).__name__}"] += 1
        return
    if r.status_code != 200:
        out.failures[f"{url}: HTTP {r.status_code}"] += 1
        return
    sample: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(r.text):
        if not family.name.startswith("chatd_"):
            continue
        for s in family.samples:
            if s.name.endswith(("_bucket", "_created", "_sum")):
                continue  # a histogram's _count says it moved; _created is a timestamp
            sample[(s.name, tuple(sorted(s.labels.items())))] = s.value
    out.by_url.setdefault(url, []).append(sample)


def moved(scrapes: Scrapes) -> dict[str, dict[str, Any]]:
    """Per watched series: did it move on any replica, and its largest value seen."""
    report: dict[str, dict[str, Any]] = {}
    for name in WATCHED:
        keys = (name, f"{name}_total", f"{name}_count")
        moved_on: list[str] = []
        peak = 0.0
        for url, samples in scrapes.by_url.items():
            series = {k for s in samples for k in s if k[0] in keys}
            for key in series:
                values = [s.get(key, 0.0) for s in samples]
                peak = max(peak, *values)
                if len(set(values)) > 1 and url not in moved_on:
                    moved_on.append(url)
        report[name] = {"moved": bool(moved_on), "replicas": moved_on, "peak": peak}
    return report


# --- report ------------------------------------------------------------------------------------


def percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]

    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": ordered[-1], "mean": statistics.fmean(ordered)}


def summary(chats: list[ChatRun], wall: float, scrapes: Scrapes, args: argparse.Namespace) -> dict[str, Any]:
    ok = [c for c in chats if c.error is None]
    return {
        "chats": len(chats),
        "rate_per_s": args.rate,
        "tokens_per_answer": args.tokens,
        "wall_s": wall,
        "completed": len(ok),
        "running_not_reported": sum(1 for c in ok if c.running_s is None),
        "errors": dict(Counter(c.error for c in chats if c.error is not None)),
        "create_s": percentiles([c.create_s for c in chats if c.create_s is not None]),
        "running_s": percentiles([c.running_s for c in ok if c.running_s is not None]),
        "first_token_s": percentiles([c.first_token_s for c in ok if c.first_token_s is not None]),
        "done_s": percentiles([c.done_s for c in ok if c.done_s is not None]),
        "metrics": moved(scrapes),
        "scrape_failures": dict(scrapes.failures),
        "mix": {
            "tool": sum(c.tool and not c.workspace for c in chats), "flaky": sum(c.flaky for c in chats), "queued": sum(c.queued for c in chats),
            "mcp_down": sum(c.down for c in chats), "workspace": sum(c.workspace for c in chats), "stalled_subscriber": sum(c.slow for c in chats),
        },
    }


def print_report(s: dict[str, Any]) -> None:
    print(f"\n{s['chats']} chats at {s['rate_per_s']}/s, {s['tokens_per_answer']} tokens per answer, "
          f"{s['wall_s']:.1f} s; completed {s['completed']}, errors {sum(s['errors'].values())} {s['errors'] or ''}")
    print(f"mix: {s['mix']}; chats whose `running` the watch did not report: {s['running_not_reported']}")
    print(f"{'seconds':<14}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}{'mean':>8}")
    for key, label in (("create_s", "create"), ("running_s", "running"), ("first_token_s", "first token"), ("done_s", "done")):
        p = s[key]
        if p is None:
            print(f"{label:<14}{'-':>8}")
        else:
            print(f"{label:<14}" + "".join(f"{p[q]:>8.3f}" for q in ("p50", "p90", "p99", "max", "mean")))
    print("\nmetrics (moved = a gauge changed or a counter/histogram grew during the run):")
    for name, m in s["metrics"].items():
        where = f" on {len(m['replicas'])} replica(s)" if m["moved"] else ""
        print(f"  {'moved ' if m['moved'] else 'STILL '} {name}{where} (peak {m['peak']:g})")
    if s["scrape_failures"]:
        print(f"scrape failures: {s['scrape_failures']}")


# --- main --------------------------------------------------------------------------------------


async def main(args: argparse.Namespace, token: str) -> dict[str, Any]:
    if not token:
        raise SystemExit("an admin token is needed: --token, CHATD_TOKEN or --token-file")
    run = uuid.uuid4().hex[:8]
    rng = random.Random(args.seed)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=args.chats + 20)
    timeout = httpx.Timeout(30.0, read=None)
    stream_urls = [u.rstrip("/") for u in (args.stream_urls or args.url).split(",")]
    metric_urls = [u.rstrip("/") for u in (args.metrics or args.url).split(",")] if args.metrics != "" else []
    async with httpx.AsyncClient(base_url=args.url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout, limits=limits) as admin:
        env = await setup(admin, args, run)
        chats = [
            ChatRun(
                i, tool=rng.random() < args.tool_share, flaky=rng.random() < args.flaky_share,
                queued=rng.random() < args.queue_share, down=rng.random() < args.down_share,
                workspace=rng.random() < args.workspace_share, slow=i < args.slow,
            )
            for i in range(args.chats)
        ]
        scrapes = Scrapes()
        stop = asyncio.Event()
        scraper = asyncio.create_task(scrape_loop(admin, metric_urls, args.scrape_every, stop, scrapes)) if metric_urls else None
        async with httpx.AsyncClient(base_url=args.url, headers={"Authorization": f"Bearer {env.member_token}"}, timeout=timeout, limits=limits) as api:
            watch = Watch()
            watcher = asyncio.create_task(watch.run(api))
            await asyncio.wait_for(watch.connected.wait(), 30)
            t0 = time.monotonic()

            async def paced(c: ChatRun) -> None:
                await asyncio.sleep(max(0.0, t0 + c.index / args.rate - time.monotonic()))
                await one_chat(c, api, stream_urls[c.index % len(stream_urls)], args, run, env, watch)

            async with asyncio.TaskGroup() as tg:
                for c in chats:
                    tg.create_task(paced(c))
            wall = time.monotonic() - t0
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        stop.set()
        if scraper is not None:
            await scraper
    result = summary(chats, wall, scrapes, args)
    result["per_chat"] = [c.__dict__ for c in chats] if args.per_chat else None
    return result


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=os.environ.get("CHATD_URL", "http://127.0.0.1:8080"), help="the deployment's base URL (API requests)")
    p.add_argument("--token", default=None, help="an admin's token (else CHATD_TOKEN or --token-file)")
    p.add_argument("--token-file", default=None, help="a file holding an admin's token, e.g. <data dir>/admin-token")
    p.add_argument("--chats", type=int, default=50)
    p.add_argument("--rate", type=float, default=5.0, help="chats created per second")
    p.add_argument("--tokens", type=int, default=40, help="tokens per answer (TOKENS n)")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds a chat may take from create to done")
    p.add_argument("--setup-model", default=None, metavar="URL", help="make the scripted model at URL (bench/llm.py, .../v1) the default model")
    p.add_argument("--mcp-url", default=None, help="an MCP server with an `add` tool (bench/llm.py --mcp-port): tool-calling chats")
    p.add_argument("--tool-share", type=float, default=0.3)
    p.add_argument("--flaky-share", type=float, default=0.05)
    p.add_argument("--queue-share", type=float, default=0.1)
    p.add_argument("--down-share", type=float, default=0.05, help="chats that also list an MCP server that does not answer (needs --mcp-url)")
    p.add_argument("--follow", choices=("full", "first-token"), default="full", help="read each chat's stream to the end (default), or only to its first token")
    p.add_argument("--workspace-share", type=float, default=0.0, help="chats that create a workspace (an agent process) from an empty template")
    p.add_argument("--slow", type=int, default=0, help="the first N chats get a long answer and a second subscriber that never reads")
    p.add_argument("--slow-tokens", type=int, default=1200, help="tokens of the answers of --slow chats")
    p.add_argument("--slow-pad", type=int, default=4000, help="characters added to each token of a --slow chat's answer (default: ~5 MB in all)")
    p.add_argument("--stream-urls", default=None, help="comma-separated base URLs the streams are spread over (default: --url)")
    p.add_argument("--metrics", default=None, help="comma-separated replica base URLs to scrape /metrics from (default: --url; '' for none)")
    p.add_argument("--scrape-every", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--json", default=None, metavar="FILE", help="also write the report as JSON")
    p.add_argument("--per-chat", action="store_true", help="include every chat's figures in the JSON")
    return p.parse_args(argv)


if __name__ == "__main__":
    args = parse()
    admin_token = args.token or os.environ.get("CHATD_TOKEN") or (Path(args.token_file).read_text().strip() if args.token_file else "")
    report = asyncio.run(main(args, admin_token))
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    sys.exit(1 if report["completed"] < report["chats"] else 0)
