"""The `chatd` command: serve, migrate, users, tokens."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from chatd.domain.chat import UserRole
from chatd.settings import Settings

app = typer.Typer(no_args_is_help=True, help="chatd: a self-hostable agent chat daemon.")
users_app = typer.Typer(no_args_is_help=True, help="Manage users.")
tokens_app = typer.Typer(no_args_is_help=True, help="Manage API tokens.")
app.add_typer(users_app, name="users")
app.add_typer(tokens_app, name="tokens")
console = Console(stderr=True)

DataDir = Annotated[Path | None, typer.Option("--data-dir", envvar="CHATD_DATA_DIR", help="Where the SQLite database and secrets live.")]
DatabaseUrl = Annotated[str | None, typer.Option("--database-url", envvar="CHATD_DATABASE_URL", help="postgresql://… (default: SQLite in the data dir).")]


def _settings(data_dir: Path | None, database_url: str | None, **more: Any) -> Settings:
    values: dict[str, Any] = {k: v for k, v in more.items() if v is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    if database_url is not None:
        values["database_url"] = database_url
    return Settings(**values)


@app.command()
def serve(
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    host: Annotated[str | None, typer.Option(envvar="CHATD_HOST")] = None,
    port: Annotated[int | None, typer.Option(envvar="CHATD_PORT")] = None,
    no_api: Annotated[bool, typer.Option("--no-api", help="Run workers only (a worker replica).")] = False,
    no_workers: Annotated[bool, typer.Option("--no-workers", help="Serve the API without running chats.")] = False,
    workers: Annotated[
        int | None,
        typer.Option("--workers", envvar="CHATD_WORKERS", min=1, help="Processes on this machine sharing the port, each a whole replica (PostgreSQL only)."),
    ] = None,
) -> None:
    """Migrate, then serve the API and run the workers in one process (or --workers N)."""
    from chatd.server import run

    settings = _settings(data_dir, database_url, host=host, port=port, workers=workers)
    if no_workers:
        settings.run_workers = False
    from chatd import logs

    logs.configure(settings.log_level, replica=settings.replica_id)
    if settings.workers > 1:
        from chatd.supervisor import supervise

        code = _run_cli(supervise(settings, api=not no_api))
        if code:
            raise typer.Exit(code)
        return
    # A port in use (CannotListen) and the like end in one line, not a traceback.
    _run_cli(run(settings, api=not no_api))


@app.command()
def worker(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Run workers only (no API): a worker replica."""
    serve(data_dir=data_dir, database_url=database_url, host=None, port=None, no_api=True, no_workers=False, workers=None)


@app.command()
def migrate(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Upgrade the database schema to the latest version."""
    from chatd.store.database import Database
    from chatd.store.migrate import migrate as run_migrate

    settings = _settings(data_dir, database_url)
    if not settings.database_url:
        settings.data_dir.mkdir(parents=True, exist_ok=True)

    async def go() -> None:
        db = Database(settings.resolved_database_url())
        try:
            await run_migrate(db)
        finally:
            await db.dispose()

    asyncio.run(go())
    console.print("[green]migrated[/green]")


@users_app.command("create")
def users_create(
    username: str,
    role: Annotated[UserRole, typer.Option(help="admin or member")] = UserRole.MEMBER,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    token: Annotated[bool, typer.Option("--token/--no-token", help="Also create and print an API token.")] = True,
) -> None:
    """Create a user (and print an API token for them)."""
    from chatd.bootstrap import build
    from chatd.store import users as user_store

    async def go() -> None:
        a = await build(_settings(data_dir, database_url))
        try:
            u = await user_store.create_user(a.db, a.clock.now(), username, role)
            console.print(f"created {u.role.value} [bold]{u.username}[/bold] ({u.id})")
            if token:
                print(await user_store.create_token(a.db, a.clock.now(), u.id, "cli"))
        finally:
            await a.close()

    _run_cli(go())


@tokens_app.command("create")
def tokens_create(
    username: str,
    name: Annotated[str, typer.Option(help="A label for the token.")] = "cli",
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create an API token for a user and print it (shown once)."""
    from chatd.bootstrap import build
    from chatd.store import users as user_store

    async def go() -> None:
        a = await build(_settings(data_dir, database_url))
        try:
            u = await user_store.get_user_by_name(a.db, username)
            print(await user_store.create_token(a.db, a.clock.now(), u.id, name))
        finally:
            await a.close()

    _run_cli(go())


def _run_cli(coro: Any) -> Any:
    from chatd.errors import ChatdError

    try:
        return asyncio.run(coro)
    except ChatdError as exc:
        # One line whatever the terminal's width (rich would wrap it at 80 columns in a pipe).
        console.print(f"[red]error:[/red] {escape(exc.message)}", soft_wrap=True, highlight=False)
        raise typer.Exit(1) from exc


@app.command("workspace-agent")
def workspace_agent(
    directory: Annotated[Path, typer.Option("--dir", help="The workspace directory the agent serves.")],
    token_file: Annotated[Path, typer.Option("--token-file", help="A file holding the bearer token (mode 0600).")],
    listen: Annotated[str, typer.Option("--listen", help="HOST:PORT; port 0 picks a free one (printed on stdout).")] = "127.0.0.1:0",
    allow_outside: Annotated[bool, typer.Option("--allow-outside", help="Let file requests reach paths outside --dir.")] = False,
    allow_remote: Annotated[bool, typer.Option("--allow-remote", help="Allow a non-loopback --listen address.")] = False,
    commands: Annotated[bool, typer.Option("--commands/--no-commands", help="Serve the process endpoints (execute).")] = True,
    run_as: Annotated[str | None, typer.Option("--run-as", help="UID[:GID] commands run as (the agent must be root).")] = None,
) -> None:
    """Run the workspace agent: files, processes and instructions of one directory, over HTTP."""
    from chatd import logs
    from chatd.workspace.agent import parse_run_as, run

    logs.configure("warning")
    try:
        run(
            directory.resolve(), listen, token_file, allow_outside=allow_outside, allow_remote=allow_remote,
            commands=commands, run_as=parse_run_as(run_as),
        )  # fmt: skip
    except (ValueError, OSError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc


@app.command("chat")
def chat(
    message: Annotated[str | None, typer.Argument(help="What to ask the agent (none: an interactive session).")] = None,
    url: Annotated[str | None, typer.Option("--url", envvar="CHATD_URL", help="The chatd server (default: http://HOST:PORT of the settings).")] = None,
    token: Annotated[str | None, typer.Option("--token", envvar="CHATD_TOKEN", help="An API token (default: the admin token in the data dir).")] = None,
    data_dir: DataDir = None,
    chat_id: Annotated[str | None, typer.Option("--chat", help="Send to this chat (its id, or its start as `chatd chats list` shows it) instead of starting a new one.")] = None,
    title: Annotated[str | None, typer.Option("--title", help="The new chat's title.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="A model config id (default: the server's default).")] = None,
    reasoning: Annotated[bool, typer.Option("--reasoning/--no-reasoning", help="Show the model's reasoning.")] = True,
) -> None:
    """Chat with a running server: start a chat (or send to --chat) and show its stream live until
    the agent is done. Exit status 1 when the turn ends in an error, 3 when the chat waits for an
    answer (a question, an approval: answer it in a session or the web UI). Without a message: an
    interactive session (type to send or queue, /steer, /interrupt or Ctrl-C, /quit or Ctrl-D) that
    also asks for the answers a chat waits for."""
    from rich.console import Console as StdoutConsole

    from chatd.client import ChatdClient, ChatView, ClientError
    from chatd.remote import target

    settings = _settings(data_dir, None)
    url, token = target(url, token, data_dir)
    out = StdoutConsole()
    following: dict[str, str] = {}
    if message is None:
        import sys

        from chatd.terminal import Session

        async def session() -> int:
            async with ChatdClient(url, token) as client:
                return await Session(
                    client, out, chat_id=await client.resolve_chat_id(chat_id) if chat_id else None, title=title, model=model, reasoning=reasoning,
                    history_file=settings.data_dir / "chat-history", interactive=sys.stdin.isatty(),
                ).run()

        try:
            raise typer.Exit(asyncio.run(session()))
        except ClientError as exc:
            console.print(f"[red]error:[/red] {exc.message}")
            raise typer.Exit(2) from exc

    async def go() -> str:
        async with ChatdClient(url, token) as client:
            if chat_id:
                whole = await client.resolve_chat_id(chat_id)
                sent = await client.send_message(whole, message)
                following["id"] = whole
                # Everything before the message just sent is history: follow from there.
                after = sent["message"]["id"] - 1 if sent.get("message") else max((m["id"] for m in await client.messages(whole)), default=0)
            else:
                created = await client.create_chat(message, title=title, model_config_id=model)
                following["id"], after = created["id"], 0
                console.print(f"[dim]chat {created['id']}: {created['title']}[/dim]")
            done = await client.follow(following["id"], ChatView(out, reasoning=reasoning), after)
            return str(done["status"])

    try:
        status = asyncio.run(go())
    except ClientError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from exc
    except KeyboardInterrupt:
        if "id" in following:
            console.print(f"\n[dim]stopped following; chat {following['id']} goes on on the server[/dim]")
        raise typer.Exit(130) from None
    if status == "error":
        raise typer.Exit(1)
    if status == "requires_action":
        console.print(f"[dim]chat {following['id']} waits for an answer: chatd chat --chat {following['id']}[/dim]")
        raise typer.Exit(3)


mcp_app = typer.Typer(no_args_is_help=True, help="MCP client tools.")
app.add_typer(mcp_app, name="mcp")


@mcp_app.command("conformance-client")
def mcp_conformance_client(
    url: Annotated[str, typer.Argument(help="The MCP server URL (the conformance suite appends it).")],
    scenario: Annotated[str | None, typer.Option("--scenario", envvar="MCP_CONFORMANCE_SCENARIO", help="The conformance scenario.")] = None,
    context: Annotated[str | None, typer.Option("--context", envvar="MCP_CONFORMANCE_CONTEXT", help="Scenario context (JSON).")] = None,
) -> None:
    """Run chatd's MCP client against URL the way the official conformance suite expects
    (`npx @modelcontextprotocol/conformance client --command "chatd mcp conformance-client"`)."""
    from chatd.errors import ChatdError
    from chatd.mcp.conformance import Scenario, run_scenario

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(run_scenario(url, Scenario.parse(scenario, context)))
    except ChatdError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from exc


def _install_remote() -> None:
    from chatd.remote import install

    install(app, users_app, tokens_app, mcp_app)


_install_remote()

if __name__ == "__main__":
    app()
