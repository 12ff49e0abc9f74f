"""Composition root: the only module that picks concrete adapters (URL scheme -> store, pubsub)."""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from chatd import logs
from chatd.domain.chat import UserRole
from chatd.domain.clock import Clock, SystemClock
from chatd.errors import Conflict, SecretKeyMismatch
from chatd.providers import ProviderClients, deployment_keys
from chatd.pubsub.base import PubSub
from chatd.pubsub.memory import MemoryPubSub
from chatd.push_service import PushService
from chatd.service import ChatService
from chatd.settings import Settings
from chatd.store import meta as meta_store
from chatd.store import users as user_store
from chatd.store.database import Database
from chatd.store.migrate import migrate
from chatd.store.secrets import SecretBox
from chatd.store.workspaces import SqlWorkspaceRecords
from chatd.streams.hub import StreamHub
from chatd.streams.relay import RelayClient, internal_token
from chatd.worker import TurnDeps, Workers
from chatd.worker.config_cache import ConfigCache
from chatd.worker.mcp_sessions import McpSessions
from chatd.worker.push import WebPush, load_vapid
from chatd.worker.subagents import subagent_provider
from chatd.worker.workspaces import workspace_provider
from chatd.workspace.manager import WorkspaceManager
from chatd.workspace.provisioner import LocalProvisioner

log = logging.getLogger(__name__)


@dataclass
class App:
    """The composed application: every long-lived part of one replica, built once by `build`.
    The API sees it through `api.deps.AppState` (settings, services, the internal token)."""

    settings: Settings
    db: Database
    pubsub: PubSub
    hub: StreamHub
    service: ChatService
    box: SecretBox
    clock: Clock
    internal_token: str
    relay: RelayClient | None
    # Shared by the replica's turns: SDK clients, cached configuration, workspaces.
    providers: ProviderClients
    config: ConfigCache
    # Warm MCP connections, one per (server, user), leased by turns.
    mcp_sessions: McpSessions
    workspaces: WorkspaceManager
    push: PushService
    # Built last: its turns use every part above (`turn_deps`).
    workers: Workers | None = None
    # Set when the process stops: open streams end, so clients reconnect to a live replica
    # instead of holding the stopping one open (uvicorn waits for every connection to close).
    closing: asyncio.Event = field(default_factory=asyncio.Event)

    async def close(self) -> None:
        await self.config.close()
        # After the workers stopped (their turns gave their leases back): stdio servers end here.
        await self.mcp_sessions.close()
        await self.providers.close()
        await self.push.web_push.close()
        await self.workspaces.close()
        if self.relay is not None:
            await self.relay.close()
        await self.pubsub.close()
        await self.db.dispose()


def make_pubsub(db: Database) -> PubSub:
    if db.is_postgres:
        from chatd.pubsub.postgres import PostgresPubSub

        return PostgresPubSub(db.url)
    return MemoryPubSub()


async def build(settings: Settings, *, clock: Clock | None = None, run_migrations: bool = True) -> App:
    clock = clock or SystemClock()
    # Secrets never reach a log line, whoever configured logging (SPEC: safe by default).
    logs.install_redaction()
    for secret in (settings.secret_key, settings.vapid_private_key, *deployment_keys(settings).values()):
        logs.register_secret(secret)
    url = settings.resolved_database_url()
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(url)
    if run_migrations:
        await migrate(db)
    box = SecretBox.from_settings(settings.secret_key, settings.data_dir)
    try:
        await verify_secret_key(db, box, settings)
    except BaseException:
        await db.dispose()
        raise
    pubsub = make_pubsub(db)
    await pubsub.start()
    token = internal_token(box.derive("replicas"))
    logs.register_secret(token)
    relay = RelayClient(db, token) if db.is_postgres else None
    hub = StreamHub(
        db, pubsub, part_buffer=settings.stream_part_buffer, subscriber_queue=settings.stream_subscriber_queue,
        message_cache=settings.stream_message_cache, replica_id=settings.replica_id, relay_client=relay,
        coalesce_window=settings.stream_coalesce_ms / 1000, coalesce_parts=settings.stream_coalesce_parts,
    )
    service = ChatService(db, hub, pubsub, box, clock, settings)
    config = ConfigCache(db, box, pubsub, ttl=settings.config_cache_ttl)
    await config.start()
    mcp_sessions = McpSessions(db, box, pubsub, settings, clock)
    await mcp_sessions.start()
    # MCP Apps' requests (views, tools/call from a view) share the turns' warm connections.
    service.mcp_pool = mcp_sessions.pool
    app = App(
        settings, db, pubsub, hub, service, box, clock, internal_token=token, relay=relay,
        providers=ProviderClients(max_connections=settings.provider_max_connections),
        config=config,
        mcp_sessions=mcp_sessions,
        workspaces=WorkspaceManager(
            SqlWorkspaceRecords(db, clock), {"local": LocalProvisioner(settings.data_dir, sandbox=settings.workspace_sandbox)}
        ),
        push=make_push(db, box, clock, settings),
    )
    app.workers = make_workers(app)
    return app


async def verify_secret_key(db: Database, box: SecretBox, settings: Settings) -> None:
    """Refuse to start with a key other than the one the database's secrets are sealed with.

    The first start records the key's fingerprint (`store.meta`); every later start of every
    replica compares. A database from before fingerprints is checked by opening one sealed value.
    """
    where = "CHATD_SECRET_KEY" if settings.secret_key else f"{settings.data_dir / 'secret-key'} (or CHATD_SECRET_KEY)"
    mismatch = SecretKeyMismatch(
        f"The secret key in {where} is not the key this database was set up with; start with the "
        "key the other replicas use (set CHATD_SECRET_KEY or copy <data dir>/secret-key), or, if that key "
        "is lost, start once with CHATD_SECRET_KEY_RESET=true."
    )
    mine = box.fingerprint()
    stored = await meta_store.get_value(db, meta_store.KEY_FINGERPRINT)
    matches = True
    if stored is None:
        sample = await meta_store.a_sealed_value(db)
        if sample is not None:
            try:
                box.open(sample)
            except ValueError:
                matches = False
        if matches:
            matches = hmac.compare_digest(await meta_store.claim_value(db, meta_store.KEY_FINGERPRINT, mine), mine)
    else:
        matches = hmac.compare_digest(stored, mine)
    if matches:
        return
    if not settings.secret_key_reset:
        raise mismatch
    # The operator lost the old key and says so: this key becomes the deployment's. Secrets sealed
    # with the old one stay unreadable until they are entered again.
    log.warning("CHATD_SECRET_KEY_RESET: this secret key replaces the database's; re-enter provider keys and MCP credentials")
    await meta_store.set_value(db, meta_store.KEY_FINGERPRINT, mine)


def turn_deps(app: App) -> TurnDeps:
    deps = TurnDeps(
        db=app.db, hub=app.hub, pubsub=app.pubsub, box=app.box, clock=app.clock, settings=app.settings,
        providers=app.providers, config=app.config, mcp_pool=app.mcp_sessions.pool,
        # OAuth2 tokens refreshed when due, single-flight per (user, server).
        token_source=app.service.mcp_auth.tokens_for,
        reauthorize=app.service.mcp_auth.refresh_after_unauthorized,
    )
    deps.tool_providers.append(workspace_provider(app.workspaces))
    deps.workspace_aware = True
    deps.end_hooks.append(app.push.web_push.on_turn_end)
    deps.ask_hooks.append(app.push.web_push.on_ask)
    deps.tool_providers.append(subagent_provider(app.db, app.hub, app.pubsub, app.clock, max_queued=app.settings.max_queued_messages))
    return deps


def make_push(db: Database, box: SecretBox, clock: Clock, s: Settings) -> PushService:
    """Web push: VAPID keys from the settings, or `<data dir>/vapid-private.pem` (made once)."""
    return PushService(
        db, box, clock, WebPush(db, box, load_vapid(s), allow_private=s.push_allow_private), allow_http=s.push_allow_http
    )


def make_workers(app: App, deps: TurnDeps | None = None) -> Workers:
    return Workers(deps or turn_deps(app), worker_id=app.settings.replica_id, address=app.settings.resolved_internal_url())


async def ensure_admin(app: App) -> str | None:
    """On first start with an empty database: create an admin, write its token to
    `data_dir/admin-token` (mode 0600) and return the token."""
    if await user_store.count_users(app.db) > 0:
        return None
    try:
        admin = await user_store.create_user(app.db, app.clock.now(), "admin", UserRole.ADMIN)
    except Conflict:
        # Replicas started together on an empty database: another one made the first admin.
        return None
    token = await user_store.create_token(app.db, app.clock.now(), admin.id, "admin (first start)")
    write_secret_file(app.settings.data_dir / "admin-token", token)
    return token


def write_secret_file(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(content + "\n")
    os.chmod(path, 0o600)
