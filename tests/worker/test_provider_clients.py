"""Provider clients are shared across turns: one HTTP client (and connection) per provider key,
rebuilt when the key changes, closed once the last turn using the old one ends, and on shutdown."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import httpx2
import pytest

from chatd.domain.chat import ChatStatus
from chatd.loop.quickgen import QUICK_SDK_RETRIES
from chatd.providers import ProviderClients, ProviderConfig
from chatd.providers.clients import ShardedTransport, _tls_for
from chatd.store import models as model_store
from tests.fakes.llm_server import Reply
from tests.worker.conftest import Rig


def clients_of(rig: Rig) -> ProviderClients:
    providers = rig.app.providers
    assert isinstance(providers, ProviderClients)
    return providers


async def test_two_turns_share_one_client_and_one_connection(rig: Rig) -> None:
    rig.llm.script(Reply(text="one"), Reply(text="two"))
    first = await rig.chat("first")
    await rig.run()
    second = await rig.chat("second")
    await rig.run()
    assert [(await rig.get(c.id)).status for c in (first, second)] == [ChatStatus.WAITING, ChatStatus.WAITING]
    assert clients_of(rig).clients_built == 1
    # The second turn reused the first one's kept-alive connection (a new client would open its own).
    peers = {r.peer for r in rig.llm.requests}
    assert len(rig.llm.requests) == 2 and len(peers) == 1, peers


async def test_a_changed_key_takes_effect_on_the_next_turn_and_the_old_client_is_closed(rig: Rig) -> None:
    rig.llm.script(Reply(text="one"), Reply(text="two"))
    await rig.chat("first")
    await rig.run()
    provider = next(p for p in await model_store.list_providers(rig.app.db, rig.app.box) if p.provider == "openai-compatible")
    await rig.app.service.update_provider(rig.people.admin.user, provider.id, {"api_key": "sk-rotated"})
    await rig.chat("second")
    await rig.run()
    assert [r.headers["authorization"] for r in rig.llm.requests] == ["Bearer sk-test", "Bearer sk-rotated"]
    clients = clients_of(rig)
    assert (clients.clients_built, clients.open_clients) == (2, 1)


async def test_a_retired_client_stays_open_until_its_last_lease_is_released() -> None:
    clients = ProviderClients(max_connections=4)
    old = ProviderConfig("openai-compatible", "sk-old", "http://127.0.0.1:9/v1")
    new = ProviderConfig("openai-compatible", "sk-new", "http://127.0.0.1:9/v1")
    try:
        turn_a = await clients.lease(old)
        title_a = turn_a.retain()
        turn_b = await clients.lease(new)  # the key changed: `old` is retired, still in use by A
        assert clients.open_clients == 2
        await turn_a.release()
        await turn_a.release()  # a second release of the same lease changes nothing
        assert clients.open_clients == 2
        await title_a.release()
        assert clients.open_clients == 1
        assert (await clients.lease(new)).model("m") is turn_b.model("m")  # models are shared too
    finally:
        await clients.close()
    assert clients.open_clients == 0


async def test_a_new_client_is_not_closed_under_its_first_turn_by_a_change_made_while_the_old_one_closes() -> None:
    clients = ProviderClients(max_connections=4)
    old = ProviderConfig("openai-compatible", "sk-old", "http://127.0.0.1:9/v1")
    new = ProviderConfig("openai-compatible", "sk-new", "http://127.0.0.1:9/v1")
    newer = ProviderConfig("openai-compatible", "sk-newer", "http://127.0.0.1:9/v1")
    try:
        await (await clients.lease(old)).release()
        old_client = clients._current[old].client
        closing, finish_close = asyncio.Event(), asyncio.Event()
        real_aclose = old_client.aclose

        async def slow_aclose() -> None:
            closing.set()
            await finish_close.wait()
            await real_aclose()

        old_client.aclose = slow_aclose  # type: ignore[method-assign]
        # Turn A leases `new`: `old` is retired and its close takes a while.
        turn_a = asyncio.create_task(clients.lease(new))
        await asyncio.wait_for(closing.wait(), 5)
        # Meanwhile the key changes again and turn B leases `newer`, which retires `new`.
        turn_b = await clients.lease(newer)
        finish_close.set()
        lease_a = await asyncio.wait_for(turn_a, 5)
        # A's client stays open until A lets go of it.
        assert not lease_a._entry.client.is_closed
        await lease_a.release()
        assert lease_a._entry.client.is_closed
        await turn_b.release()
    finally:
        await clients.close()


async def test_closing_the_app_closes_the_provider_clients(rig: Rig) -> None:
    rig.llm.script(Reply(text="one"))
    await rig.chat("first")
    await rig.run()
    clients = clients_of(rig)
    assert clients.open_clients == 1
    await rig.workers.shutdown()
    await rig.app.close()
    assert clients.open_clients == 0


def test_a_plain_http_provider_loads_no_ca_bundle_and_fails_closed_on_tls() -> None:
    plain = _tls_for("http://127.0.0.1:8000/v1")
    assert plain.cert_store_stats()["x509_ca"] == 0
    assert (plain.verify_mode, plain.check_hostname) == (ssl.CERT_REQUIRED, True)
    assert _tls_for("https://api.openai.com/v1") is _tls_for(None)
    assert _tls_for(None).verify_mode is ssl.CERT_REQUIRED


async def test_turns_send_through_the_shared_sdk_client_which_retries_nothing_and_titles_keep_the_sdk_retries(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pydantic-ai copies the SDK client for a request whose settings carry `max_retries` (the SDKs
    # take it per client): the shared client retries nothing itself, so a turn sends no setting and
    # makes no copy; a title asks for the SDK's default retries, through a copy.
    import openai

    copies: list[int] = []
    real = openai.AsyncOpenAI.with_options

    def spy(self: openai.AsyncOpenAI, **kw: Any) -> openai.AsyncOpenAI:
        copies.append(kw["max_retries"])
        return real(self, **kw)

    monkeypatch.setattr(openai.AsyncOpenAI, "with_options", spy)
    rig.app.settings.generate_titles = True
    rig.llm.script(Reply(text="one"))
    rig.llm.script_side(Reply(text="A title"))
    chat = await rig.chat("first")
    await rig.run()
    await rig.titled(chat.id, "A title")
    assert copies == [QUICK_SDK_RETRIES]
    entry = next(iter(clients_of(rig)._current.values()))
    assert entry.provider.client.max_retries == 0


class _CountingPool(httpx2.AsyncBaseTransport):
    def __init__(self) -> None:
        self.requests = 0

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self.requests += 1
        return httpx2.Response(200, stream=httpx2.ByteStream(b"data"))


async def test_a_provider_client_spreads_concurrent_requests_over_its_pools_and_keeps_a_lone_turn_on_one() -> None:
    transport = ShardedTransport(verify=_tls_for("http://127.0.0.1:9/v1"), limits=httpx2.Limits(max_connections=5), shards=3)
    # The limit is split between the pools, larger shares first: together they allow exactly 5.
    assert [pool._pool._max_connections for pool in transport._pools] == [2, 2, 1]
    pools = [_CountingPool() for _ in range(3)]
    transport._pools = pools  # type: ignore[assignment]
    request = httpx2.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    for _ in range(3):  # one request after another: always the first pool (its kept-alive connection)
        await (await transport.handle_async_request(request)).aclose()
    assert [p.requests for p in pools] == [3, 0, 0]
    open_ = [await transport.handle_async_request(request) for _ in range(4)]
    assert [p.requests for p in pools] == [5, 1, 1]  # the fewest in flight, the first on a tie
    await open_[1].aclose()
    await open_[1].aclose()  # closed twice: counted once
    await transport.handle_async_request(request)
    assert [p.requests for p in pools] == [5, 2, 1]
    for response in open_:
        await response.aclose()


async def test_a_provider_client_still_goes_through_the_environments_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "localhost")
    clients = ProviderClients(max_connections=4)
    try:
        lease = await clients.lease(ProviderConfig("openai", "sk-x", None))
        client = clients._current[ProviderConfig("openai", "sk-x", None)].client
        proxied = client._transport_for_url(httpx2.URL("https://api.openai.com/v1/chat/completions"))
        assert isinstance(proxied, httpx2.AsyncHTTPTransport) and type(proxied._pool).__name__ == "AsyncHTTPProxy"
        assert isinstance(client._transport_for_url(httpx2.URL("https://localhost/v1")), ShardedTransport)
        await lease.release()
    finally:
        await clients.close()
