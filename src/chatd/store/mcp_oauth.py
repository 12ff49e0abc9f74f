"""OAuth2 state for MCP servers: discovered authorization servers and registered clients, pending
browser authorizations (single use), and the user-token row lock a refresh holds.

`SqlOAuthVault` is the storage `chatd.mcp.authorization.McpAuthorization` needs; it fits that
protocol structurally (the store does not import the MCP package)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from chatd.domain.mcp import McpServerConfig, McpUserToken
from chatd.domain.oauth import OAuthClientRecord, PendingAuthorization
from chatd.store import mcp_servers as server_store
from chatd.store.database import Database
from chatd.store.secrets import SecretBox
from chatd.store.tables import mcp_oauth_clients, mcp_oauth_states, mcp_user_tokens


def _client(r: Any, box: SecretBox) -> OAuthClientRecord:
    return OAuthClientRecord(
        server_id=r.server_id,
        server_url=r.server_url,
        redirect_uri=r.redirect_uri,
        issuer=r.issuer,
        authorization_endpoint=r.authorization_endpoint,
        token_endpoint=r.token_endpoint,
        resource=r.resource,
        client_id=r.client_id,
        client_secret=box.open(r.client_secret_enc),
        auth_method=r.auth_method,
        dynamic=r.dynamic,
        created_at=r.created_at,
    )


async def get_client(db: Database, box: SecretBox, server_id: uuid.UUID) -> OAuthClientRecord | None:
    async with db.read() as conn:
        r = (await conn.execute(select(mcp_oauth_clients).where(mcp_oauth_clients.c.server_id == server_id))).first()
    return _client(r, box) if r else None


async def save_client(db: Database, box: SecretBox, record: OAuthClientRecord) -> None:
    values = {
        "server_url": record.server_url,
        "redirect_uri": record.redirect_uri,
        "issuer": record.issuer,
        "authorization_endpoint": record.authorization_endpoint,
        "token_endpoint": record.token_endpoint,
        "resource": record.resource,
        "client_id": record.client_id,
        "client_secret_enc": box.seal(record.client_secret),
        "auth_method": record.auth_method,
        "dynamic": record.dynamic,
        "created_at": record.created_at,
    }
    async with db.write() as conn:
        cond = mcp_oauth_clients.c.server_id == record.server_id
        if (await conn.execute(update(mcp_oauth_clients).where(cond).values(**values))).rowcount == 0:
            await conn.execute(insert(mcp_oauth_clients).values(server_id=record.server_id, **values))


async def save_pending(db: Database, box: SecretBox, pending: PendingAuthorization) -> None:
    """Store a new pending authorization; purge the expired ones on the way."""
    async with db.write() as conn:
        await conn.execute(delete(mcp_oauth_states).where(mcp_oauth_states.c.expires_at < pending.created_at))
        await conn.execute(
            insert(mcp_oauth_states).values(
                state_hash=pending.state_hash,
                server_id=pending.server_id,
                user_id=pending.user_id,
                code_verifier_enc=box.seal(pending.code_verifier),
                redirect_uri=pending.redirect_uri,
                client_id=pending.client_id,
                auth_method=pending.auth_method,
                token_endpoint=pending.token_endpoint,
                resource=pending.resource,
                created_at=pending.created_at,
                expires_at=pending.expires_at,
            )
        )


async def take_pending(db: Database, box: SecretBox, state_hash: str, now: datetime) -> PendingAuthorization | None:
    """Delete and return the pending authorization: a state is usable once, then never again.

    `DELETE ... RETURNING` on both dialects: of two concurrent callbacks with one state, exactly
    one gets the row. An expired row is deleted too, and reported as missing.
    """
    async with db.write() as conn:
        r = (
            await conn.execute(
                delete(mcp_oauth_states).where(mcp_oauth_states.c.state_hash == state_hash).returning(*mcp_oauth_states.c)
            )
        ).first()
    if r is None or r.expires_at <= now:
        return None
    return PendingAuthorization(
        state_hash=r.state_hash,
        server_id=r.server_id,
        user_id=r.user_id,
        code_verifier=box.open(r.code_verifier_enc) or "",
        redirect_uri=r.redirect_uri,
        client_id=r.client_id,
        auth_method=r.auth_method,
        token_endpoint=r.token_endpoint,
        resource=r.resource,
        created_at=r.created_at,
        expires_at=r.expires_at,
    )


@dataclass
class TokenSlot:
    """A user's token for one server, held for a refresh: read, then replaced or deleted."""

    token: McpUserToken | None
    _db: Database
    _box: SecretBox
    _conn: AsyncConnection | None
    _now: datetime

    async def save(self, token: McpUserToken) -> None:
        if self._conn is not None:
            await _write_token(self._conn, self._box, self._now, token)
        else:
            await server_store.put_token(self._db, self._box, self._now, token)
        self.token = token

    async def delete(self) -> None:
        if self.token is None:
            return
        if self._conn is not None:
            await self._conn.execute(delete(mcp_user_tokens).where(_token_cond(self.token.server_id, self.token.user_id)))
        else:
            await server_store.delete_token(self._db, self.token.server_id, self.token.user_id)
        self.token = None


def _token_cond(server_id: uuid.UUID, user_id: uuid.UUID) -> Any:
    return and_(mcp_user_tokens.c.server_id == server_id, mcp_user_tokens.c.user_id == user_id)


async def _write_token(conn: AsyncConnection, box: SecretBox, now: datetime, token: McpUserToken) -> None:
    await conn.execute(
        update(mcp_user_tokens)
        .where(_token_cond(token.server_id, token.user_id))
        .values(
            access_token_enc=box.seal(token.access_token),
            refresh_token_enc=box.seal(token.refresh_token),
            token_type=token.token_type,
            expires_at=token.expires_at,
            updated_at=now,
        )
    )


@asynccontextmanager
async def token_for_refresh(
    db: Database, box: SecretBox, server_id: uuid.UUID, user_id: uuid.UUID, now: datetime
) -> AsyncIterator[TokenSlot]:
    """Hold the user's token row while a refresh runs, so that no other replica refreshes it too.

    PostgreSQL: a write transaction with `SELECT ... FOR UPDATE`; a second replica blocks on the
    row until the first commits and then reads the rotated token (and does not refresh). The
    transaction spans one token request, bounded by its HTTP timeout.
    SQLite: one replica by design (its pubsub is in-process), and the caller's in-process lock
    already serialises refreshes; holding `BEGIN IMMEDIATE` across an HTTP request would stall
    every writer of the database, so the row is read and written in two short transactions.
    """
    if db.is_postgres:
        async with db.write() as conn:
            r = (await conn.execute(select(mcp_user_tokens).where(_token_cond(server_id, user_id)).with_for_update())).first()
            yield TokenSlot(server_store._token(r, box) if r else None, db, box, conn, now)
        return
    yield TokenSlot(await server_store.get_token(db, box, server_id, user_id), db, box, None, now)


class SqlOAuthVault:
    """The storage of `McpAuthorization`, on the chatd database."""

    def __init__(self, db: Database, box: SecretBox) -> None:
        self.db = db
        self.box = box

    async def server(self, server_id: uuid.UUID) -> McpServerConfig:
        return await server_store.get_server(self.db, self.box, server_id)

    async def client(self, server_id: uuid.UUID) -> OAuthClientRecord | None:
        return await get_client(self.db, self.box, server_id)

    async def save_client(self, record: OAuthClientRecord) -> None:
        await save_client(self.db, self.box, record)

    async def save_pending(self, pending: PendingAuthorization) -> None:
        await save_pending(self.db, self.box, pending)

    async def take_pending(self, state_hash: str, now: datetime) -> PendingAuthorization | None:
        return await take_pending(self.db, self.box, state_hash, now)

    async def token(self, server_id: uuid.UUID, user_id: uuid.UUID) -> McpUserToken | None:
        return await server_store.get_token(self.db, self.box, server_id, user_id)

    async def save_token(self, token: McpUserToken, now: datetime) -> None:
        await server_store.put_token(self.db, self.box, now, token)

    def token_for_refresh(
        self, server_id: uuid.UUID, user_id: uuid.UUID, now: datetime
    ) -> AbstractAsyncContextManager[TokenSlot]:
        return token_for_refresh(self.db, self.box, server_id, user_id, now)
