"""A real Web Push service on 127.0.0.1 (RFC 8030) for tests: it receives what pywebpush sends,
checks the VAPID authorization (RFC 8292: a JWT signed by the application server's key, whose
public half must be the one the browser subscribed with) and decrypts the aes128gcm payload
(RFC 8291) with the keys of a subscription it made, as a browser would.

    async with FakePushService(vapid_public_key, subject) as push:
        sub = push.subscribe()           # {"endpoint": ..., "keys": {"p256dh": ..., "auth": ...}}
        ...
        (message,) = await push.wait_for(1)
        message.payload                  # the decrypted JSON

`push.gone(sub)` makes its endpoint answer 410 Gone from then on. A request that fails a check is
answered 400/401 and recorded in `push.rejected` with the reason.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import http_ece
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.fakes.loopback import LoopbackServer


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class _Subscriber:
    token: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes
    status: int = 201


@dataclass(frozen=True)
class Delivered:
    token: str
    endpoint: str
    payload: dict[str, Any]
    claims: dict[str, Any]
    headers: dict[str, str]


@dataclass
class FakePushService:
    vapid_public_key: str
    subject: str
    delivered: list[Delivered] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    requests: int = 0

    def __post_init__(self) -> None:
        self._subs: dict[str, _Subscriber] = {}
        self._changed = asyncio.Condition()
        self._http: LoopbackServer | None = None
        self.port = 0

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- browsers -------------------------------------------------------------------------------

    def subscribe(self) -> dict[str, Any]:
        """A new browser subscription, as `PushSubscription.toJSON()` gives it."""
        token = os.urandom(12).hex()
        key = ec.generate_private_key(ec.SECP256R1())
        sub = _Subscriber(token, key, os.urandom(16))
        self._subs[token] = sub
        public = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        return {"endpoint": f"{self.origin}/push/{token}", "expirationTime": None, "keys": {"p256dh": b64url(public), "auth": b64url(sub.auth)}}

    def gone(self, subscription: dict[str, Any]) -> None:
        self._subs[subscription["endpoint"].rsplit("/", 1)[1]].status = 410

    def received_by(self, subscription: dict[str, Any]) -> list[Delivered]:
        return [d for d in self.delivered if d.endpoint == subscription["endpoint"]]

    async def wait_for(self, count: int, timeout: float = 10) -> list[Delivered]:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.delivered) >= count)
        return list(self.delivered)

    # -- the push service -----------------------------------------------------------------------

    async def _push(self, request: Request) -> Response:
        self.requests += 1
        try:
            return await self._accept(request)
        finally:
            async with self._changed:
                self._changed.notify_all()

    def _reject(self, status: int, reason: str) -> Response:
        self.rejected.append(reason)
        return Response(reason, status_code=status)

    async def _accept(self, request: Request) -> Response:
        sub = self._subs.get(request.path_params["token"])
        if sub is None:
            return Response(status_code=404)
        if sub.status != 201:
            return Response("subscription expired", status_code=sub.status)
        claims = self._check_vapid(request.headers.get("authorization", ""))
        if isinstance(claims, str):
            return self._reject(401, claims)
        if request.headers.get("content-encoding") != "aes128gcm":
            return self._reject(400, f"content-encoding {request.headers.get('content-encoding')!r}")
        if "ttl" not in request.headers:
            return self._reject(400, "no TTL header")
        body = await request.body()
        try:
            plain = http_ece.decrypt(body, private_key=sub.private_key, auth_secret=sub.auth, version="aes128gcm")
            payload = json.loads(plain)
        except Exception as exc:
            return self._reject(400, f"cannot decrypt: {type(exc).__name__}: {exc}")
        self.delivered.append(
            Delivered(sub.token, f"{self.origin}/push/{sub.token}", payload, claims, dict(request.headers))
        )
        return Response(status_code=201, headers={"location": f"{self.origin}/message/{len(self.delivered)}"})

    def _check_vapid(self, header: str) -> dict[str, Any] | str:
        """The claims of a valid `vapid t=<jwt>,k=<key>` header, else why it is not valid."""
        scheme, _, params = header.partition(" ")
        if scheme.lower() != "vapid":
            return f"authorization scheme {scheme!r}"
        fields = dict(p.strip().split("=", 1) for p in params.split(",") if "=" in p)
        if fields.get("k") != self.vapid_public_key:
            return "k is not the key the subscription was made with"
        token = fields.get("t", "")
        try:
            head_b64, claims_b64, sig_b64 = token.split(".")
            head = json.loads(unb64url(head_b64))
            claims: dict[str, Any] = json.loads(unb64url(claims_b64))
            sig = unb64url(sig_b64)
        except ValueError:
            return "malformed JWT"
        if head.get("alg") != "ES256" or len(sig) != 64:
            return f"JWT alg {head.get('alg')!r}"
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(self.vapid_public_key))
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        try:
            public.verify(der, f"{head_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return "bad JWT signature"
        if claims.get("aud") != self.origin:
            return f"aud {claims.get('aud')!r}"
        if claims.get("sub") != self.subject:
            return f"sub {claims.get('sub')!r}"
        exp = int(claims.get("exp", 0))
        if not time.time() < exp <= time.time() + 24 * 3600:
            return "exp outside (now, now + 24h]"
        return claims

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> FakePushService:
        app = Starlette(routes=[Route("/push/{token}", self._push, methods=["POST"])])
        self._http = LoopbackServer(app, "fake-push-service")
        self._http.start()
        self.port = self._http.port
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.stop()
