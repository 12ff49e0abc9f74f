"""Templates and workspaces in the store, and the manager over them, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from chatd.domain.chat import UserRole
from chatd.domain.clock import ManualClock
from chatd.domain.parts import TextPart
from chatd.domain.workspace import TemplateParameter, WorkspaceStatus
from chatd.errors import Conflict, InvalidInput, NotFound
from chatd.store import chats as chat_store
from chatd.store import tables
from chatd.store import users as user_store
from chatd.store import workspaces as ws_store
from chatd.store.database import Database
from chatd.workspace.manager import WorkspaceManager, resolve_parameters, workspace_name
from chatd.workspace.provisioner import LocalProvisioner, ProvisionFailed

from .conftest import wait_until_dead


async def test_migration_matches_the_workspace_tables(db: Database) -> None:
    def diff(conn: Connection) -> list[Any]:
        found = compare_metadata(MigrationContext.configure(conn), tables.metadata)
        return [d for d in found if _table_of(d) in ("templates", "workspaces")]

    async with db.engine.connect() as conn:
        assert await conn.run_sync(diff) == []


def _table_of(d: Any) -> str | None:
    """The table a compare_metadata entry is about (entries are tuples, or lists of modify_* tuples)."""
    if isinstance(d, list):
        return _table_of(d[0])
    kind, obj = d[0], d[1]
    if kind in ("add_table", "remove_table"):
        return str(obj.name)
    if kind in ("add_index", "remove_index", "add_constraint", "remove_constraint", "add_fk", "remove_fk"):
        return str(obj.table.name)
    if kind.startswith("modify_") or kind in ("add_column", "remove_column"):
        return str(d[2])
    return None


async def test_templates_are_created_listed_and_soft_deleted(db: Database) -> None:
    clock = ManualClock()
    t = await ws_store.create_template(
        db, clock.now(), name="python", display_name="Python", source_path="/srv/py",
        parameters=[TemplateParameter(name="version", default="3.12", description="Python version")],
    )  # fmt: skip
    assert (t.name, t.display_name, t.source_path, t.git_url, t.deprecated) == ("python", "Python", "/srv/py", None, False)
    assert t.parameters == [TemplateParameter(name="version", description="Python version", default="3.12", required=False)]
    assert await ws_store.get_template(db, t.id) == t
    with pytest.raises(Conflict):
        await ws_store.create_template(db, clock.now(), name="python")
    with pytest.raises(InvalidInput):
        await ws_store.create_template(db, clock.now(), name="both", git_url="https://x", source_path="/y")
    other = await ws_store.create_template(db, clock.now(), name="go")
    assert [x.name for x in await ws_store.list_templates(db)] == ["go", "python"]
    await ws_store.set_template_deprecated(db, clock.now(), other.id, True)
    assert [x.name for x in await ws_store.list_templates(db)] == ["python"]
    assert [x.name for x in await ws_store.list_templates(db, include_deprecated=True)] == ["go", "python"]
    await ws_store.delete_template(db, clock.now(), t.id)
    with pytest.raises(NotFound):
        await ws_store.get_template(db, t.id)
    again = await ws_store.create_template(db, clock.now(), name="python")  # the name is free again
    assert again.id != t.id


async def test_workspaces_are_owned_and_attached_to_chats(db: Database) -> None:
    clock = ManualClock()
    alice = await user_store.create_user(db, clock.now(), "alice", UserRole.MEMBER)
    bob = await user_store.create_user(db, clock.now(), "bob", UserRole.MEMBER)
    t = await ws_store.create_template(db, clock.now(), name="empty")
    ws = await ws_store.create_workspace(
        db, clock.now(), owner_id=alice.id, name="empty-1a2b", provisioner="local", directory="/d", template_id=t.id,
        parameters={"a": "b"},
    )  # fmt: skip
    assert (ws.status, ws.parameters, ws.template_id, ws.agent_url) == (WorkspaceStatus.PROVISIONING, {"a": "b"}, t.id, None)
    with pytest.raises(Conflict):
        await ws_store.create_workspace(db, clock.now(), owner_id=alice.id, name="empty-1a2b", provisioner="local", directory="/e")
    # The same name for another owner is fine.
    await ws_store.create_workspace(db, clock.now(), owner_id=bob.id, name="empty-1a2b", provisioner="local", directory="/f")
    clock.advance(5)
    running = await ws_store.set_workspace_status(db, clock.now(), ws.id, WorkspaceStatus.RUNNING, agent_url="http://127.0.0.1:1")
    assert (running.status, running.agent_url, running.updated_at) == (WorkspaceStatus.RUNNING, "http://127.0.0.1:1", clock.now())
    failed = await ws_store.set_workspace_status(db, clock.now(), ws.id, WorkspaceStatus.FAILED, last_error="boom")
    assert (failed.agent_url, failed.last_error) == ("http://127.0.0.1:1", "boom")
    assert [w.id for w in await ws_store.list_workspaces(db, owner_id=alice.id)] == [ws.id]
    with pytest.raises(NotFound):
        await ws_store.get_workspace(db, ws.id, owner_id=bob.id)

    created = await chat_store.create_chat(db, clock.now(), owner_id=alice.id, title="t", content=[TextPart(text="hi")])
    chat_id = created.chat.id
    assert await ws_store.chat_workspace_id(db, chat_id) is None
    await ws_store.attach_workspace(db, chat_id, ws.id)
    assert await ws_store.chat_workspace_id(db, chat_id) == ws.id
    assert (await chat_store.get_chat(db, chat_id)).workspace_id == ws.id
    bobs = await ws_store.list_workspaces(db, owner_id=bob.id)
    with pytest.raises(NotFound):
        await ws_store.attach_workspace(db, chat_id, bobs[0].id)
    with pytest.raises(NotFound):
        await ws_store.attach_workspace(db, uuid.uuid4(), ws.id)


# --- the manager over the store and the local provisioner -----------------------------------------


@pytest.fixture
async def manager(db: Database, tmp_path: Path) -> AsyncIterator[WorkspaceManager]:
    m = WorkspaceManager(
        ws_store.SqlWorkspaceRecords(db, ManualClock()), {"local": LocalProvisioner(tmp_path / "data", sandbox="none")}
    )
    try:
        yield m
    finally:
        await m.close()


async def _chat(db: Database) -> tuple[uuid.UUID, uuid.UUID]:
    clock = ManualClock()
    user = await user_store.create_user(db, clock.now(), f"u{uuid.uuid4().hex[:6]}", UserRole.MEMBER)
    created = await chat_store.create_chat(db, clock.now(), owner_id=user.id, title="t", content=[TextPart(text="hi")])
    return created.chat.id, user.id


async def test_create_for_chat_is_idempotent_and_start_restarts(db: Database, manager: WorkspaceManager, tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "main.py").write_text("print(1)\n")
    t = await ws_store.create_template(db, ManualClock().now(), name="Py Project", source_path=str(source))
    chat_id, owner_id = await _chat(db)
    with pytest.raises(InvalidInput):
        await manager.start_for_chat(chat_id)

    first = await manager.create_for_chat(chat_id, owner_id, t.id)
    assert (first.created, first.already_existed, first.agent_ready) == (True, False, True)
    assert first.workspace.status is WorkspaceStatus.RUNNING
    assert first.workspace.name.startswith("py-project-")
    assert await ws_store.chat_workspace_id(db, chat_id) == first.workspace.id
    agent = await manager.agent_for(first.workspace.id)
    assert (await agent.read_file("main.py")).content == "     1\tprint(1)"

    again = await manager.create_for_chat(chat_id, owner_id, t.id)
    assert (again.created, again.already_existed, again.workspace.id) == (False, True, first.workspace.id)

    pid = (await agent.start_process("sleep 1000", background=True)).pid
    stopped = await manager.stop_workspace(first.workspace.id)
    assert stopped.status is WorkspaceStatus.STOPPED
    assert await wait_until_dead(pid or 0)
    started = await manager.start_for_chat(chat_id)
    assert (started.started, started.workspace.status) == (True, WorkspaceStatus.RUNNING)
    fresh = await manager.agent_for(first.workspace.id)
    assert (await fresh.read_file("main.py")).lines_read == 1

    await manager.close()
    assert (await ws_store.get_workspace(db, first.workspace.id)).status is WorkspaceStatus.STOPPED
    # After a server restart, the next use starts the agent again.
    revived = await manager.agent_for(first.workspace.id)
    assert await revived.ping()


async def test_failed_provisioning_marks_the_workspace_and_attaches_nothing(db: Database, manager: WorkspaceManager) -> None:
    t = await ws_store.create_template(db, ManualClock().now(), name="broken", init_script="echo nope; exit 1")
    chat_id, owner_id = await _chat(db)
    with pytest.raises(ProvisionFailed):
        await manager.create_for_chat(chat_id, owner_id, t.id)
    assert await ws_store.chat_workspace_id(db, chat_id) is None
    [ws] = await ws_store.list_workspaces(db, owner_id=owner_id)
    assert (ws.status, ws.last_error) == (WorkspaceStatus.FAILED, "The init script failed (exit code 1): nope")


async def test_template_parameters_and_names_are_checked(db: Database) -> None:
    t = await ws_store.create_template(
        db, ManualClock().now(), name="a_very_long_template_name_that_goes_on_and_on",
        parameters=[TemplateParameter(name="repo", required=True), TemplateParameter(name="branch", default="main")],
    )  # fmt: skip
    assert resolve_parameters(t, {"repo": "x"}) == {"repo": "x", "branch": "main"}
    with pytest.raises(InvalidInput):
        resolve_parameters(t, {})
    with pytest.raises(InvalidInput):
        resolve_parameters(t, {"repo": "x", "nope": "y"})
    generated = workspace_name(t, None)
    assert generated.startswith("a-very-long-template-name-t-") and len(generated) == 27 + 5
    assert workspace_name(t, "mine") == "mine"
    assert workspace_name(t, "not valid!").startswith("a-very-long")



async def test_workspace_migration_downgrades_and_upgrades_again(db: Database) -> None:
    from alembic import command

    from chatd.store.migrate import alembic_config

    def roundtrip(conn: Connection) -> list[str]:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001")
        after_down = sorted(t for t in ("templates", "workspaces") if conn.dialect.has_table(conn, t))
        command.upgrade(cfg, "head")
        return after_down

    async with db.engine.connect() as conn:
        assert await conn.run_sync(roundtrip) == []
        await conn.commit()
    t = await ws_store.create_template(db, ManualClock().now(), name="after-roundtrip")
    assert (await ws_store.get_template(db, t.id)).name == "after-roundtrip"
