"""Lists page with cursors; tokens are listed and revoked; /metrics needs a token; a disabled MCP
server is as unknown as a missing one (issue 9, item 8). Real HTTP, both databases."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from chatd.api.paging import encode_cursor
from chatd.api.streaming import guarded, while_authorized
from chatd.bootstrap import App, build
from chatd.domain.clock import ManualClock
from chatd.settings import Settings
from tests.conftest import People, serve_http


async def all_pages(client: httpx.AsyncClient, path: str, headers: dict[str, str], limit: int) -> list[list[dict[str, Any]]]:
    """Follow X-Next-Cursor from the first page to the last."""
    pages: list[list[dict[str, Any]]] = []
    params: dict[str, Any] = {"limit": limit}
    for _ in range(50):
        r = await client.get(path, headers=headers, params=params)
        assert r.status_code == 200, r.text
        pages.append(r.json())
        cursor = r.headers.get("x-next-cursor")
        if cursor is None:
            assert "link" not in r.headers
            return pages
        assert r.headers["link"].endswith('; rel="next"') and f"before={cursor}" in r.headers["link"]
        params = {"limit": limit, "before": cursor}
    raise AssertionError("paging never ended")


async def test_chats_page_newest_first_with_a_cursor_until_the_last_page(client: httpx.AsyncClient, people: People, clock: ManualClock) -> None:
    h = people.alice.headers
    made = []
    for i in range(5):
        made.append((await client.post("/api/v1/chats", headers=h, json={"content": f"chat {i}"})).json()["id"])
        if i != 2:  # two chats changed at the same instant: the id orders them
            clock.advance(1)
    everything = (await client.get("/api/v1/chats", headers=h)).json()
    assert sorted(c["id"] for c in everything) == sorted(made)
    pages = await all_pages(client, "/api/v1/chats", h, 2)
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [c["id"] for p in pages for c in p] == [c["id"] for c in everything]
    assert {everything[0]["id"], everything[-1]["id"]} == {made[-1], made[0]}
    # A chat made after the first page was read does not shift the pages that follow.
    first = await client.get("/api/v1/chats", headers=h, params={"limit": 2})
    clock.advance(1)
    await client.post("/api/v1/chats", headers=h, json={"content": "newer"})
    second = await client.get("/api/v1/chats", headers=h, params={"limit": 2, "before": first.headers["x-next-cursor"]})
    assert [c["id"] for c in second.json()] == [c["id"] for c in everything[2:4]]


async def test_a_bad_cursor_or_limit_is_a_400(client: httpx.AsyncClient, people: People) -> None:
    h = people.admin.headers
    for path in ("/api/v1/chats", "/api/v1/providers", "/api/v1/users", "/api/v1/me/tokens", "/api/v1/workspaces"):
        for params in (
            {"before": "not-a-cursor"}, {"before": "W10"}, {"limit": 0}, {"limit": 1001}, {"limit": "x"},
        ):
            r = await client.get(path, headers=h, params=params)
            assert r.status_code == 400 and r.json()["message"], (path, params, r.text)
    # Well-formed cursors holding values no page ends at: a naive time, a year past 9999, not a UUID.
    for path in ("/api/v1/chats", "/api/v1/me/tokens"):
        for key in (
            ("2026-01-01T00:00:00", str(uuid.uuid4())),
            ("9999-12-31T23:59:59-14:00", str(uuid.uuid4())),
            ("2026-01-01T00:00:00+00:00", "x"),
        ):
            r = await client.get(path, headers=h, params={"before": encode_cursor(key)})
            assert r.status_code == 400 and r.json()["message"], (path, key, r.text)


async def test_configuration_lists_page_too(client: httpx.AsyncClient, people: People) -> None:
    h = people.admin.headers
    for kind in ("anthropic", "openai", "google"):
        assert (await client.post("/api/v1/providers", headers=h, json={"provider": kind, "api_key": "k"})).status_code == 201
    for i in range(3):
        body = {"provider": "openai", "model": f"m{i}", "context_limit": 1000}
        assert (await client.post("/api/v1/model-configs", headers=h, json=body)).status_code == 201
        body = {"slug": f"s{i}", "display_name": f"S{i}", "url": "https://mcp.example.com/mcp"}
        assert (await client.post("/api/v1/mcp-servers", headers=h, json=body)).status_code == 201
    for path in ("/api/v1/providers", "/api/v1/model-configs", "/api/v1/mcp-servers"):
        whole = (await client.get(path, headers=h)).json()
        pages = await all_pages(client, path, h, 2)
        assert [len(p) for p in pages] == [2, 1] and [x["id"] for p in pages for x in p] == [x["id"] for x in whole], path


async def test_users_are_listed_by_admins_only_in_pages(client: httpx.AsyncClient, people: People) -> None:
    assert (await client.get("/api/v1/users", headers=people.alice.headers)).status_code == 403
    pages = await all_pages(client, "/api/v1/users", people.admin.headers, 2)
    assert [u["username"] for p in pages for u in p] == ["admin", "alice", "bob"]


async def test_tokens_are_listed_without_secrets_and_revoked_by_their_owner_or_an_admin(
    client: httpx.AsyncClient, people: People, clock: ManualClock
) -> None:
    alice, bob, admin = people.alice.headers, people.bob.headers, people.admin.headers
    uid = people.alice.user.id
    clock.advance(1)
    laptop = (await client.post(f"/api/v1/users/{uid}/tokens", headers=alice, json={"name": "laptop"})).json()["token"]
    clock.advance(1)
    phone = (await client.post(f"/api/v1/users/{uid}/tokens", headers=alice, json={"name": "phone"})).json()["token"]
    assert (await client.get("/api/v1/me", headers={"Authorization": f"Bearer {laptop}"})).status_code == 200

    mine = (await client.get("/api/v1/me/tokens", headers=alice)).json()
    assert [t["name"] for t in mine] == ["test", "laptop", "phone"]
    assert set(mine[0]) == {"id", "user_id", "name", "created_at", "last_used_at"}
    assert laptop not in str(mine) and phone not in str(mine)
    by_name = {t["name"]: t for t in mine}
    assert by_name["laptop"]["last_used_at"] is not None and by_name["phone"]["last_used_at"] is None
    # An admin sees the same list; members see only their own.
    assert (await client.get(f"/api/v1/users/{uid}/tokens", headers=admin)).json() == (await client.get("/api/v1/me/tokens", headers=alice)).json()
    assert (await client.get(f"/api/v1/users/{uid}/tokens", headers=bob)).status_code == 403
    assert (await client.get(f"/api/v1/users/{uuid.uuid4()}/tokens", headers=admin)).status_code == 404
    assert [t["name"] for t in (await client.get("/api/v1/me/tokens", headers=bob)).json()] == ["test"]

    # Bob cannot revoke alice's token, and cannot tell it exists.
    refused = await client.delete(f"/api/v1/tokens/{by_name['laptop']['id']}", headers=bob)
    absent = await client.delete(f"/api/v1/tokens/{uuid.uuid4()}", headers=bob)
    assert refused.status_code == 404 and refused.json() == absent.json()
    assert (await client.get("/api/v1/me", headers={"Authorization": f"Bearer {laptop}"})).status_code == 200

    # Alice revokes hers; an admin revokes anyone's; a revoked token is a 401 at once.
    assert (await client.delete(f"/api/v1/tokens/{by_name['laptop']['id']}", headers=alice)).status_code == 204
    assert (await client.delete(f"/api/v1/tokens/{by_name['phone']['id']}", headers=admin)).status_code == 204
    for token in (laptop, phone):
        assert (await client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})).status_code == 401
    assert (await client.delete(f"/api/v1/tokens/{by_name['laptop']['id']}", headers=alice)).status_code == 404
    assert [t["name"] for t in (await client.get("/api/v1/me/tokens", headers=alice)).json()] == ["test"]


async def test_a_disabled_user_is_refused_at_once_and_enabled_again_by_an_admin(
    client: httpx.AsyncClient, people: People, chatd: App
) -> None:
    chatd.settings.sse_keepalive = 0.3
    alice, admin = people.alice.headers, people.admin.headers
    uid = people.alice.user.id
    chat = (await client.post("/api/v1/chats", headers=alice, json={"content": "hello"})).json()

    async def stream_ends() -> None:
        async with client.stream("GET", f"/api/v1/chats/{chat['id']}/stream", headers=alice) as r:
            assert r.status_code == 200
            async for _ in r.aiter_lines():
                pass

    open_stream = asyncio.create_task(stream_ends())
    await asyncio.sleep(0.5)
    assert not open_stream.done()

    # Members cannot; an admin cannot lock themself out.
    assert (await client.patch(f"/api/v1/users/{uid}", headers=alice, json={"disabled": True})).status_code == 403
    myself = await client.patch(f"/api/v1/users/{people.admin.user.id}", headers=admin, json={"disabled": True})
    assert myself.status_code == 400 and myself.json()["message"] == "You cannot disable yourself."
    assert (await client.patch(f"/api/v1/users/{uuid.uuid4()}", headers=admin, json={"disabled": True})).status_code == 404

    disabled = await client.patch(f"/api/v1/users/{uid}", headers=admin, json={"disabled": True})
    assert disabled.status_code == 200
    body = disabled.json()
    assert (body["username"], body["disabled"], body["disabled_at"] is not None) == ("alice", True, True)
    # Every token of hers is refused from the next request on, and her open stream ends.
    assert (await client.get("/api/v1/me", headers=alice)).status_code == 401
    await asyncio.wait_for(open_stream, 20)
    listed = {u["username"]: u["disabled"] for u in (await client.get("/api/v1/users", headers=admin)).json()}
    assert listed == {"admin": False, "alice": True, "bob": False}

    enabled = await client.patch(f"/api/v1/users/{uid}", headers=admin, json={"disabled": False})
    assert (enabled.status_code, enabled.json()["disabled"], enabled.json()["disabled_at"]) == (200, False, None)
    assert (await client.get("/api/v1/me", headers=alice)).json()["username"] == "alice"
    assert [c["id"] for c in (await client.get("/api/v1/chats", headers=alice)).json()] == [chat["id"]]


async def test_revoking_a_token_ends_the_streams_it_opened(client: httpx.AsyncClient, people: People, chatd: App) -> None:
    """A chat stream, the watch and a WebSocket stay open for days: each re-checks its token (every
    CHATD_SSE_KEEPALIVE seconds) and ends once it is revoked; one opened with another token lives on."""
    chatd.settings.sse_keepalive = 0.3
    alice = people.alice.headers
    uid = people.alice.user.id
    made = (await client.post(f"/api/v1/users/{uid}/tokens", headers=alice, json={"name": "tablet"})).json()
    tablet = {"Authorization": f"Bearer {made['token']}"}
    (tablet_id,) = [t["id"] for t in (await client.get("/api/v1/me/tokens", headers=alice)).json() if t["name"] == "tablet"]
    chat = (await client.post("/api/v1/chats", headers=alice, json={"content": "hello"})).json()

    async def drain(path: str, headers: dict[str, str]) -> int:
        """Read the SSE response to its end; the number of lines read."""
        n = 0
        async with client.stream("GET", path, headers=headers) as r:
            assert r.status_code == 200
            async for _ in r.aiter_lines():
                n += 1
        return n

    base = str(client.base_url).replace("http://", "ws://")

    async def ws_close_code() -> int:
        async with ws_connect(f"{base}/api/v1/chats/{chat['id']}/stream", additional_headers=tablet, open_timeout=10) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), 30)
        assert closed.value.rcvd is not None
        return closed.value.rcvd.code

    revoked = asyncio.gather(
        drain(f"/api/v1/chats/{chat['id']}/stream", tablet), drain("/api/v1/chats/watch", tablet), ws_close_code()
    )
    kept = asyncio.create_task(drain("/api/v1/chats/watch", alice))
    await asyncio.sleep(1)  # all four are open and have been re-checked a few times
    assert not revoked.done() and not kept.done()
    assert (await client.delete(f"/api/v1/tokens/{tablet_id}", headers=alice)).status_code == 204
    stream_lines, _watch_lines, code = await asyncio.wait_for(revoked, 20)
    assert stream_lines > 0 and code == 4401
    await asyncio.sleep(1)
    assert not kept.done()  # alice's own token still works
    kept.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await kept


async def test_a_busy_stream_rechecks_its_token_as_often_as_an_idle_one() -> None:
    """Events arriving faster than the check interval must not postpone the check."""
    checks = 0

    async def busy() -> AsyncIterator[int]:
        for i in range(10_000):
            await asyncio.sleep(0.005)
            yield i

    async def revoked() -> bool:
        nonlocal checks
        checks += 1
        return False

    got = [i async for i in while_authorized(busy(), revoked, 0.1, asyncio.Event())]
    assert checks == 1
    assert 0 < len(got) < 1_000  # ended at the first check (~0.1 s), not when the events ran out


class Stoppable:
    """Events every 5 ms until `stop()`, which ends them at their next read (as a chat stream's)."""

    def __init__(self) -> None:
        self.stopped = asyncio.Event()

    def stop(self) -> None:
        self.stopped.set()

    async def events(self) -> AsyncIterator[int]:
        for i in range(10_000):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopped.wait(), 0.005)
            if self.stopped.is_set():
                return
            yield i


async def test_a_guarded_stream_ends_at_its_first_failed_check_however_busy() -> None:
    checks = 0

    async def revoked() -> bool:
        nonlocal checks
        checks += 1
        return checks < 3

    src = Stoppable()
    async with asyncio.timeout(10):
        got = [i async for i in guarded(src.events(), src.stop, revoked, 0.1, asyncio.Event())]
    assert checks == 3 and src.stopped.is_set()
    assert 0 < len(got) < 1_000  # ended at the third check (~0.3 s), not when the events ran out


async def test_a_guarded_stream_ends_when_the_process_stops_and_fails_with_its_check() -> None:
    closing = asyncio.Event()

    async def allowed() -> bool:
        return True

    src = Stoppable()
    asyncio.get_running_loop().call_later(0.05, closing.set)
    async with asyncio.timeout(10):
        assert len([i async for i in guarded(src.events(), src.stop, allowed, 60, closing)]) < 1_000

    async def broken() -> bool:
        raise RuntimeError("the database is gone")

    src = Stoppable()
    with pytest.raises(RuntimeError):
        async with asyncio.timeout(10):
            async for _ in guarded(src.events(), src.stop, broken, 0.05, asyncio.Event()):
                pass


async def test_metrics_need_an_admin_token_by_default(client: httpx.AsyncClient, people: People) -> None:
    r = await client.get("/metrics")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert (await client.get("/metrics", headers=people.alice.headers)).status_code == 403
    r = await client.get("/metrics", headers=people.admin.headers)
    assert r.status_code == 200 and "chatd_" in r.text


async def test_metrics_can_be_made_public(db_url: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=db_url, run_workers=False, secret_key="", metrics_public=True)
    app: App = await build(settings, clock=ManualClock())
    try:
        async with serve_http(app) as base, httpx.AsyncClient(base_url=base) as client:
            r = await client.get("/metrics")
            assert r.status_code == 200 and "chatd_" in r.text
    finally:
        await app.close()


async def test_a_disabled_mcp_server_id_is_refused_like_an_unknown_one(client: httpx.AsyncClient, people: People) -> None:
    body = {"slug": "off", "display_name": "Off", "url": "https://mcp.example.com/mcp", "enabled": False}
    sid = (await client.post("/api/v1/mcp-servers", headers=people.admin.headers, json=body)).json()["id"]
    for person in (people.alice, people.admin):
        disabled = await client.post("/api/v1/chats", headers=person.headers, json={"content": "hi", "mcp_server_ids": [sid]})
        unknown = await client.post("/api/v1/chats", headers=person.headers, json={"content": "hi", "mcp_server_ids": [str(uuid.uuid4())]})
        assert disabled.status_code == unknown.status_code == 400
        assert disabled.json()["message"] == unknown.json()["message"]
        chat = (await client.post("/api/v1/chats", headers=person.headers, json={"content": "hi"})).json()
        r = await client.post(f"/api/v1/chats/{chat['id']}/messages", headers=person.headers, json={"content": "x", "mcp_server_ids": [sid]})
        assert r.status_code == 400
    assert (await client.get("/api/v1/chats", headers=people.alice.headers)).json()[0]["mcp_server_ids"] == []


async def test_chats_are_searched_by_title_on_the_server_across_pages(client: httpx.AsyncClient, people: People, clock: ManualClock) -> None:
    """The UI's search box finds chats that are not loaded yet: `q` filters titles in the database
    (case-insensitive, `%` and `_` literal), and the filtered list pages like the whole one."""
    h = people.alice.headers
    titles = ["Budget for March", "budget review", "Holiday plans", "100% sure", "snake_case names", "Budget 2027", "Über Pläne"]
    ids = {}
    for t in titles:
        ids[t] = (await client.post("/api/v1/chats", headers=h, json={"content": "hi", "title": t})).json()["id"]
        clock.advance(1)
    # Someone else's chat with a matching title is never found.
    await client.post("/api/v1/chats", headers=people.bob.headers, json={"content": "hi", "title": "Budget of bob"})

    async def search(q: str, limit: int = 50) -> list[str]:
        found: list[str] = []
        params: dict[str, Any] = {"q": q, "limit": limit}
        while True:
            r = await client.get("/api/v1/chats", headers=h, params=params)
            assert r.status_code == 200, r.text
            found += [c["title"] for c in r.json()]
            if (cursor := r.headers.get("x-next-cursor")) is None:
                return found
            params = {**params, "before": cursor}

    assert await search("budget") == ["Budget 2027", "budget review", "Budget for March"]
    assert await search("BUDGET", limit=1) == ["Budget 2027", "budget review", "Budget for March"]
    assert await search("%") == ["100% sure"]
    assert await search("_") == ["snake_case names"]
    assert await search("nothing like it") == []
    assert await search("über") == await search("ÜBER PLÄNE") == ["Über Pläne"]  # not only ASCII
    assert len(await search("")) == len(titles)  # an empty search is no filter
    assert (await client.get("/api/v1/chats", headers=h, params={"q": "a\x00b"})).status_code == 400
    assert (await client.get("/api/v1/chats", headers=h, params={"q": "x" * 201})).status_code == 400
