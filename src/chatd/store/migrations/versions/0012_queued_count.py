"""chats.queued_count: how many messages wait in the chat's queue, for the chat list's badge

Rolling upgrades: replicas of an older version still running after this migration do not keep
the count; it is right again once every replica runs the new version (the next change to each
chat's queue recounts it). Nothing else depends on it.

Revision ID: 0012_queued_count
Revises: 0009_server_meta
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_queued_count"
down_revision = "0009_server_meta"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("chats", sa.Column("queued_count", sa.Integer(), nullable=False, server_default="0"))
    op.execute("UPDATE chats SET queued_count = (SELECT count(*) FROM queued_messages q WHERE q.chat_id = chats.id)")


def downgrade() -> None:
    with op.batch_alter_table("chats") as batch:
        batch.drop_column("queued_count")
