"""Request and response bodies: the public contract (API.md), rendered into /openapi.json."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, model_validator

from chatd.domain.actions import ActionKind, ApprovalPolicy, PendingAction
from chatd.domain.actions import edited as action_edited
from chatd.domain.chat import BusyBehavior, Chat, ChatStatus, Message, QueuedMessage, UserRole
from chatd.domain.config import ApiToken, ModelConfigRecord, ProviderRecord, User
from chatd.domain.mcp import (
    McpAuthType,
    McpAvailability,
    McpHealth,
    McpServerConfig,
    McpStatusView,
    McpTransport,
    OAuth2GrantType,
)
from chatd.domain.parts import FilePart, Part, ReasoningPart, TextPart
from chatd.providers.registry import KINDS

# The largest id PostgreSQL's bigint and SQLite's integer hold; a larger one is a 400, not a
# driver overflow.
MAX_INT64 = 2**63 - 1
# Prices are micro-dollars per million tokens; $1,000,000 per million tokens is far past any real
# price and keeps tokens x price well inside 64 bits (a 1e30 price made every turn fail).
MAX_PRICE = 10**12

# JSON numbers and booleans are taken as they are: `0` is not `false` and `false` is not `0`.
Int = Annotated[int, Strict()]
Bool = Annotated[bool, Strict()]
# A JSON number (an integer is one too); never a boolean.
Float = Annotated[float, Strict()]


def _date_time_string(v: Any) -> Any:
    """Only what the schema's `date-time` says: lax pydantic also read a number (or a string of
    digits) as Unix seconds."""
    if isinstance(v, str):
        try:
            datetime.fromisoformat(v)
        except ValueError:
            raise ValueError("an RFC 3339 date-time, such as 2030-01-01T00:00:00Z") from None
        return v
    if v is not None and not isinstance(v, datetime):
        raise ValueError("an RFC 3339 date-time string, such as 2030-01-01T00:00:00Z")
    return v


Timestamp = Annotated[datetime, BeforeValidator(_date_time_string)]
Price = Annotated[int, Strict(), Field(ge=0, le=MAX_PRICE)]


def _bad_text(value: Any, path: str) -> str | None:
    """The path of the first string holding NUL or an unpaired surrogate. Neither database stores
    NUL in text, and a lone surrogate cannot be encoded as UTF-8: both used to be a 500."""
    if isinstance(value, str):
        if "\x00" in value:
            return path
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            where = _bad_text(k, path) or _bad_text(v, f"{path}.{k}" if path else str(k))
            if where is not None:
                return where
    elif isinstance(value, list):
        for i, v in enumerate(value):
            where = _bad_text(v, f"{path}[{i}]")
            if where is not None:
                return where
    return None


class TextChecked(BaseModel):
    """Every request body: strings anywhere in it are text a database can store."""

    @model_validator(mode="before")
    @classmethod
    def _storable_text(cls, data: Any) -> Any:
        where = _bad_text(data, "")
        if where is not None:
            raise ValueError(f"{where or 'a string'} contains a NUL character or an unpaired surrogate")
        return data


class _In(TextChecked):
    model_config = ConfigDict(extra="forbid")


def _drop_null(schema: dict[str, Any], cls: type[BaseModel]) -> None:
    """Document that a PATCH field may be left out but not set to null (unless it may be empty)."""
    nullable: frozenset[str] = getattr(cls, "nullable", frozenset())
    for name, prop in schema.get("properties", {}).items():
        options = prop.get("anyOf")
        if name in nullable or not options:
            continue
        kept = [o for o in options if o.get("type") != "null"]
        if len(kept) == 1:
            prop.pop("anyOf")
            prop.update(kept[0])
        else:
            prop["anyOf"] = kept
        if prop.get("default", 0) is None:
            prop.pop("default")


class Patch(_In):
    """A partial update: a field left out keeps its value. null is refused except for the fields
    in `nullable` (where it clears the value): it used to reach NOT NULL columns as a 500."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_drop_null)
    nullable: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _no_null(self) -> Any:
        for name in sorted(self.model_fields_set - self.nullable):
            if getattr(self, name) is None:
                raise ValueError(f"{name} must not be null (leave it out to keep the current value)")
        return self


class _Out(BaseModel):
    pass


# --- parts -----------------------------------------------------------------------------------

InputPart = Annotated[TextPart | FilePart, Field(discriminator="type")]
Content = Annotated[
    str | list[InputPart],
    Field(description="A string, or a list of parts (`text`, `file`).", examples=["Hello!"]),
]


def to_parts(content: str | list[TextPart | FilePart]) -> list[Part]:
    if isinstance(content, str):
        return [TextPart(text=content)]
    return list(content)


def client_parts(parts: list[Part]) -> list[Part]:
    """Strip internal fields before a part reaches a client."""
    return [p.model_copy(update={"signature": None}) if isinstance(p, ReasoningPart) else p for p in parts]


# --- identity ------------------------------------------------------------------------------------


class UserOut(_Out):
    id: uuid.UUID
    username: str
    role: UserRole
    created_at: datetime
    disabled: bool = Field(description="An admin disabled the user: every token of theirs is refused.")
    disabled_at: datetime | None = None

    @classmethod
    def of(cls, u: User) -> UserOut:
        return cls(
            id=u.id, username=u.username, role=u.role, created_at=u.created_at,
            disabled=u.disabled_at is not None, disabled_at=u.disabled_at,
        )


class UserPatch(_In):
    disabled: bool = Field(description="True: the user's tokens are refused from now on; false: they work again.")


class UserIn(_In):
    username: str = Field(min_length=1, max_length=64)
    role: UserRole = UserRole.MEMBER


class TokenIn(_In):
    name: str = Field(default="token", max_length=128)


class TokenOut(_Out):
    token: str = Field(description="The token itself, shown this once.")


class ApiTokenOut(_Out):
    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    created_at: datetime
    last_used_at: datetime | None = Field(description="Refreshed at most once a minute.")

    @classmethod
    def of(cls, t: ApiToken) -> ApiTokenOut:
        return cls(id=t.id, user_id=t.user_id, name=t.name, created_at=t.created_at, last_used_at=t.last_used_at)


# --- providers and models ------------------------------------------------------------------------

_KINDS_DOC = " | ".join(KINDS)


_NAME_DOC = (
    "Unique, 1–64 letters, digits, '.', '_' or '-' (stored in lower case), e.g. `ollama`, `vllm-gpu1`. "
    "Several providers may share a kind; the name tells them apart."
)


class ProviderIn(_In):
    provider: str = Field(max_length=32, description=f"The kind: {_KINDS_DOC}")
    name: str | None = Field(default=None, max_length=64, description=f"{_NAME_DOC} Omitted: the kind (409 if taken).")
    display_name: str | None = Field(default=None, max_length=128)
    api_key: str | None = Field(default=None, max_length=4096, description="Write-only.")
    base_url: str | None = Field(default=None, max_length=2048)
    enabled: Bool = True


class ProviderPatch(Patch):
    nullable = frozenset({"api_key", "base_url"})
    name: str | None = Field(default=None, max_length=64, description=_NAME_DOC)
    display_name: str | None = Field(default=None, max_length=128)
    api_key: str | None = Field(default=None, max_length=4096, description="Write-only; null removes the key.")
    base_url: str | None = Field(default=None, max_length=2048, description="null removes it.")
    enabled: Bool | None = None


class ProviderOut(_Out):
    id: uuid.UUID
    name: str = Field(description="Unique; model configs may refer to the provider by it.")
    provider: str = Field(description="The kind.")
    display_name: str
    api_key_set: bool
    base_url: str | None = Field(description="Shown to admins only.")
    enabled: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, p: ProviderRecord, *, admin: bool) -> ProviderOut:
        return cls(
            id=p.id, name=p.name, provider=p.provider, display_name=p.display_name, api_key_set=bool(p.api_key),
            base_url=p.base_url if admin else None, enabled=p.enabled, created_at=p.created_at, updated_at=p.updated_at,
        )


class ProviderTestIn(_In):
    provider: str = Field(description=f"The kind: {_KINDS_DOC}")
    base_url: str | None = Field(default=None, max_length=2048)
    api_key: str | None = Field(
        default=None, max_length=4096,
        description="Omitted: a saved provider's key is used (the one provider_id names, else the first of this kind "
        "saved with this base_url), or the deployment's; a stored key only for the URL it is saved with.",
    )
    provider_id: uuid.UUID | None = Field(default=None, description="The saved provider being edited, whose key to use.")


class DiscoveredModelOut(_Out):
    id: str = Field(description="The model name to put in a model config's `model`.")
    display_name: str
    context_limit: int | None = Field(description="The input context the provider reports, when it does.")


class ProviderCheckErrorOut(_Out):
    message: str = Field(description="Why, for a person: a refused key, a wrong base URL, an unreachable server.")
    status: int | None = Field(default=None, description="The provider's HTTP status, when it answered.")


class ProviderCheckOut(_Out):
    """A provider connection test. The test working is data either way, so the answer is 200:
    `ok` with the models the provider lists, or `ok: false` with the error."""

    ok: bool
    models: list[DiscoveredModelOut]
    error: ProviderCheckErrorOut | None = None


class ModelOptionsIn(_In):
    max_output_tokens: Int | None = Field(default=None, gt=0, le=1_000_000)
    temperature: Float | None = Field(default=None, ge=0, le=2)
    reasoning_effort: Literal["low", "medium", "high"] | None = None
    web_search: Bool = False
    # The model accepts images: images MCP tools return go to it (else it reads a note).
    images: Bool = True


class PricingIn(_In):
    """Micro-dollars per million tokens (at most 10^12); null means no price."""

    input: Price | None = None
    output: Price | None = None
    cache_read: Price | None = None
    cache_write: Price | None = None
    reasoning: Price | None = None


_PROVIDER_REF_DOC = "The provider's name (providers from before named providers are named after their kind); or use provider_id."


class ModelConfigIn(_In):
    provider_id: uuid.UUID | None = Field(default=None, description="The provider the model runs on (or name it in `provider`).")
    provider: str | None = Field(default=None, max_length=64, description=_PROVIDER_REF_DOC)
    model: str = Field(min_length=1, max_length=256)
    display_name: str | None = Field(default=None, max_length=256)
    context_limit: Int = Field(gt=0, le=100_000_000)
    compression_threshold: Int = Field(default=70, ge=0, le=100)
    is_default: Bool = False
    enabled: Bool = Field(default=True, description="A disabled model is kept but offered to no chat.")
    options: ModelOptionsIn = Field(default_factory=ModelOptionsIn)
    pricing: PricingIn = Field(default_factory=PricingIn)


class ModelConfigPatch(Patch):
    provider_id: uuid.UUID | None = None
    provider: str | None = Field(default=None, max_length=64, description=_PROVIDER_REF_DOC)
    model: str | None = Field(default=None, min_length=1, max_length=256)
    display_name: str | None = Field(default=None, max_length=256)
    context_limit: Int | None = Field(default=None, gt=0, le=100_000_000)
    compression_threshold: Int | None = Field(default=None, ge=0, le=100)
    is_default: Bool | None = None
    enabled: Bool | None = None
    options: ModelOptionsIn | None = None
    pricing: PricingIn | None = None


class ModelConfigOut(_Out):
    id: uuid.UUID
    provider_id: uuid.UUID
    provider: str = Field(description="The provider's kind.")
    provider_name: str = Field(description="The provider's name.")
    provider_display_name: str = Field(description="The provider's display name (what a model picker shows).")
    model: str
    display_name: str
    context_limit: int
    compression_threshold: int
    is_default: bool
    enabled: bool
    options: ModelOptionsIn
    pricing: PricingIn
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, m: ModelConfigRecord) -> ModelConfigOut:
        o, p = m.options, m.pricing
        return cls(
            id=m.id, provider_id=m.provider_id, provider=m.provider, provider_name=m.provider_name,
            provider_display_name=m.provider_display_name, model=m.model, display_name=m.display_name, context_limit=m.context_limit,
            compression_threshold=m.compression_threshold, is_default=m.is_default, enabled=m.enabled,
            options=ModelOptionsIn(max_output_tokens=o.max_output_tokens, temperature=o.temperature, reasoning_effort=o.reasoning_effort, web_search=o.web_search, images=o.images),
            pricing=PricingIn(input=p.input, output=p.output, cache_read=p.cache_read, cache_write=p.cache_write, reasoning=p.reasoning),
            created_at=m.created_at, updated_at=m.updated_at,
        )


# --- MCP servers -----------------------------------------------------------------------------------


class OAuth2In(_In):
    client_id: str | None = Field(default=None, max_length=1024)
    client_secret: str | None = Field(default=None, max_length=4096, description="Write-only.")
    authorize_url: str | None = Field(default=None, max_length=2048)
    token_url: str | None = Field(default=None, max_length=2048)
    scopes: str | None = Field(default=None, max_length=2048)
    grant_type: OAuth2GrantType | None = Field(
        default=None,
        description="`authorization_code` (default): each user connects in a browser "
        "(`POST /mcp-servers/{id}/oauth/start`). `client_credentials`: server-to-server, chatd "
        "authorizes itself with client_id and client_secret; no user sign-in.",
    )


_CONNECT_TIMEOUT_DOC = (
    "Seconds to connect and list the tools; null = the deployment's default (`mcp_connect_timeout`, 10 s, "
    "or `mcp_stdio_connect_timeout`, 60 s, for stdio servers, which start a process first)."
)
_CALL_TIMEOUT_DOC = (
    "Seconds a tool call may go without a result or a progress notification; null = `mcp_call_timeout` (60 s)."
)


_APPROVAL_DOC = (
    "Which calls of this server's tools wait for the chat owner's approval: `never`, `always`, or "
    "`unless_read_only` (all but tools the server marks `readOnlyHint`)."
)
_OVERRIDES_DOC = "Per tool (its name on the server): a policy that replaces `approval` for that tool."


class McpServerIn(_In):
    slug: str = Field(min_length=1, max_length=64)
    display_name: str = Field(min_length=1, max_length=256)
    description: str = Field(default="", max_length=4096)
    url: str = Field(default="", max_length=2048)
    transport: McpTransport = McpTransport.STREAMABLE_HTTP
    command: str | None = Field(default=None, max_length=4096)
    args: list[str] = Field(default_factory=list, max_length=256)
    auth_type: McpAuthType = McpAuthType.NONE
    api_key_header: str = Field(default="Authorization", max_length=256)
    api_key_value: str | None = Field(default=None, max_length=8192, description="Write-only.")
    custom_headers: dict[str, str] = Field(default_factory=dict, description="Write-only values.")
    oauth2: OAuth2In | None = None
    tool_allow_list: list[str] = Field(default_factory=list, max_length=1024)
    tool_deny_list: list[str] = Field(default_factory=list, max_length=1024)
    enabled: Bool = Field(default=True, description="A disabled server is kept but offered to no chat and hidden from members.")
    availability: McpAvailability = McpAvailability.DEFAULT_OFF
    forward_identity: Bool = Field(default=False, description="Send X-Chatd-User-Id and X-Chatd-Chat-Id headers to the server.")
    env: dict[str, str] = Field(
        default_factory=dict, max_length=256,
        description="stdio only: extra environment variables for the server process (merged over a minimal safe "
        "environment). Write-only values, sealed at rest; reads show `env_names`.",
    )
    connect_timeout_s: Float | None = Field(default=None, gt=0, le=3600, description=_CONNECT_TIMEOUT_DOC)
    call_timeout_s: Float | None = Field(default=None, gt=0, le=3600, description=_CALL_TIMEOUT_DOC)
    approval: ApprovalPolicy = Field(default=ApprovalPolicy.NEVER, description=_APPROVAL_DOC)
    approval_overrides: dict[str, ApprovalPolicy] = Field(default_factory=dict, max_length=1024, description=_OVERRIDES_DOC)


class McpServerPatch(Patch):
    nullable = frozenset({"command", "api_key_value", "custom_headers", "oauth2", "connect_timeout_s", "call_timeout_s"})
    slug: str | None = Field(default=None, min_length=1, max_length=64)
    display_name: str | None = Field(default=None, min_length=1, max_length=256)
    description: str | None = Field(default=None, max_length=4096)
    url: str | None = Field(default=None, max_length=2048)
    transport: McpTransport | None = None
    command: str | None = Field(default=None, max_length=4096)
    args: list[str] | None = Field(default=None, max_length=256)
    auth_type: McpAuthType | None = None
    api_key_header: str | None = Field(default=None, max_length=256)
    api_key_value: str | None = Field(default=None, max_length=8192)
    custom_headers: dict[str, str] | None = None
    oauth2: OAuth2In | None = None
    tool_allow_list: list[str] | None = Field(default=None, max_length=1024)
    tool_deny_list: list[str] | None = Field(default=None, max_length=1024)
    enabled: Bool | None = None
    availability: McpAvailability | None = None
    forward_identity: Bool | None = None
    env: dict[str, str | None] | None = Field(
        default=None, max_length=256,
        description="Merged into the stored variables: a string sets a variable, null removes it, and names "
        "not mentioned keep their (unreadable) values.",
    )
    connect_timeout_s: Float | None = Field(default=None, gt=0, le=3600, description="null = back to the default.")
    call_timeout_s: Float | None = Field(default=None, gt=0, le=3600, description="null = back to the default.")
    approval: ApprovalPolicy | None = Field(default=None, description=_APPROVAL_DOC)
    approval_overrides: dict[str, ApprovalPolicy] | None = Field(default=None, max_length=1024, description=_OVERRIDES_DOC + " Replaces the stored map.")


class OAuth2Out(_Out):
    client_id: str | None
    client_secret_set: bool
    authorize_url: str | None
    token_url: str | None
    scopes: str | None
    grant_type: str


class McpServerOut(_Out):
    id: uuid.UUID
    slug: str
    display_name: str
    description: str
    url: str | None = Field(description="Shown to admins only.")
    transport: str | None
    command: str | None
    args: list[str] | None
    auth_type: str
    api_key_header: str | None
    api_key_set: bool
    custom_header_names: list[str] | None
    oauth2: OAuth2Out | None
    tool_allow_list: list[str]
    tool_deny_list: list[str]
    enabled: bool
    availability: str
    forward_identity: bool
    env_names: list[str] | None = Field(description="stdio environment variable names; admins only, values never returned.")
    connect_timeout_s: float | None = Field(description="Admins only; null = the default.")
    call_timeout_s: float | None = Field(description="Admins only; null = the default.")
    approval: ApprovalPolicy
    approval_overrides: dict[str, ApprovalPolicy]
    created_at: datetime
    updated_at: datetime
    status: McpServerStatusOut

    @classmethod
    def of(cls, s: McpServerConfig, *, admin: bool, status: McpStatusView | None = None) -> McpServerOut:
        return cls(
            status=McpServerStatusOut.of(status or McpStatusView(None, False), admin=admin),
            id=s.id, slug=s.slug, display_name=s.display_name, description=s.description,
            url=s.url if admin else None, transport=s.transport.value if admin else None,
            command=s.command if admin else None, args=list(s.args) if admin else None,
            auth_type=s.auth_type.value, api_key_header=s.api_key_header if admin else None,
            api_key_set=bool(s.api_key_value), custom_header_names=sorted(s.custom_headers) if admin else None,
            oauth2=OAuth2Out(
                client_id=s.oauth2.client_id, client_secret_set=bool(s.oauth2.client_secret),
                authorize_url=s.oauth2.authorize_url, token_url=s.oauth2.token_url, scopes=s.oauth2.scopes,
                grant_type=s.oauth2.grant_type,
            ) if admin else None,
            tool_allow_list=list(s.tool_allow_list), tool_deny_list=list(s.tool_deny_list), enabled=s.enabled,
            availability=s.availability.value, forward_identity=s.forward_identity,
            env_names=sorted(s.env) if admin else None,
            connect_timeout_s=s.connect_timeout_s if admin else None, call_timeout_s=s.call_timeout_s if admin else None,
            approval=s.approval, approval_overrides=dict(s.approval_overrides),
            created_at=s.created_at, updated_at=s.updated_at,
        )


class McpServerStatusOut(_Out):
    """What the last attempt to reach the server said, on any replica: a turn connecting, or a
    check (`GET /mcp-servers/{id}/tools`)."""

    state: Literal["unknown", "connected", "failing", "unauthorized"] = Field(
        description="`unknown`: nothing tried since the server was created. `failing`: unreachable, timed out, "
        "refused or answered garbage. `unauthorized`: HTTP 401/403 to the server's own credentials (API key, "
        "headers, client credentials); one user's missing or expired OAuth sign-in never counts here, see "
        "`needs_authorization`."
    )
    reason: str | None = Field(description="Admins only: why the last attempt failed (URLs redacted, never a secret).")
    last_error_at: datetime | None
    last_connected_at: datetime | None
    checked_at: datetime | None = Field(description="When the state was last recorded.")
    tool_count: int | None = Field(
        description="How many tools (after the server's allow/deny lists) the last successful connect or check listed; "
        "`null` until one did."
    )
    needs_authorization: bool = Field(
        description="For the caller: an OAuth2 server they have not connected yet (`POST /mcp-servers/{id}/oauth/start`)."
    )

    @classmethod
    def of(cls, view: McpStatusView, *, admin: bool) -> McpServerStatusOut:
        h = view.health
        if h is None:
            return cls(state="unknown", reason=None, last_error_at=None, last_connected_at=None, checked_at=None,
                       tool_count=None, needs_authorization=view.needs_authorization)
        return cls(
            state=h.state.value, reason=h.reason if admin and h.state is not McpHealth.CONNECTED else None,
            last_error_at=h.last_error_at, last_connected_at=h.last_connected_at, checked_at=h.updated_at,
            tool_count=h.tool_count, needs_authorization=view.needs_authorization,
        )


class McpTokenIn(_In):
    access_token: str = Field(min_length=1, max_length=16384)
    refresh_token: str | None = Field(default=None, max_length=16384)
    token_type: str = Field(default="Bearer", max_length=32)
    expires_at: Timestamp | None = None


class McpTokenOut(_Out):
    connected: bool
    expires_at: datetime | None = None


class McpToolOut(_Out):
    name: str = Field(description="The name the model sees: `<slug>__<tool>`, sanitised to `^[a-zA-Z0-9_-]{1,64}$`.")
    original_name: str = Field(description="The tool's name on the MCP server.")
    description: str
    input_schema: dict[str, Any]


class McpCheckErrorOut(_Out):
    code: str = Field(
        description="`mcp_server_disabled` (the server is disabled, so no chat uses it; `tools` still lists what "
        "the connection found, so a server can be tested before it is enabled), "
        "`mcp_connect_failed` (network, timeout, protocol), `mcp_unauthorized` (HTTP 401/403), "
        "or `mcp_oauth_required` (an OAuth2 server the caller has not connected yet, or whose grant "
        "was revoked: start `POST /mcp-servers/{id}/oauth/start`)."
    )
    message: str = Field(description="Why, for a person; URLs are redacted and secrets never included.")
    status: int | None = Field(default=None, description="The server's HTTP status, when it answered 401/403.")


class McpAppFrameIn(_In):
    server_id: uuid.UUID = Field(description="The MCP server of the tool result's `app` (`app.server_id`).")
    resource_uri: str = Field(max_length=2048, description="The view, a `ui://` resource (`app.resource_uri`).")


class McpAppFrameOut(_Out):
    url: str = Field(description="The view's document, for an iframe's `src`: carries a short-lived ticket (`mcp_app_ticket_ttl`), no bearer token.")


class McpAppResourceReadIn(_In):
    server_id: uuid.UUID = Field(description="The view's MCP server; the read goes to it alone.")
    uri: str = Field(
        min_length=1, max_length=2048, pattern=r"^[A-Za-z][A-Za-z0-9+.-]*:\S*$",
        description="The resource, as the server names it (any scheme the server serves; chatd never fetches it itself).",
    )


class McpAppToolCallIn(_In):
    server_id: uuid.UUID = Field(description="The view's MCP server; only its tools are callable.")
    name: str = Field(min_length=1, max_length=256, description="The tool's name on that server (not the model's `<slug>__<tool>`).")
    arguments: dict[str, Any] = Field(default_factory=dict)


class McpToolsOut(_Out):
    """The result of a live connection check. The check itself succeeding or failing is data, so
    the endpoint answers 200 either way: `ok` with the tools, or `ok: false` with the error."""

    ok: bool
    tools: list[McpToolOut]
    error: McpCheckErrorOut | None = None


class McpOAuthStartOut(_Out):
    authorize_url: str = Field(
        description="Open this in the user's browser. The authorization server redirects back to "
        "`GET /api/v1/mcp-servers/oauth/callback`, which stores the token. Valid for 10 minutes, once."
    )


# --- chats ----------------------------------------------------------------------------------------------


class PendingActionOut(_Out):
    """What a chat in `requires_action` waits for; answer it with `POST /chats/{id}/actions/{action_id}`."""

    id: uuid.UUID
    kind: ActionKind = Field(
        description="`tool_approval`: approve or deny a tool call (optionally with edited args); `question`: answer "
        "the model's question (`content`, one of `options` or free text); `client_tool`: the client runs the tool and "
        "posts its `result`; `elicitation`: an MCP server asks for `content` matching `schema`, or to visit `url`."
    )
    tool_call_id: str
    tool_name: str
    server: str | None = Field(description="The MCP server's slug, for MCP tools.")
    args: dict[str, Any] = Field(description="The arguments of the model's call.")
    message: str | None
    schema_: dict[str, Any] | None = Field(alias="schema", serialization_alias="schema", description="JSON Schema the answer's content must match.")
    url: str | None
    options: list[str] | None = Field(description="Suggested answers of a question (free text is allowed too).")
    deadline: datetime | None = Field(description="When the model gets a timeout result instead (client tools; an MCP server's form that ended its call, whose server is told `cancel`).")
    created_at: datetime

    model_config = ConfigDict(populate_by_name=True)

    @classmethod
    def of(cls, a: PendingAction) -> PendingActionOut:
        return cls(
            id=a.id, kind=a.kind, tool_call_id=a.tool_call_id, tool_name=a.tool_name, server=a.server, args=a.args,
            message=a.message, schema_=a.schema, url=a.url, options=a.options, deadline=a.deadline, created_at=a.created_at,
        )


class ChatActionOut(PendingActionOut):
    """One of a chat's actions, whatever became of it (`GET /chats/{id}/actions`)."""

    state: Literal["pending", "answered", "done", "cancelled"] = Field(
        description="`pending`: waits for its answer; `answered`: the next turn turns it into the call's result; "
        "`done`: the result is in the history; `cancelled`: the wait ended without an answer (the chat moved on, "
        "or nobody answered an MCP server's form in time)."
    )
    decision: Literal["approve", "deny", "accept", "decline", "cancel", "timeout"] | None = Field(
        description="The answer; `timeout`: nobody answered in time (a client tool's deadline, an MCP form's wait); "
        "`cancel` also when the chat moved on before an answer. `null` while pending."
    )
    edited_args: dict[str, Any] | None = Field(
        description="An approved call's arguments when the person changed them: what ran instead of `args`."
    )
    resolved_at: datetime | None

    @classmethod
    def of_any(cls, a: PendingAction) -> ChatActionOut:
        base = PendingActionOut.of(a).model_dump(by_alias=False)
        return cls(
            **base, state=a.state.value, decision=a.decision.value if a.decision else None,
            edited_args=a.answer["args"] if action_edited(a) else None, resolved_at=a.resolved_at,
        )


class ActionAnswerIn(_In):
    decision: Literal["approve", "deny", "accept", "decline", "cancel"] = Field(
        description="tool_approval: approve | deny; question, client_tool, elicitation: accept | decline | cancel."
    )
    args: dict[str, Any] | None = Field(default=None, description="Approve with these arguments instead of the model's.")
    content: Any = Field(default=None, description="The answer: a question's text, or the object an elicitation's schema asks for.")
    result: Any = Field(default=None, description="A client tool's result (any JSON), given to the model as the tool's result.")
    always_allow: Bool = Field(default=False, description="With approve: run this tool without asking for the rest of the chat.")


class ClientToolIn(_In):
    name: str = Field(min_length=1, max_length=64)
    description: str = Field(default="", max_length=16 * 1024)
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class ClientToolOut(_Out):
    name: str
    description: str
    input_schema: dict[str, Any]


class ChatOut(_Out):
    id: uuid.UUID
    owner_id: uuid.UUID
    title: str
    status: ChatStatus
    last_error: str | None
    last_model_config_id: uuid.UUID | None
    workspace_id: uuid.UUID | None
    parent_chat_id: uuid.UUID | None
    root_chat_id: uuid.UUID | None
    mcp_server_ids: list[uuid.UUID]
    archived: bool
    queued_count: int = Field(description="Messages waiting in the chat's queue (sent while it was busy), steering ones included.")
    steering_count: int = Field(
        description="Of `queued_count`, the messages sent with `steer` to join the running turn at its next tool boundary."
    )
    created_at: datetime
    updated_at: datetime
    pending_actions: list[PendingActionOut] = Field(description="What the chat waits for while `requires_action`; empty otherwise.")
    client_tools: list[ClientToolOut]
    allowed_tools: list[str] = Field(description="Tools approved for the rest of this chat (always_allow).")

    @classmethod
    def of(cls, c: Chat) -> ChatOut:
        return cls(
            id=c.id, owner_id=c.owner_id, title=c.title, status=c.status, last_error=c.last_error,
            last_model_config_id=c.last_model_config_id, workspace_id=c.workspace_id, parent_chat_id=c.parent_chat_id,
            root_chat_id=c.root_chat_id or c.id, mcp_server_ids=c.mcp_server_ids, archived=c.archived,
            queued_count=c.queued_count, steering_count=c.steering_count, created_at=c.created_at, updated_at=c.updated_at,
            pending_actions=[PendingActionOut.of(a) for a in c.pending_actions],
            client_tools=[ClientToolOut(name=t.name, description=t.description, input_schema=t.input_schema) for t in c.client_tools],
            allowed_tools=list(c.allowed_tools),
        )


class ChatDebugOut(_Out):
    """What an admin needs to find a chat's turn in the logs and the traces (no content)."""

    id: uuid.UUID
    owner_id: uuid.UUID
    status: ChatStatus
    last_error: str | None
    generation: int = Field(description="The turn generation: the `turn` field of the chat's log lines.")
    worker_id: uuid.UUID | None = Field(description="The replica running the chat (`running` only).")
    started_at: datetime | None
    heartbeat_at: datetime | None
    trace_id: str | None = Field(description="The OpenTelemetry trace of the latest turn (tracing on), 32 hex digits.")
    archived: bool
    updated_at: datetime

    @classmethod
    def of(cls, c: Chat) -> ChatDebugOut:
        return cls(
            id=c.id, owner_id=c.owner_id, status=c.status, last_error=c.last_error, generation=c.generation,
            worker_id=c.worker_id, started_at=c.started_at, heartbeat_at=c.heartbeat_at, trace_id=c.trace_id,
            archived=c.archived, updated_at=c.updated_at,
        )


class UsageOut(_Out):
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    reasoning_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_read_tokens: int = 0


class MessageOut(_Out):
    id: int
    chat_id: uuid.UUID
    role: str
    content: list[Part]
    created_at: datetime
    model_config_id: uuid.UUID | None
    usage: UsageOut | None
    context_limit: int | None
    total_cost_micros: int | None
    runtime_ms: int | None

    @classmethod
    def of(cls, m: Message) -> MessageOut:
        u = m.usage
        return cls(
            id=m.id, chat_id=m.chat_id, role=m.role.value, content=client_parts(m.content), created_at=m.created_at,
            model_config_id=m.model_config_id,
            usage=UsageOut(
                input_tokens=u.input_tokens, output_tokens=u.output_tokens, total_tokens=u.total_tokens,
                reasoning_tokens=u.reasoning_tokens, cache_creation_tokens=u.cache_creation_tokens,
                cache_read_tokens=u.cache_read_tokens,
            ) if u else None,
            context_limit=m.context_limit, total_cost_micros=m.total_cost_micros, runtime_ms=m.runtime_ms,
        )


class QueuedMessageOut(_Out):
    id: int
    chat_id: uuid.UUID
    content: list[Part]
    created_at: datetime
    steer: bool = Field(
        default=False,
        description="Sent with `steer` to the running turn: it joins that turn at its next tool boundary rather than waiting for it to end.",
    )

    @classmethod
    def of(cls, q: QueuedMessage) -> QueuedMessageOut:
        return cls(id=q.id, chat_id=q.chat_id, content=client_parts(q.content), created_at=q.created_at, steer=q.steer)


class ChatIn(_In):
    content: Content
    title: str | None = Field(default=None, max_length=256)
    model_config_id: uuid.UUID | None = None
    system_prompt: str | None = None
    mcp_server_ids: list[uuid.UUID] | None = Field(default=None, max_length=64)
    workspace_id: uuid.UUID | None = None
    client_tools: list[ClientToolIn] | None = Field(
        default=None, max_length=64,
        description="Tools the client runs itself: a call waits (status `requires_action`) for the client's result.",
    )


class MessageIn(_In):
    content: Content
    busy_behavior: BusyBehavior = Field(
        default=BusyBehavior.QUEUE,
        description="While the chat is busy: queue it (default), interrupt the turn, steer the running turn at its next tool boundary, or reject with 409.",
    )
    model_config_id: uuid.UUID | None = None
    mcp_server_ids: list[uuid.UUID] | None = Field(default=None, max_length=64, description="Replaces the chat's servers when given.")


class MessagesOut(_Out):
    messages: list[MessageOut]
    queued_messages: list[QueuedMessageOut]


class SendOut(_Out):
    queued: bool
    message: MessageOut | None = None
    queued_message: QueuedMessageOut | None = None
    chat: ChatOut


class EditIn(_In):
    content: Content


class EditOut(_Out):
    message: MessageOut
    chat: ChatOut


class PromoteOut(_Out):
    message: MessageOut


class FileOut(_Out):
    id: uuid.UUID
    media_type: str
    size: int


class UsageStatusOut(_Out):
    period: str | None
    period_end: datetime | None
    spent_micros: int
    limit_micros: int | None


class UsageLimitOut(_Out):
    period: str
    limit_micros: int


class UserSpendOut(_Out):
    user: UserOut
    period: str
    period_start: datetime
    period_end: datetime
    spent_micros: int = Field(description="Spend in the current period of the limit that applies (a calendar month without one).")
    limit_micros: int | None
    limit_scope: Literal["user", "global"] | None = Field(description="Which limit applies: the user's own, the global one, or none.")


class SpendOut(_Out):
    global_limit: UsageLimitOut | None
    users: list[UserSpendOut]


class UsageLimitIn(_In):
    scope: Literal["global", "user"]
    user_id: uuid.UUID | None = None
    period: Literal["day", "week", "month"] = "month"
    limit_micros: Int = Field(ge=0, le=MAX_INT64)


class CustomPromptIn(_In):
    custom_prompt: str


class HealthOut(_Out):
    status: str
    database: str
    replica_id: uuid.UUID


def event_json(ev: Any) -> dict[str, Any]:
    """A stream event as the client sees it (API.md)."""
    from chatd.domain import events as e

    base: dict[str, Any] = {"type": ev.type, "chat_id": str(ev.chat_id)}
    if isinstance(ev, e.MessagePartEvent):
        base.update(role=ev.role.value, part=client_parts([ev.part])[0].model_dump(mode="json", exclude_none=True))
    elif isinstance(ev, e.MessageEvent):
        base["message"] = MessageOut.of(ev.message).model_dump(mode="json")
    elif isinstance(ev, e.StatusEvent):
        base["status"] = ev.status.value
    elif isinstance(ev, e.QueueUpdateEvent):
        base["queued_messages"] = [QueuedMessageOut.of(q).model_dump(mode="json") for q in ev.queued_messages]
    elif isinstance(ev, e.ActionRequiredEvent):
        base["action"] = PendingActionOut.of(ev.action).model_dump(mode="json", by_alias=True)
    elif isinstance(ev, e.Plain):
        base.update(ev.fields_json())
    return base
