"""Uploaded files (bytes in the database; messages refer to them by id)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import insert, select

from chatd.domain.config import StoredFile
from chatd.errors import NotFound
from chatd.store.database import Database
from chatd.store.tables import files


async def save_file(db: Database, now: datetime, owner_id: uuid.UUID, name: str, media_type: str, data: bytes) -> StoredFile:
    fid = uuid.uuid4()
    async with db.write() as conn:
        await conn.execute(
            insert(files).values(id=fid, owner_id=owner_id, name=name, media_type=media_type, size=len(data), data=data, created_at=now)
        )
    return StoredFile(fid, owner_id, name, media_type, len(data), now)


async def get_file(db: Database, file_id: uuid.UUID, *, with_data: bool = True) -> StoredFile:
    async with db.read() as conn:
        r = (await conn.execute(select(files).where(files.c.id == file_id))).first()
    if r is None:
        raise NotFound("File not found.")
    return StoredFile(r.id, r.owner_id, r.name, r.media_type, r.size, r.created_at, bytes(r.data) if with_data else b"")
