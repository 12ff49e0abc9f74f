"""workspaces: templates and workspaces

Revision ID: 0002_workspaces
Revises: 0001
Create Date: 2026-11-26 11:00:00

Hand-written to match chatd.store.tables. `chats.workspace_id` (nullable, indexed) already exists
since 0001; it gets no foreign key here because adding one on SQLite means a batch rebuild of
`chats`, and with foreign keys on, dropping the old table would cascade into messages.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

import chatd.store.types

revision = "0002_workspaces"
down_revision = "0001"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "templates",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=256), server_default="", nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("provisioner", sa.String(length=32), server_default="local", nullable=False),
        sa.Column("git_url", sa.Text(), nullable=True),
        sa.Column("git_ref", sa.Text(), nullable=True),
        sa.Column("source_path", sa.Text(), nullable=True),
        sa.Column("init_script", sa.Text(), server_default="", nullable=False),
        sa.Column("parameters", _JSON, nullable=False),
        sa.Column("allow_outside", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("deprecated", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("deleted", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", chatd.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", chatd.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("provisioner in ('local')", name=op.f("ck_templates_provisioner")),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_templates_created_by_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_templates")),
    )
    op.create_index(
        "uq_templates_name",
        "templates",
        ["name"],
        unique=True,
        postgresql_where=sa.text("not deleted"),
        sqlite_where=sa.text("not deleted"),
    )
    op.create_table(
        "workspaces",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("owner_id", sa.Uuid(), nullable=False),
        sa.Column("template_id", sa.Uuid(), nullable=True),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("provisioner", sa.String(length=32), nullable=False),
        sa.Column("directory", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("parameters", _JSON, nullable=False),
        sa.Column("allow_outside", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("agent_url", sa.Text(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", chatd.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", chatd.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status in ('provisioning', 'running', 'stopped', 'failed', 'deleted')",
            name=op.f("ck_workspaces_status"),
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_workspaces_owner_id_users"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["template_id"], ["templates.id"], name=op.f("fk_workspaces_template_id_templates"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workspaces")),
    )
    op.create_index(op.f("ix_workspaces_owner_id"), "workspaces", ["owner_id"], unique=False)
    op.create_index(
        "uq_workspaces_owner_name",
        "workspaces",
        ["owner_id", "name"],
        unique=True,
        postgresql_where=sa.text("status <> 'deleted'"),
        sqlite_where=sa.text("status <> 'deleted'"),
    )


def downgrade() -> None:
    op.drop_index("uq_workspaces_owner_name", table_name="workspaces")
    op.drop_index(op.f("ix_workspaces_owner_id"), table_name="workspaces")
    op.drop_table("workspaces")
    op.drop_index("uq_templates_name", table_name="templates")
    op.drop_table("templates")
