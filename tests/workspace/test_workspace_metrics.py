"""chatd_workspace_agents_running follows the agents a replica starts and stops (real agents,
started by the local provisioner)."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import REGISTRY

from chatd.domain.chat import UserRole
from chatd.domain.clock import ManualClock
from chatd.domain.parts import TextPart
from chatd.store import chats as chat_store
from chatd.store import users as user_store
from chatd.store import workspaces as ws_store
from chatd.store.database import Database
from chatd.workspace.manager import WorkspaceManager
from chatd.workspace.provisioner import LocalProvisioner


def running() -> float:
    return REGISTRY.get_sample_value("chatd_workspace_agents_running") or 0.0


async def test_the_agents_gauge_follows_start_stop_and_close(db: Database, tmp_path: Path) -> None:
    clock = ManualClock()
    manager = WorkspaceManager(ws_store.SqlWorkspaceRecords(db, clock), {"local": LocalProvisioner(tmp_path / "data", sandbox="none")})
    before = running()
    try:
        user = await user_store.create_user(db, clock.now(), "alice", UserRole.MEMBER)
        created = await chat_store.create_chat(db, clock.now(), owner_id=user.id, title="t", content=[TextPart(text="hi")])
        template = await ws_store.create_template(db, clock.now(), name="empty")
        outcome = await manager.create_for_chat(created.chat.id, user.id, template.id)
        assert outcome.agent_ready
        assert running() - before == 1
        await manager.stop_workspace(outcome.workspace.id)
        assert running() == before
        await manager.start_for_chat(created.chat.id)
        assert running() - before == 1
    finally:
        await manager.close()
    assert running() == before
