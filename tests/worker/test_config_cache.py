"""Configuration a turn reads is cached per replica: read once across turns, dropped when a change
is announced (on this replica or another), and never kept past its TTL when a hint is lost."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from cryptography.fernet import Fernet

from chatd.bootstrap import build
from chatd.domain.chat import UserRole
from chatd.pubsub.base import CONFIG_CHANNEL
from chatd.settings import Settings
from chatd.store import models as model_store
from chatd.store import users as user_store
from chatd.worker.config_cache import ConfigCache
from tests.fakes.llm_server import Reply
from tests.worker.conftest import Rig


class Monotonic:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def cache_of(rig: Rig) -> ConfigCache:
    cache = rig.app.config
    assert isinstance(cache, ConfigCache)
    return cache


async def test_a_second_turn_reads_no_configuration_from_the_database(rig: Rig) -> None:
    rig.llm.script(Reply(text="one"), Reply(text="two"))
    await rig.chat("first")
    await rig.run()
    loads = cache_of(rig).loads
    assert loads > 0
    await rig.chat("second")
    await rig.run()
    assert cache_of(rig).loads == loads


async def test_a_changed_custom_prompt_reaches_the_next_turn(rig: Rig) -> None:
    rig.llm.script(Reply(text="one"), Reply(text="two"))
    await rig.chat("first")
    await rig.run()
    await rig.app.service.set_custom_prompt(rig.people.alice.user, "Answer in French.")
    await rig.chat("second")
    await rig.run()
    systems = [str(m.get("content")) for m in rig.llm.requests[1].body["messages"] if m["role"] == "system"]
    assert any("Answer in French." in s for s in systems), systems
    assert not any("Answer in French." in str(m.get("content")) for m in rig.llm.requests[0].body["messages"])


async def test_a_change_that_was_not_announced_is_seen_once_the_ttl_expires(rig: Rig) -> None:
    app, alice = rig.app, rig.people.alice.user
    clock = Monotonic()
    cache = ConfigCache(app.db, app.box, app.pubsub, ttl=5.0, monotonic=clock)
    assert (await cache.user(alice.id)).custom_prompt == ""
    await user_store.set_custom_prompt(app.db, alice.id, "changed behind the cache's back")
    clock.now = 4.9
    assert (await cache.user(alice.id)).custom_prompt == ""
    clock.now = 5.1
    assert (await cache.user(alice.id)).custom_prompt == "changed behind the cache's back"


async def test_a_read_that_overlaps_an_invalidation_is_not_kept(rig: Rig) -> None:
    app = rig.app
    cache = ConfigCache(app.db, app.box, app.pubsub, ttl=60.0)
    started, release = asyncio.Event(), asyncio.Event()

    async def slow_load() -> str:
        started.set()
        await release.wait()
        return "read before the change"

    read = asyncio.create_task(cache._get("key", slow_load))
    await started.wait()
    cache.clear()  # the change committed while the read was in flight
    release.set()
    assert await read == "read before the change"

    async def fresh() -> str:
        return "read after the change"

    assert await cache._get("key", fresh) == "read after the change"


async def test_a_provider_change_on_one_replica_clears_the_cache_of_another(pg_url: str, tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    apps = [
        await build(Settings(data_dir=tmp_path / name, database_url=pg_url, run_workers=False, secret_key=key, replica_id=uuid.uuid4()))
        for name in ("a", "b")
    ]
    try:
        a, b = apps
        admin = await user_store.create_user(a.db, a.clock.now(), "admin", UserRole.ADMIN)
        created = await a.service.create_provider(admin, provider="openai", display_name=None, api_key="sk-one", base_url=None, enabled=True)
        cache_b = b.config
        assert isinstance(cache_b, ConfigCache)
        first = await cache_b.provider(created.id)
        assert first is not None and first.api_key == "sk-one"
        heard = asyncio.Event()
        unsubscribe = await b.pubsub.subscribe(CONFIG_CHANNEL, lambda _p: heard.set())
        await a.service.update_provider(admin, created.id, {"api_key": "sk-two"})
        async with asyncio.timeout(10):
            await heard.wait()
        await unsubscribe()
        second = await cache_b.provider(created.id)
        assert second is not None and second.api_key == "sk-two"
        assert (await model_store.get_provider(b.db, b.box, created.id)) == second
    finally:
        for app in apps:
            await app.close()
