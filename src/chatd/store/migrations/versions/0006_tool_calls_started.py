"""tool_calls_started: non-idempotent tool calls recorded before they run (at-most-once effects)

Revision ID: 0006_tool_calls_started
Revises: 0005_replicas
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import chatd.store.types

revision = "0006_tool_calls_started"
down_revision = "0005_replicas"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tool_calls_started",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("chat_id", sa.Uuid(), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("worker_id", sa.Uuid(), nullable=False),
        sa.Column("tool_call_id", sa.Text(), nullable=False),
        sa.Column("tool_name", sa.Text(), nullable=False),
        sa.Column("args_sha256", sa.String(length=64), nullable=False),
        sa.Column("after_message_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("started_at", chatd.store.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["chat_id"], ["chats.id"], name=op.f("fk_tool_calls_started_chat_id_chats"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tool_calls_started")),
    )
    op.create_index(op.f("ix_tool_calls_started_chat_id"), "tool_calls_started", ["chat_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_tool_calls_started_chat_id"), table_name="tool_calls_started")
    op.drop_table("tool_calls_started")
