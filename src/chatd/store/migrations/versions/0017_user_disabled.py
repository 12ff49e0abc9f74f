"""Users can be disabled by an admin: users.disabled_at

Revision ID: 0017_user_disabled
Revises: 0015_pending_actions
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import chatd.store.types

revision = "0017_user_disabled"
# 0016 was kept for the MCP server status migration, which landed later as 0019.
down_revision = "0015_pending_actions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("disabled_at", chatd.store.types.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("disabled_at")
