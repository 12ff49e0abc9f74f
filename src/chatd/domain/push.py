"""Web push (SPEC §5.10): a browser's push subscription, and the notification chatd sends."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class PushSubscription:
    """One browser's subscription (the PushSubscription JSON of the Push API).

    `endpoint` is the push service URL for that browser; `p256dh` (its ECDH public key) and `auth`
    (a shared secret, encrypted at rest) are what the payload is encrypted to (RFC 8291).
    """

    id: uuid.UUID
    user_id: uuid.UUID
    endpoint: str
    p256dh: str
    auth: str  # decrypted; never leaves the server
    created_at: datetime


@dataclass(frozen=True, slots=True)
class PushNotification:
    title: str
    body: str
    url: str
    icon: str = "/favicon.ico"

    def payload(self) -> dict[str, Any]:
        """What the browser's service worker receives (reference §11.3)."""
        return {"title": self.title, "body": self.body, "icon": self.icon, "data": {"url": self.url}}
