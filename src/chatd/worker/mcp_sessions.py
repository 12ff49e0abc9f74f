"""The replica's warm MCP connections (chatd.mcp.pool), kept in step with the admins' changes.

A turn's own fingerprint check already replaces a connection whose config changed, but only
when a turn asks for it; an edited, disabled or deleted server's idle connections (and stdio
processes) would live on until their idle timeout. So every config-change hint (and a pubsub
reconnect, after which hints may have been lost) re-reads the servers the pool holds and
retires what changed.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from chatd.domain.clock import Clock
from chatd.domain.mcp import McpServerConfig
from chatd.mcp.pool import McpPool, ServerHealth
from chatd.pubsub.base import CONFIG_CHANNEL, MCP_CHANNEL, PubSub, Unsubscribe
from chatd.settings import Settings
from chatd.store import mcp_servers as mcp_store
from chatd.store.database import Database
from chatd.store.secrets import SecretBox

log = logging.getLogger(__name__)


class McpSessions:
    def __init__(self, db: Database, box: SecretBox, pubsub: PubSub, settings: Settings, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        self.box = box
        self.pubsub = pubsub
        self.pool = McpPool(
            idle_ttl=settings.mcp_idle_timeout,
            health_check_after=settings.mcp_health_check_after,
            retry_initial=settings.mcp_retry_initial,
            retry_max=settings.mcp_retry_max,
            max_idle=settings.mcp_pool_max_idle,
            on_health=self._record_health,
        )
        self._changed = asyncio.Event()
        self._unsubscribe: Unsubscribe | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        unsubscribe_config = await self.pubsub.subscribe(CONFIG_CHANNEL, self._on_hint)
        unsubscribe_mcp = await self.pubsub.subscribe(MCP_CHANNEL, self._on_reachable)

        async def unsubscribe() -> None:
            await unsubscribe_config()
            await unsubscribe_mcp()

        self._unsubscribe = unsubscribe
        self._task = asyncio.create_task(self._follow(), name="mcp-sessions-follow-config")

    async def _record_health(self, config: McpServerConfig, health: ServerHealth) -> None:
        """A server's health changed here: every replica's status pages read it from the database."""
        await mcp_store.record_status(self.db, self.clock.now(), config.id, health.state, health.reason, tool_count=health.tool_count)

    def _on_hint(self, _payload: dict[str, Any]) -> None:
        self._changed.set()

    def _on_reachable(self, payload: dict[str, Any]) -> None:
        try:
            server_id = uuid.UUID(str(payload.get("reachable")))
        except ValueError:
            return  # a reconnect notice, or garbage: nothing to forget
        self.pool.forget_failures(server_id)

    async def _follow(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            try:
                await self.reconcile()
            except Exception:  # the turns' fingerprints still catch changes; the idle timeout the rest
                log.warning("re-reading the MCP servers of pooled connections failed", exc_info=True)

    async def reconcile(self) -> None:
        ids = sorted(self.pool.server_ids())
        if not ids:
            return
        records = await mcp_store.get_servers(self.db, self.box, ids)
        await self.pool.reconcile({r.id: r for r in records})

    async def close(self) -> None:
        if self._unsubscribe is not None:
            unsubscribe, self._unsubscribe = self._unsubscribe, None
            await unsubscribe()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.pool.close()
