"""Web push subscriptions (SPEC §5.10): one row per browser, keyed by its endpoint."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from chatd.domain.push import PushSubscription
from chatd.store.database import Database
from chatd.store.secrets import SecretBox
from chatd.store.tables import push_subscriptions

# A user rarely has more browsers than this; the oldest subscriptions go first beyond it, so a
# client that re-subscribes in a loop cannot grow the table (or a turn's fan-out) without bound.
MAX_SUBSCRIPTIONS_PER_USER = 20


def _subscription(r: Any, box: SecretBox) -> PushSubscription:
    auth = box.open(r.auth_enc)
    assert auth is not None
    return PushSubscription(id=r.id, user_id=r.user_id, endpoint=r.endpoint, p256dh=r.p256dh, auth=auth, created_at=r.created_at)


async def save_subscription(
    db: Database, box: SecretBox, now: datetime, user_id: uuid.UUID, *, endpoint: str, p256dh: str, auth: str
) -> PushSubscription:
    """Insert, or take over the row of the same endpoint (a browser re-subscribing, perhaps for
    another user after a login change): the endpoint is the browser, the newest owner wins.

    One upsert on both dialects (`ON CONFLICT (endpoint) DO UPDATE`), so two concurrent
    subscriptions of one endpoint cannot both insert."""
    values = {"user_id": user_id, "p256dh": p256dh, "auth_enc": box.seal(auth), "created_at": now}
    insert = postgresql.insert if db.is_postgres else sqlite.insert
    stmt = insert(push_subscriptions).values(id=uuid.uuid4(), endpoint=endpoint, **values)
    stmt = stmt.on_conflict_do_update(index_elements=[push_subscriptions.c.endpoint], set_=values)
    async with db.write() as conn:
        row = (await conn.execute(stmt.returning(*push_subscriptions.c))).one()
        keep = (
            select(push_subscriptions.c.id)
            .where(push_subscriptions.c.user_id == user_id)
            .order_by(push_subscriptions.c.created_at.desc(), push_subscriptions.c.id)
            .limit(MAX_SUBSCRIPTIONS_PER_USER)
        )
        await conn.execute(
            delete(push_subscriptions).where(
                and_(push_subscriptions.c.user_id == user_id, push_subscriptions.c.id.not_in(keep.scalar_subquery()))
            )
        )
    return _subscription(row, box)


async def delete_subscription(db: Database, user_id: uuid.UUID, endpoint: str) -> bool:
    """The user turned notifications off in that browser; whether there was such a subscription."""
    async with db.write() as conn:
        res = await conn.execute(
            delete(push_subscriptions).where(and_(push_subscriptions.c.user_id == user_id, push_subscriptions.c.endpoint == endpoint))
        )
    return bool(res.rowcount)


async def forget_subscription(db: Database, subscription_id: uuid.UUID) -> None:
    """The push service said the subscription is gone (404/410)."""
    async with db.write() as conn:
        await conn.execute(delete(push_subscriptions).where(push_subscriptions.c.id == subscription_id))


async def user_subscriptions(db: Database, box: SecretBox, user_id: uuid.UUID) -> list[PushSubscription]:
    async with db.read() as conn:
        rows = (
            await conn.execute(
                select(push_subscriptions)
                .where(push_subscriptions.c.user_id == user_id)
                .order_by(push_subscriptions.c.created_at, push_subscriptions.c.id)
            )
        ).all()
    return [_subscription(r, box) for r in rows]
