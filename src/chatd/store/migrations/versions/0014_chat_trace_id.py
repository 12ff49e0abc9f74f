"""chats.trace_id: the OpenTelemetry trace of the chat's latest turn (admins' debug view)

Revision ID: 0014_chat_trace_id
Revises: 0013_app_checked_kinds
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_chat_trace_id"
down_revision = "0013_app_checked_kinds"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A nullable ADD COLUMN: no table rebuild on SQLite, no rewrite on PostgreSQL; replicas of the
    # previous version keep working on the new schema (they never name the column).
    op.add_column("chats", sa.Column("trace_id", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("chats") as batch:
        batch.drop_column("trace_id")
