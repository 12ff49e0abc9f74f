"""Providers and model configs (admin-managed). API keys are sealed at rest."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime
from typing import Any, cast

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from chatd.domain.config import ModelConfigRecord, ModelOptions, Pricing, ProviderRecord
from chatd.errors import Conflict, InvalidInput, NotFound
from chatd.store.database import Database
from chatd.store.secrets import SecretBox
from chatd.store.tables import model_configs, providers


def _provider(r: Any, box: SecretBox) -> ProviderRecord:
    return ProviderRecord(
        id=r.id,
        name=r.name,
        provider=r.provider,
        display_name=r.display_name,
        api_key=box.open(r.api_key_enc),
        base_url=r.base_url,
        enabled=r.enabled,
        created_at=r.created_at,
        updated_at=r.updated_at,
    )


def _model(r: Any) -> ModelConfigRecord:
    return ModelConfigRecord(
        id=r.id,
        provider_id=r.provider_id,
        provider=r.kind,
        provider_name=r.provider_name,
        # Providers from before display names (0018) may have none: their name stands in.
        provider_display_name=r.provider_display_name or r.provider_name,
        model=r.model,
        display_name=r.display_name,
        context_limit=r.context_limit,
        compression_threshold=r.compression_threshold,
        is_default=r.is_default,
        enabled=r.enabled,
        options=ModelOptions(**(r.options or {})),
        pricing=Pricing(**(r.pricing or {})),
        created_at=r.created_at,
        updated_at=r.updated_at,
    )


# A model config with its provider's kind, name and display name (the API shows them).
_MODELS = select(
    model_configs,
    providers.c.provider.label("kind"),
    providers.c.name.label("provider_name"),
    providers.c.display_name.label("provider_display_name"),
).join(providers, providers.c.id == model_configs.c.provider_id)


async def list_providers(db: Database, box: SecretBox) -> list[ProviderRecord]:
    async with db.read() as conn:
        return [_provider(r, box) for r in (await conn.execute(select(providers).order_by(providers.c.name))).all()]


async def get_provider(db: Database, box: SecretBox, provider_id: uuid.UUID) -> ProviderRecord:
    async with db.read() as conn:
        r = (await conn.execute(select(providers).where(providers.c.id == provider_id))).first()
    if r is None:
        raise NotFound("Provider not found.")
    return _provider(r, box)


async def find_provider(db: Database, box: SecretBox, *, kind: str, base_url: str | None) -> ProviderRecord | None:
    """The first provider (by name) of `kind` saved with `base_url` (None: the kind's own API)."""
    url = providers.c.base_url.is_(None) if base_url is None else providers.c.base_url == base_url
    async with db.read() as conn:
        r = (await conn.execute(select(providers).where(and_(providers.c.provider == kind, url)).order_by(providers.c.name).limit(1))).first()
    return _provider(r, box) if r else None


async def provider_id_by_name(db: Database, name: str) -> uuid.UUID:
    async with db.read() as conn:
        pid = (await conn.execute(select(providers.c.id).where(providers.c.name == name))).scalar_one_or_none()
    if pid is None:
        raise InvalidInput(f"No provider is named {name!r}.")
    return cast(uuid.UUID, pid)


def _name_taken(name: str) -> Conflict:
    return Conflict(f"A provider named {name!r} already exists; choose another name.")


async def create_provider(
    db: Database, box: SecretBox, now: datetime, *, name: str, provider: str, display_name: str, api_key: str | None,
    base_url: str | None, enabled: bool,
) -> ProviderRecord:
    pid = uuid.uuid4()
    try:
        async with db.write() as conn:
            await conn.execute(
                insert(providers).values(
                    id=pid, name=name, provider=provider, display_name=display_name, api_key_enc=box.seal(api_key),
                    base_url=base_url, enabled=enabled, created_at=now, updated_at=now,
                )
            )
    except IntegrityError as exc:
        raise _name_taken(name) from exc
    return await get_provider(db, box, pid)


async def update_provider(db: Database, box: SecretBox, now: datetime, provider_id: uuid.UUID, changes: dict[str, Any]) -> ProviderRecord:
    values: dict[str, Any] = {"updated_at": now}
    for k in ("name", "display_name", "base_url", "enabled"):
        if k in changes:
            values[k] = changes[k]
    if "api_key" in changes:
        values["api_key_enc"] = box.seal(changes["api_key"])
    try:
        async with db.write() as conn:
            n = (await conn.execute(update(providers).where(providers.c.id == provider_id).values(**values))).rowcount
    except IntegrityError as exc:
        raise _name_taken(changes["name"]) from exc
    if not n:
        raise NotFound("Provider not found.")
    return await get_provider(db, box, provider_id)


async def delete_provider(db: Database, provider_id: uuid.UUID) -> None:
    async with db.write() as conn:
        r = (await conn.execute(select(providers).where(providers.c.id == provider_id))).first()
        if r is None:
            raise NotFound("Provider not found.")
        used = (
            await conn.execute(
                select(func.count()).select_from(model_configs).where(
                    and_(model_configs.c.provider_id == provider_id, model_configs.c.deleted.is_(False))
                )
            )
        ).scalar_one()
        if used:
            raise Conflict(f"Model configs ({used}) still use the provider {r.name!r}; delete them or move them to another provider first.")
        # Soft-deleted configs keep history readable; drop them with the provider.
        await conn.execute(providers.delete().where(providers.c.id == provider_id))


async def list_model_configs(db: Database) -> list[ModelConfigRecord]:
    async with db.read() as conn:
        rows = (await conn.execute(_MODELS.where(model_configs.c.deleted.is_(False)).order_by(model_configs.c.created_at))).all()
    return [_model(r) for r in rows]


async def get_model_config(db: Database, config_id: uuid.UUID, *, include_deleted: bool = False) -> ModelConfigRecord:
    q = _MODELS.where(model_configs.c.id == config_id)
    if not include_deleted:
        q = q.where(model_configs.c.deleted.is_(False))
    async with db.read() as conn:
        r = (await conn.execute(q)).first()
    if r is None:
        raise NotFound("Model config not found.")
    return _model(r)


async def get_default_model_config(db: Database) -> ModelConfigRecord | None:
    async with db.read() as conn:
        r = (await conn.execute(_MODELS.where(and_(model_configs.c.is_default.is_(True), model_configs.c.deleted.is_(False))))).first()
    return _model(r) if r else None


async def create_model_config(
    db: Database, now: datetime, *, provider_id: uuid.UUID, model: str, display_name: str, context_limit: int,
    compression_threshold: int, is_default: bool, options: ModelOptions, pricing: Pricing, enabled: bool = True,
) -> ModelConfigRecord:
    cid = uuid.uuid4()
    async with db.write() as conn:
        if (await conn.execute(select(providers.c.id).where(providers.c.id == provider_id))).first() is None:
            raise InvalidInput(f"No provider has the id {provider_id}.")
        live = (await conn.execute(select(func.count()).select_from(model_configs).where(model_configs.c.deleted.is_(False)))).scalar_one()
        # The first config becomes the default; a new default replaces the old one.
        is_default = is_default or live == 0
        if is_default:
            await conn.execute(update(model_configs).where(model_configs.c.is_default.is_(True)).values(is_default=False))
        await conn.execute(
            insert(model_configs).values(
                id=cid, provider_id=provider_id, model=model, display_name=display_name, context_limit=context_limit,
                compression_threshold=compression_threshold, is_default=is_default, enabled=enabled, deleted=False,
                options=dataclasses.asdict(options), pricing=dataclasses.asdict(pricing), created_at=now, updated_at=now,
            )
        )
    return await get_model_config(db, cid)


async def update_model_config(db: Database, now: datetime, config_id: uuid.UUID, changes: dict[str, Any]) -> ModelConfigRecord:
    async with db.write() as conn:
        r = (await conn.execute(db.for_update(select(model_configs).where(and_(model_configs.c.id == config_id, model_configs.c.deleted.is_(False)))))).first()
        if r is None:
            raise NotFound("Model config not found.")
        values: dict[str, Any] = {"updated_at": now}
        for k in ("model", "display_name", "context_limit", "compression_threshold", "enabled"):
            if k in changes:
                values[k] = changes[k]
        if "provider_id" in changes:
            if (await conn.execute(select(providers.c.id).where(providers.c.id == changes["provider_id"]))).first() is None:
                raise InvalidInput(f"No provider has the id {changes['provider_id']}.")
            values["provider_id"] = changes["provider_id"]
        if "options" in changes:
            values["options"] = {**(r.options or {}), **changes["options"]}
        if "pricing" in changes:
            values["pricing"] = {**(r.pricing or {}), **changes["pricing"]}
        if changes.get("is_default") is True:
            await conn.execute(update(model_configs).where(and_(model_configs.c.is_default.is_(True), model_configs.c.id != config_id)).values(is_default=False))
            values["is_default"] = True
        elif changes.get("is_default") is False:
            values["is_default"] = False
        await conn.execute(update(model_configs).where(model_configs.c.id == config_id).values(**values))
    return await get_model_config(db, config_id)


async def delete_model_config(db: Database, now: datetime, config_id: uuid.UUID) -> None:
    """Soft delete: old messages keep their model reference; chats fall back to the default."""
    async with db.write() as conn:
        n = (
            await conn.execute(
                update(model_configs)
                .where(and_(model_configs.c.id == config_id, model_configs.c.deleted.is_(False)))
                .values(deleted=True, is_default=False, updated_at=now)
            )
        ).rowcount
    if not n:
        raise NotFound("Model config not found.")

