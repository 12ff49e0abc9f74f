"""The use cases the API calls. Authorisation and validation here; each store call is one
transaction; stream notifications are published after the commit, never before."""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.fernet import InvalidToken
from sqlalchemy import text

from chatd.domain.actions import Answer, ClientTool, PendingAction
from chatd.domain.changes import (
    ActionsResolved,
    Change,
    ChatArchived,
    ChatCreated,
    ConfigChanged,
    HistoryReplaced,
    McpServerReachable,
    MessagesAdded,
    QueueChanged,
    StatusChanged,
    WorkAvailable,
    status_changes,
)
from chatd.domain.chat import (
    BusyBehavior,
    Chat,
    ChatStatus,
    Message,
    QueuedMessage,
    UserRole,
)
from chatd.domain.clock import Clock
from chatd.domain.config import (
    ApiToken,
    ModelConfigRecord,
    ModelOptions,
    Pricing,
    ProviderRecord,
    StoredFile,
    UsageLimit,
    UsageStatus,
    User,
)
from chatd.domain.mcp import (
    McpAuthType,
    McpAvailability,
    McpHealth,
    McpServerConfig,
    McpStatusView,
    McpTransport,
    McpUserToken,
    OAuth2GrantType,
)
from chatd.domain.net import has_userinfo
from chatd.domain.parts import FilePart, Part, TextPart, text_of
from chatd.domain.titles import fallback_title
from chatd.domain.usage import PERIODS
from chatd.domain.workspace import Template, TemplateParameter, Workspace
from chatd.errors import (
    DatabaseUnavailable,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    Unavailable,
    Upstream,
)
from chatd.mcp import (
    AppResourceError,
    AppToolRefused,
    AppView,
    ToolInfo,
    call_app_tool,
    list_tools_check,
    oauth,
    read_app_resource,
    read_app_view,
)
from chatd.mcp.authorization import McpAuthorization
from chatd.mcp.config import OAuthToken, validate_slug
from chatd.mcp.errors import McpAuthError, McpCallError, McpConnectError, McpError
from chatd.mcp.pool import McpPool
from chatd.providers.config import ProviderConfig
from chatd.providers.discovery import ProviderCheckFailed, list_models
from chatd.providers.registry import deployment_keys, provider_spec
from chatd.providers.wire import DiscoveredModel
from chatd.pubsub.base import PubSub
from chatd.settings import Settings
from chatd.store import actions as action_store
from chatd.store import chats as chat_store
from chatd.store import files as file_store
from chatd.store import mcp_oauth as mcp_oauth_store
from chatd.store import mcp_servers as mcp_store
from chatd.store import models as model_store
from chatd.store import usage as usage_store
from chatd.store import users as user_store
from chatd.store import workspaces as workspace_store
from chatd.store.database import Database
from chatd.store.secrets import SecretBox
from chatd.store.stats import DatabaseStats, database_stats
from chatd.streams.hub import ChatEvents, StreamHub
from chatd.streams.outbox import Outbox
from chatd.streams.relay import encode
from chatd.streams.watch import ChatChange, watch_owner


@dataclass(frozen=True, slots=True)
class McpToolsCheck:
    """A live connection check: the tools a server offers now, or why it could not be reached."""

    tools: list[ToolInfo]
    error: McpConnectError | None = None
    # An OAuth2 server that needs the caller to connect (authorize) first.
    needs_authorization: bool = False
    # The server is disabled: no chat uses it, whatever the connection found.
    disabled: bool = False


def _user_oauth(config: McpServerConfig) -> bool:
    """Each user authorizes in a browser: a 401 is that user's, not the server's, problem."""
    return config.auth_type == McpAuthType.OAUTH2 and config.oauth2.grant_type == OAuth2GrantType.AUTHORIZATION_CODE


@dataclass(frozen=True, slots=True)
class ProviderCheck:
    """A provider connection test: the models it lists, or why listing failed."""

    models: list[DiscoveredModel]
    error: ProviderCheckFailed | None = None


@dataclass(frozen=True, slots=True)
class UserSpend:
    user: User
    status: UsageStatus
    # "user" (their own limit), "global" or None (no limit applies).
    limit_scope: str | None


@dataclass(frozen=True, slots=True)
class SendOutcome:
    chat: Chat
    queued: bool
    message: Message | None
    queued_message: QueuedMessage | None


# Tickets chatd issues are a few hundred characters; a longer one is not worth decrypting.
_MAX_TICKET_CHARS = 4096


class ChatService:
    def __init__(
        self,
        db: Database,
        hub: StreamHub,
        pubsub: PubSub,
        box: SecretBox,
        clock: Clock,
        settings: Settings,
    ) -> None:
        self.db = db
        self.hub = hub
        self.pubsub = pubsub
        self.box = box
        self.clock = clock
        # Read at each use: an operator's (or a test's) change applies to the next call.
        self.settings = settings
        # Every change is announced through it, after the commit (`streams/outbox.py`).
        self.outbox = Outbox(hub, pubsub)
        # OAuth2 of MCP servers: browser flow, single-flight refresh, client credentials. Its
        # `tokens_for` is the turn's token source.
        self.mcp_auth = McpAuthorization(mcp_oauth_store.SqlOAuthVault(db, box), clock)
        # The replica's MCP pool (set by bootstrap): an MCP App's requests reuse the chat's
        # warm connection. Without one (tests) each request connects on its own.
        self.mcp_pool: McpPool | None = None
        self._app_tickets = box.ticket_sealer("chatd mcp-app view tickets v1")

    # --- identity ---------------------------------------------------------------------------

    async def authenticate(self, token: str) -> User | None:
        return await user_store.user_by_token(self.db, token, self.clock.now())

    async def still_authorized(self, token: str) -> bool:
        """An open stream's periodic check of its token. It does not count as a use of the token
        (last_used_at stays the last request's), and a database that is unreachable for a moment
        does not end the stream: the check comes again."""
        try:
            return await user_store.user_by_token(self.db, token) is not None
        except DatabaseUnavailable:
            return True

    async def list_users(self, actor: User, *, limit: int, after_username: str | None) -> list[User]:
        _admin(actor)
        return await user_store.list_users(self.db, limit=limit, after_username=after_username)

    async def list_tokens(
        self, actor: User, user_id: uuid.UUID, *, limit: int, after: tuple[datetime, uuid.UUID] | None = None
    ) -> list[ApiToken]:
        """A user's tokens: the user's own, or anyone's for an admin."""
        if not actor.is_admin and actor.id != user_id:
            raise Forbidden("You can only list your own tokens.")
        if actor.id != user_id:
            await user_store.get_user(self.db, user_id)
        return await user_store.list_tokens(self.db, user_id, limit=limit, after=after)

    async def list_user_tokens(
        self, actor: User, user_id: uuid.UUID, *, limit: int, after: tuple[datetime, uuid.UUID] | None = None
    ) -> list[ApiToken]:
        _admin(actor)
        return await self.list_tokens(actor, user_id, limit=limit, after=after)

    async def revoke_token(self, actor: User, token_id: uuid.UUID) -> None:
        """A member revokes their own tokens; an admin any. Another member's token is as unknown
        as one that does not exist."""
        token = await user_store.get_token(self.db, token_id)
        if token.user_id != actor.id and not actor.is_admin:
            raise NotFound("Token not found.")
        await user_store.revoke_token(self.db, token_id)

    async def create_user(self, actor: User, username: str, role: UserRole) -> User:
        _admin(actor)
        username = username.strip()
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", username):
            raise InvalidInput("A username is 1–64 letters, digits, '.', '_' or '-', starting with a letter or digit.")
        return await user_store.create_user(self.db, self.clock.now(), username, role)

    async def set_user_disabled(self, actor: User, user_id: uuid.UUID, disabled: bool) -> User:
        """An admin disables a user (every token of theirs is refused at once; their chats and
        tokens stay, so enabling them again restores access) or enables them again. Admins cannot
        disable themselves: that would lock the last admin out."""
        _admin(actor)
        if disabled and user_id == actor.id:
            raise InvalidInput("You cannot disable yourself.")
        return await user_store.set_user_disabled(self.db, self.clock.now(), user_id, disabled)

    async def create_token(self, actor: User, user_id: uuid.UUID, name: str) -> str:
        if not actor.is_admin and actor.id != user_id:
            raise Forbidden("You can only create tokens for yourself.")
        return await user_store.create_token(self.db, self.clock.now(), user_id, name.strip() or "token")

    async def set_custom_prompt(self, actor: User, prompt: str) -> User:
        if len(prompt.encode()) > 128 * 1024:
            raise InvalidInput("The custom prompt is limited to 128 KiB.")
        user = await user_store.set_custom_prompt(self.db, actor.id, prompt)
        await self._config_changed()
        return user

    async def _config_changed(self) -> None:
        """After committing a change to a provider, model config, MCP server or user: replicas
        drop their cached copies (worker/config_cache.py; a lost hint expires with the TTL)."""
        await self.outbox.publish([ConfigChanged()])

    # --- providers and models (admin) ---------------------------------------------------------

    async def list_providers(self, actor: User) -> list[ProviderRecord]:
        # Members read providers too (API.md); the API leaves out what only admins see.
        return await model_store.list_providers(self.db, self.box)

    async def create_provider(
        self, actor: User, *, provider: str, name: str | None = None, display_name: str | None, api_key: str | None,
        base_url: str | None, enabled: bool,
    ) -> ProviderRecord:
        """`name` is unique (409 when taken) and defaults to the kind: one provider of a kind needs
        no name, a second one does."""
        _admin(actor)
        spec = provider_spec(provider.strip().lower())
        kind = spec.kind
        if spec.needs_base_url and not base_url:
            raise InvalidInput(f"An {kind} provider needs a base_url.")
        _check_url(base_url)
        name = _provider_name(kind if name is None else name)
        record = await model_store.create_provider(
            self.db, self.box, self.clock.now(), name=name, provider=kind, display_name=(display_name or "").strip() or name,
            api_key=api_key or None, base_url=base_url or None, enabled=enabled,
        )
        await self._config_changed()
        return record

    async def update_provider(self, actor: User, provider_id: uuid.UUID, changes: dict[str, Any]) -> ProviderRecord:
        _admin(actor)
        _check_url(changes.get("base_url"))
        if "name" in changes:
            changes = {**changes, "name": _provider_name(str(changes["name"] or ""))}
        if "base_url" in changes and not changes["base_url"]:
            current = await model_store.get_provider(self.db, self.box, provider_id)
            if provider_spec(current.provider).needs_base_url:
                raise InvalidInput(f"An {current.provider} provider needs a base_url.")
            changes = {**changes, "base_url": None}
        record = await model_store.update_provider(self.db, self.box, self.clock.now(), provider_id, changes)
        await self._config_changed()
        return record

    async def delete_provider(self, actor: User, provider_id: uuid.UUID) -> None:
        """Refused (409) while live model configs use the provider."""
        _admin(actor)
        await model_store.delete_provider(self.db, provider_id)
        await self._config_changed()

    async def test_provider(
        self, actor: User, *, provider: str, base_url: str | None, api_key: str | None, provider_id: uuid.UUID | None = None
    ) -> ProviderCheck:
        """List the models of a provider that may not be saved yet. Without a key, a saved
        provider's key is used (the one `provider_id` names, else the first of that kind saved with
        this base URL), or the deployment's, so an edit can be tested without typing the key
        again. Admins only: the URL may point anywhere, loopback included.

        A stored key is reused only for the URL it is stored with (the deployment's only for the
        provider's own API): a key is write-only, and a URL typed here must not carry it to a
        server that would read it."""
        _admin(actor)
        kind = provider_spec(provider.strip().lower()).kind
        _check_url(base_url)
        base_url = base_url or None
        if not api_key:
            if provider_id is not None:
                stored: ProviderRecord | None = await model_store.get_provider(self.db, self.box, provider_id)
                if stored is not None and stored.provider != kind:
                    raise InvalidInput(f"The provider {stored.name!r} is of the kind {stored.provider}, not {kind}.")
            else:
                stored = await model_store.find_provider(self.db, self.box, kind=kind, base_url=base_url)
            # The URL the saved provider (and so every turn) uses, or the provider's own API.
            saved_url = stored is not None and (stored.base_url or None) == base_url
            if saved_url or base_url is None:
                api_key = (stored.api_key if stored and saved_url else None) or deployment_keys(self.settings).get(kind) or None
        return await _discover(ProviderConfig(kind=kind, api_key=api_key, base_url=base_url))

    async def provider_models(self, actor: User, provider_id: uuid.UUID) -> ProviderCheck:
        """The models a saved provider offers now (its key, else the deployment's, as turns use)."""
        _admin(actor)
        p = await model_store.get_provider(self.db, self.box, provider_id)
        key = p.api_key or deployment_keys(self.settings).get(p.provider) or None
        return await _discover(ProviderConfig(kind=p.provider, api_key=key, base_url=p.base_url))

    async def list_model_configs(self, actor: User) -> list[ModelConfigRecord]:
        return await model_store.list_model_configs(self.db)

    async def _provider_ref(self, provider_id: uuid.UUID | None, provider: str | None) -> uuid.UUID | None:
        """A model config's provider: its id, or (older clients) its name, which for providers from
        before names is their kind."""
        if provider_id is not None:
            return provider_id
        if provider is not None and provider.strip():
            return await model_store.provider_id_by_name(self.db, provider.strip().lower())
        return None

    async def create_model_config(
        self, actor: User, *, provider_id: uuid.UUID | None = None, provider: str | None = None, model: str, display_name: str | None,
        context_limit: int, compression_threshold: int, is_default: bool, options: ModelOptions, pricing: Pricing, enabled: bool = True,
    ) -> ModelConfigRecord:
        _admin(actor)
        pid = await self._provider_ref(provider_id, provider)
        if pid is None:
            raise InvalidInput("A model config needs its provider: provider_id (or the provider's name in provider).")
        config = await model_store.create_model_config(
            self.db, self.clock.now(), provider_id=pid, model=model.strip(), display_name=(display_name or model).strip(),
            context_limit=context_limit, compression_threshold=compression_threshold, is_default=is_default, options=options, pricing=pricing,
            enabled=enabled,
        )
        await self._config_changed()
        return config

    async def update_model_config(self, actor: User, config_id: uuid.UUID, changes: dict[str, Any]) -> ModelConfigRecord:
        _admin(actor)
        changes = dict(changes)
        pid = await self._provider_ref(changes.pop("provider_id", None), changes.pop("provider", None))
        if pid is not None:
            changes["provider_id"] = pid
        config = await model_store.update_model_config(self.db, self.clock.now(), config_id, changes)
        await self._config_changed()
        return config

    async def delete_model_config(self, actor: User, config_id: uuid.UUID) -> None:
        _admin(actor)
        await model_store.delete_model_config(self.db, self.clock.now(), config_id)
        await self._config_changed()

    # --- MCP server configs ----------------------------------------------------------------------

    async def list_mcp_servers(self, actor: User) -> list[McpServerConfig]:
        return await mcp_store.list_servers(self.db, self.box, enabled_only=not actor.is_admin)

    async def get_mcp_server(self, actor: User, server_id: uuid.UUID) -> McpServerConfig:
        rec = await mcp_store.get_server(self.db, self.box, server_id)
        if not rec.enabled and not actor.is_admin:
            raise NotFound("MCP server not found.")
        return rec

    async def create_mcp_server(self, actor: User, fields: dict[str, Any]) -> McpServerConfig:
        _admin(actor)
        _validate_mcp_fields(fields, creating=True)
        record = await mcp_store.create_server(self.db, self.box, self.clock.now(), fields)
        await self._config_changed()
        return record

    async def update_mcp_server(self, actor: User, server_id: uuid.UUID, fields: dict[str, Any]) -> McpServerConfig:
        _admin(actor)
        current = await mcp_store.get_server(self.db, self.box, server_id)
        merged = {
            "slug": current.slug, "transport": current.transport.value, "url": current.url, "command": current.command,
            "auth_type": current.auth_type.value, **fields,
            "oauth2": {
                "client_id": current.oauth2.client_id, "client_secret": current.oauth2.client_secret,
                "grant_type": current.oauth2.grant_type, **(fields.get("oauth2") or {}),
            },
        }
        if fields.get("env") is not None:
            # PATCH merges: values are never shown, so an edit names only what changes.
            env = dict(current.env)
            for name, value in fields["env"].items():
                if value is None:
                    env.pop(name, None)
                else:
                    env[name] = value
            fields["env"] = merged["env"] = env
        elif "env" in fields:
            fields.pop("env")
            merged.pop("env")
        if "env" not in merged and current.env:
            merged["env"] = current.env
        _validate_mcp_fields(merged, creating=False)
        record = await mcp_store.update_server(self.db, self.box, self.clock.now(), server_id, fields)
        await self._config_changed()
        return record

    async def delete_mcp_server(self, actor: User, server_id: uuid.UUID) -> None:
        _admin(actor)
        await mcp_store.delete_server(self.db, self.clock.now(), server_id)
        await self._config_changed()

    async def put_mcp_token(self, actor: User, server_id: uuid.UUID, token: McpUserToken) -> None:
        await self.get_mcp_server(actor, server_id)
        await mcp_store.put_token(self.db, self.box, self.clock.now(), token)

    async def get_mcp_token(self, actor: User, server_id: uuid.UUID) -> McpUserToken | None:
        await self.get_mcp_server(actor, server_id)
        return await mcp_store.get_token(self.db, self.box, server_id, actor.id)

    async def delete_mcp_token(self, actor: User, server_id: uuid.UUID) -> None:
        await self.get_mcp_server(actor, server_id)
        await mcp_store.delete_token(self.db, server_id, actor.id)

    async def mcp_statuses(self, actor: User, servers: list[McpServerConfig]) -> dict[uuid.UUID, McpStatusView]:
        """Each server's last known health (any replica's), and whether the caller still has to
        connect an OAuth2 server in the browser."""
        known = await mcp_store.statuses(self.db, [s.id for s in servers])
        tokens = await mcp_store.servers_with_token(self.db, actor.id) if any(map(_user_oauth, servers)) else set()
        return {s.id: McpStatusView(known.get(s.id), _user_oauth(s) and s.id not in tokens) for s in servers}

    async def _record_check(self, config: McpServerConfig, check: McpToolsCheck) -> None:
        """A check is an attempt like a turn's: it updates the server's status, except when one
        user's OAuth grant was refused, which says nothing about the server."""
        tool_count: int | None = None
        if check.error is None:
            health, reason, tool_count = McpHealth.CONNECTED, None, len(check.tools)
            # Turns that skipped it after a failure need not wait out their retry interval.
            await self.outbox.publish([McpServerReachable(config.id)])
        elif isinstance(check.error, McpAuthError):
            if _user_oauth(config):
                return
            health, reason = McpHealth.UNAUTHORIZED, check.error.message
        else:
            health, reason = McpHealth.FAILING, check.error.message
        await mcp_store.record_status(self.db, self.clock.now(), config.id, health, reason, tool_count=tool_count)

    async def check_mcp_tools(self, actor: User, server_id: uuid.UUID) -> McpToolsCheck:
        """Connect now, as the caller (their OAuth2 token, refreshed when due and after a 401).
        A disabled server (admins only reach it) is still connected, so it can be tested before
        it is enabled, but the answer says it is disabled."""
        config = await self.get_mcp_server(actor, server_id)
        disabled = not config.enabled
        token = await self.mcp_auth.token_for(config, actor.id)
        timeouts = {"connect_timeout": self.settings.mcp_connect_timeout, "stdio_connect_timeout": self.settings.mcp_stdio_connect_timeout}
        try:
            try:
                tools = await list_tools_check(config, token, **timeouts)
            except McpAuthError:
                newer = await self.mcp_auth.refresh_after_unauthorized(actor.id, config, token) if token else None
                if newer is None:
                    raise
                tools = await list_tools_check(config, newer, **timeouts)
        except McpAuthError as exc:
            check = McpToolsCheck([], exc, needs_authorization=_user_oauth(config), disabled=disabled)
        except McpConnectError as exc:
            check = McpToolsCheck([], exc, disabled=disabled)
        else:
            check = McpToolsCheck(tools, disabled=disabled)
        await self._record_check(config, check)
        return check

    async def start_mcp_oauth(
        self, actor: User, server_id: uuid.UUID, redirect_uri: str, *, client_metadata_url: str | None = None
    ) -> str:
        """Begin the caller's browser authorization; returns the URL to open."""
        config = await self.get_mcp_server(actor, server_id)
        return await self.mcp_auth.start(config, actor.id, redirect_uri, client_metadata_url=client_metadata_url)

    def mcp_oauth_client_metadata(self, document_url: str, redirect_uri: str) -> dict[str, Any]:
        """chatd's OAuth Client ID Metadata Document, served at `document_url` (public, no secret)."""
        return oauth.client_metadata_document(document_url, redirect_uri)

    async def finish_mcp_oauth(self, *, state: str, code: str | None, error: str | None) -> McpServerConfig:
        """The authorization server's redirect: the state names (and authenticates) the user."""
        done = await self.mcp_auth.finish(state, code, error)
        return await mcp_store.get_server(self.db, self.box, done.server_id)

    # --- MCP Apps (io.modelcontextprotocol/ui) ---------------------------------------------------

    async def _app_server(self, owner_id: uuid.UUID, chat_id: uuid.UUID, server_id: uuid.UUID) -> tuple[McpServerConfig, OAuthToken | None]:
        """The server an MCP App of this chat talks to: the chat must be the user's (else 404, as
        for any chat) and the server one its turns use (named by the chat or forced on) and enabled."""
        chat = await chat_store.get_chat(self.db, chat_id)
        if chat.owner_id != owner_id:
            raise NotFound("Chat not found.")
        forced, _default = await mcp_store.forced_and_default(self.db)
        if server_id not in {*chat.mcp_server_ids, *forced}:
            raise NotFound("This chat does not use that MCP server.")
        config = await mcp_store.get_server(self.db, self.box, server_id)
        if not config.enabled:
            raise NotFound("This chat does not use that MCP server.")
        return config, await self.mcp_auth.token_for(config, owner_id)

    async def mcp_app_ticket(self, actor: User, chat_id: uuid.UUID, server_id: uuid.UUID, resource_uri: str) -> str:
        """A short-lived, sealed ticket naming (user, chat, server, view): the frame's address.
        An iframe's navigation carries no bearer token, so the ticket is its authorisation."""
        await self._app_server(actor.id, chat_id, server_id)
        if not resource_uri.startswith("ui://"):
            raise InvalidInput("An MCP App view is a ui:// resource.")
        payload = json.dumps({"u": str(actor.id), "c": str(chat_id), "s": str(server_id), "r": resource_uri})
        return self._app_tickets.encrypt_at_time(payload.encode(), int(self.clock.now().timestamp())).decode()

    async def mcp_app_view(self, ticket: str) -> AppView:
        """The view a ticket names, read now from its server (checked again: the chat may have
        been deleted or the server turned off since the ticket was issued)."""
        try:
            if len(ticket) > _MAX_TICKET_CHARS:
                raise ValueError("not a ticket chatd issued")
            raw = self._app_tickets.decrypt_at_time(
                ticket.encode(), int(self.settings.mcp_app_ticket_ttl), int(self.clock.now().timestamp())
            )
            fields = json.loads(raw)
            owner_id, chat_id, server_id = (uuid.UUID(fields[k]) for k in ("u", "c", "s"))
            uri = str(fields["r"])
        except (InvalidToken, ValueError, KeyError, TypeError) as exc:
            raise NotFound("This MCP App view has expired; reload the chat.") from exc
        config, token = await self._app_server(owner_id, chat_id, server_id)
        try:
            return await read_app_view(
                config, token, uri, max_bytes=self.settings.mcp_app_max_bytes, call_timeout=self.settings.mcp_call_timeout,
                pool=self.mcp_pool, identity=(owner_id, chat_id), connect_timeout=self.settings.mcp_connect_timeout,
                stdio_connect_timeout=self.settings.mcp_stdio_connect_timeout,
            )
        except AppToolRefused as exc:
            raise NotFound(exc.message) from exc
        except AppResourceError as exc:
            raise InvalidInput(str(exc)) from exc
        except McpError as exc:
            raise Unavailable(exc.message) from exc

    async def read_mcp_app_resource(self, actor: User, chat_id: uuid.UUID, server_id: uuid.UUID, uri: str) -> dict[str, Any]:
        """An MCP App's resources/read: relayed to the view's own server (one the chat uses) as the
        chat's owner, so a view reads only what that server shows that user. The answer is the
        ReadResourceResult the view expects, whole, within mcp_app_max_bytes."""
        config, token = await self._app_server(actor.id, chat_id, server_id)
        try:
            return await read_app_resource(
                config, token, uri, max_bytes=self.settings.mcp_app_max_bytes, call_timeout=self.settings.mcp_call_timeout,
                pool=self.mcp_pool, identity=(actor.id, chat_id), connect_timeout=self.settings.mcp_connect_timeout,
                stdio_connect_timeout=self.settings.mcp_stdio_connect_timeout,
            )
        except AppToolRefused as exc:
            raise Forbidden(exc.message) from exc
        except AppResourceError as exc:
            raise PayloadTooLarge(str(exc)) from exc
        except McpCallError as exc:  # the server refused or failed the read (unknown URI, timeout)
            raise Upstream(exc.message) from exc
        except McpError as exc:
            raise Unavailable(exc.message) from exc

    async def call_mcp_app_tool(
        self, actor: User, chat_id: uuid.UUID, server_id: uuid.UUID, name: str, arguments: dict[str, Any]
    ) -> dict[str, Any]:
        """An MCP App's tools/call: a tool of the view's own server that apps may call, as the
        chat's owner (their OAuth2 token). The answer is the CallToolResult the view expects."""
        config, token = await self._app_server(actor.id, chat_id, server_id)
        try:
            return await call_app_tool(
                config, token, name, arguments, call_timeout=self.settings.mcp_call_timeout, pool=self.mcp_pool,
                identity=(actor.id, chat_id), connect_timeout=self.settings.mcp_connect_timeout,
                stdio_connect_timeout=self.settings.mcp_stdio_connect_timeout,
            )
        except AppToolRefused as exc:
            raise Forbidden(exc.message) from exc
        except McpError as exc:
            raise Unavailable(exc.message) from exc

    async def _resolve_mcp_ids(self, requested: list[uuid.UUID] | None, *, creating: bool) -> list[uuid.UUID] | None:
        """Validate requested ids; add force_on servers always and default_on ones on create when
        none were named. Enforced here, on the server, never only in a UI."""
        forced, default = await mcp_store.forced_and_default(self.db)
        if requested is None and not creating:
            return None
        ids = list(dict.fromkeys(requested or []))
        # A disabled server is as unknown as one that does not exist: the same answer for both
        # (no existence leak), and no chat silently carries a server its turns would skip.
        missing = set(ids) - await mcp_store.existing_ids(self.db, ids, enabled_only=True)
        if missing:
            raise InvalidInput("One or more MCP server IDs are invalid.", {"invalid_ids": sorted(str(m) for m in missing)})
        if creating and requested is None:
            ids = list(default)
        for f in forced:
            if f not in ids:
                ids.append(f)
        return ids

    # --- chats ----------------------------------------------------------------------------------

    async def get_chat(self, actor: User, chat_id: uuid.UUID) -> Chat:
        chat = await chat_store.get_chat(self.db, chat_id)
        if chat.owner_id != actor.id:
            # Never reveal that someone else's chat exists.
            raise NotFound("Chat not found.")
        return chat

    async def chat_debug(self, actor: User, chat_id: uuid.UUID) -> Chat:
        """Any chat's state as a worker sees it, for an admin operating the deployment (status,
        lease, generation, trace): no content, so not the owner's alone."""
        _admin(actor)
        return await chat_store.get_chat(self.db, chat_id)

    async def list_chats(
        self,
        actor: User,
        archived: bool | None,
        parent_chat_id: uuid.UUID | None = None,
        *,
        title_contains: str | None = None,
        limit: int = 50,
        before: tuple[datetime, uuid.UUID] | None = None,
    ) -> list[Chat]:
        if title_contains is not None:
            _check_search(title_contains)
        return await chat_store.list_chats(
            self.db, actor.id, archived=archived, parent_chat_id=parent_chat_id, title_contains=title_contains or None, limit=limit, before=before
        )

    # --- streams ------------------------------------------------------------------------------

    async def open_stream(
        self, actor: User, chat_id: uuid.UUID, after_id: int
    ) -> AbstractAsyncContextManager[ChatEvents]:
        """The caller's chat stream, to be entered: subscribed first, then the snapshot (status,
        parts in flight, messages after `after_id`, queue), then live events (ended from another
        task by `stop()`). Raises NotFound here, before anything is subscribed, for a chat that is
        not the caller's."""
        await self.get_chat(actor, chat_id)
        return self.hub.subscribe(chat_id, after_id)

    def watch_chats(self, actor: User) -> AbstractAsyncContextManager[AsyncIterator[ChatChange]]:
        """Changes to the caller's chats (created, status, title, queue, deleted), each re-read."""
        return watch_owner(self.db, self.pubsub, self.clock, actor.id)

    async def relay_lines(self, chat_id: uuid.UUID) -> AsyncGenerator[str, None]:
        """The part relay for another replica, as NDJSON lines (`streams/relay.py`); the caller
        authenticates the replica (the internal token), not a user."""
        async with contextlib.aclosing(self.hub.follow(chat_id)) as items:
            async for item in items:
                yield encode(item)

    # --- operations ---------------------------------------------------------------------------

    async def database_reachable(self) -> bool:
        try:
            async with self.db.read() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

    async def database_stats(self) -> DatabaseStats | None:
        """Counts for /metrics; None while the database is away (/healthz says so)."""
        try:
            return await database_stats(self.db)
        except Unavailable:
            return None

    async def create_chat(
        self,
        actor: User,
        *,
        content: list[Part],
        title: str | None = None,
        model_config_id: uuid.UUID | None = None,
        system_prompt: str | None = None,
        mcp_server_ids: list[uuid.UUID] | None = None,
        workspace_id: uuid.UUID | None = None,
        parent_chat_id: uuid.UUID | None = None,
        client_tools: list[ClientTool] | None = None,
    ) -> Chat:
        _check_content(content)
        _check_client_tools(client_tools or [])
        await self._check_files(actor, content)
        if workspace_id is not None:
            try:
                await workspace_store.get_workspace(self.db, workspace_id, owner_id=actor.id)
            except NotFound as exc:
                raise InvalidInput("Invalid workspace ID.") from exc
        if title is not None and not title.strip():
            raise InvalidInput("The title must not be blank.")
        if system_prompt is not None and len(system_prompt.encode()) > 128 * 1024:
            raise InvalidInput("The system prompt is limited to 128 KiB.")
        ids = await self._resolve_mcp_ids(mcp_server_ids, creating=True)
        created = await chat_store.create_chat(
            self.db, self.clock.now(), owner_id=actor.id, title=(title or fallback_title(text_of(content))).strip()[:256],
            content=content, model_config_id=model_config_id, workspace_id=workspace_id, parent_chat_id=parent_chat_id,
            system_prompt=system_prompt, mcp_server_ids=ids, client_tools=client_tools or [],
        )
        chat = created.chat
        await self.outbox.publish(
            [ChatCreated(chat.id, chat.owner_id), *MessagesAdded.of(chat.id, created.messages), *status_changes(chat)]
        )
        return chat

    async def send_message(
        self,
        actor: User,
        chat_id: uuid.UUID,
        *,
        content: list[Part],
        busy_behavior: BusyBehavior = BusyBehavior.QUEUE,
        model_config_id: uuid.UUID | None = None,
        mcp_server_ids: list[uuid.UUID] | None = None,
    ) -> SendOutcome:
        _check_content(content)
        await self.get_chat(actor, chat_id)
        await self._check_files(actor, content)
        ids = await self._resolve_mcp_ids(mcp_server_ids, creating=False)
        res = await chat_store.send_message(
            self.db, self.clock.now(), chat_id=chat_id, sender_id=actor.id, content=content, busy_behavior=busy_behavior,
            model_config_id=model_config_id, mcp_server_ids=ids, max_queued=self.settings.max_queued_messages,
        )
        await self.outbox.publish([
            *MessagesAdded.of(chat_id, res.inserted),
            *(status_changes(res.chat) if res.status_changed else []),
            *ActionsResolved.of(chat_id, res.cancelled),
            *([QueueChanged(chat_id, res.chat.owner_id)] if res.queue_changed else []),
        ])
        chat = await action_store.chat_with_actions(self.db, res.chat)
        return SendOutcome(chat, res.queued, res.message, res.queued_message)

    async def edit_message(self, actor: User, chat_id: uuid.UUID, message_id: int, content: list[Part]) -> tuple[Message, Chat]:
        _check_content(content)
        await self.get_chat(actor, chat_id)
        await self._check_files(actor, content)
        res = await chat_store.edit_message(self.db, self.clock.now(), chat_id=chat_id, message_id=message_id, editor_id=actor.id, content=content)
        # Clients drop their history after the edit point and re-read (full refresh).
        await self.outbox.publish([
            HistoryReplaced(chat_id),
            *status_changes(res.chat),
            *ActionsResolved.of(chat_id, res.cancelled),
            *([QueueChanged(chat_id, res.chat.owner_id)] if res.queue_cleared else []),
        ])
        return res.message, res.chat

    async def interrupt(self, actor: User, chat_id: uuid.UUID) -> Chat:
        await self.get_chat(actor, chat_id)
        res = await chat_store.interrupt_chat(self.db, self.clock.now(), chat_id)
        await self.outbox.publish([
            *MessagesAdded.of(chat_id, res.inserted),
            *ActionsResolved.of(chat_id, res.cancelled),
            # Cancelled actions with a backlog promote the oldest queued message.
            *([QueueChanged(chat_id, res.chat.owner_id)] if res.cancelled and res.chat.status is ChatStatus.PENDING else []),
            *(status_changes(res.chat) if res.changed else []),
        ])
        return res.chat

    async def set_archived(self, actor: User, chat_id: uuid.UUID, archived: bool) -> None:
        await self.get_chat(actor, chat_id)
        res = await chat_store.set_archived(self.db, self.clock.now(), chat_id, archived)
        changes: list[Change] = []
        for applied in res.settled:
            changes += [*MessagesAdded.of(applied.chat.id, applied.results), *ActionsResolved.of(applied.chat.id, applied.cancelled)]
        for chat in res.chats:
            changes += [StatusChanged.of(chat), ChatArchived(chat.id, chat.owner_id, archived)]
        await self.outbox.publish(changes)

    async def delete_queued(self, actor: User, chat_id: uuid.UUID, queued_id: int) -> None:
        await self.get_chat(actor, chat_id)
        res = await chat_store.delete_queued(self.db, self.clock.now(), chat_id, queued_id)
        await self.outbox.publish([QueueChanged(chat_id, res.chat.owner_id)])

    async def promote_queued(self, actor: User, chat_id: uuid.UUID, queued_id: int) -> Message:
        await self.get_chat(actor, chat_id)
        res = await chat_store.promote_queued(self.db, self.clock.now(), chat_id, queued_id)
        assert res.message is not None
        await self.outbox.publish([
            *MessagesAdded.of(chat_id, [*res.results, res.message]),
            *([StatusChanged.of(res.chat)] if res.status_changed else []),
            *ActionsResolved.of(chat_id, res.cancelled),
            QueueChanged(chat_id, res.chat.owner_id),
            WorkAvailable(),
        ])
        return res.message

    async def answer_action(self, actor: User, chat_id: uuid.UUID, action_id: uuid.UUID, answer: Answer) -> Chat:
        """The owner answers one of the chat's pending actions (human in the loop). The first
        answer wins; an action already resolved is a conflict (`ActionResolved`), never a second
        execution. The last answer makes the chat pending: a worker resumes it."""
        await self.get_chat(actor, chat_id)
        res = await action_store.answer_action(self.db, self.clock.now(), chat_id, action_id, answer, actor.id)
        await self.outbox.publish([
            *(status_changes(res.chat) if res.status_changed else []),
            ActionsResolved(chat_id, ((str(res.action.id), answer.decision.value),)),
        ])
        return await action_store.chat_with_actions(self.db, res.chat)

    async def list_actions(self, actor: User, chat_id: uuid.UUID) -> list[PendingAction]:
        """The chat's actions, answered or not (the owner's alone)."""
        await self.get_chat(actor, chat_id)
        return await action_store.list_actions(self.db, chat_id)

    async def revoke_allowed_tool(self, actor: User, chat_id: uuid.UUID, tool_name: str) -> Chat:
        """The owner takes back "always allow this tool in this chat": its calls ask again."""
        await self.get_chat(actor, chat_id)
        chat = await chat_store.revoke_allowed_tool(self.db, chat_id, tool_name)
        return await action_store.chat_with_actions(self.db, chat)

    async def list_messages(self, actor: User, chat_id: uuid.UUID, after_id: int) -> tuple[list[Message], list[QueuedMessage]]:
        await self.get_chat(actor, chat_id)
        return await chat_store.list_messages(self.db, chat_id, after_id)

    # --- files and usage --------------------------------------------------------------------

    async def save_file(self, actor: User, name: str, media_type: str, data: bytes) -> StoredFile:
        return await file_store.save_file(self.db, self.clock.now(), actor.id, name[:255] or "file", media_type, data)

    async def _check_files(self, actor: User, content: list[Part]) -> None:
        """A file part must name one of the sender's own uploads. Another user's file is as unknown
        as one that does not exist: the answer never reveals that it exists."""
        for p in content:
            if not isinstance(p, FilePart):
                continue
            try:
                f: StoredFile | None = await file_store.get_file(self.db, uuid.UUID(p.file_id), with_data=False)
            except (ValueError, NotFound):
                f = None
            if f is None or f.owner_id != actor.id:
                raise InvalidInput("The message refers to a file that does not exist.")

    async def get_file(self, actor: User, file_id: uuid.UUID) -> StoredFile:
        f = await file_store.get_file(self.db, file_id)
        if f.owner_id != actor.id:
            raise NotFound("File not found.")
        return f

    async def usage(self, actor: User) -> UsageStatus:
        return await usage_store.get_status(self.db, actor.id, self.clock.now())

    async def spend_by_user(self, actor: User) -> tuple[UsageLimit | None, list[UserSpend]]:
        """Every user's spend in their current period and the limit that applies (admins)."""
        _admin(actor)
        global_limit, rows = await usage_store.spend_by_user(self.db, self.clock.now())
        return global_limit, [UserSpend(u, st, scope) for u, st, scope in rows]

    async def delete_usage_limit(self, actor: User, *, scope: str, user_id: uuid.UUID | None) -> None:
        _admin(actor)
        if scope not in ("global", "user"):
            raise InvalidInput("scope is 'global' or 'user'.")
        if scope == "user" and user_id is None:
            raise InvalidInput("A user limit needs user_id.")
        await usage_store.delete_limit(self.db, scope, user_id if scope == "user" else None)

    async def set_usage_limit(self, actor: User, *, scope: str, user_id: uuid.UUID | None, period: str, limit_micros: int) -> None:
        _admin(actor)
        if scope not in ("global", "user"):
            raise InvalidInput("scope is 'global' or 'user'.")
        if period not in PERIODS:
            raise InvalidInput(f"period is one of {', '.join(PERIODS)}.")
        if limit_micros < 0:
            raise InvalidInput("limit_micros must not be negative.")
        if scope == "user":
            if user_id is None:
                raise InvalidInput("A user limit needs user_id.")
            await user_store.get_user(self.db, user_id)
        else:
            user_id = None
        await usage_store.set_limit(self.db, UsageLimit(scope, user_id, period, limit_micros), self.clock.now())

    # --- templates and workspaces ---------------------------------------------------------------

    async def list_templates(self, actor: User, *, include_deprecated: bool = False) -> list[Template]:
        # An admin restores a deprecated template from the list; members only pick from the live ones.
        return await workspace_store.list_templates(self.db, include_deprecated=include_deprecated and actor.is_admin)

    async def create_template(self, actor: User, fields: dict[str, Any]) -> Template:
        _admin(actor)
        if fields.get("provisioner", "local") != "local":
            raise InvalidInput("The only provisioner on this server is 'local'.")
        params = [TemplateParameter(**p) for p in fields.pop("parameters", None) or []]
        return await workspace_store.create_template(self.db, self.clock.now(), parameters=params, created_by=actor.id, **fields)

    async def get_template(self, actor: User, template_id: uuid.UUID) -> Template:
        return await workspace_store.get_template(self.db, template_id)

    async def update_template(self, actor: User, template_id: uuid.UUID, changes: dict[str, Any]) -> Template:
        _admin(actor)
        if "parameters" in changes:
            changes = {**changes, "parameters": [TemplateParameter(**p) for p in changes["parameters"]]}
        return await workspace_store.update_template(self.db, self.clock.now(), template_id, changes)

    async def delete_template(self, actor: User, template_id: uuid.UUID) -> None:
        _admin(actor)
        await workspace_store.delete_template(self.db, self.clock.now(), template_id)

    async def list_workspaces(self, actor: User) -> list[Workspace]:
        return await workspace_store.list_workspaces(self.db, owner_id=actor.id)

    async def get_workspace(self, actor: User, workspace_id: uuid.UUID) -> Workspace:
        return await workspace_store.get_workspace(self.db, workspace_id, owner_id=actor.id)


async def _discover(provider: ProviderConfig) -> ProviderCheck:
    try:
        return ProviderCheck(await list_models(provider))
    except ProviderCheckFailed as exc:
        return ProviderCheck([], exc)


def _admin(actor: User) -> None:
    if not actor.is_admin:
        raise Forbidden("This needs an admin.")


def _check_search(text: str) -> None:
    # A query string can carry %00 or a lone surrogate (%ED%A0%80): neither database compares them.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        ok = False
    else:
        ok = "\x00" not in text
    if not ok:
        raise InvalidInput("The search text contains a NUL character or an unpaired surrogate.")


_TOOL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
MAX_CLIENT_TOOLS = 64
MAX_CLIENT_TOOL_SCHEMA_BYTES = 64 * 1024


def _check_client_tools(tools: list[ClientTool]) -> None:
    from jsonschema import exceptions as schema_errors  # type: ignore[import-untyped]
    from jsonschema import validators

    if len(tools) > MAX_CLIENT_TOOLS:
        raise InvalidInput(f"At most {MAX_CLIENT_TOOLS} client tools.")
    seen: set[str] = set()
    for t in tools:
        if not _TOOL_NAME.fullmatch(t.name):
            raise InvalidInput(f"Not a tool name: {t.name!r} (letters, digits, '_' and '-', 1-64, not starting with a digit).")
        if t.name in seen:
            raise InvalidInput(f"Two client tools are named {t.name!r}.")
        seen.add(t.name)
        if t.input_schema.get("type", "object") != "object":
            raise InvalidInput(f"The input_schema of {t.name} must describe an object.")
        if len(json.dumps(t.input_schema)) > MAX_CLIENT_TOOL_SCHEMA_BYTES:
            raise InvalidInput(f"The input_schema of {t.name} is larger than 64 KiB.")
        try:
            validators.validator_for(t.input_schema).check_schema(t.input_schema)
        except schema_errors.SchemaError as exc:
            raise InvalidInput(f"The input_schema of {t.name} is not a valid JSON Schema: {exc.message}") from exc


def _check_content(content: list[Part]) -> None:
    if not content:
        raise InvalidInput("The message content must not be empty.")
    if all(isinstance(p, TextPart) and not p.text.strip() for p in content):
        raise InvalidInput("The message text must not be blank.")


_PROVIDER_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


def _provider_name(name: str) -> str:
    name = name.strip().lower()
    if not _PROVIDER_NAME.fullmatch(name):
        raise InvalidInput("A provider name is 1–64 letters, digits, '.', '_' or '-', starting with a letter or digit (e.g. ollama, vllm-gpu1).")
    return name


def _check_url(url: Any) -> None:
    # Admins may point at loopback or private hosts (a local model server); they may not put
    # credentials in the URL, which would travel into logs and error texts. The message never
    # repeats such a URL.
    if url and has_userinfo(str(url)):
        raise InvalidInput("The URL must not contain a user name or password (user:password@); use the API key or headers instead.")
    if url and not re.match(r"^https?://[^\s/$.?#][^\s]*$", str(url)):
        raise InvalidInput(f"Not an http(s) URL: {url!r}.")


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,255}")


def _validate_mcp_fields(f: dict[str, Any], *, creating: bool) -> None:
    validate_slug(str(f.get("slug", "")))
    try:
        transport = McpTransport(f.get("transport") or McpTransport.STREAMABLE_HTTP)
        auth_type = McpAuthType(f.get("auth_type") or McpAuthType.NONE)
        if "availability" in f and f["availability"] is not None:
            McpAvailability(f["availability"])
        grant_type = OAuth2GrantType((f.get("oauth2") or {}).get("grant_type") or OAuth2GrantType.AUTHORIZATION_CODE)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    env = f.get("env") or {}
    if transport is McpTransport.STDIO:
        if not f.get("command"):
            raise InvalidInput("A stdio MCP server needs a command.")
        for name, value in env.items():
            if not _ENV_NAME.fullmatch(name):
                raise InvalidInput(f"Not an environment variable name: {name!r} (letters, digits and '_', not starting with a digit).")
            if "\0" in (value or ""):
                raise InvalidInput(f"The value of {name} contains a NUL character.")
    elif env:
        raise InvalidInput("env applies to stdio MCP servers only; an HTTP server takes headers.")
    else:
        url = f.get("url") or ""
        if not url:
            raise InvalidInput("An HTTP MCP server needs a url.")
        _check_url(url)
    if not (f.get("display_name") or not creating):
        raise InvalidInput("display_name is required.")
    oauth2 = f.get("oauth2") or {}
    if auth_type is McpAuthType.OAUTH2 and grant_type is OAuth2GrantType.CLIENT_CREDENTIALS:
        if transport is McpTransport.STDIO:
            raise InvalidInput("OAuth2 needs an HTTP MCP server.")
        if not oauth2.get("client_id") or not oauth2.get("client_secret"):
            raise InvalidInput("The client_credentials grant needs oauth2.client_id and oauth2.client_secret.")
