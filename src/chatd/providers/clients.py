"""Provider SDK clients shared by every turn of a replica, one per (provider record, kind, key, base URL).

Building an HTTP client costs ~25 ms of CPU (a TLS context with the CA bundle loaded) and a
pydantic-ai model ~1 ms (a price-table lookup); per turn that was a quarter of the daemon's CPU
at 100 concurrent chats. Each turn takes a lease on the shared entry instead. When a provider's
key or URL changes the old entry is retired: new turns get a new one, and the old client is
closed once the last turn using it lets go (closing it earlier would cut their streams).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpcore2
import httpx2
from httpx2._utils import get_environment_proxies
from pydantic_ai.models import Model, get_user_agent
from pydantic_ai.providers import Provider

from chatd.providers.config import ProviderConfig
from chatd.providers.models import build_model, build_provider, check_provider
from chatd.providers.network import AsyncioBackend

log = logging.getLogger(__name__)

_tls: ssl.SSLContext | None = None


def _verified_tls() -> ssl.SSLContext:
    """One verifying TLS context for the process (loading the CA bundle is the costly part)."""
    global _tls
    if _tls is None:
        _tls = httpx2.create_ssl_context()
    return _tls


def _tls_for(base_url: str | None) -> ssl.SSLContext:
    if base_url is not None and urlsplit(base_url).scheme == "http":
        # A plain-http base URL never needs TLS. The context trusts no CA, so a request that did
        # end up on https (it cannot through the SDKs, which only extend the base URL) would fail
        # verification rather than go unverified.
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    return _verified_tls()


# Connection pools per provider client. httpcore's pool walks all its connections whenever a
# request starts or a response closes, and probes every idle one's socket (a poll and anyio's
# attribute lookup each): with 100 streaming turns on one pool that walk was ~5% of the daemon's
# CPU. Spread over 8 pools each walk covers an eighth.
POOL_SHARDS = 8


class _Released(httpx2.AsyncByteStream):
    """A response body that tells its pool shard when it is closed."""

    def __init__(self, stream: httpx2.AsyncByteStream, busy: list[int], shard: int) -> None:
        self._stream = stream
        self._busy = busy
        self._shard = shard
        self._open = True

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream.__aiter__()  # no generator of its own around every chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            if self._open:
                self._open = False
                self._busy[self._shard] -= 1


class ShardedTransport(httpx2.AsyncBaseTransport):
    """httpx2's own transport, several times: each request goes to the pool with the fewest
    requests in flight (the first of them on a tie, so a lone turn's requests reuse one kept-alive
    connection). The connection limit is split between the pools, larger shares first, and the
    choice never takes a full pool while another has room: together they bound connections
    exactly as one pool with the whole limit does."""

    def __init__(self, *, verify: ssl.SSLContext, limits: httpx2.Limits, shards: int = POOL_SHARDS) -> None:
        total = limits.max_connections
        shards = max(1, min(shards, total)) if total is not None else shards
        self._pools = []
        for i in range(shards):
            cap = None if total is None else total // shards + (1 if i < total % shards else 0)
            keep = limits.max_keepalive_connections
            if keep is not None and cap is not None:
                keep = min(keep, cap)
            shard_limits = httpx2.Limits(max_connections=cap, max_keepalive_connections=keep, keepalive_expiry=limits.keepalive_expiry)
            pool = httpx2.AsyncHTTPTransport(verify=verify, limits=shard_limits)
            # The pool httpx2 builds for these limits, on asyncio's streams (`network.py`).
            pool._pool = httpcore2.AsyncConnectionPool(
                ssl_context=verify, max_connections=cap, max_keepalive_connections=keep,
                keepalive_expiry=limits.keepalive_expiry, network_backend=AsyncioBackend(),
            )
            self._pools.append(pool)
        self._busy = [0] * shards

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        busy = self._busy
        shard = busy.index(min(busy))
        busy[shard] += 1
        try:
            response = await self._pools[shard].handle_async_request(request)
        except BaseException:
            busy[shard] -= 1
            raise
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        response.stream = _Released(response.stream, busy, shard)
        return response

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()


def _environment_proxies(verify: ssl.SSLContext, limits: httpx2.Limits) -> dict[str, httpx2.AsyncBaseTransport | None]:
    """The mounts httpx2's client makes for HTTP(S)_PROXY, ALL_PROXY and NO_PROXY when it builds its
    own transport (given one, it reads no proxy from the environment)."""
    return {
        key: None if url is None else httpx2.AsyncHTTPTransport(verify=verify, limits=limits, proxy=httpx2.Proxy(url=url))
        for key, url in get_environment_proxies().items()
    }


def _same_provider(a: ProviderConfig, b: ProviderConfig) -> bool:
    if a.source is not None or b.source is not None:
        return a.source == b.source
    return a.kind == b.kind


@dataclass(eq=False)
class _Entry:
    config: ProviderConfig
    client: httpx2.AsyncClient
    provider: Provider[Any]
    models: dict[str, Model] = field(default_factory=dict)
    leases: int = 0
    retired: bool = False


class ProviderLease:
    """A turn's hold on a shared provider; `release()` once the turn (or side call) is done."""

    def __init__(self, owner: ProviderClients, entry: _Entry) -> None:
        self._owner = owner
        self._entry = entry
        self._held = True
        entry.leases += 1

    def model(self, name: str) -> Model:
        entry = self._entry
        model = entry.models.get(name)
        if model is None:
            model = entry.models[name] = build_model(entry.config, name, entry.provider)
        return model

    def retain(self) -> ProviderLease:
        """Another hold on the same provider, for work that may outlive this one (a title)."""
        return ProviderLease(self._owner, self._entry)

    async def release(self) -> None:
        if not self._held:
            return
        self._held = False
        self._entry.leases -= 1
        await self._owner._close_if_done(self._entry)


class ProviderClients:
    """The replica's provider clients. `lease(config)` returns the shared one for that config."""

    def __init__(self, *, max_connections: int = 1000, timeout: float = 600.0, connect_timeout: float = 5.0) -> None:
        # Streams hold their connection for the whole answer: keep as many alive as may run at
        # once, or every turn beyond the keep-alive limit pays a new connection (and handshake).
        self._limits = httpx2.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._timeout = httpx2.Timeout(timeout, connect=connect_timeout)
        self._current: dict[ProviderConfig, _Entry] = {}
        self._retired: list[_Entry] = []
        # HTTP clients built so far (exposed for tests and metrics).
        self.clients_built = 0

    @property
    def open_clients(self) -> int:
        """Clients not closed yet: the current ones and retired ones still used by a turn."""
        return len(self._current) + len(self._retired)

    async def lease(self, config: ProviderConfig) -> ProviderLease:
        """Raises ProviderNotConfigured (before building anything) when the config cannot work."""
        entry = self._current.get(config)
        if entry is not None:
            return ProviderLease(self, entry)
        check_provider(config)
        tls = _tls_for(config.base_url)
        client = httpx2.AsyncClient(
            timeout=self._timeout, transport=ShardedTransport(verify=tls, limits=self._limits),
            mounts=_environment_proxies(tls, self._limits), headers={"User-Agent": get_user_agent()},
        )
        self.clients_built += 1
        entry = _Entry(config, client, build_provider(config, client))
        # A new key or URL for a provider replaces its old entry. Providers are told apart by
        # their record (several may share a kind); a config built without one by its kind.
        stale = [e for c, e in self._current.items() if _same_provider(c, config)]
        self._current[config] = entry
        # Held before closing the stale clients: another change while one closes may retire this
        # entry too, and a retired entry without leases is closed at once.
        lease = ProviderLease(self, entry)
        for old in stale:
            await self._retire(old)
        return lease

    async def _retire(self, entry: _Entry) -> None:
        if self._current.get(entry.config) is entry:
            del self._current[entry.config]
        entry.retired = True
        self._retired.append(entry)
        await self._close_if_done(entry)

    async def _close_if_done(self, entry: _Entry) -> None:
        if entry.retired and entry.leases == 0 and entry in self._retired:
            self._retired.remove(entry)
            await entry.client.aclose()

    async def close(self) -> None:
        """Close every client (shutdown: no turn runs any more)."""
        entries = [*self._current.values(), *self._retired]
        self._current.clear()
        self._retired.clear()
        for entry in entries:
            try:
                await entry.client.aclose()
            except Exception:
                log.warning("closing the %s client failed", entry.config.kind, exc_info=True)
