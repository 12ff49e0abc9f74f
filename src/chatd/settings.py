"""Settings: every interval and limit, from flags or `CHATD_*` environment variables.

Each one has a row in docs/configuration.md (tests/test_docs.py checks the variable, flag and default)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from chatd.domain.chat import MAX_QUEUED_MESSAGES


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("chatd"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHATD_", extra="ignore", populate_by_name=True)

    data_dir: Path = Field(default_factory=default_data_dir)
    host: str = "127.0.0.1"
    port: int = 8080
    # Seconds an idle HTTP keep-alive connection stays open. Longer than the idle expiry of common
    # clients (httpx 5 s) and proxies (nginx 60 s): the client side then always closes first, and a
    # request never races the server's close of a connection it is reusing.
    http_keep_alive: int = Field(default=75, gt=0)
    # Empty means SQLite at data_dir/chatd.db.
    database_url: str = ""
    # Fernet key (urlsafe base64, 32 bytes); empty means data_dir/secret-key, created on first start.
    secret_key: str = ""
    # Start with a secret key other than the one the database was set up with (the old key is
    # lost): it becomes the deployment's key; secrets sealed with the old one must be re-entered.
    secret_key_reset: bool = False
    # Public URL printed for the admin; defaults to http://host:port.
    public_url: str = ""
    replica_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    # /metrics answers without a token (for a scraper on a private network); else an admin's token.
    metrics_public: bool = False
    # Where other replicas reach this one (part relay); defaults to http://host:port.
    internal_url: str = ""
    # Processes `chatd serve` runs on this machine, each a whole replica sharing the port and the
    # database (chatd.supervisor); more than 1 needs PostgreSQL.
    workers: int = Field(default=1, ge=1)

    # Workers (SPEC §4), in seconds.
    run_workers: bool = True
    acquire_interval: float = 1.0
    acquire_batch: int = 10
    # Turns one replica runs at once; 0 = derived from its database connection pool (10 turns per
    # pooled connection: a turn holds a connection only while it writes, milliseconds per step).
    # More pending chats wait for a free slot (or another replica).
    max_running_turns: int = Field(default=0, ge=0)
    heartbeat_interval: float = 30.0
    stale_after: float = 300.0
    max_steps: int = 1200
    max_output_tokens: int = 32000
    max_retry_attempts: int = 25
    stall_timeout: float = 120.0
    # Replicas that stop heartbeating (SPEC §6 beyond): their chats are recovered after this.
    replica_stale_after: float = 30.0
    generate_titles: bool = True
    # Connections per model provider, shared by the replica's turns: each streaming turn holds
    # one, so this bounds the turns that stream at once (more wait for a free connection).
    provider_max_connections: int = 1000
    # Seconds a replica keeps the configuration a turn reads (model configs, providers, users,
    # MCP servers) without asking the database again; changes made through the API are announced
    # and apply at once, this bounds the staleness when an announcement is lost. 0 = no cache.
    config_cache_ttl: float = 5.0
    # Read OpenAI Chat Completions streams (OpenAI and compatible servers) with chatd's own reader
    # instead of the SDK and pydantic-ai's stream: same parts, usage and errors, a fraction of the
    # CPU per token. Off = pydantic-ai's stream for every model (to rule the reader out).
    fast_streams: bool = True

    # Web push (SPEC §5.10). VAPID keys as base64url (the private key may also be PEM); empty
    # means data_dir/vapid-private.pem, generated on first start. Replicas must share the keys.
    vapid_private_key: str = ""
    vapid_public_key: str = ""
    # The contact push services see: a mailto: or https: URL (default: the public URL if https).
    vapid_subject: str = ""
    # Push services are https; allow http endpoints only for a local push service (tests).
    push_allow_http: bool = False
    # Push endpoints are chosen by members: loopback, private, link-local, CGNAT and metadata
    # addresses are refused (SSRF) unless this is set (a push service on a private network, tests).
    push_allow_private: bool = False

    # Workspaces: "auto" runs commands in bubblewrap when it works and refuses them otherwise;
    # "bwrap" requires it; "none" is the admin's opt-in to unsandboxed commands (docs/security.md).
    workspace_sandbox: Literal["auto", "bwrap", "none"] = "auto"

    # Human in the loop: built-in workspace tools that wait for the chat owner's approval before
    # they run: "never", "execute" (commands: execute, process_signal) or "writes" (commands and
    # file changes: write_file, edit_files). MCP tools follow their server's `approval` policy.
    workspace_tool_approval: Literal["never", "execute", "writes"] = "never"
    # Offer root chats the `ask_user_question` tool (the model asks the user and waits).
    ask_user_question: bool = True
    # Seconds a call of a client-side tool waits for the client's result; then the model reads a
    # timeout result and the turn goes on.
    client_tool_timeout: float = Field(default=600.0, gt=0)

    # Tool results (MCP and built-in): a result longer than this many characters (its JSON text)
    # is stored as a chat file; the model sees its head and reads the rest with read_tool_output.
    # CHATD_MCP_MAX_RESULT_CHARS is its former name (MCP results only, cut there): still read.
    tool_result_max_chars: int = Field(
        default=100_000, ge=1000, validation_alias=AliasChoices("CHATD_TOOL_RESULT_MAX_CHARS", "CHATD_MCP_MAX_RESULT_CHARS")
    )
    # Images a tool returns go to models that accept images up to this size each (base64 of
    # 3.75 MB is Anthropic's 5 MB per image); a larger one is shown in the chat only.
    tool_image_max_bytes: int = Field(default=3_750_000, ge=0)

    # MCP (SPEC §7), in seconds / characters.
    mcp_connect_timeout: float = 10.0
    # stdio servers start a process first (`npx -y …` took 25 s warm); a server's own
    # connect_timeout_s wins over both.
    mcp_stdio_connect_timeout: float = 60.0
    mcp_call_timeout: float = 60.0
    # MCP Apps: the largest view (a tool's ui:// HTML resource) the web UI is given, and the
    # largest resource a view reads, in bytes; a larger one is refused with a message naming this
    # setting. A view's frame address is valid
    # for mcp_app_ticket_ttl seconds after the UI asked for it.
    mcp_app_max_bytes: int = 2_000_000
    mcp_app_ticket_ttl: float = 120.0
    # Seconds a call whose MCP server asks the user for input (elicitation) waits for the answer
    # (its call timeout is paused meanwhile); then the server gets `cancel`.
    mcp_elicitation_timeout: float = Field(default=600.0, gt=0)
    # Warm sessions (chatd.mcp.pool): an idle connection (a stdio process) closes after
    # mcp_idle_timeout; one idle for mcp_health_check_after is pinged before a turn uses it; a
    # server that failed is retried after mcp_retry_initial, doubling up to mcp_retry_max.
    mcp_idle_timeout: float = 300.0
    mcp_health_check_after: float = 30.0
    mcp_retry_initial: float = 5.0
    mcp_retry_max: float = 300.0
    mcp_pool_max_idle: int = 200

    # Chats and streams (SPEC §3, §6).
    max_queued_messages: int = MAX_QUEUED_MESSAGES
    stream_part_buffer: int = 10000
    stream_subscriber_queue: int = 128
    stream_message_cache: int = 256
    # Streamed text deltas of a chat are merged into one `message_part` per this many
    # milliseconds (0 = one event per delta), or per `stream_coalesce_parts` deltas: fan-out
    # costs per window instead of per token; 30 ms is below what a reader notices.
    stream_coalesce_ms: float = 30.0
    stream_coalesce_parts: int = 32
    sse_keepalive: float = 15.0

    # HTTP.
    max_request_bytes: int = 2 * 1024 * 1024
    max_upload_bytes: int = 10 * 1024 * 1024

    # Deployment provider keys, merged with stored keys (the database wins).
    anthropic_api_key: str = ""
    openai_api_key: str = ""
    google_api_key: str = ""

    log_level: str = "info"
    # Traces (docs/operations.md#traces): the OTLP/HTTP collector's base URL; empty = no traces.
    otel_endpoint: str = ""
    # The share of turns traced (a new trace per turn, so whole turns are kept or dropped).
    otel_sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    # Prompts, answers, tool arguments and results in span attributes: off, they are users' data.
    otel_capture_content: bool = False

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'chatd.db'}"

    def resolved_internal_url(self) -> str:
        if self.internal_url:
            return self.internal_url
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    def resolved_public_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"
