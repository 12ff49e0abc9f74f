"""The web push use cases the API calls (SPEC §5.10): the VAPID public key, and a user's browser
subscriptions. Sending happens in the worker (`chatd.worker.push.WebPush`) when a turn ends.

At the service layer, beside `chatd.service` (a module of its own so push does not touch the chat
use cases)."""

from __future__ import annotations

from chatd.domain.clock import Clock
from chatd.domain.config import User
from chatd.domain.push import PushSubscription
from chatd.store import push as push_store
from chatd.store.database import Database
from chatd.store.secrets import SecretBox
from chatd.worker.push import WebPush, check_endpoint_addresses, check_subscription


class PushService:
    def __init__(self, db: Database, box: SecretBox, clock: Clock, web_push: WebPush, *, allow_http: bool = False) -> None:
        self.db = db
        self.box = box
        self.clock = clock
        self.web_push = web_push
        self.allow_http = allow_http

    @property
    def allow_private(self) -> bool:
        """Push endpoints on loopback/private networks (CHATD_PUSH_ALLOW_PRIVATE): one switch for
        the check at subscription and the one on every connection."""
        return self.web_push.allow_private

    @allow_private.setter
    def allow_private(self, value: bool) -> None:
        self.web_push.allow_private = value

    def public_key(self, actor: User) -> str:
        """The application server key a browser passes to `PushManager.subscribe()`."""
        return self.web_push.public_key

    async def subscribe(self, actor: User, *, endpoint: str, p256dh: str, auth: str) -> PushSubscription:
        check_subscription(endpoint, p256dh, auth, allow_http=self.allow_http, allow_private=self.allow_private)
        await check_endpoint_addresses(endpoint, allow_private=self.allow_private)
        return await push_store.save_subscription(self.db, self.box, self.clock.now(), actor.id, endpoint=endpoint, p256dh=p256dh, auth=auth)

    async def unsubscribe(self, actor: User, endpoint: str) -> None:
        """Idempotent: the browser may already be gone (a 410 deletes it too); another user's
        subscription of the same endpoint is not the caller's to remove."""
        await push_store.delete_subscription(self.db, actor.id, endpoint)
