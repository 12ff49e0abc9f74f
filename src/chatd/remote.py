"""The CLI commands that talk to a running chatd over its public API: chats, users, tokens, MCP
servers, providers and models. Human output (rich tables) by default, `--json` for scripts.

The server and the token come from `--url`/`CHATD_URL` and `--token`/`CHATD_TOKEN`, or else the
settings' address and the admin token file in the data dir (a local install)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from chatd.client import ChatdClient, ClientError, is_id_prefix, is_uuid, status_word
from chatd.settings import Settings
from chatd.terminal import MarkdownView

T = TypeVar("T")

err = Console(stderr=True)

Url = Annotated[str | None, typer.Option("--url", envvar="CHATD_URL", help="The chatd server (default: http://HOST:PORT of the settings).")]
Token = Annotated[str | None, typer.Option("--token", envvar="CHATD_TOKEN", help="An API token (default: the admin token in the data dir).")]
DataDir = Annotated[Path | None, typer.Option("--data-dir", envvar="CHATD_DATA_DIR", help="Where the admin token file is (local installs).")]
Json = Annotated[bool, typer.Option("--json", help="Print the API's JSON (for scripts).")]

chats_app = typer.Typer(no_args_is_help=True, help="List, show, interrupt and archive chats (over the API).")
providers_app = typer.Typer(no_args_is_help=True, help="Model providers (over the API).")
models_app = typer.Typer(no_args_is_help=True, help="Model configurations (over the API).")


SERVER_URL_FILE = "server-url"


def target(url: str | None, token: str | None, data_dir: Path | None) -> tuple[str, str]:
    """The server URL and the token to use, or exit 2 with what to set.

    Without --url, the address a local `chatd serve` wrote into its data dir on start (it may run
    on another --port than the settings say), else the settings' address."""
    settings = Settings(data_dir=data_dir) if data_dir is not None else Settings()
    if not token:
        path = settings.data_dir / "admin-token"
        try:
            token = path.read_text().strip()
        except OSError:
            err.print(
                f"[red]error:[/red] no token: pass --token or set CHATD_TOKEN, or point --data-dir / "
                f"CHATD_DATA_DIR at the server's data dir (no {path})."
            )
            raise typer.Exit(2) from None
    if not url:
        try:
            url = (settings.data_dir / SERVER_URL_FILE).read_text().strip()
        except OSError:
            url = ""
    return url or settings.resolved_public_url(), token


def call(url: str | None, token: str | None, data_dir: Path | None, work: Callable[[ChatdClient], Awaitable[T]]) -> T:
    """Run `work` with a client; a refused or failed request is one red line and exit status 2."""
    base, tok = target(url, token, data_dir)

    async def go() -> T:
        async with ChatdClient(base, tok) as client:
            return await work(client)

    try:
        return asyncio.run(go())
    except ClientError as exc:
        err.print(f"[red]error:[/red] {escape(exc.message)}")
        raise typer.Exit(2) from exc


def out() -> Console:
    return Console(soft_wrap=False)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


# Columns whose text may be cut short (with an ellipsis) to fit the terminal's width: free text.
# Every other column keeps its whole values (ids, statuses, times are read and copied whole).
SHRINKING = frozenset({"TITLE", "ERROR", "NAME", "DESCRIPTION", "URL", "BASE URL", "MODEL"})
# A shrinking column keeps at least this many characters, however narrow the terminal.
SHRINK_MIN = 8


def table(rows: Sequence[dict[str, Any]], columns: Sequence[Column], *, empty: str) -> None:
    """Rows as one line each: in a narrow terminal free text is cut with an ellipsis (never
    wrapped: a wrapped title broke every row into several lines), ids and short values stay whole."""
    if not rows:
        err.print(f"[dim]{empty}[/dim]")
        return
    cells = _cells(rows, columns)
    natural = _natural(cells, columns)
    console = _table_console()
    widths = _fit([title in SHRINKING for title, _ in columns], natural, console.width - 3 * (len(columns) - 1))
    t = Table(show_edge=False, header_style="bold", pad_edge=False)
    for (title, _), width, shrinks in zip(columns, widths, (title in SHRINKING for title, _ in columns), strict=True):
        t.add_column(title, no_wrap=True, overflow="ellipsis" if shrinks else "crop", width=width)
    for r in cells:
        t.add_row(*(escape(c) for c in r))
    # A terminal too narrow for even the whole ids and shortest texts: the lines run longer (the
    # terminal wraps them) rather than cut an id.
    console.width = max(console.width, sum(widths) + 3 * (len(columns) - 1))
    console.print(t)


Column = tuple[str, str | Callable[[dict[str, Any]], Any]]


def _table_console() -> Console:
    console = out()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        # Piped (`chatd chats list | grep …`): no terminal to fit, keep every value whole.
        console = Console(soft_wrap=False, width=10_000)
    return console


def _cells(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> list[list[str]]:
    return [[_cell(get(row) if callable(get) else row.get(get)) for _, get in columns] for row in rows]


def _natural(cells: Sequence[Sequence[str]], columns: Sequence[Column]) -> list[int]:
    """Each column's width with every value whole."""
    return [max([len(title)] + [len(r[i]) for r in cells]) for i, (title, _) in enumerate(columns)]


def _fits(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> bool:
    """Whether the table fits the terminal with nothing cut."""
    return sum(_natural(_cells(rows, columns), columns)) + 3 * (len(columns) - 1) <= _table_console().width


def _fit(shrinks: Sequence[bool], natural: Sequence[int], room: int) -> list[int]:
    """Column widths: whole values where they are not free text; the room left is shared among
    the free-text columns, the first (a title, a name) weighing twice the others; each takes
    what it needs up to its share, the narrowest first, and leaves the rest to the others."""
    widths = list(natural)
    flexible = [i for i, s in enumerate(shrinks) if s]
    weight = {i: 2 if n == 0 else 1 for n, i in enumerate(flexible)}
    left = room - sum(w for w, s in zip(natural, shrinks, strict=True) if not s)
    total = sum(weight.values())
    for i in sorted(flexible, key=lambda i: natural[i] / weight[i]):
        share = left * weight[i] // total if total else 0
        widths[i] = max(min(natural[i], share), min(natural[i], SHRINK_MIN))
        left -= widths[i]
        total -= weight[i]
    return widths


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str) and len(value) >= 19 and value[4] == "-" and value[10] == "T":
        return value[:16].replace("T", " ")  # an ISO timestamp: minutes are enough in a table
    return str(value)


# --- chats -------------------------------------------------------------------------------------


@chats_app.command("list")
def chats_list(
    archived: Annotated[bool, typer.Option("--archived", help="List archived chats instead.")] = False,
    all_: Annotated[bool, typer.Option("--all", help="Archived and not archived.")] = False,
    url: Url = None, token: Token = None, data_dir: DataDir = None, as_json: Json = False,
) -> None:
    """Your chats, most recently updated first."""
    # The API lists one side of the archive at a time (without `archived`, the chats not archived).
    sides = ("false", "true") if all_ else (str(archived).lower(),)

    async def work(c: ChatdClient) -> list[dict[str, Any]]:
        return [chat for side in sides for chat in await c.list_all("/api/v1/chats", {"archived": side})]

    rows = call(url, token, data_dir, work)
    if as_json:
        print_json(rows)
        return
    rows = sorted(rows, key=lambda r: str(r.get("updated_at", "")), reverse=True)
    columns: list[Column] = [("ID", "id"), ("TITLE", "title"), ("STATUS", _status), ("UPDATED", "updated_at")]
    if any(r.get("last_error") for r in rows):  # a column of dashes only takes the title's room
        columns.append(("ERROR", lambda r: _short(r.get("last_error"), 60)))
    if not _fits(rows, columns):
        # Too narrow for everything whole: the ids and times give way before the titles do. A
        # short id is the start of the whole one, as long as the listed chats need to tell them
        # apart, and every command that takes a chat id takes it.
        short = _short_ids([str(r.get("id", "")) for r in rows])
        this_year = str(datetime.now(UTC).year)
        columns[0] = ("ID", lambda r: short[str(r.get("id", ""))])
        columns[3] = ("UPDATED", lambda r: _when(r.get("updated_at"), this_year))
    table(rows, columns, empty="no chats")


def _short_ids(ids: Sequence[str], least: int = 8) -> dict[str, str]:
    """Each id cut to one length, at least `least`, at which no two of them are the same."""
    n = least
    while n < max(map(len, ids), default=0) and len({i[:n] for i in ids}) < len(set(ids)):
        n += 1
    return {i: i[:n] for i in ids}


def _when(value: Any, this_year: str) -> Any:
    """An ISO time as `ls -l` shows one: month, day and minute this year, the date before."""
    if not isinstance(value, str) or len(value) < 16 or value[4] != "-" or value[10] != "T":
        return value
    return value[5:16].replace("T", " ") if value[:4] == this_year else value[:10]


def _status(chat: dict[str, Any]) -> str:
    status = status_word(str(chat.get("status", "")))
    return f"{status} (archived)" if chat.get("archived") else status


def _short(value: Any, limit: int) -> str | None:
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _an_id(value: str) -> str:
    """Ids go into request paths: anything but a UUID (`../users`, say) would name another endpoint."""
    if not is_uuid(value):
        raise typer.BadParameter(f"{value!r} is not an id (ids are UUIDs).")
    return value


def _a_chat_id(value: str) -> str:
    """A chat's whole id, or the start of it (resolved by `ChatdClient.resolve_chat_id`)."""
    if not (is_uuid(value) or is_id_prefix(value)):
        raise typer.BadParameter(f"{value!r} is not an id (ids are UUIDs, or the start of one as `chatd chats list` shows it).")
    return value


ChatId = Annotated[str, typer.Argument(help="The chat's id, or its start as `chatd chats list` shows it.", callback=_a_chat_id)]


@chats_app.command("show")
def chats_show(
    chat_id: ChatId,
    reasoning: Annotated[bool, typer.Option("--reasoning/--no-reasoning", help="Show the model's reasoning.")] = False,
    url: Url = None, token: Token = None, data_dir: DataDir = None, as_json: Json = False,
) -> None:
    """A chat: its status, then the conversation (tool calls and results as lines)."""

    async def work(c: ChatdClient) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        whole = await c.resolve_chat_id(chat_id)
        return await c.get_chat(whole), await c.messages(whole)

    chat, messages = call(url, token, data_dir, work)
    if as_json:
        print_json({"chat": chat, "messages": messages})
        return
    console = out()
    console.print(f"[bold]{escape(chat.get('title') or '')}[/bold]  [dim]{escape(chat['id'])}[/dim]  {escape(_status(chat))}", highlight=False)
    view = MarkdownView(console, reasoning=reasoning)
    for m in messages:
        if m.get("role") != "system":
            view.message(m)
    view.finished(chat)


@chats_app.command("debug")
def chats_debug(
    chat_id: ChatId,
    url: Url = None, token: Token = None, data_dir: DataDir = None, as_json: Json = False,
) -> None:
    """Any chat as the workers see it, for admins: status, replica, turn, lease, trace id (no content)."""

    async def work(c: ChatdClient) -> dict[str, Any]:
        debug: dict[str, Any] = await c.request("GET", f"/api/v1/chats/{await c.resolve_chat_id(chat_id)}/debug")
        return debug

    debug = call(url, token, data_dir, work)
    if as_json:
        print_json(debug)
        return
    console = out()
    for key in ("id", "owner_id", "status", "last_error", "generation", "worker_id", "started_at", "heartbeat_at", "trace_id", "archived", "updated_at"):
        value = debug.get(key)
        console.print(f"{key:<13} {escape('-' if value is None else str(value))}", highlight=False)


@chats_app.command("interrupt")
def chats_interrupt(chat_id: ChatId, url: Url = None, token: Token = None, data_dir: DataDir = None, as_json: Json = False) -> None:
    """Stop the chat's running turn (the partial answer is kept)."""

    async def work(c: ChatdClient) -> tuple[str, Any]:
        whole = await c.resolve_chat_id(chat_id)
        return whole, await c.request("POST", f"/api/v1/chats/{whole}/interrupt")

    whole, chat = call(url, token, data_dir, work)
    if as_json:
        print_json(chat)
        return
    status = chat.get("status") if isinstance(chat, dict) else None
    out().print(f"interrupted {escape(whole)}" + (f" (now {escape(status_word(str(status)))})" if status else ""), highlight=False)


@chats_app.command("archive")
def chats_archive(
    chat_id: ChatId,
    undo: Annotated[bool, typer.Option("--undo", help="Unarchive instead.")] = False,
    url: Url = None, token: Token = None, data_dir: DataDir = None, as_json: Json = False,
) -> None:
    """Archive a chat (and its sub-agents); a running turn stops."""
    action = "unarchive" if undo else "archive"

    async def work(c: ChatdClient) -> dict[str, Any]:
        whole = await c.resolve_chat_id(chat_id)
        await c.request("POST", f"/api/v1/chats/{whole}/{action}")
        return await c.get_chat(whole)

    chat = call(url, token, data_dir, work)
    if as_json:
        print_json(chat)
        return
    out().print(f"{action}d {escape(str(chat['id']))}", highlight=False)


# --- users and tokens --------------------------------------------------------------------------


def users_list(url: Url = None, token: Token = None, data_dir: DataDir = None, as_json: Json = False) -> None:
    """Every user (admins only)."""
    rows = call(url, token, data_dir, lambda c: c.list_all("/api/v1/users"))
    if as_json:
        print_json(rows)
        return
    table(rows, [("ID", "id"), ("USERNAME", "username"), ("ROLE", "role"), ("DISABLED", "disabled"), ("CREATED", "created_at")], empty="no users")


UserArg = Annotated[str, typer.Argument(help="The user's id or username (see `chatd users list`).")]


def users_disable(user: UserArg, url: Url = None, token: Token = None, data_dir: DataDir = None, as_json: Json = False) -> None:
    """Disable a user (admins): their tokens are refused from now on; their chats and tokens are kept."""
    _set_disabled(user, True, url, token, data_dir, as_json)


def users_enable(user: UserArg, url: Url = None, token: Token = None, data_dir: DataDir = None, as_json: Json = False) -> None:
    """Enable a disabled user again (admins): their tokens work again."""
    _set_disabled(user, False, url, token, data_dir, as_json)


def _set_disabled(user: str, disabled: bool, url: str | None, token: str | None, data_dir: Path | None, as_json: bool) -> None:
    async def work(c: ChatdClient) -> dict[str, Any]:
        user_id = await _resolve(c, "/api/v1/users", "username", user, "user named")
        result: dict[str, Any] = await c.request("PATCH", f"/api/v1/users/{user_id}", json={"disabled": disabled})
        return result

    changed = call(url, token, data_dir, work)
    if as_json:
        print_json(changed)
        return
    verb = "disabled" if disabled else "enabled"
    out().print(f"{verb} {escape(str(changed.get('username')))} ({escape(str(changed.get('id')))})", highlight=False)


def tokens_list(url: Url = None, token: Token = None, data_dir: DataDir = None, as_json: Json = False) -> None:
    """Your API tokens (never their values: those are shown once, at creation)."""
    rows = call(url, token, data_dir, lambda c: c.list_all("/api/v1/me/tokens"))
    if as_json:
        print_json(rows)
        return
    table(
        rows,
        [("ID", "id"), ("NAME", "name"), ("CREATED", "created_at"), ("LAST USED", "last_used_at")],
        empty="no tokens",
    )


def tokens_revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (see `chatd tokens list`).", callback=_an_id)],
    url: Url = None, token: Token = None, data_dir: DataDir = None, as_json: Json = False,
) -> None:
    """Revoke a token: requests with it are refused from now on."""
    call(url, token, data_dir, lambda c: c.request("DELETE", f"/api/v1/tokens/{token_id}"))
    if as_json:
        print_json({"revoked": token_id})
        return
    out().print(f"revoked {escape(token_id)}", highlight=False)


# --- MCP servers -------------------------------------------------------------------------------


def mcp_list(url: Url = None, token: Token = None, data_dir: DataDir = None, as_json: Json = False) -> None:
    """The MCP servers (members see the enabled ones)."""
    rows = call(url, token, data_dir, lambda c: c.list_all("/api/v1/mcp-servers"))
    if as_json:
        print_json(rows)
        return
    table(
        rows,
        [
            ("ID", "id"), ("SLUG", "slug"), ("NAME", "display_name"), ("URL", lambda r: r.get("url") or r.get("command")),
            ("AUTH", "auth_type"), ("ENABLED", "enabled"), ("AVAILABILITY", "availability"),
        ],
        empty="no MCP servers",
    )


def mcp_test(
    server: Annotated[str, typer.Argument(help="The server's id or slug.")],
    url: Url = None, token: Token = None, data_dir: DataDir = None, as_json: Json = False,
) -> None:
    """Connect to the server now, as you, and list its tools. Exit status 1 if it fails."""

    async def work(c: ChatdClient) -> dict[str, Any]:
        server_id = await _resolve(c, "/api/v1/mcp-servers", "slug", server, "MCP server with the slug")
        result: dict[str, Any] = await c.request("GET", f"/api/v1/mcp-servers/{server_id}/tools")
        return result

    result = call(url, token, data_dir, work)
    if as_json:
        print_json(result)
    elif result.get("ok"):
        console = out()
        console.print(f"[green]ok[/green]: {len(result.get('tools') or [])} tool(s)", highlight=False)
        table(result.get("tools") or [], [("TOOL", "name"), ("DESCRIPTION", lambda t: _short(t.get("description"), 80))], empty="no tools")
    else:
        error = result.get("error") or {}
        err.print(f"[red]failed[/red] ({escape(str(error.get('code', '')))}): {escape(str(error.get('message', '')))}")
    if not result.get("ok"):
        raise typer.Exit(1)


async def _resolve(c: ChatdClient, path: str, key: str, value: str, what: str) -> str:
    """`value` as an id: itself when it is one, else the id of the row of the list at `path`
    whose `key` is `value` (a slug, a username: unique)."""
    if is_uuid(value):
        return value
    found = [r for r in await c.list_all(path) if r.get(key) == value]
    if not found:
        raise ClientError(f"No {what} {value!r}.", 404)
    return str(found[0]["id"])


# --- providers and models ----------------------------------------------------------------------


@providers_app.command("list")
def providers_list(url: Url = None, token: Token = None, data_dir: DataDir = None, as_json: Json = False) -> None:
    """The configured model providers."""
    rows = call(url, token, data_dir, lambda c: c.list_all("/api/v1/providers"))
    if as_json:
        print_json(rows)
        return
    table(
        rows,
        [("ID", "id"), ("NAME", "name"), ("KIND", "provider"), ("DISPLAY NAME", "display_name"), ("BASE URL", "base_url"), ("KEY SET", "api_key_set"), ("ENABLED", "enabled")],
        empty="no providers",
    )


@models_app.command("list")
def models_list(url: Url = None, token: Token = None, data_dir: DataDir = None, as_json: Json = False) -> None:
    """The model configurations chats can use (the default is marked)."""
    rows = call(url, token, data_dir, lambda c: c.list_all("/api/v1/model-configs"))
    if as_json:
        print_json(rows)
        return
    table(
        rows,
        [
            ("ID", "id"), ("PROVIDER", "provider_name"), ("MODEL", "model"), ("NAME", "display_name"),
            ("CONTEXT", "context_limit"), ("DEFAULT", "is_default"), ("ENABLED", "enabled"),
        ],
        empty="no model configurations",
    )


def install(app: typer.Typer, users_app: typer.Typer, tokens_app: typer.Typer, mcp_app: typer.Typer) -> None:
    """Add the API commands to the `chatd` command (the groups it already has get more verbs)."""
    app.add_typer(chats_app, name="chats")
    app.add_typer(providers_app, name="providers")
    app.add_typer(models_app, name="models")
    users_app.command("list")(users_list)
    users_app.command("disable")(users_disable)
    users_app.command("enable")(users_enable)
    tokens_app.command("list")(tokens_list)
    tokens_app.command("revoke")(tokens_revoke)
    mcp_app.command("list")(mcp_list)
    mcp_app.command("test")(mcp_test)
