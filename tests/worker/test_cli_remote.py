"""`chatd chats|users|tokens|mcp|providers|models` against a real server: the API on a loopback
port with workers running turns against the scripted LLM server. Each command runs as its user
runs it: one as a real `chatd` process (CHATD_URL / CHATD_TOKEN), the rest through typer's runner
on a thread of their own (the CLI runs its own event loop), over real HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from typer.testing import CliRunner, Result

from chatd.cli import app
from chatd.domain.chat import ChatStatus
from tests.fakes.llm_server import Reply, ToolCall
from tests.mcp.mcp_test_servers import ServerState, build_server, free_port, serve
from tests.worker.conftest import Gate, Rig
from tests.worker.test_cli_chat import running


async def chatd(url: str, token: str, *args: str, columns: int = 200) -> Result:
    """`chatd ARGS` with CHATD_URL and CHATD_TOKEN set, on its own thread and event loop."""
    runner = CliRunner()
    env = {"CHATD_URL": url, "CHATD_TOKEN": token, "COLUMNS": str(columns), "NO_COLOR": "1", "TERM": "dumb"}
    return await asyncio.to_thread(runner.invoke, app, list(args), env=env)


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, (result.output, result.stderr)
    return json.loads(result.stdout)


async def test_chats_list_show_interrupt_and_archive(rig: Rig) -> None:
    gate = Gate()
    rig.tools = [gate.tool()]
    rig.llm.script(Reply(text="Checking.", tool_calls=[ToolCall("call_1", "wait", {})]))
    alice = rig.people.alice.token
    async with running(rig) as url:
        chat = await rig.chat("find the answer")
        await asyncio.wait_for(gate.entered.wait(), 10)

        # A real process, as an operator types it.
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHATD_")}
        env.update(CHATD_URL=url, CHATD_TOKEN=alice, COLUMNS="200", NO_COLOR="1", TERM="dumb")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "chatd.cli", "chats", "list", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        (header, _rule, row) = [line.split() for line in out.decode().splitlines() if line.strip()]
        assert header[:3] == ["ID", "┃", "TITLE"]
        assert row[0] == str(chat.id) and "running" in row

        listed = as_json(await chatd(url, alice, "chats", "list", "--json"))
        assert [(c["id"], c["status"]) for c in listed] == [(str(chat.id), "running")]

        interrupted = await chatd(url, alice, "chats", "interrupt", str(chat.id))
        assert interrupted.exit_code == 0, interrupted.output
        assert interrupted.stdout.startswith(f"interrupted {chat.id}")
        assert "waiting" not in interrupted.stdout
        gate.release.set()
        await rig.wait_status(chat.id, ChatStatus.WAITING)

        shown = await chatd(url, alice, "chats", "show", str(chat.id))
        assert shown.exit_code == 0, shown.output
        lines = [line.rstrip() for line in shown.stdout.splitlines() if line.strip()]
        # The web UI's word for a chat that waits for its person (the API's `waiting`).
        assert lines[0] == f"find the answer  {chat.id}  idle"
        assert lines[1:4] == ["you › find the answer", "Checking.", "⏺ wait({})"]
        body = as_json(await chatd(url, alice, "chats", "show", str(chat.id), "--json"))
        assert body["chat"]["status"] == "waiting" and body["messages"][0]["role"] in ("system", "user")

        archived = await chatd(url, alice, "chats", "archive", str(chat.id))
        assert archived.exit_code == 0 and archived.stdout.strip() == f"archived {chat.id}"
        assert as_json(await chatd(url, alice, "chats", "list", "--json")) == []
        assert [c["id"] for c in as_json(await chatd(url, alice, "chats", "list", "--archived", "--json"))] == [str(chat.id)]
        other = await rig.chat("not archived")
        assert sorted(c["id"] for c in as_json(await chatd(url, alice, "chats", "list", "--all", "--json"))) == sorted([str(chat.id), str(other.id)])

        # Someone else's chat does not exist for bob: the API's 404, one line, exit status 2.
        refused = await chatd(url, rig.people.bob.token, "chats", "show", str(chat.id))
        assert refused.exit_code == 2 and "404" in refused.stderr and refused.stdout == ""

        # An admin's debug view of any chat (tracing is off here: no trace id); not for members.
        debug = await chatd(url, rig.people.admin.token, "chats", "debug", str(chat.id))
        assert debug.exit_code == 0, debug.output
        fields = dict(line.split(None, 1) for line in debug.stdout.splitlines())
        assert (fields["id"], fields["status"], fields["trace_id"], fields["archived"]) == (str(chat.id), "waiting", "-", "True")
        debug_json = as_json(await chatd(url, rig.people.admin.token, "chats", "debug", str(chat.id), "--json"))
        assert debug_json["generation"] == (await rig.get(chat.id)).generation and debug_json["worker_id"] is None
        not_admin = await chatd(url, alice, "chats", "debug", str(chat.id))
        assert not_admin.exit_code == 2 and "403" in not_admin.stderr


async def test_chats_list_gives_a_narrow_terminal_to_the_titles_with_short_ids_the_other_commands_take(rig: Rig) -> None:
    alice = rig.people.alice.token
    long_title = "Plan the spring trip to Lisbon with the whole family and the dog"
    rig.llm.script(Reply(text="ok"), Reply(text="ok"))
    async with running(rig) as url:
        chats = [await rig.chat("one", title=long_title), await rig.chat("two", title="Short")]
        for chat in chats:
            await rig.wait_status(chat.id, ChatStatus.WAITING)
        updated = {str(c.id): (await rig.get(c.id)).updated_at for c in chats}
        listed = await chatd(url, alice, "chats", "list", columns=80)
        assert listed.exit_code == 0, listed.output
        lines = listed.stdout.splitlines()
        assert all(len(line) <= 80 for line in lines), lines
        header, _rule, *rows = lines
        assert [cell.strip() for cell in header.split("┃")] == ["ID", "TITLE", "STATUS", "UPDATED"]
        # One line per chat: the start of the id (8 characters tell these apart), the title with
        # most of the line (cut with an ellipsis), the status in the web UI's words, the time as
        # `ls -l` shows this year's.
        cells = [[cell.strip() for cell in row.split("│")] for row in rows]
        by_id = {next(str(c.id) for c in chats if str(c.id).startswith(r[0])): r for r in cells}
        assert sorted(by_id) == sorted(str(c.id) for c in chats) and all(len(r[0]) == 8 for r in cells)
        long_row, short_row = by_id[str(chats[0].id)], by_id[str(chats[1].id)]
        assert long_row[1].endswith("…") and long_title.startswith(long_row[1][:-1]) and len(long_row[1]) > 40
        assert short_row[1:] == ["Short", "idle", updated[str(chats[1].id)].strftime("%m-%d %H:%M")]

        # The short id is what `chats show` (and every command taking a chat id) takes.
        shown = await chatd(url, alice, "chats", "show", long_row[0])
        assert shown.exit_code == 0, shown.output
        assert shown.stdout.splitlines()[0].split()[-2:] == [str(chats[0].id), "idle"]
        archived = await chatd(url, alice, "chats", "archive", short_row[0])
        assert archived.exit_code == 0 and archived.stdout.strip() == f"archived {chats[1].id}"
        unarchived = await chatd(url, alice, "chats", "archive", "--undo", short_row[0])
        assert unarchived.exit_code == 0 and unarchived.stdout.strip() == f"unarchived {chats[1].id}"
        # Only the caller's own chats: bob has no chat of that start.
        others = await chatd(url, rig.people.bob.token, "chats", "show", long_row[0])
        assert others.exit_code == 2 and others.stderr.strip() == f"error: No chat of yours has an id starting with '{long_row[0]}'."

        # A wide terminal: nothing is cut, the ids and times whole.
        wide = (await chatd(url, alice, "chats", "list", columns=160)).stdout.splitlines()
        assert all(len(line) <= 160 for line in wide)
        wide_rows = {row.split()[0]: [cell.strip() for cell in row.split("│")] for row in wide[2:]}
        assert sorted(wide_rows) == sorted(str(c.id) for c in chats)
        assert wide_rows[str(chats[0].id)][1:] == [long_title, "idle", updated[str(chats[0].id)].strftime("%Y-%m-%d %H:%M")]
        # Scripts read the same JSON whatever the width.
        narrow_json = as_json(await chatd(url, alice, "chats", "list", "--json", columns=80))
        assert narrow_json == as_json(await chatd(url, alice, "chats", "list", "--json", columns=160))
        assert sorted(c["id"] for c in narrow_json) == sorted(str(c.id) for c in chats)


async def test_providers_models_and_mcp_servers(rig: Rig) -> None:
    admin = rig.people.admin
    state = ServerState()
    with serve(build_server(state).streamable_http_app()) as live:
        await rig.app.service.create_mcp_server(admin.user, {"slug": "live", "display_name": "Live", "url": live.url, "enabled": True})
        await rig.app.service.create_mcp_server(
            admin.user, {"slug": "gone", "display_name": "Gone", "url": f"http://127.0.0.1:{free_port()}/mcp", "enabled": True}
        )
        async with running(rig) as url:
            providers = as_json(await chatd(url, admin.token, "providers", "list", "--json"))
            assert [(p["provider"], p["api_key_set"]) for p in providers] == [("openai-compatible", True)]
            models = await chatd(url, admin.token, "models", "list")
            assert models.exit_code == 0, models.output
            (row,) = [line for line in models.stdout.splitlines() if "fake-model" in line]
            assert str(rig.model_config_id) in row and "yes" in row

            servers = as_json(await chatd(url, admin.token, "mcp", "list", "--json"))
            assert sorted(s["slug"] for s in servers) == ["gone", "live"]
            ok = await chatd(url, admin.token, "mcp", "test", "live")
            assert ok.exit_code == 0, ok.output
            assert ok.stdout.splitlines()[0].startswith("ok: ") and "live__echo" in ok.stdout
            failed = await chatd(url, admin.token, "mcp", "test", "gone")
            assert failed.exit_code == 1 and failed.stderr.startswith("failed (")
            body = as_json(await chatd(url, admin.token, "mcp", "test", "live", "--json"))
            assert body["ok"] is True and "live__echo" in [t["name"] for t in body["tools"]]
            missing = await chatd(url, admin.token, "mcp", "test", "nope")
            assert missing.exit_code == 2 and "No MCP server with the slug 'nope'" in missing.stderr


async def test_a_bad_token_is_one_line_and_exit_status_2(rig: Rig) -> None:
    async with running(rig) as url:
        result = await chatd(url, "chatd_not-a-real-token", "providers", "list")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.strip() == "error: Invalid token. (HTTP 401)"


async def test_users_list_and_tokens_list_and_revoke(rig: Rig) -> None:
    from chatd.store import users as user_store

    alice = rig.people.alice
    laptop = await user_store.create_token(rig.app.db, rig.app.clock.now(), alice.user.id, "laptop")
    async with running(rig) as url:
        users = as_json(await chatd(url, rig.people.admin.token, "users", "list", "--json"))
        assert sorted(u["username"] for u in users) == ["admin", "alice", "bob"]
        table = await chatd(url, rig.people.admin.token, "users", "list")
        assert table.exit_code == 0 and "alice" in table.stdout and "member" in table.stdout
        refused = await chatd(url, alice.token, "users", "list")
        assert refused.exit_code == 2 and "403" in refused.stderr

        tokens = as_json(await chatd(url, alice.token, "tokens", "list", "--json"))
        assert sorted(t["name"] for t in tokens) == ["laptop", "test"]
        assert not any(alice.token in json.dumps(t) or laptop in json.dumps(t) for t in tokens)
        (laptop_id,) = [t["id"] for t in tokens if t["name"] == "laptop"]
        revoked = await chatd(url, alice.token, "tokens", "revoke", laptop_id)
        assert revoked.exit_code == 0 and revoked.stdout.strip() == f"revoked {laptop_id}"
        assert [t["name"] for t in as_json(await chatd(url, alice.token, "tokens", "list", "--json"))] == ["test"]
        gone = await chatd(url, laptop, "providers", "list")
        assert gone.exit_code == 2 and "401" in gone.stderr


async def test_users_disable_and_enable_by_username_or_id(rig: Rig) -> None:
    admin, bob = rig.people.admin, rig.people.bob
    async with running(rig) as url:
        disabled = await chatd(url, admin.token, "users", "disable", "bob")
        assert disabled.exit_code == 0, disabled.output
        assert disabled.stdout.strip() == f"disabled bob ({bob.user.id})"
        refused = await chatd(url, bob.token, "chats", "list")
        assert refused.exit_code == 2 and "401" in refused.stderr
        listed = await chatd(url, admin.token, "users", "list")
        (row,) = [line.split() for line in listed.stdout.splitlines() if "bob" in line]
        assert row[0] == str(bob.user.id) and "yes" in row

        enabled = as_json(await chatd(url, admin.token, "users", "enable", str(bob.user.id), "--json"))
        assert (enabled["id"], enabled["username"], enabled["disabled"]) == (str(bob.user.id), "bob", False)
        assert as_json(await chatd(url, bob.token, "chats", "list", "--json")) == []

        # Refusals are the API's, one line, exit status 2: a member, an unknown name, oneself.
        member = await chatd(url, rig.people.alice.token, "users", "disable", "bob")
        assert member.exit_code == 2 and "403" in member.stderr
        unknown = await chatd(url, admin.token, "users", "disable", "nobody")
        assert unknown.exit_code == 2 and unknown.stderr.strip() == "error: No user named 'nobody'."
        oneself = await chatd(url, admin.token, "users", "disable", "admin")
        assert oneself.exit_code == 2 and "400" in oneself.stderr
        assert not any(u["disabled"] for u in as_json(await chatd(url, admin.token, "users", "list", "--json")))


async def test_an_id_that_is_not_a_uuid_is_refused_before_any_request(rig: Rig) -> None:
    # An id goes into the request path: `../users` would name another endpoint.
    async with running(rig) as url:
        for args in (
            ("chats", "show", "../users"), ("chats", "archive", "../../me"), ("chats", "interrupt", "abc"), ("chats", "debug", "0123/../x"),
            ("tokens", "revoke", "x/../y"), ("tokens", "revoke", "0123abcd"),
        ):
            result = await chatd(url, rig.people.alice.token, *args)
            assert result.exit_code == 2, (args, result.output)
            assert "is not an id" in result.output + result.stderr, args
