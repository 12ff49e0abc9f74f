"""Web push (SPEC §5.10): the VAPID public key and the caller's browser subscriptions.

The body of `POST /push/subscriptions` is the browser's `PushSubscription.toJSON()`; the keys
are write-only (never read back)."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from chatd.api.deps import CurrentUser, Push
from chatd.api.schemas import TextChecked

router = APIRouter(prefix="/api/v1/push", tags=["push"])


class VapidKeyOut(BaseModel):
    public_key: str = Field(description="The application server key for PushManager.subscribe(), base64url.")


class SubscriptionKeys(TextChecked):
    p256dh: str = Field(min_length=1, max_length=256)
    auth: str = Field(min_length=1, max_length=64)


class SubscriptionIn(TextChecked):
    # Browsers add `expirationTime` to the JSON; anything else is ignored too.
    endpoint: str = Field(min_length=1, max_length=2048)
    keys: SubscriptionKeys


class UnsubscribeIn(TextChecked):
    endpoint: str = Field(min_length=1, max_length=2048)


class SubscriptionOut(BaseModel):
    id: uuid.UUID
    endpoint: str
    created_at: datetime


@router.get("/vapid-public-key")
async def vapid_public_key(user: CurrentUser, push: Push) -> VapidKeyOut:
    return VapidKeyOut(public_key=push.public_key(user))


@router.post("/subscriptions", status_code=201)
async def subscribe(body: SubscriptionIn, user: CurrentUser, push: Push) -> SubscriptionOut:
    sub = await push.subscribe(user, endpoint=body.endpoint, p256dh=body.keys.p256dh, auth=body.keys.auth)
    return SubscriptionOut(id=sub.id, endpoint=sub.endpoint, created_at=sub.created_at)


@router.delete("/subscriptions", status_code=204)
async def unsubscribe(body: UnsubscribeIn, user: CurrentUser, push: Push) -> Response:
    await push.unsubscribe(user, body.endpoint)
    return Response(status_code=204)
