"""push_subscriptions: the browsers a user receives web push notifications in (SPEC §5.10)

Revision ID: 0004_push
Revises: 0006_tool_calls_started

(Numbered 0004 when planned; it follows whatever was the head when it landed, so the chain
stays linear with one head.)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import chatd.store.types

revision = "0004_push"
down_revision = "0006_tool_calls_started"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "push_subscriptions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("endpoint", sa.Text(), nullable=False),
        sa.Column("p256dh", sa.Text(), nullable=False),
        sa.Column("auth_enc", sa.Text(), nullable=False),
        sa.Column("created_at", chatd.store.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_push_subscriptions_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_push_subscriptions")),
        sa.UniqueConstraint("endpoint", name=op.f("uq_push_subscriptions_endpoint")),
    )
    op.create_index(op.f("ix_push_subscriptions_user_id"), "push_subscriptions", ["user_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_push_subscriptions_user_id"), table_name="push_subscriptions")
    op.drop_table("push_subscriptions")
