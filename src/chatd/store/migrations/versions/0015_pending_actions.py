"""Human in the loop: chat status requires_action, pending_actions, chats' allowed and client
tools, MCP servers' approval policy

Revision ID: 0015_pending_actions
Revises: 0014_chat_trace_id
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

import chatd.store.types

revision = "0015_pending_actions"
down_revision = "0014_chat_trace_id"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql")
_OLD = "status in ('pending', 'running', 'waiting', 'error')"
_NEW = "status in ('pending', 'running', 'waiting', 'error', 'requires_action')"


def _set_status_check(new: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(op.f("ck_chats_status"), "chats", type_="check")
        op.create_check_constraint(op.f("ck_chats_status"), "chats", new)
        return
    # SQLite cannot alter a constraint: the table is rebuilt (store.migrate turns foreign keys
    # off around migrations, so dropping the old table cascades into nothing).
    with op.batch_alter_table("chats", recreate="always") as batch:
        batch.drop_constraint(op.f("ck_chats_status"), type_="check")
        batch.create_check_constraint(op.f("ck_chats_status"), new)


def upgrade() -> None:
    _set_status_check(_NEW)
    op.add_column("chats", sa.Column("allowed_tools", _JSON, server_default=sa.text("'[]'"), nullable=False))
    op.add_column("chats", sa.Column("client_tools", _JSON, server_default=sa.text("'[]'"), nullable=False))
    op.add_column("mcp_servers", sa.Column("approval", sa.String(length=32), server_default="never", nullable=False))
    op.add_column("mcp_servers", sa.Column("approval_overrides", _JSON, server_default=sa.text("'{}'"), nullable=False))
    op.create_table(
        "pending_actions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("chat_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("tool_call_id", sa.Text(), nullable=False),
        sa.Column("tool_name", sa.Text(), nullable=False),
        sa.Column("server", sa.Text(), nullable=True),
        sa.Column("args", _JSON, nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("schema", _JSON, nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("options", _JSON, nullable=True),
        sa.Column("deadline", chatd.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("decision", sa.String(length=16), nullable=True),
        sa.Column("answer", _JSON, nullable=True),
        sa.Column("answered_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", chatd.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", chatd.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint("state in ('pending', 'answered', 'done', 'cancelled')", name=op.f("ck_pending_actions_state")),
        sa.ForeignKeyConstraint(["chat_id"], ["chats.id"], name=op.f("fk_pending_actions_chat_id_chats"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pending_actions")),
    )
    op.create_index("ix_pending_actions_chat_state", "pending_actions", ["chat_id", "state"], unique=False)
    op.create_index(
        "ix_pending_actions_deadline",
        "pending_actions",
        ["deadline"],
        unique=False,
        postgresql_where=sa.text("state = 'pending' and deadline is not null"),
        sqlite_where=sa.text("state = 'pending' and deadline is not null"),
    )


def downgrade() -> None:
    op.drop_index("ix_pending_actions_deadline", table_name="pending_actions")
    op.drop_index("ix_pending_actions_chat_state", table_name="pending_actions")
    op.drop_table("pending_actions")
    op.execute("UPDATE chats SET status = 'waiting' WHERE status = 'requires_action'")
    with op.batch_alter_table("mcp_servers") as batch:
        batch.drop_column("approval_overrides")
        batch.drop_column("approval")
    with op.batch_alter_table("chats") as batch:
        batch.drop_column("client_tools")
        batch.drop_column("allowed_tools")
    _set_status_check(_OLD)
