"""Users and API tokens (only sha256 hashes are stored)."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import datetime

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError

from chatd.domain.chat import UserRole
from chatd.domain.config import User
from chatd.errors import Conflict, NotFound
from chatd.store.database import Database
from chatd.store.tables import api_tokens, users

TOKEN_PREFIX = "chatd_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _user(r: object) -> User:
    return User(
        id=r.id,  # type: ignore[attr-defined]
        username=r.username,  # type: ignore[attr-defined]
        role=UserRole(r.role),  # type: ignore[attr-defined]
        created_at=r.created_at,  # type: ignore[attr-defined]
        custom_prompt=r.custom_prompt,  # type: ignore[attr-defined]
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


async def list_users(db: Database) -> list[User]:
    async with db.read() as conn:
        return [_user(r) for r in (await conn.execute(select(users).order_by(users.c.username))).all()]


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


async def user_by_token(db: Database, token: str) -> User | None:
    async with db.read() as conn:
        row = (
            await conn.execute(
                select(users).join(api_tokens, api_tokens.c.user_id == users.c.id).where(api_tokens.c.token_hash == hash_token(token))
            )
        ).first()
    return _user(row) if row else None
