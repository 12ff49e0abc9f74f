"""Web push over the HTTP API and in the store (SPEC §5.10): the VAPID key, subscriptions (keys
write-only, `auth` sealed at rest), validation, and the schema migration; on both databases."""

from __future__ import annotations

import base64
import stat
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Connection, select

from chatd.bootstrap import App
from chatd.domain.clock import ManualClock
from chatd.errors import InvalidInput
from chatd.settings import Settings
from chatd.store import push as push_store
from chatd.store import tables
from chatd.store.database import Database
from chatd.store.migrate import alembic_config
from chatd.worker.push import VAPID_KEY_FILE, VapidConfigError, check_subscription, load_vapid
from tests.conftest import People


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_point(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def browser_keys() -> dict[str, str]:
    """What a browser's PushSubscription carries: its ECDH public key and a 16-byte secret."""
    return {"p256dh": b64url(public_point(ec.generate_private_key(ec.SECP256R1()))), "auth": b64url(uuid.uuid4().bytes)}


def subscription(endpoint: str | None = None) -> dict[str, Any]:
    return {"endpoint": endpoint or f"https://push.example.net/wpush/v2/{uuid.uuid4().hex}", "expirationTime": None, "keys": browser_keys()}


# ---------------------------------------------------------------------------------- VAPID keys


def test_vapid_key_is_generated_once_into_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    first = load_vapid(settings)
    path = tmp_path / "data" / VAPID_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(stored, ec.EllipticCurvePrivateKey)
    assert first.public_key == b64url(public_point(stored))
    assert len(base64.urlsafe_b64decode(first.public_key + "=")) == 65
    assert load_vapid(settings).public_key == first.public_key
    assert first.subject == "mailto:chatd@localhost"
    assert load_vapid(Settings(data_dir=tmp_path / "data", public_url="https://chat.example.org/app")).subject == "https://chat.example.org"


def test_vapid_keys_from_settings_raw_or_pem(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    raw = b64url(key.private_numbers().private_value.to_bytes(32, "big"))
    public = b64url(public_point(key))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    for private in (raw, pem):
        keys = load_vapid(Settings(data_dir=tmp_path, vapid_private_key=private, vapid_public_key=public, vapid_subject="mailto:ops@example.org"))
        assert (keys.public_key, keys.subject) == (public, "mailto:ops@example.org")
    assert not (tmp_path / VAPID_KEY_FILE).exists()
    other = b64url(public_point(ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(VapidConfigError):
        load_vapid(Settings(data_dir=tmp_path, vapid_private_key=raw, vapid_public_key=other))
    with pytest.raises(VapidConfigError):
        load_vapid(Settings(data_dir=tmp_path, vapid_private_key="not a key"))


def test_subscriptions_are_checked_before_chatd_posts_to_them() -> None:
    good = subscription()
    check_subscription(good["endpoint"], **good["keys"])
    bad: list[tuple[str, dict[str, str]]] = [
        ("http://push.example.net/x", good["keys"]),  # http: only when allowed
        ("file:///etc/passwd", good["keys"]),
        ("https:///no-host", good["keys"]),
        (good["endpoint"], {**good["keys"], "p256dh": b64url(b"\x04" + b"\x01" * 64)}),  # not on the curve
        (good["endpoint"], {**good["keys"], "p256dh": good["keys"]["p256dh"][:-4]}),
        (good["endpoint"], {**good["keys"], "auth": b64url(b"short")}),
        (good["endpoint"], {**good["keys"], "auth": "!!!"}),
    ]
    for endpoint, keys in bad:
        with pytest.raises(InvalidInput):
            check_subscription(endpoint, **keys)
    check_subscription("http://127.0.0.1:8/push", **good["keys"], allow_http=True, allow_private=True)
    with pytest.raises(InvalidInput):
        check_subscription("http://127.0.0.1:8/push", **good["keys"], allow_http=True)


# ---------------------------------------------------------------------------------------- API


async def test_the_public_key_is_the_one_the_server_signs_with(client: httpx.AsyncClient, people: People, chatd: App) -> None:
    r = await client.get("/api/v1/push/vapid-public-key", headers=people.alice.headers)
    assert r.status_code == 200
    stored = serialization.load_pem_private_key((chatd.settings.data_dir / VAPID_KEY_FILE).read_bytes(), password=None)
    assert isinstance(stored, ec.EllipticCurvePrivateKey)
    assert r.json() == {"public_key": b64url(public_point(stored))}


async def test_subscribe_unsubscribe_and_keys_are_never_read_back(client: httpx.AsyncClient, people: People, chatd: App) -> None:
    alice, bob = people.alice, people.bob
    sub = subscription()
    r = await client.post("/api/v1/push/subscriptions", headers=alice.headers, json=sub)
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"id", "endpoint", "created_at"} and body["endpoint"] == sub["endpoint"]
    assert sub["keys"]["auth"] not in r.text and sub["keys"]["p256dh"] not in r.text

    (stored,) = await push_store.user_subscriptions(chatd.db, chatd.box, alice.user.id)
    assert (str(stored.id), stored.endpoint, stored.p256dh, stored.auth) == (body["id"], sub["endpoint"], sub["keys"]["p256dh"], sub["keys"]["auth"])
    async with chatd.db.read() as conn:
        row = (await conn.execute(select(tables.push_subscriptions))).one()
    assert row.auth_enc != sub["keys"]["auth"] and sub["keys"]["auth"] not in row.auth_enc

    # The same browser subscribing again (new keys) replaces its row; for another user it moves.
    again = {**sub, "keys": browser_keys()}
    assert (await client.post("/api/v1/push/subscriptions", headers=alice.headers, json=again)).json()["id"] == body["id"]
    (stored,) = await push_store.user_subscriptions(chatd.db, chatd.box, alice.user.id)
    assert stored.auth == again["keys"]["auth"]
    assert (await client.post("/api/v1/push/subscriptions", headers=bob.headers, json=again)).status_code == 201
    assert await push_store.user_subscriptions(chatd.db, chatd.box, alice.user.id) == []

    # Alice cannot remove bob's subscription by naming its endpoint; bob can, twice.
    assert (await client.request("DELETE", "/api/v1/push/subscriptions", headers=alice.headers, json={"endpoint": sub["endpoint"]})).status_code == 204
    assert len(await push_store.user_subscriptions(chatd.db, chatd.box, bob.user.id)) == 1
    for _ in range(2):
        r = await client.request("DELETE", "/api/v1/push/subscriptions", headers=bob.headers, json={"endpoint": sub["endpoint"]})
        assert r.status_code == 204
    assert await push_store.user_subscriptions(chatd.db, chatd.box, bob.user.id) == []


async def test_invalid_subscriptions_are_400(client: httpx.AsyncClient, people: People, chatd: App) -> None:
    good = subscription()
    for bad in (
        {**good, "endpoint": "http://push.example.net/x"},
        {**good, "keys": {**good["keys"], "p256dh": "AAAA"}},
        {"endpoint": good["endpoint"]},
        {**good, "keys": {"p256dh": good["keys"]["p256dh"]}},
        {**good, "endpoint": "https://push.example.net/" + "x" * 3000},
    ):
        r = await client.post("/api/v1/push/subscriptions", headers=people.alice.headers, json=bad)
        assert r.status_code == 400, (bad, r.status_code, r.text)
        assert r.json()["message"]
    assert await push_store.user_subscriptions(chatd.db, chatd.box, people.alice.user.id) == []


async def test_a_user_keeps_at_most_the_newest_subscriptions(chatd: App, people: People, clock: ManualClock) -> None:
    alice = people.alice.user
    endpoints = []
    for _ in range(push_store.MAX_SUBSCRIPTIONS_PER_USER + 3):
        clock.advance(1)
        sub = subscription()
        endpoints.append(sub["endpoint"])
        await push_store.save_subscription(chatd.db, chatd.box, chatd.clock.now(), alice.id, endpoint=sub["endpoint"], **sub["keys"])
    kept = [s.endpoint for s in await push_store.user_subscriptions(chatd.db, chatd.box, alice.id)]
    assert kept == endpoints[3:]


# ---------------------------------------------------------------------------------- migration


def test_migrations_have_one_head() -> None:
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert len(heads) == 1, heads


async def test_push_migration_matches_the_table_and_downgrades(db: Database) -> None:
    def diff(conn: Connection) -> list[Any]:
        found = compare_metadata(MigrationContext.configure(conn), tables.metadata)
        return [d for d in found if "push_subscriptions" in repr(d)]

    def roundtrip(conn: Connection) -> tuple[bool, bool]:
        from alembic import command

        script = ScriptDirectory.from_config(alembic_config())
        before = script.get_revision("0004_push").down_revision
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, str(before))
        gone = not conn.dialect.has_table(conn, "push_subscriptions")
        command.upgrade(cfg, "head")
        return gone, conn.dialect.has_table(conn, "push_subscriptions")

    async with db.engine.connect() as conn:
        assert await conn.run_sync(diff) == []
        assert await conn.run_sync(roundtrip) == (True, True)
        await conn.commit()
