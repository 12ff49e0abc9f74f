"""Several providers of one kind (issue 12): provider records with a unique name, model configs
that refer to one by id, and the migration (0018) that turned the one provider per kind into
records named after their kind, on both databases."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Uuid, bindparam, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from chatd.bootstrap import App
from chatd.store import tables
from chatd.store.database import Database
from chatd.store.migrate import alembic_config, downgrade, migrate
from chatd.store.secrets import SecretBox
from chatd.store.tables import model_configs, providers
from chatd.store.types import UTCDateTime
from tests.conftest import People

NOW = datetime(2026, 11, 30, tzinfo=UTC)
BEFORE = ScriptDirectory.from_config(alembic_config()).get_revision("0018_named_providers").down_revision
assert isinstance(BEFORE, str)


async def test_two_openai_compatible_providers_each_with_models_and_a_409_while_in_use(
    client: httpx.AsyncClient, people: People, chatd: App
) -> None:
    a = people.admin.headers
    ollama = await client.post("/api/v1/providers", headers=a, json={
        "provider": "openai-compatible", "name": "Ollama", "base_url": "http://127.0.0.1:11434/v1", "api_key": "sk-secret-ollama",
    })
    assert ollama.status_code == 201, ollama.text
    vllm = await client.post("/api/v1/providers", headers=a, json={
        "provider": "openai-compatible", "name": "vllm", "display_name": "vLLM on gpu1", "base_url": "http://127.0.0.1:8000/v1", "api_key": "sk-secret-vllm",
    })
    assert vllm.status_code == 201, vllm.text
    o, v = ollama.json(), vllm.json()
    assert (o["name"], o["provider"], o["display_name"], o["api_key_set"]) == ("ollama", "openai-compatible", "ollama", True)
    assert (v["name"], v["display_name"]) == ("vllm", "vLLM on gpu1")
    # The name is unique; without one the kind is the name, taken by neither yet, then by the third.
    taken = await client.post("/api/v1/providers", headers=a, json={"provider": "openai", "name": "VLLM"})
    assert taken.status_code == 409 and "vllm" in taken.json()["message"]
    assert (await client.post("/api/v1/providers", headers=a, json={"provider": "openai-compatible", "base_url": "http://127.0.0.1:9/v1"})).status_code == 201
    again = await client.post("/api/v1/providers", headers=a, json={"provider": "openai-compatible", "base_url": "http://127.0.0.1:9/v1"})
    assert again.status_code == 409 and "choose another name" in again.json()["message"]
    for bad in ("", " ", "-x", "a b", "x" * 65, "ü"):
        r = await client.post("/api/v1/providers", headers=a, json={"provider": "openai", "name": bad})
        assert r.status_code == 400 and "message" in r.json(), (bad, r.text)
    assert (await client.patch(f"/api/v1/providers/{v['id']}", headers=a, json={"name": "ollama"})).status_code == 409
    assert (await client.patch(f"/api/v1/providers/{v['id']}", headers=a, json={"base_url": None})).status_code == 400
    assert (await client.post("/api/v1/providers", headers=people.alice.headers, json={"provider": "openai", "name": "m"})).status_code == 403

    listed = (await client.get("/api/v1/providers", headers=a)).json()
    assert [p["name"] for p in listed] == ["ollama", "openai-compatible", "vllm"]
    member = (await client.get("/api/v1/providers", headers=people.alice.headers)).json()
    assert all(p["base_url"] is None for p in member)
    # Keys are sealed at rest and never come back.
    for body in (listed, member, o, v):
        assert "sk-secret" not in str(body)
    async with chatd.db.read() as conn:
        sealed = (await conn.execute(select(providers.c.api_key_enc).where(providers.c.name == "vllm"))).scalar_one()
    assert sealed and "sk-secret" not in sealed

    def model(provider_id: str, name: str) -> dict[str, object]:
        return {"provider_id": provider_id, "model": "llama3", "display_name": name, "context_limit": 8192}

    m1 = await client.post("/api/v1/model-configs", headers=a, json=model(o["id"], "Llama on Ollama"))
    m2 = await client.post("/api/v1/model-configs", headers=a, json=model(v["id"], "Llama on vLLM"))
    assert m1.status_code == m2.status_code == 201, (m1.text, m2.text)
    assert (m2.json()["provider_id"], m2.json()["provider"], m2.json()["provider_name"]) == (v["id"], "openai-compatible", "vllm")
    # A provider named in `provider` (what clients that named a kind send).
    by_name = await client.post("/api/v1/model-configs", headers=a, json={"provider": "Ollama", "model": "qwen", "context_limit": 8192})
    assert by_name.status_code == 201 and by_name.json()["provider_id"] == o["id"]
    for body, words in (
        ({"model": "x", "context_limit": 8}, "needs its provider"),
        ({"provider": "nope", "model": "x", "context_limit": 8}, "No provider is named 'nope'"),
        ({"provider_id": str(uuid.uuid4()), "model": "x", "context_limit": 8}, "No provider has the id"),
    ):
        r = await client.post("/api/v1/model-configs", headers=a, json=body)
        assert r.status_code == 400 and words in r.json()["message"], r.text
    members_view = (await client.get("/api/v1/model-configs", headers=people.alice.headers)).json()
    # The display name too: what a model picker shows (the name is the admin's handle).
    assert {(m["display_name"], m["provider_name"], m["provider_display_name"]) for m in members_view} == {
        ("Llama on Ollama", "ollama", "ollama"), ("Llama on vLLM", "vllm", "vLLM on gpu1"), ("qwen", "ollama", "ollama"),
    }

    # In use: 409, with a message; moved to the other provider, it can go.
    refused = await client.delete(f"/api/v1/providers/{v['id']}", headers=a)
    assert refused.status_code == 409 and "still use the provider 'vllm'" in refused.json()["message"]
    moved = await client.patch(f"/api/v1/model-configs/{m2.json()['id']}", headers=a, json={"provider_id": o["id"]})
    assert moved.status_code == 200 and moved.json()["provider_name"] == "ollama"
    assert (await client.delete(f"/api/v1/providers/{v['id']}", headers=a)).status_code == 204
    assert (await client.delete(f"/api/v1/providers/{o['id']}", headers=a)).status_code == 409


async def test_the_connection_test_reuses_the_key_of_the_provider_being_edited(client: httpx.AsyncClient, people: People) -> None:
    a = people.admin.headers
    p = (await client.post("/api/v1/providers", headers=a, json={"provider": "anthropic", "name": "claude", "api_key": "k"})).json()
    r = await client.post("/api/v1/providers/test", headers=a, json={"provider": "openai", "provider_id": p["id"]})
    assert r.status_code == 400 and "is of the kind anthropic" in r.json()["message"]


def _diff(conn: Connection) -> list[object]:
    found = compare_metadata(MigrationContext.configure(conn), tables.metadata)
    return [d for d in found if "providers" in repr(d) or "model_configs" in repr(d)]


async def _insert_pre_0018(db: Database, box: SecretBox) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """One provider per kind, model configs naming the kind (the schema before 0018)."""
    anthropic, compat, cfg = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    typed = (bindparam("id", type_=Uuid()), bindparam("now", type_=UTCDateTime()))
    async with db.write() as conn:
        for pid, kind, key, url in ((anthropic, "anthropic", "sk-ant-old", None), (compat, "openai-compatible", None, "http://127.0.0.1:9/v1")):
            await conn.execute(
                text(
                    "INSERT INTO providers (id, provider, display_name, api_key_enc, base_url, enabled, created_at, updated_at) "
                    "VALUES (:id, :kind, 'Mine', :key, :url, true, :now, :now)"
                ).bindparams(*typed),
                {"id": pid, "kind": kind, "key": box.seal(key), "url": url, "now": NOW},
            )
        for mid, kind, default in ((cfg, "anthropic", True), (uuid.uuid4(), "openai-compatible", False)):
            await conn.execute(
                text(
                    "INSERT INTO model_configs (id, provider, model, display_name, context_limit, is_default, options, pricing, created_at, updated_at) "
                    "VALUES (:id, :kind, 'm', 'M', 1000, :default, '{}', '{}', :now, :now)"
                ).bindparams(*typed),
                {"id": mid, "kind": kind, "default": default, "now": NOW},
            )
    return anthropic, compat, cfg


async def test_upgrading_names_each_provider_after_its_kind_and_keeps_keys_and_model_configs(db: Database, tmp_path: Path) -> None:
    box = SecretBox.from_settings("", tmp_path)
    await downgrade(db, BEFORE)
    anthropic, compat, cfg = await _insert_pre_0018(db, box)
    await migrate(db)
    async with db.engine.connect() as c:
        # The migrated schema is the declared one (constraints, foreign key, indexes).
        assert await c.run_sync(_diff) == []
    async with db.read() as conn:
        rows = (await conn.execute(select(providers).order_by(providers.c.name))).all()
        configs = {r.id: r for r in (await conn.execute(select(model_configs))).all()}
    assert [(r.id, r.name, r.provider, r.display_name, box.open(r.api_key_enc)) for r in rows] == [
        (anthropic, "anthropic", "anthropic", "Mine", "sk-ant-old"), (compat, "openai-compatible", "openai-compatible", "Mine", None),
    ]
    assert configs[cfg].provider_id == anthropic and configs[cfg].is_default
    assert {c.provider_id for c in configs.values()} == {anthropic, compat}
    # The partial unique index on the default survived the rebuild: a second default is refused.
    with pytest.raises(IntegrityError):
        async with db.write() as conn:
            other = next(i for i in configs if i != cfg)
            await conn.execute(model_configs.update().where(model_configs.c.id == other).values(is_default=True))

    # Down again: the kind is back in the model configs, nothing lost; then up once more.
    await downgrade(db, BEFORE)
    async with db.read() as conn:
        back = dict((await conn.execute(text("SELECT model, provider FROM model_configs WHERE is_default"))).all())
        names = (await conn.execute(text("SELECT count(*) FROM providers"))).scalar_one()
    assert (back, names) == ({"m": "anthropic"}, 2)
    await migrate(db)


async def test_a_downgrade_with_two_providers_of_one_kind_is_refused_and_changes_nothing(db: Database, tmp_path: Path) -> None:
    box = SecretBox.from_settings("", tmp_path)
    async with db.write() as conn:
        for name in ("ollama", "vllm"):
            await conn.execute(providers.insert().values(
                id=uuid.uuid4(), name=name, provider="openai-compatible", display_name=name, api_key_enc=box.seal(None),
                base_url="http://127.0.0.1:9/v1", enabled=True, created_at=NOW, updated_at=NOW,
            ))
    with pytest.raises(RuntimeError, match="Several providers of the kind"):
        await downgrade(db, BEFORE)
    async with db.read() as conn:
        assert (await conn.execute(select(providers.c.name).order_by(providers.c.name))).scalars().all() == ["ollama", "vllm"]
