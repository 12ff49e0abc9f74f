"""One registry per allowed-value list (issue 10, item 3): provider kinds (`providers.registry`)
and MCP auth types (`domain.mcp.McpAuthType`). The API, the settings, discovery and the MCP
client derive from them, the database no longer repeats them, and an unknown value is refused
rather than read as something else."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Uuid, bindparam, insert, select, text, update

from chatd.bootstrap import App
from chatd.domain.mcp import McpAuthType, McpServerConfig, McpUserToken
from chatd.mcp.config import OAuthToken, auth_headers
from chatd.providers import PROVIDERS, ModelSpec, ResolvedModel, deployment_keys, provider_spec
from chatd.providers.registry import ProviderSpec, UnknownProvider
from chatd.settings import Settings
from chatd.store import mcp_servers as mcp_store
from chatd.store.database import Database
from chatd.store.migrate import downgrade, migrate
from chatd.store.secrets import SecretBox
from chatd.store.tables import chats, mcp_servers, messages, model_configs, providers, users
from chatd.store.types import UTCDateTime
from tests.conftest import People

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def make_config(**fields: object) -> McpServerConfig:
    return McpServerConfig(id=uuid.uuid4(), slug="s", url="https://mcp.example.com/mcp", **fields)  # type: ignore[arg-type]


def test_every_provider_kind_names_a_settings_field_for_its_deployment_key() -> None:
    fields = Settings.model_fields
    for spec in PROVIDERS.values():
        assert spec.key_setting is None or spec.key_setting in fields, spec.kind
        assert spec.needs_key == (spec.key_setting is not None), spec.kind
    settings = Settings(anthropic_api_key="a-key", google_api_key="g-key")
    assert deployment_keys(settings) == {"anthropic": "a-key", "google": "g-key"}


def test_every_provider_kind_traces_under_its_genai_provider_name() -> None:
    names = {kind: ResolvedModel(model=None, spec=ModelSpec("m", 1000), provider_kind=kind).otel_provider for kind in PROVIDERS}  # type: ignore[arg-type]
    assert names == {"anthropic": "anthropic", "openai": "openai", "openai-compatible": "openai", "google": "gcp.gemini"}


def test_an_unknown_provider_kind_is_refused_with_the_known_ones() -> None:
    with pytest.raises(UnknownProvider) as caught:
        provider_spec("mistral")
    assert caught.value.message == "Unknown provider 'mistral'; expected one of anthropic, openai, openai-compatible, google."


async def test_a_kind_added_to_the_registry_is_accepted_by_the_api_without_a_migration(
    client: httpx.AsyncClient, people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = await client.post("/api/v1/providers", headers=people.admin.headers, json={"provider": "local-llm", "base_url": "http://127.0.0.1:9/v1"})
    assert r.status_code == 400, r.text
    spec = ProviderSpec("local-llm", "Local", PROVIDERS["openai-compatible"].wire, None, needs_key=False, needs_base_url=True)
    monkeypatch.setitem(PROVIDERS, "local-llm", spec)
    r = await client.post("/api/v1/providers", headers=people.admin.headers, json={"provider": "local-llm", "base_url": "http://127.0.0.1:9/v1"})
    assert r.status_code == 201, r.text
    r = await client.post("/api/v1/model-configs", headers=people.admin.headers, json={"provider": "local-llm", "model": "m", "context_limit": 8192})
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("auth_type", list(McpAuthType))
def test_every_mcp_auth_type_has_its_headers(auth_type: McpAuthType) -> None:
    config = make_config(auth_type=auth_type, api_key_header="X-Key", api_key_value="v", custom_headers={"A": "1"})
    expected = {
        McpAuthType.NONE: {},
        McpAuthType.OAUTH2: {"Authorization": "Bearer t0k"},
        McpAuthType.API_KEY: {"X-Key": "v"},
        McpAuthType.CUSTOM_HEADERS: {"A": "1"},
    }
    assert auth_headers(config, OAuthToken(access_token="t0k")) == expected[auth_type]


def test_an_auth_type_outside_the_enum_is_refused_not_read_as_none() -> None:
    config = dataclasses.replace(make_config(), auth_type="bearer")  # type: ignore[arg-type]
    with pytest.raises(AssertionError):
        auth_headers(config, None)


async def test_the_api_refuses_an_unknown_mcp_auth_type(client: httpx.AsyncClient, people: People) -> None:
    body = {"slug": "s", "display_name": "S", "url": "https://mcp.example.com/mcp", "auth_type": "bearer"}
    r = await client.post("/api/v1/mcp-servers", headers=people.admin.headers, json=body)
    assert r.status_code == 400, r.text


async def test_a_stored_unknown_auth_type_is_an_error_on_read(chatd: App, people: People, client: httpx.AsyncClient) -> None:
    body = {"slug": "s", "display_name": "S", "url": "https://mcp.example.com/mcp"}
    r = await client.post("/api/v1/mcp-servers", headers=people.admin.headers, json=body)
    server_id = uuid.UUID(r.json()["id"])
    async with chatd.db.write() as conn:
        await conn.execute(update(mcp_servers).where(mcp_servers.c.id == server_id).values(auth_type="bearer"))
    with pytest.raises(ValueError, match="'bearer' is not a valid McpAuthType"):
        await mcp_store.get_server(chatd.db, chatd.box, server_id)


async def test_dropping_the_kind_checks_keeps_every_row_that_refers_to_the_rebuilt_tables(db: Database, tmp_path: Path) -> None:
    """On SQLite the tables are rebuilt; with foreign keys on, dropping the old ones would have
    cascaded into the model configs and the users' MCP tokens."""

    await downgrade(db, "0012_queued_count")
    box = SecretBox.from_settings("", tmp_path)
    user_id, server_id = uuid.uuid4(), uuid.uuid4()
    async with db.write() as conn:
        await conn.execute(insert(users).values(id=user_id, username="u", role="member", created_at=NOW))
        await conn.execute(insert(providers).values(id=uuid.uuid4(), provider="anthropic", created_at=NOW, updated_at=NOW))
        # Before 0017 a model config names its provider's kind (a column the tables no longer have).
        await conn.execute(
            text(
                "INSERT INTO model_configs (id, provider, model, display_name, context_limit, options, pricing, created_at, updated_at) "
                "VALUES (:id, 'anthropic', 'm', 'm', 1000, '{}', '{}', :now, :now)"
            ).bindparams(bindparam("id", type_=Uuid()), bindparam("now", type_=UTCDateTime())),
            {"id": uuid.uuid4(), "now": NOW},
        )
        await conn.execute(
            insert(mcp_servers).values(
                id=server_id, slug="s", display_name="S", args=[], tool_allow_list=[], tool_deny_list=[],
                auth_type="oauth2", created_at=NOW, updated_at=NOW,
            )
        )
    await mcp_store.put_token(db, box, NOW, McpUserToken(server_id, user_id, "tok", None, "Bearer", None))
    await migrate(db)
    async with db.read() as conn:
        assert len((await conn.execute(select(model_configs))).all()) == 1
    assert (await mcp_store.get_token(db, box, server_id, user_id)) is not None
    # The checks are gone: a value the registry knows tomorrow needs no migration.
    async with db.write() as conn:
        await conn.execute(insert(providers).values(id=uuid.uuid4(), name="local", provider="local-llm", created_at=NOW, updated_at=NOW))



async def test_downgrades_keep_a_chats_messages(db: Database) -> None:
    """A downgrade that drops a column rebuilds the table on SQLite; with foreign keys on, that
    deleted every message of every chat (they refer to `chats`). Down to before the newest
    columns and back up: the rows are all there."""
    user_id, chat_id = uuid.uuid4(), uuid.uuid4()
    async with db.write() as conn:
        await conn.execute(insert(users).values(id=user_id, username="u", role="member", created_at=NOW))
        await conn.execute(
            insert(chats).values(id=chat_id, owner_id=user_id, title="t", status="waiting", mcp_server_ids=[], created_at=NOW, updated_at=NOW)
        )
        await conn.execute(
            insert(messages).values(chat_id=chat_id, role="user", content=[{"type": "text", "text": "hi"}], visibility="both", created_at=NOW)
        )

    async def count() -> int:
        async with db.read() as conn:
            return int((await conn.execute(text("SELECT count(*) FROM messages"))).scalar_one())

    await downgrade(db, "0009_server_meta")
    assert await count() == 1
    await migrate(db)
    assert await count() == 1
