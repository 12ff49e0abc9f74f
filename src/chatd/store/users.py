"""Users and API tokens (only sha256 hashes are stored)."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from chatd.domain.chat import UserRole
from chatd.domain.config import ApiToken, User
from chatd.errors import Conflict, NotFound
from chatd.store.database import Database
from chatd.store.tables import api_tokens, users

TOKEN_PREFIX = "chatd_"
# last_used_at is a hint for people deciding what to revoke, not an audit log: refreshing it at
# most this often keeps authentication from being a write on every request.
LAST_USED_GRANULARITY = timedelta(minutes=1)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _user(r: object) -> User:
    return User(
        id=r.id,  # type: ignore[attr-defined]
        username=r.username,  # type: ignore[attr-defined]
        role=UserRole(r.role),  # type: ignore[attr-defined]
        created_at=r.created_at,  # type: ignore[attr-defined]
        custom_prompt=r.custom_prompt,  # type: ignore[attr-defined]
        disabled_at=r.disabled_at,  # type: ignore[attr-defined]
    )


async def count_users(db: Database) -> int:
    async with db.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(users))).scalar_one())


async def create_user(db: Database, now: datetime, username: str, role: UserRole) -> User:
    uid = uuid.uuid4()
    try:
        async with db.write() as conn:
            await conn.execute(insert(users).values(id=uid, username=username, role=role.value, custom_prompt="", created_at=now))
    except IntegrityError as exc:
        raise Conflict(f"A user named {username!r} already exists.") from exc
    return User(uid, username, role, now)


async def get_user(db: Database, user_id: uuid.UUID) -> User:
    async with db.read() as conn:
        row = (await conn.execute(select(users).where(users.c.id == user_id))).first()
    if row is None:
        raise NotFound("User not found.")
    return _user(row)


async def get_user_by_name(db: Database, username: str) -> User:
    async with db.read() as conn:
        row = (await conn.execute(select(users).where(users.c.username == username))).first()
    if row is None:
        raise NotFound(f"No user named {username!r}.")
    return _user(row)


async def list_users(db: Database, *, limit: int | None = None, after_username: str | None = None) -> list[User]:
    """By username (unique); `after_username` continues a page (keyset)."""
    q = select(users).order_by(users.c.username)
    if after_username is not None:
        q = q.where(users.c.username > after_username)
    if limit is not None:
        q = q.limit(limit)
    async with db.read() as conn:
        return [_user(r) for r in (await conn.execute(q)).all()]


def _api_token(r: object) -> ApiToken:
    return ApiToken(
        id=r.id,  # type: ignore[attr-defined]
        user_id=r.user_id,  # type: ignore[attr-defined]
        name=r.name,  # type: ignore[attr-defined]
        created_at=r.created_at,  # type: ignore[attr-defined]
        last_used_at=r.last_used_at,  # type: ignore[attr-defined]
    )


async def list_tokens(
    db: Database, user_id: uuid.UUID, *, limit: int | None = None, after: tuple[datetime, uuid.UUID] | None = None
) -> list[ApiToken]:
    """A user's tokens, oldest first (by created_at, then id); `after` continues a page."""
    q = select(api_tokens).where(api_tokens.c.user_id == user_id).order_by(api_tokens.c.created_at, api_tokens.c.id)
    if after is not None:
        at, last = after
        q = q.where(or_(api_tokens.c.created_at > at, and_(api_tokens.c.created_at == at, api_tokens.c.id > last)))
    if limit is not None:
        q = q.limit(limit)
    async with db.read() as conn:
        return [_api_token(r) for r in (await conn.execute(q)).all()]


async def get_token(db: Database, token_id: uuid.UUID) -> ApiToken:
    async with db.read() as conn:
        row = (await conn.execute(select(api_tokens).where(api_tokens.c.id == token_id))).first()
    if row is None:
        raise NotFound("Token not found.")
    return _api_token(row)


async def revoke_token(db: Database, token_id: uuid.UUID) -> None:
    """Delete the token: the next request that presents it is a 401."""
    async with db.write() as conn:
        if (await conn.execute(delete(api_tokens).where(api_tokens.c.id == token_id))).rowcount == 0:
            raise NotFound("Token not found.")


async def set_user_disabled(db: Database, now: datetime, user_id: uuid.UUID, disabled: bool) -> User:
    """Disable (tokens refused) or enable a user. Disabling a disabled user keeps its first time."""
    async with db.write() as conn:
        value = func.coalesce(users.c.disabled_at, now) if disabled else None
        row = (await conn.execute(update(users).where(users.c.id == user_id).values(disabled_at=value).returning(*users.c))).first()
    if row is None:
        raise NotFound("User not found.")
    return _user(row)


async def set_custom_prompt(db: Database, user_id: uuid.UUID, prompt: str) -> User:
    async with db.write() as conn:
        row = (await conn.execute(update(users).where(users.c.id == user_id).values(custom_prompt=prompt).returning(*users.c))).first()
    if row is None:
        raise NotFound("User not found.")
    return _user(row)


async def create_token(db: Database, now: datetime, user_id: uuid.UUID, name: str) -> str:
    """Create an API token; the plaintext is returned once and never stored."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    async with db.write() as conn:
        if (await conn.execute(select(users.c.id).where(users.c.id == user_id))).first() is None:
            raise NotFound("User not found.")
        await conn.execute(
            insert(api_tokens).values(id=uuid.uuid4(), user_id=user_id, name=name, token_hash=hash_token(token), created_at=now)
        )
    return token


async def user_by_token(db: Database, token: str, now: datetime | None = None) -> User | None:
    """The token's user. With `now`, the token's last_used_at is refreshed when it is older than
    LAST_USED_GRANULARITY (a write at most once a minute per token)."""
    async with db.read() as conn:
        row = (
            await conn.execute(
                select(users, api_tokens.c.id.label("token_id"), api_tokens.c.last_used_at)
                .join(api_tokens, api_tokens.c.user_id == users.c.id)
                # A disabled user's tokens are refused from the next request on (an open stream's
                # periodic check ends it too): nothing caches a token's user.
                .where(and_(api_tokens.c.token_hash == hash_token(token), users.c.disabled_at.is_(None)))
            )
        ).first()
    if row is None:
        return None
    if now is not None and (row.last_used_at is None or now - row.last_used_at >= LAST_USED_GRANULARITY):
        async with db.write() as conn:
            await conn.execute(update(api_tokens).where(api_tokens.c.id == row.token_id).values(last_used_at=now))
    return _user(row)
