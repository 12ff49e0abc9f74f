"""MCP server configs and per-user MCP tokens. Credentials are sealed at rest."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from chatd.domain.actions import ApprovalPolicy
from chatd.domain.mcp import (
    McpAuthType,
    McpAvailability,
    McpHealth,
    McpServerConfig,
    McpServerStatus,
    McpTransport,
    McpUserToken,
    OAuth2GrantType,
    OAuth2Settings,
)
from chatd.errors import DuplicateSlug, NotFound
from chatd.store.chats import remove_mcp_server_from_chats
from chatd.store.database import Database
from chatd.store.secrets import SecretBox
from chatd.store.tables import mcp_server_status, mcp_servers, mcp_user_tokens

# Fields stored as-is; the secrets and JSON-ish ones are handled explicitly.
_PLAIN = (
    "slug", "display_name", "description", "url", "transport", "command", "auth_type", "api_key_header",
    "enabled", "availability", "forward_identity", "connect_timeout_s", "call_timeout_s", "approval",
)


def _record(r: Any, box: SecretBox) -> McpServerConfig:
    headers = box.open(r.custom_headers_enc)
    env = box.open(r.env_enc)
    return McpServerConfig(
        id=r.id,
        slug=r.slug,
        display_name=r.display_name,
        description=r.description,
        url=r.url,
        transport=McpTransport(r.transport),
        command=r.command,
        args=tuple(r.args or ()),
        auth_type=McpAuthType(r.auth_type),
        api_key_header=r.api_key_header,
        api_key_value=box.open(r.api_key_value_enc),
        custom_headers=json.loads(headers) if headers else {},
        oauth2=OAuth2Settings(
            client_id=r.oauth2_client_id,
            client_secret=box.open(r.oauth2_client_secret_enc),
            authorize_url=r.oauth2_authorize_url,
            token_url=r.oauth2_token_url,
            scopes=r.oauth2_scopes,
            grant_type=OAuth2GrantType(r.oauth2_grant_type),
        ),
        tool_allow_list=tuple(r.tool_allow_list or ()),
        tool_deny_list=tuple(r.tool_deny_list or ()),
        enabled=r.enabled,
        availability=McpAvailability(r.availability),
        forward_identity=bool(r.forward_identity),
        env=json.loads(env) if env else {},
        connect_timeout_s=r.connect_timeout_s,
        call_timeout_s=r.call_timeout_s,
        approval=ApprovalPolicy(r.approval),
        approval_overrides={str(k): ApprovalPolicy(v) for k, v in (r.approval_overrides or {}).items()},
        created_at=r.created_at,
        updated_at=r.updated_at,
    )


def _values(fields: dict[str, Any], box: SecretBox) -> dict[str, Any]:
    """Map API-level fields onto columns, sealing the secrets."""
    v: dict[str, Any] = {k: fields[k] for k in _PLAIN if k in fields}
    for k in ("args", "tool_allow_list", "tool_deny_list"):
        if k in fields:
            v[k] = list(fields[k] or [])
    if "approval_overrides" in fields:
        v["approval_overrides"] = {str(k): str(p) for k, p in (fields["approval_overrides"] or {}).items()}
    if "api_key_value" in fields:
        v["api_key_value_enc"] = box.seal(fields["api_key_value"])
    if "custom_headers" in fields:
        v["custom_headers_enc"] = box.seal(json.dumps(fields["custom_headers"] or {}))
    if "env" in fields:
        # The whole map, sealed as one blob (values are often keys); callers pass the merged map.
        v["env_enc"] = box.seal(json.dumps(fields["env"] or {}))
    if "oauth2" in fields and fields["oauth2"] is not None:
        o = fields["oauth2"]
        for k in ("client_id", "authorize_url", "token_url", "scopes"):
            if k in o:
                v[f"oauth2_{k}"] = o[k]
        if o.get("grant_type"):
            v["oauth2_grant_type"] = o["grant_type"]
        if "client_secret" in o:
            v["oauth2_client_secret_enc"] = box.seal(o["client_secret"])
    return v


def _conflict(exc: IntegrityError, fields: dict[str, Any]) -> Exception:
    # Only the slug is unique; any other constraint failing is a bug upstream, not a duplicate
    # (a null `enabled` used to be answered "slug already exists").
    if "slug" in str(exc.orig):
        return DuplicateSlug("An MCP server with this slug already exists.", {"slug": fields.get("slug")})
    return exc


async def list_servers(db: Database, box: SecretBox, *, enabled_only: bool = False) -> list[McpServerConfig]:
    q = select(mcp_servers).order_by(mcp_servers.c.display_name, mcp_servers.c.slug)
    if enabled_only:
        q = q.where(mcp_servers.c.enabled.is_(True))
    async with db.read() as conn:
        return [_record(r, box) for r in (await conn.execute(q)).all()]


async def get_servers(db: Database, box: SecretBox, ids: list[uuid.UUID]) -> list[McpServerConfig]:
    if not ids:
        return []
    async with db.read() as conn:
        rows = (await conn.execute(select(mcp_servers).where(mcp_servers.c.id.in_(ids)))).all()
    return [_record(r, box) for r in rows]


async def get_server(db: Database, box: SecretBox, server_id: uuid.UUID) -> McpServerConfig:
    async with db.read() as conn:
        r = (await conn.execute(select(mcp_servers).where(mcp_servers.c.id == server_id))).first()
    if r is None:
        raise NotFound("MCP server not found.")
    return _record(r, box)


async def create_server(db: Database, box: SecretBox, now: datetime, fields: dict[str, Any]) -> McpServerConfig:
    sid = uuid.uuid4()
    values = {
        "args": [], "tool_allow_list": [], "tool_deny_list": [], "custom_headers_enc": box.seal("{}"),
        **_values(fields, box),
    }
    try:
        async with db.write() as conn:
            await conn.execute(insert(mcp_servers).values(id=sid, created_at=now, updated_at=now, **values))
    except IntegrityError as exc:
        raise _conflict(exc, fields) from exc
    return await get_server(db, box, sid)


async def update_server(db: Database, box: SecretBox, now: datetime, server_id: uuid.UUID, fields: dict[str, Any]) -> McpServerConfig:
    try:
        async with db.write() as conn:
            n = (
                await conn.execute(
                    update(mcp_servers).where(mcp_servers.c.id == server_id).values(updated_at=now, **_values(fields, box))
                )
            ).rowcount
    except IntegrityError as exc:
        raise _conflict(exc, fields) from exc
    if not n:
        raise NotFound("MCP server not found.")
    return await get_server(db, box, server_id)


async def delete_server(db: Database, now: datetime, server_id: uuid.UUID) -> None:
    async with db.write() as conn:
        n = (await conn.execute(delete(mcp_servers).where(mcp_servers.c.id == server_id))).rowcount
        if not n:
            raise NotFound("MCP server not found.")
        await remove_mcp_server_from_chats(conn, db, server_id, now)


async def existing_ids(db: Database, ids: list[uuid.UUID], *, enabled_only: bool = False) -> set[uuid.UUID]:
    if not ids:
        return set()
    q = select(mcp_servers.c.id).where(mcp_servers.c.id.in_(ids))
    if enabled_only:
        q = q.where(mcp_servers.c.enabled.is_(True))
    async with db.read() as conn:
        rows = (await conn.execute(q)).all()
    return {r.id for r in rows}


async def forced_and_default(db: Database) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """Ids of enabled servers that are force_on, and of those that are default_on."""
    async with db.read() as conn:
        rows = (await conn.execute(select(mcp_servers.c.id, mcp_servers.c.availability).where(mcp_servers.c.enabled.is_(True)))).all()
    forced = [r.id for r in rows if r.availability == McpAvailability.FORCE_ON.value]
    default = [r.id for r in rows if r.availability == McpAvailability.DEFAULT_ON.value]
    return forced, default


def _token(r: Any, box: SecretBox) -> McpUserToken:
    return McpUserToken(
        server_id=r.server_id,
        user_id=r.user_id,
        access_token=box.open(r.access_token_enc) or "",
        refresh_token=box.open(r.refresh_token_enc),
        token_type=r.token_type,
        expires_at=r.expires_at,
    )


async def put_token(db: Database, box: SecretBox, now: datetime, token: McpUserToken) -> None:
    async with db.write() as conn:
        cond = and_(mcp_user_tokens.c.server_id == token.server_id, mcp_user_tokens.c.user_id == token.user_id)
        values = {
            "access_token_enc": box.seal(token.access_token),
            "refresh_token_enc": box.seal(token.refresh_token),
            "token_type": token.token_type,
            "expires_at": token.expires_at,
            "updated_at": now,
        }
        if (await conn.execute(update(mcp_user_tokens).where(cond).values(**values))).rowcount == 0:
            await conn.execute(
                insert(mcp_user_tokens).values(
                    id=uuid.uuid4(), server_id=token.server_id, user_id=token.user_id, created_at=now, **values
                )
            )


async def get_token(db: Database, box: SecretBox, server_id: uuid.UUID, user_id: uuid.UUID) -> McpUserToken | None:
    async with db.read() as conn:
        r = (
            await conn.execute(
                select(mcp_user_tokens).where(and_(mcp_user_tokens.c.server_id == server_id, mcp_user_tokens.c.user_id == user_id))
            )
        ).first()
    return _token(r, box) if r else None


async def user_tokens(db: Database, box: SecretBox, user_id: uuid.UUID) -> dict[uuid.UUID, McpUserToken]:
    async with db.read() as conn:
        rows = (await conn.execute(select(mcp_user_tokens).where(mcp_user_tokens.c.user_id == user_id))).all()
    return {r.server_id: _token(r, box) for r in rows}


async def delete_token(db: Database, server_id: uuid.UUID, user_id: uuid.UUID) -> None:
    async with db.write() as conn:
        await conn.execute(
            delete(mcp_user_tokens).where(and_(mcp_user_tokens.c.server_id == server_id, mcp_user_tokens.c.user_id == user_id))
        )


# --- health --------------------------------------------------------------------------------------

MAX_REASON_CHARS = 1000


async def record_status(
    db: Database, now: datetime, server_id: uuid.UUID, state: McpHealth, reason: str | None = None, *, tool_count: int | None = None
) -> None:
    """Upsert the server's health: a failure keeps the last connect time and tool count, a
    connect the last error (so a page can say "failing since …, last worked at …"). A server
    deleted meanwhile is not an error: there is nothing to report on."""
    ok = state is McpHealth.CONNECTED
    values: dict[str, Any] = {"state": state.value, "updated_at": now}
    if ok:
        values["last_connected_at"] = now
        if tool_count is not None:
            values["tool_count"] = tool_count
    else:
        values["reason"] = (reason or "")[:MAX_REASON_CHARS] or None
        values["last_error_at"] = now
    upsert = postgresql.insert if db.is_postgres else sqlite.insert
    stmt = upsert(mcp_server_status).values(server_id=server_id, **values)
    stmt = stmt.on_conflict_do_update(index_elements=[mcp_server_status.c.server_id], set_=values)
    try:
        async with db.write() as conn:
            await conn.execute(stmt)
    except IntegrityError:
        pass  # the server was deleted between the attempt and this write


async def statuses(db: Database, ids: list[uuid.UUID] | None = None) -> dict[uuid.UUID, McpServerStatus]:
    query = select(mcp_server_status)
    if ids is not None:
        if not ids:
            return {}
        query = query.where(mcp_server_status.c.server_id.in_(ids))
    async with db.read() as conn:
        rows = (await conn.execute(query)).all()
    return {
        r.server_id: McpServerStatus(
            server_id=r.server_id, state=McpHealth(r.state), reason=r.reason, last_error_at=r.last_error_at,
            last_connected_at=r.last_connected_at, updated_at=r.updated_at, tool_count=r.tool_count,
        )
        for r in rows
    }


async def servers_with_token(db: Database, user_id: uuid.UUID) -> set[uuid.UUID]:
    """The servers the user holds an OAuth token for (nothing decrypted)."""
    async with db.read() as conn:
        rows = (await conn.execute(select(mcp_user_tokens.c.server_id).where(mcp_user_tokens.c.user_id == user_id))).all()
    return {r.server_id for r in rows}
