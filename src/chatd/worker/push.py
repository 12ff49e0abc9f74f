"""Web push when a root chat's turn ends (SPEC §5.10, reference §11.3), and when a chat starts
waiting for its user's answer (human in the loop).

`WebPush.on_turn_end` is a `TurnEndHook`: it decides whether the owner is told (root chats
only, never after an interrupt or when the chat goes on running), then hands the work to a
background task so the turn's end is never held up by a summary call or a push service. The
task writes the body (the error, or a one-line summary by the cheap model with a fixed fallback),
encrypts it to each of the owner's browsers (RFC 8291, aes128gcm) and signs a VAPID JWT
(RFC 8292) with pywebpush. A push service answering 404/410 means the subscription is gone: it
is deleted. Every other failure is logged and dropped; a notification is a courtesy.

A member chooses the endpoint, so it must not make chatd connect to loopback, private,
link-local, CGNAT, multicast or metadata addresses (SSRF; `chatd.domain.net`). It is checked when
the browser subscribes (a 400 that says why) and again on every connection: pushes go through one
aiohttp session whose socket factory refuses such an address *as it connects*, so a name that
resolves elsewhere by then (DNS rebinding), an IP literal or a redirect gains nothing.
`CHATD_PUSH_ALLOW_PRIVATE=true` lifts the rule for a push service on a private network (tests).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import socket
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid

from chatd.domain.actions import ActionKind, PendingAction, action_prompt
from chatd.domain.chat import Chat, ChatStatus
from chatd.domain.net import blocked_reason, has_userinfo, ip_literal
from chatd.domain.push import PushNotification, PushSubscription
from chatd.errors import InvalidInput
from chatd.loop import TurnOutcome, generate_push_summary
from chatd.settings import Settings
from chatd.store import chats as chat_store
from chatd.store import push as push_store
from chatd.store.database import Database
from chatd.store.secrets import SecretBox
from chatd.store.turns import FinishResult
from chatd.worker.turn import TurnContext

log = logging.getLogger(__name__)

# What aiohttp hands its socket factory (aiohappyeyeballs.AddrInfoType): a getaddrinfo entry.
AddrInfo = tuple[int, int, int, str, tuple[Any, ...]]

VAPID_KEY_FILE = "vapid-private.pem"
FALLBACK_ERROR_BODY = "Agent encountered an error."
# Until the browser is back online; a notification about a finished turn older than a day is noise.
PUSH_TTL_S = 24 * 3600
PUSH_TIMEOUT_S = 10.0
# A push message carries at most ~4 KB once encrypted; an error text is cut well below that.
MAX_BODY_CHARS = 500
# Subscriptions whose push service answers this are gone for good (RFC 8030 §7.3).
_GONE = {404, 410}


class VapidConfigError(InvalidInput):
    code = "vapid_config"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    text = text.strip()
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class VapidKeys:
    """The application server's key pair: the browser subscribes with `public_key` (base64url of
    the uncompressed P-256 point) and push services check each JWT signed with the private key."""

    vapid: Any  # py_vapid.Vapid02 (untyped)
    public_key: str
    subject: str


def _private_from_setting(value: str) -> ec.EllipticCurvePrivateKey:
    text = value.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(text.encode(), password=None)
        else:
            raw = _unb64url(text.replace("\n", ""))
            if len(raw) == 32:
                key = ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
            else:
                key = serialization.load_der_private_key(raw, password=None)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise VapidConfigError("CHATD_VAPID_PRIVATE_KEY is not a P-256 private key (base64url raw or DER, or PEM).") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise VapidConfigError("CHATD_VAPID_PRIVATE_KEY must be a P-256 (prime256v1) key.")
    return key


def _private_from_file(path: Path) -> ec.EllipticCurvePrivateKey:
    """Read the key, or generate it once (mode 0600). O_EXCL: of two processes starting on one
    data directory, one writes and the other reads what it wrote."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
            log.info("generated a VAPID key pair for web push in %s", path)
            return key
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise VapidConfigError(f"{path} does not hold an EC private key.")
    return loaded


def default_subject(settings: Settings) -> str:
    if settings.vapid_subject:
        return settings.vapid_subject
    public = settings.resolved_public_url()
    if public.startswith("https://"):
        parts = urlsplit(public)
        return f"https://{parts.netloc}"
    return "mailto:chatd@localhost"


def load_vapid(settings: Settings) -> VapidKeys:
    """From the settings (`CHATD_VAPID_PRIVATE_KEY` / `_PUBLIC_KEY` / `_SUBJECT`), else from
    `<data dir>/vapid-private.pem`, generated on first use."""
    if settings.vapid_private_key:
        key = _private_from_setting(settings.vapid_private_key)
    else:
        key = _private_from_file(settings.data_dir / VAPID_KEY_FILE)
    point = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    public = _b64url(point)
    if settings.vapid_public_key and _unb64url(settings.vapid_public_key) != point:
        raise VapidConfigError("CHATD_VAPID_PUBLIC_KEY does not match CHATD_VAPID_PRIVATE_KEY.")
    return VapidKeys(vapid=Vapid(key), public_key=public, subject=default_subject(settings))


class PrivatePushEndpoint(InvalidInput):
    code = "push_endpoint_not_public"


def check_subscription(endpoint: str, p256dh: str, auth: str, *, allow_http: bool = False, allow_private: bool = False) -> None:
    """What a browser's PushSubscription must look like before chatd will POST to it."""
    try:
        parts = urlsplit(endpoint)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as exc:
        raise InvalidInput("The push endpoint is not a valid URL.") from exc
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes or not parts.hostname or len(endpoint) > 2048:
        raise InvalidInput("The push endpoint must be an https URL." if not allow_http else "The push endpoint must be an http(s) URL.")
    if has_userinfo(endpoint):
        raise InvalidInput("The push endpoint must not contain a user name or password.")
    literal = ip_literal(parts.hostname)
    if literal is not None and not allow_private:
        _refuse_address(literal)
    try:
        key, secret = _unb64url(p256dh), _unb64url(auth)
    except (ValueError, binascii.Error) as exc:
        raise InvalidInput("keys.p256dh and keys.auth must be base64url.") from exc
    if len(key) != 65 or key[0] != 4:
        raise InvalidInput("keys.p256dh must be an uncompressed P-256 public key (65 bytes).")
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), key)
    except ValueError as exc:
        raise InvalidInput("keys.p256dh is not a point on P-256.") from exc
    if len(secret) != 16:
        raise InvalidInput("keys.auth must be 16 bytes.")


def _refuse_address(ip: Any) -> None:
    reason = blocked_reason(ip)
    if reason is not None:
        raise PrivatePushEndpoint(
            f"The push endpoint resolves to a {reason} address ({ip}); chatd only sends notifications "
            "to public push services (an admin can allow private ones with CHATD_PUSH_ALLOW_PRIVATE=true)."
        )


async def check_endpoint_addresses(endpoint: str, *, allow_private: bool = False) -> None:
    """Refuse an endpoint whose host resolves to any non-public address, now. A name that does not
    resolve yet is let through: the check on every connection (`WebPush`) is the guarantee."""
    if allow_private:
        return
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    if ip_literal(host) is not None:
        return  # checked without DNS by check_subscription
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return
    for info in infos:
        literal = ip_literal(str(info[4][0]))
        if literal is not None:
            _refuse_address(literal)


def _cap(text: str, limit: int = MAX_BODY_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def chat_url(chat_id: uuid.UUID) -> str:
    return f"/#chat={chat_id}"


class WebPush:
    """The web-push dispatcher of one process. Its tasks are its own: `drain()` waits for them,
    `close()` cancels what is left (a notification is not worth delaying shutdown)."""

    def __init__(
        self,
        db: Database,
        box: SecretBox,
        keys: VapidKeys,
        *,
        timeout: float = PUSH_TIMEOUT_S,
        ttl: int = PUSH_TTL_S,
        allow_private: bool = False,
    ) -> None:
        self.db = db
        self.box = box
        self.keys = keys
        self.timeout = timeout
        self.ttl = ttl
        self.allow_private = allow_private
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: aiohttp.ClientSession | None = None

    @property
    def public_key(self) -> str:
        return self.keys.public_key

    # --- the turn-end hook --------------------------------------------------------------------

    async def on_turn_end(self, ctx: TurnContext, res: FinishResult, outcome: TurnOutcome | None, error: str | None) -> None:
        chat = res.chat
        if chat.status is ChatStatus.REQUIRES_ACTION:
            # The chat waits for its user (a sub-agent's too: nobody else can answer it), unless
            # all it waits for is a client-side tool: that is the client's to answer.
            if outcome is not None and outcome.reason == "requires_action":
                self._spawn(self._notify_action(chat), chat.id)
            return
        if ctx.chat.parent_chat_id is not None:
            return  # a sub-agent reports to its parent, not to the user
        if error is not None:
            if chat.status is not ChatStatus.ERROR:
                return  # edited or taken over meanwhile: the chat carries on
        elif outcome is None or outcome.reason not in ("completed", "max_steps") or chat.status is not ChatStatus.WAITING:
            # Interrupted (the user is there), lost to an edit, or a queued message runs next.
            return
        self._spawn(self._notify_end(ctx, res, outcome, error), chat.id)

    async def on_ask(self, ctx: TurnContext, action: PendingAction) -> None:
        """A running call waits for the chat's user (an MCP server's form or page): tell them, as
        for a chat that starts waiting. A sub-agent's too: nobody else can answer it."""
        if action.kind is ActionKind.ELICITATION:
            self._spawn(self._notify_asked(ctx.chat, action), ctx.chat.id)

    async def _notify_asked(self, chat: Chat, action: PendingAction) -> None:
        try:
            subscriptions = await push_store.user_subscriptions(self.db, self.box, chat.owner_id)
            if subscriptions:
                await self.send(subscriptions, PushNotification(title=chat.title, body=_cap(action_prompt([action])), url=chat_url(chat.id)))
        except Exception:
            log.warning("web push for chat %s failed", chat.id, exc_info=True)

    def _spawn(self, work: Coroutine[Any, Any, None], chat_id: uuid.UUID) -> None:
        task = asyncio.create_task(work, name=f"web-push-{chat_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _notify_action(self, chat: Chat) -> None:
        try:
            actions = [a for a in await chat_store.waiting_actions(self.db, chat.id) if a.kind is not ActionKind.CLIENT_TOOL]
            if not actions:
                return
            subscriptions = await push_store.user_subscriptions(self.db, self.box, chat.owner_id)
            if subscriptions:
                await self.send(subscriptions, PushNotification(title=chat.title, body=_cap(action_prompt(actions)), url=chat_url(chat.id)))
        except Exception:
            log.warning("web push for chat %s failed", chat.id, exc_info=True)

    async def _notify_end(self, ctx: TurnContext, res: FinishResult, outcome: TurnOutcome | None, error: str | None) -> None:
        chat = res.chat
        try:
            subscriptions = await push_store.user_subscriptions(self.db, self.box, chat.owner_id)
            if not subscriptions:
                return
            if error is not None:
                body = _cap((chat.last_error or error).strip()) or FALLBACK_ERROR_BODY
            else:
                final_text = outcome.final_text if outcome is not None else ""
                body = await generate_push_summary(ctx.model.quick(), chat.title, final_text)
            await self.send(subscriptions, PushNotification(title=chat.title, body=body, url=chat_url(chat.id)))
        except Exception:
            # Off the turn's path: nothing to hand the failure back to.
            log.warning("web push for chat %s failed", chat.id, exc_info=True)

    # --- sending -------------------------------------------------------------------------------

    async def send(self, subscriptions: list[PushSubscription], notification: PushNotification) -> int:
        """Send to each subscription concurrently; how many push services accepted it."""
        data = json.dumps(notification.payload())
        results = await asyncio.gather(*(self._send_one(s, data) for s in subscriptions))
        return sum(results)

    def _connect_socket(self, addr_info: AddrInfo) -> socket.socket:
        """aiohttp's socket factory: the last word on where a push connects, after DNS."""
        family, type_, proto, _, address = addr_info
        literal = ip_literal(str(address[0]))
        reason = None if self.allow_private or literal is None else blocked_reason(literal)
        if reason is not None or literal is None:
            log.warning("refused to connect to a push service at a %s address (%s)", reason or "unknown", address[0])
            raise OSError(f"refused to connect to a {reason or 'unknown'} address")
        return socket.socket(family=family, type=type_, proto=proto)

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            connector = aiohttp.TCPConnector(socket_factory=self._connect_socket, limit_per_host=10)
            # trust_env=False: no proxy from the environment would see (or bypass) the check.
            self._http = aiohttp.ClientSession(connector=connector, trust_env=False)
        return self._http

    async def _send_one(self, sub: PushSubscription, data: str) -> bool:
        # Imported on the first push, not at start (it pulls in aiohttp and requests).
        from pywebpush import WebPushException, webpush_async

        where = urlsplit(sub.endpoint).netloc  # never the path: it is the browser's capability
        try:
            await webpush_async(
                {"endpoint": sub.endpoint, "keys": {"p256dh": sub.p256dh, "auth": sub.auth}},
                data=data,
                vapid_private_key=self.keys.vapid,
                # A fresh dict each time: pywebpush writes `aud` and `exp` into it.
                vapid_claims={"sub": self.keys.subject},
                timeout=self.timeout,
                ttl=self.ttl,
                aiohttp_session=self._session(),
            )
        except WebPushException as exc:
            status = exc.status_code
            if status in _GONE:
                log.info("push subscription %s at %s is gone (%s); deleting it", sub.id, where, status)
                await push_store.forget_subscription(self.db, sub.id)
            else:
                log.warning("push service %s refused a notification (HTTP %s)", where, status)
            return False
        except Exception as exc:
            # The type only: some client errors quote the whole endpoint URL.
            log.warning("push service %s unreachable (%s)", where, type(exc).__name__)
            return False
        return True

    # --- lifetime ------------------------------------------------------------------------------

    async def drain(self) -> None:
        """Wait for the notifications under way (tests, orderly shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
            self._http = None


__all__ = ["PrivatePushEndpoint", "VapidKeys", "WebPush", "check_endpoint_addresses", "check_subscription", "load_vapid"]
