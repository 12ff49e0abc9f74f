"""named providers: several providers of one kind, each a record with a unique name; model configs
refer to a provider record by id, no longer to a kind

Each existing provider (one per kind before this) is named after its kind, and every model config
points at the provider of its kind: nothing is lost, and API clients that name a provider by its
kind in a model config keep working (the name is the kind).

Revision ID: 0018_named_providers
Revises: 0017_user_disabled
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018_named_providers"
down_revision = "0017_user_disabled"
branch_labels = None
depends_on = None

_DEFAULT_WHERE = sa.text("is_default and not deleted")


def _drop_default_index() -> None:
    # Rebuilding model_configs on SQLite would not carry the partial index's WHERE over: it is
    # dropped first and made again after.
    op.drop_index("uq_model_configs_default", table_name="model_configs")


def _create_default_index() -> None:
    op.create_index(
        "uq_model_configs_default", "model_configs", ["is_default"], unique=True,
        postgresql_where=_DEFAULT_WHERE, sqlite_where=_DEFAULT_WHERE,
    )


def upgrade() -> None:
    op.add_column("providers", sa.Column("name", sa.String(length=64), nullable=True))
    op.execute("UPDATE providers SET name = provider")
    with op.batch_alter_table("providers") as batch:
        batch.alter_column("name", existing_type=sa.String(length=64), nullable=False)
        batch.create_unique_constraint(op.f("uq_providers_name"), ["name"])

    _drop_default_index()
    op.add_column("model_configs", sa.Column("provider_id", sa.Uuid(), nullable=True))
    op.execute("UPDATE model_configs SET provider_id = (SELECT p.id FROM providers p WHERE p.provider = model_configs.provider)")
    with op.batch_alter_table("model_configs") as batch:
        batch.drop_constraint(op.f("fk_model_configs_provider_providers"), type_="foreignkey")
        batch.drop_column("provider")
        batch.alter_column("provider_id", existing_type=sa.Uuid(), nullable=False)
        batch.create_foreign_key(
            op.f("fk_model_configs_provider_id_providers"), "providers", ["provider_id"], ["id"], ondelete="CASCADE"
        )
        batch.create_index(op.f("ix_model_configs_provider_id"), ["provider_id"])
    _create_default_index()

    # Kinds repeat now; model configs no longer refer to them, so nothing else needs the unique.
    with op.batch_alter_table("providers") as batch:
        batch.drop_constraint(op.f("uq_providers_provider"), type_="unique")


def downgrade() -> None:
    bind = op.get_bind()
    repeated = bind.execute(sa.text("SELECT provider FROM providers GROUP BY provider HAVING count(*) > 1")).scalars().all()
    if repeated:
        # The previous schema holds one provider per kind; picking which to drop is the admin's call.
        raise RuntimeError(
            f"Several providers of the kind(s) {', '.join(sorted(repeated))}: delete all but one of each "
            "(and their model configs) before downgrading below 0018."
        )
    with op.batch_alter_table("providers") as batch:
        batch.create_unique_constraint(op.f("uq_providers_provider"), ["provider"])

    _drop_default_index()
    op.add_column("model_configs", sa.Column("provider", sa.String(length=32), nullable=True))
    op.execute("UPDATE model_configs SET provider = (SELECT p.provider FROM providers p WHERE p.id = model_configs.provider_id)")
    with op.batch_alter_table("model_configs") as batch:
        batch.drop_index(op.f("ix_model_configs_provider_id"))
        batch.drop_constraint(op.f("fk_model_configs_provider_id_providers"), type_="foreignkey")
        batch.drop_column("provider_id")
        batch.alter_column("provider", existing_type=sa.String(length=32), nullable=False)
        batch.create_foreign_key(
            op.f("fk_model_configs_provider_providers"), "providers", ["provider"], ["provider"], ondelete="CASCADE"
        )
    _create_default_index()

    with op.batch_alter_table("providers") as batch:
        batch.drop_constraint(op.f("uq_providers_name"), type_="unique")
        batch.drop_column("name")
