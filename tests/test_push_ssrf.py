"""A member's push endpoint must never make chatd connect to loopback, private, link-local,
CGNAT, multicast or metadata addresses (issue 9, item 3), neither when it subscribes nor when a
name resolves elsewhere by the time chatd sends (DNS rebinding). And admin-set URLs may not carry
credentials in their userinfo."""

from __future__ import annotations

import ipaddress
import logging
import uuid

import httpx
import pytest

from chatd.bootstrap import App
from chatd.domain.net import blocked_reason, has_userinfo
from chatd.domain.push import PushNotification
from chatd.store import push as push_store
from tests.conftest import People
from tests.fakes.push_service import FakePushService
from tests.test_push_api import subscription


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
        ("10.0.0.1", "private"), ("172.16.5.4", "private"), ("192.168.1.1", "private"), ("fc00::1", "private"),
        ("169.254.169.254", "cloud metadata"), ("fd00:ec2::254", "cloud metadata"),
        ("169.254.1.1", "link-local"), ("fe80::1", "link-local"),
        ("100.64.0.1", "shared (CGNAT)"), ("100.100.100.200", "shared (CGNAT)"),
        ("224.0.0.1", "multicast"), ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"), ("::", "unspecified"),
        ("::ffff:127.0.0.1", "loopback"), ("::ffff:169.254.169.254", "cloud metadata"),
        ("64:ff9b::a00:1", "private"), ("2002:c0a8:101::", "private"),
        ("8.8.8.8", None), ("142.250.74.78", None), ("2607:f8b0:4005:80a::200e", None), ("::ffff:8.8.8.8", None),
    ],
)  # fmt: skip
def test_addresses_a_member_may_not_reach_are_named(address: str, reason: str | None) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) == reason


BLOCKED_ENDPOINTS = [
    "https://127.0.0.1/push/x",
    "https://127.0.0.1:8443/push/x",
    "https://[::1]/push/x",
    "https://[::ffff:127.0.0.1]/push/x",
    "https://localhost/push/x",  # a name: what it resolves to counts
    "https://10.1.2.3/push/x",
    "https://192.168.0.10/push/x",
    "https://169.254.169.254/latest/meta-data/",
    "https://[fd00:ec2::254]/latest/",
    "https://100.64.1.1/push/x",
    "https://[fe80::1]/push/x",
    "https://224.0.0.251/push/x",
    "https://0.0.0.0/push/x",
    "https://user:hunter2@push.example.net/push/x",
]


async def test_push_subscriptions_to_private_addresses_are_400_and_not_stored(client: httpx.AsyncClient, people: People, chatd: App) -> None:
    good = subscription()
    for endpoint in BLOCKED_ENDPOINTS:
        r = await client.post("/api/v1/push/subscriptions", headers=people.alice.headers, json={**good, "endpoint": endpoint})
        assert r.status_code == 400, (endpoint, r.status_code, r.text)
        assert r.json()["message"]
        assert "hunter2" not in r.text
    assert await push_store.user_subscriptions(chatd.db, chatd.box, people.alice.user.id) == []
    # A public push service is fine.
    r = await client.post("/api/v1/push/subscriptions", headers=people.alice.headers, json={**good, "endpoint": "https://203.0.113.7/push/x"})
    assert r.status_code == 400  # TEST-NET-3 is documentation space, not public
    r = await client.post("/api/v1/push/subscriptions", headers=people.alice.headers, json={**good, "endpoint": "https://8.8.8.8/push/x"})
    assert r.status_code == 201, r.text


async def test_the_operator_setting_allows_a_private_push_service(client: httpx.AsyncClient, people: People, chatd: App) -> None:
    chatd.push.allow_private = True
    r = await client.post("/api/v1/push/subscriptions", headers=people.alice.headers, json={**subscription(), "endpoint": "https://10.1.2.3/push/x"})
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
async def test_a_push_is_not_sent_when_the_endpoint_points_at_a_private_address_at_send_time(
    chatd: App, people: People, host: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The subscription was accepted while its name resolved to a public address; now the name
    (or, stored before this rule, a literal) leads to loopback, where a service listens."""
    push = chatd.push
    assert push.allow_private is False
    async with FakePushService(push.web_push.public_key, push.web_push.keys.subject) as fake:
        sub = fake.subscribe()
        endpoint = sub["endpoint"].replace("127.0.0.1", host)
        await push_store.save_subscription(chatd.db, chatd.box, chatd.clock.now(), people.alice.user.id, endpoint=endpoint, **sub["keys"])
        subs = await push_store.user_subscriptions(chatd.db, chatd.box, people.alice.user.id)
        with caplog.at_level(logging.WARNING):
            sent = await push.web_push.send(subs, PushNotification(title="t", body="b", url=f"/#chat={uuid.uuid4()}"))
        assert sent == 0
        assert fake.delivered == [] and fake.rejected == []
        assert "refused to connect to a push service at a loopback address" in caplog.text
        # With the operator's setting the same subscription reaches the service: it was there.
        push.allow_private = True
        await push.web_push.send(subs, PushNotification(title="t", body="b", url="/"))
        assert len(fake.delivered) + len(fake.rejected) == 1


def test_userinfo_is_found_in_urls() -> None:
    assert has_userinfo("https://user:pw@example.com/v1")
    assert has_userinfo("https://token@example.com/v1")
    assert not has_userinfo("https://example.com/v1?user=a@b")
    assert not has_userinfo("http://127.0.0.1:11434/v1")


async def test_admin_urls_with_credentials_in_them_are_400_and_never_logged(
    client: httpx.AsyncClient, people: People, caplog: pytest.LogCaptureFixture
) -> None:
    admin = people.admin.headers
    with caplog.at_level(logging.DEBUG):
        r = await client.post(
            "/api/v1/providers", headers=admin,
            json={"provider": "openai-compatible", "base_url": "https://bob:s3cret-pw@llm.internal/v1", "api_key": "k"},
        )  # fmt: skip
        assert r.status_code == 400, r.text
        assert "s3cret-pw" not in r.text
        r = await client.post(
            "/api/v1/mcp-servers", headers=admin,
            json={"slug": "docs", "display_name": "Docs", "transport": "streamable_http", "url": "https://bob:s3cret-pw@mcp.internal/mcp"},
        )  # fmt: skip
        assert r.status_code == 400, r.text
        assert "s3cret-pw" not in r.text
        # Loopback and private addresses stay allowed for admins (a local model server).
        r = await client.post("/api/v1/providers", headers=admin, json={"provider": "openai-compatible", "base_url": "http://127.0.0.1:11434/v1"})
        assert r.status_code == 201, r.text
        pid = r.json()["id"]
        r = await client.patch(f"/api/v1/providers/{pid}", headers=admin, json={"base_url": "http://u:s3cret-pw@127.0.0.1:11434/v1"})
        assert r.status_code == 400, r.text
    assert "s3cret-pw" not in caplog.text
