"""The schema (SPEC §1). Alembic migrations are written by hand against this metadata."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)

from chatd.store.types import BigId, Json, UTCDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

users = Table(
    "users",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    # The user's own instructions, sent in <user-instructions> tags.
    Column("custom_prompt", Text, nullable=False, server_default=""),
    Column("created_at", UTCDateTime, nullable=False),
    # Set by an admin: the user's tokens authenticate nothing while it is set (their chats stay).
    Column("disabled_at", UTCDateTime, nullable=True),
    CheckConstraint("role in ('admin', 'member')", name="role"),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("user_id", Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("name", String(128), nullable=False),
    # sha256 of the token; the token itself is shown once and never stored.
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_used_at", UTCDateTime, nullable=True),
)

providers = Table(
    "providers",
    metadata,
    Column("id", Uuid, primary_key=True),
    # The admin's name for it, unique: several providers may share a kind (Ollama and vLLM, both
    # `openai-compatible`). Providers from before 0018 (one per kind) are named after their kind.
    Column("name", String(64), nullable=False, unique=True),
    Column("provider", String(32), nullable=False),
    Column("display_name", String(128), nullable=False, server_default=""),
    Column("api_key_enc", Text, nullable=True),
    Column("base_url", Text, nullable=True),
    Column("enabled", Boolean, nullable=False, server_default=text("true")),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # `provider` is a kind of `providers.registry`, checked by the service (no CHECK: 0013).
)

model_configs = Table(
    "model_configs",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("provider_id", Uuid, ForeignKey("providers.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("model", String(256), nullable=False),
    Column("display_name", String(256), nullable=False),
    Column("context_limit", Integer, nullable=False),
    Column("compression_threshold", Integer, nullable=False, server_default="70"),
    Column("is_default", Boolean, nullable=False, server_default=text("false")),
    Column("enabled", Boolean, nullable=False, server_default=text("true")),
    Column("deleted", Boolean, nullable=False, server_default=text("false")),
    Column("options", Json, nullable=False),
    Column("pricing", Json, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("context_limit > 0", name="context_limit"),
    CheckConstraint("compression_threshold between 0 and 100", name="compression_threshold"),
)
# At most one live default.
Index(
    "uq_model_configs_default",
    model_configs.c.is_default,
    unique=True,
    postgresql_where=text("is_default and not deleted"),
    sqlite_where=text("is_default and not deleted"),
)

chats = Table(
    "chats",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("owner_id", Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("title", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("worker_id", Uuid, nullable=True),
    Column("started_at", UTCDateTime, nullable=True),
    Column("heartbeat_at", UTCDateTime, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("last_model_config_id", Uuid, ForeignKey("model_configs.id", ondelete="SET NULL"), nullable=True),
    Column("workspace_id", Uuid, nullable=True, index=True),
    Column("parent_chat_id", Uuid, ForeignKey("chats.id", ondelete="SET NULL"), nullable=True, index=True),
    Column("root_chat_id", Uuid, ForeignKey("chats.id", ondelete="SET NULL"), nullable=True, index=True),
    Column("mode", String(32), nullable=True),
    # A JSON list of MCP server config ids; never null.
    Column("mcp_server_ids", Json, nullable=False),
    Column("archived", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # The turn generation: advanced by acquire, edit, promote and release; every worker write is
    # fenced by it (domain/chat.py, ARCHITECTURE.md "Chat status").
    Column("generation", BigInteger, nullable=False, server_default="0"),
    # len(queued_messages of this chat), kept by store/machine.py in the transaction that changes
    # the queue: the chat list shows it without a count per row.
    Column("queued_count", Integer, nullable=False, server_default="0"),
    # The OpenTelemetry trace id (32 hex digits) of the latest turn, when tracing is on.
    Column("trace_id", String(32), nullable=True),
    # Human in the loop: tool names the owner approved for the rest of the chat, and the tools
    # the chat's client runs ([{name, description, input_schema}]).
    Column("allowed_tools", Json, nullable=False, server_default=text("'[]'")),
    Column("client_tools", Json, nullable=False, server_default=text("'[]'")),
    CheckConstraint("status in ('pending', 'running', 'waiting', 'error', 'requires_action')", name="status"),
)
# Drives acquisition: only pending chats, oldest first.
Index(
    "ix_chats_pending",
    chats.c.updated_at,
    postgresql_where=text("status = 'pending'"),
    sqlite_where=text("status = 'pending'"),
)
Index("ix_chats_running_heartbeat", chats.c.status, chats.c.heartbeat_at)

messages = Table(
    "messages",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("chat_id", Uuid, ForeignKey("chats.id", ondelete="CASCADE"), nullable=False),
    Column("role", String(16), nullable=False),
    Column("content", Json, nullable=False),
    Column("content_version", Integer, nullable=False, server_default="1"),
    Column("visibility", String(8), nullable=False, server_default="both"),
    Column("created_by", Uuid, nullable=True),
    Column("model_config_id", Uuid, ForeignKey("model_configs.id", ondelete="SET NULL"), nullable=True),
    Column("input_tokens", BigId, nullable=True),
    Column("output_tokens", BigId, nullable=True),
    Column("total_tokens", BigId, nullable=True),
    Column("reasoning_tokens", BigId, nullable=True),
    Column("cache_creation_tokens", BigId, nullable=True),
    Column("cache_read_tokens", BigId, nullable=True),
    Column("context_limit", BigId, nullable=True),
    Column("total_cost_micros", BigId, nullable=True),
    Column("runtime_ms", BigId, nullable=True),
    Column("compressed", Boolean, nullable=False, server_default=text("false")),
    Column("deleted", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", UTCDateTime, nullable=False),
    CheckConstraint("role in ('system', 'user', 'assistant', 'tool')", name="role"),
    CheckConstraint("visibility in ('model', 'user', 'both')", name="visibility"),
    # Message ids are stream cursors: never reuse one, even after a delete.
    sqlite_autoincrement=True,
)
Index("ix_messages_chat_id_id", messages.c.chat_id, messages.c.id)

queued_messages = Table(
    "queued_messages",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("chat_id", Uuid, ForeignKey("chats.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("content", Json, nullable=False),
    Column("created_by", Uuid, nullable=True),
    # Steered messages join the running turn at its next tool boundary instead of waiting for it to end.
    Column("steer", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", UTCDateTime, nullable=False),
    sqlite_autoincrement=True,
)

files = Table(
    "files",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("owner_id", Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("name", String(255), nullable=False),
    Column("media_type", String(128), nullable=False),
    Column("size", BigId, nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

mcp_servers = Table(
    "mcp_servers",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("slug", String(64), nullable=False, unique=True),
    Column("display_name", String(256), nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("url", Text, nullable=False, server_default=""),
    Column("transport", String(32), nullable=False, server_default="streamable_http"),
    Column("command", Text, nullable=True),
    Column("args", Json, nullable=False),
    Column("auth_type", String(32), nullable=False, server_default="none"),
    Column("api_key_header", String(256), nullable=False, server_default="Authorization"),
    Column("api_key_value_enc", Text, nullable=True),
    # A JSON object of header -> value, encrypted as one blob (values are often secrets).
    Column("custom_headers_enc", Text, nullable=True),
    Column("oauth2_client_id", Text, nullable=True),
    Column("oauth2_client_secret_enc", Text, nullable=True),
    Column("oauth2_authorize_url", Text, nullable=True),
    Column("oauth2_token_url", Text, nullable=True),
    Column("oauth2_scopes", Text, nullable=True),
    # authorization_code (users connect in a browser) | client_credentials (server-to-server).
    Column("oauth2_grant_type", String(32), nullable=False, server_default="authorization_code"),
    Column("tool_allow_list", Json, nullable=False),
    Column("tool_deny_list", Json, nullable=False),
    Column("enabled", Boolean, nullable=False, server_default=text("false")),
    Column("availability", String(16), nullable=False, server_default="default_off"),
    # Send X-Chatd-User-Id / X-Chatd-Chat-Id to the server (off by default).
    Column("forward_identity", Boolean, nullable=False, server_default=text("false")),
    # stdio only: extra environment variables, a JSON object encrypted as one blob (keys, tokens).
    Column("env_enc", Text, nullable=True),
    # Seconds; NULL = the deployment's default for the transport (stdio start-up gets longer).
    Column("connect_timeout_s", Float, nullable=True),
    Column("call_timeout_s", Float, nullable=True),
    # Human in the loop: never | always | unless_read_only, and {tool name: policy} overrides.
    Column("approval", String(32), nullable=False, server_default="never"),
    Column("approval_overrides", Json, nullable=False, server_default=text("'{}'")),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("transport in ('streamable_http', 'sse', 'stdio')", name="transport"),
    # auth_type is a `domain.mcp.McpAuthType`, checked by the service (no CHECK: 0013).
    CheckConstraint("availability in ('force_on', 'default_on', 'default_off')", name="availability"),
)

# What the last attempt to reach a server said, written by whichever replica saw a change (a
# connect failing or recovering, an admin's check): a hint for status pages, never a gate.
mcp_server_status = Table(
    "mcp_server_status",
    metadata,
    Column("server_id", Uuid, ForeignKey("mcp_servers.id", ondelete="CASCADE"), primary_key=True),
    # connected | failing | unauthorized (`domain.mcp.McpHealth`).
    Column("state", String(16), nullable=False),
    # The last failure's reason, redacted (URLs without credentials, secrets replaced).
    Column("reason", Text, nullable=True),
    Column("last_error_at", UTCDateTime, nullable=True),
    Column("last_connected_at", UTCDateTime, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
    # How many tools (after the allow/deny lists) the last successful connect listed.
    Column("tool_count", Integer, nullable=True),
)

mcp_user_tokens = Table(
    "mcp_user_tokens",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("server_id", Uuid, ForeignKey("mcp_servers.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("access_token_enc", Text, nullable=False),
    Column("refresh_token_enc", Text, nullable=True),
    Column("token_type", String(32), nullable=False, server_default="Bearer"),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("server_id", "user_id", name="uq_mcp_user_tokens_server_user"),
)

# The authorization server discovered for an OAuth2 MCP server, and the client chatd registered
# there (RFC 7591) when no client_id is configured. One row per server, shared by its users.
mcp_oauth_clients = Table(
    "mcp_oauth_clients",
    metadata,
    Column("server_id", Uuid, ForeignKey("mcp_servers.id", ondelete="CASCADE"), primary_key=True),
    Column("server_url", Text, nullable=False),
    Column("redirect_uri", Text, nullable=False),
    Column("issuer", Text, nullable=True),
    Column("authorization_endpoint", Text, nullable=True),
    Column("token_endpoint", Text, nullable=False),
    Column("resource", Text, nullable=True),
    Column("client_id", Text, nullable=False),
    Column("client_secret_enc", Text, nullable=True),
    Column("auth_method", String(32), nullable=False),
    Column("dynamic", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

# Browser authorizations in flight: keyed by the sha256 of the state, taken (deleted) by the
# callback, so a state works once; expired rows are purged when new flows start.
mcp_oauth_states = Table(
    "mcp_oauth_states",
    metadata,
    Column("state_hash", String(64), primary_key=True),
    Column("server_id", Uuid, ForeignKey("mcp_servers.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("code_verifier_enc", Text, nullable=False),
    Column("redirect_uri", Text, nullable=False),
    Column("client_id", Text, nullable=False),
    Column("auth_method", String(32), nullable=False),
    Column("token_endpoint", Text, nullable=False),
    Column("resource", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False, index=True),
)

usage_limits = Table(
    "usage_limits",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("scope", String(16), nullable=False),
    # Null for the global limit.
    Column("user_id", Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=True),
    Column("period", String(8), nullable=False),
    Column("limit_micros", BigId, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("scope in ('global', 'user')", name="scope"),
    CheckConstraint("period in ('day', 'week', 'month')", name="period"),
    CheckConstraint("limit_micros >= 0", name="limit_micros"),
    UniqueConstraint("scope", "user_id", name="uq_usage_limits_scope_user"),
)

# How to make a workspace (admin-managed). Soft-deleted so workspaces keep their template id.
templates = Table(
    "templates",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("name", String(64), nullable=False),
    Column("display_name", String(256), nullable=False, server_default=""),
    Column("description", Text, nullable=False, server_default=""),
    Column("provisioner", String(32), nullable=False, server_default="local"),
    # Where the files come from: a git URL, or a local path to copy, or neither (empty directory).
    Column("git_url", Text, nullable=True),
    Column("git_ref", Text, nullable=True),
    Column("source_path", Text, nullable=True),
    Column("init_script", Text, nullable=False, server_default=""),
    # A JSON list of {name, description, default, required}.
    Column("parameters", Json, nullable=False),
    Column("allow_outside", Boolean, nullable=False, server_default=text("false")),
    Column("deprecated", Boolean, nullable=False, server_default=text("false")),
    Column("deleted", Boolean, nullable=False, server_default=text("false")),
    Column("created_by", Uuid, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("provisioner in ('local')", name="provisioner"),
)
# Names are unique among live templates.
Index(
    "uq_templates_name",
    templates.c.name,
    unique=True,
    postgresql_where=text("not deleted"),
    sqlite_where=text("not deleted"),
)

# A made workspace: a directory plus, while running, an agent. `chats.workspace_id` points here
# (no foreign key: adding one to chats would need a table rebuild on SQLite; rows are only ever
# soft-deleted, so the reference cannot dangle).
workspaces = Table(
    "workspaces",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("owner_id", Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("template_id", Uuid, ForeignKey("templates.id", ondelete="SET NULL"), nullable=True),
    Column("name", String(64), nullable=False),
    Column("provisioner", String(32), nullable=False),
    Column("directory", Text, nullable=False),
    Column("status", String(16), nullable=False),
    # A JSON object of the template parameter values it was made with.
    Column("parameters", Json, nullable=False),
    Column("allow_outside", Boolean, nullable=False, server_default=text("false")),
    # Where the agent listened when last started (informational: the agent belongs to a process).
    Column("agent_url", Text, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint(
        "status in ('provisioning', 'running', 'stopped', 'failed', 'deleted')", name="status"
    ),
)
# A name is unique among an owner's live workspaces.
Index(
    "uq_workspaces_owner_name",
    workspaces.c.owner_id,
    workspaces.c.name,
    unique=True,
    postgresql_where=text("status <> 'deleted'"),
    sqlite_where=text("status <> 'deleted'"),
)

# Server replicas (SPEC §6 beyond): each registers its internal address and heartbeats, so a
# subscriber can relay a chat's parts from the replica running it, and a replica that stops
# heartbeating has its chats recovered quickly.
replicas = Table(
    "replicas",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("address", Text, nullable=True),
    Column("started_at", UTCDateTime, nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),
)

# At-most-once tool effects (issue 6, beyond the reference): a non-idempotent tool call is
# recorded here, durably, before it runs, and the row is deleted in the transaction that persists
# its step. A row that outlives its run therefore marks a call whose effects may have happened
# but whose result was never saved; a re-run of the turn at the same point in the history
# (`after_message_id` = the chat's newest message id when it started) gets an "interrupted, not
# re-run" result for the same call instead of running it again.
tool_calls_started = Table(
    "tool_calls_started",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("chat_id", Uuid, ForeignKey("chats.id", ondelete="CASCADE"), nullable=False, index=True),
    # One run of a turn on one worker (a ChatTurn); a recovered turn is a new run.
    Column("run_id", Uuid, nullable=False),
    Column("worker_id", Uuid, nullable=False),
    Column("tool_call_id", Text, nullable=False),
    Column("tool_name", Text, nullable=False),
    # sha256 of the canonical JSON arguments: a re-asked model may repeat the call under a new id.
    Column("args_sha256", String(64), nullable=False),
    Column("after_message_id", BigId, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
)

# Human in the loop (ARCHITECTURE.md): a tool call of a persisted step that waits for a person
# (approval, question, elicitation) or a client (client tools). Rows are kept after they are
# answered, so a second answer is told "already resolved" (409) instead of "unknown".
pending_actions = Table(
    "pending_actions",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("chat_id", Uuid, ForeignKey("chats.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("state", String(16), nullable=False),
    Column("tool_call_id", Text, nullable=False),
    Column("tool_name", Text, nullable=False),
    Column("server", Text, nullable=True),
    Column("args", Json, nullable=False),
    Column("message", Text, nullable=True),
    Column("schema", Json, nullable=True),
    Column("url", Text, nullable=True),
    Column("options", Json, nullable=True),
    Column("deadline", UTCDateTime, nullable=True),
    Column("decision", String(16), nullable=True),
    # The answer's args / content / result.
    Column("answer", Json, nullable=True),
    Column("answered_by", Uuid, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("resolved_at", UTCDateTime, nullable=True),
    # How the asking tool carries on once answered (`ActionRequest.resume`): never returned.
    Column("resume", Json, nullable=True),
    CheckConstraint("state in ('pending', 'answered', 'done', 'cancelled')", name="state"),
)
Index("ix_pending_actions_chat_state", pending_actions.c.chat_id, pending_actions.c.state)
# The deadline sweep reads only waiting actions that have a deadline.
Index(
    "ix_pending_actions_deadline",
    pending_actions.c.deadline,
    postgresql_where=text("state = 'pending' and deadline is not null"),
    sqlite_where=text("state = 'pending' and deadline is not null"),
)

# Web push (SPEC §5.10): each browser a user enabled notifications in. The endpoint identifies
# the browser install (unique: re-subscribing replaces the row); `auth` is a secret, sealed.
push_subscriptions = Table(
    "push_subscriptions",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("user_id", Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("endpoint", Text, nullable=False, unique=True),
    Column("p256dh", Text, nullable=False),
    Column("auth_enc", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

# Facts about the deployment that live with its data: `secret_key_fingerprint` (an HMAC under the
# secret key, never the key) lets a replica started with another key refuse to start instead of
# failing every chat that touches a sealed secret.
server_meta = Table(
    "server_meta",
    metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)
