"""The configuration rows every turn reads (its model config, the provider, the owner, the MCP
servers), cached per replica.

Each hit saves a read transaction per turn. An entry is dropped when a change is announced on
`CONFIG_CHANNEL` (the outbox publishes one after a change is committed) and in any case after `ttl`
seconds: notifications are hints, so a lost one (or a change made by a path that does not
announce it) costs at most `ttl` seconds of staleness, never a wrong value for longer.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar, cast

from chatd.domain.config import ModelConfigRecord, ProviderRecord, User
from chatd.domain.mcp import McpServerConfig
from chatd.pubsub.base import CONFIG_CHANNEL, PubSub, Unsubscribe
from chatd.store import mcp_servers as mcp_store
from chatd.store import models as model_store
from chatd.store import users as user_store
from chatd.store.database import Database
from chatd.store.secrets import SecretBox

T = TypeVar("T")
_MISS: Any = object()


class ConfigCache:
    def __init__(
        self, db: Database, box: SecretBox, pubsub: PubSub, *, ttl: float = 5.0, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.db = db
        self.box = box
        self.pubsub = pubsub
        self.ttl = ttl
        self._now = monotonic
        self._entries: dict[Hashable, tuple[float, Any]] = {}
        # Loads under way, with the generation they began in.
        self._loading: dict[Hashable, tuple[int, asyncio.Future[Any]]] = {}
        # Bumped by every invalidation: a load that began before it must not be stored after it.
        self._generation = 0
        self._unsubscribe: Unsubscribe | None = None
        # Reads that went to the database (tests and metrics).
        self.loads = 0

    async def start(self) -> None:
        # Any payload, including the pubsub's own `reconnected` (hints may have been lost), clears.
        self._unsubscribe = await self.pubsub.subscribe(CONFIG_CHANNEL, lambda _payload: self.clear())

    async def close(self) -> None:
        if self._unsubscribe is not None:
            unsubscribe, self._unsubscribe = self._unsubscribe, None
            await unsubscribe()

    def clear(self) -> None:
        self._entries.clear()
        self._generation += 1

    async def _get(self, key: Hashable, load: Callable[[], Awaitable[T]]) -> T:
        hit = self._entries.get(key)
        if hit is not None and hit[0] > self._now():
            return cast(T, hit[1])
        generation = self._generation
        # One load per key at a time: when an entry expires under load, every turn starting in
        # that moment misses at once (at 100 concurrent chats, up to 100 identical reads per TTL).
        # A turn does not join a load that began before an invalidation, and when the load it
        # joined fails (or its caller is cancelled) it loads on its own, as it would have.
        flight = self._loading.get(key) if self.ttl > 0 else None
        if flight is not None and flight[0] == generation:
            value = await asyncio.shield(flight[1])
            if value is not _MISS:
                return cast(T, value)
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._loading[key] = (generation, done)
        value = _MISS
        try:
            self.loads += 1
            value = await load()
            if self.ttl > 0 and generation == self._generation:
                self._entries[key] = (self._now() + self.ttl, value)
            return value
        finally:
            done.set_result(value)
            if self._loading.get(key, (0, None))[1] is done:
                del self._loading[key]

    # --- the reads a turn makes -----------------------------------------------------------

    async def model_config(self, config_id: uuid.UUID) -> ModelConfigRecord:
        return await self._get(("model_config", config_id), lambda: model_store.get_model_config(self.db, config_id))

    async def default_model_config(self) -> ModelConfigRecord | None:
        return await self._get(("default_model_config",), lambda: model_store.get_default_model_config(self.db))

    async def provider(self, provider_id: uuid.UUID) -> ProviderRecord:
        return await self._get(("provider", provider_id), lambda: model_store.get_provider(self.db, self.box, provider_id))

    async def user(self, user_id: uuid.UUID) -> User:
        return await self._get(("user", user_id), lambda: user_store.get_user(self.db, user_id))

    async def mcp_forced_and_default(self) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
        return await self._get(("mcp_forced_and_default",), lambda: mcp_store.forced_and_default(self.db))

    async def mcp_servers(self, ids: list[uuid.UUID]) -> list[McpServerConfig]:
        return await self._get(("mcp_servers", tuple(ids)), lambda: mcp_store.get_servers(self.db, self.box, ids))
