"""mcp_servers.forward_identity: send X-Chatd-User-Id / X-Chatd-Chat-Id (off by default)

Revision ID: 0007_mcp_forward_identity
Revises: 0004_push
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_mcp_forward_identity"
down_revision = "0004_push"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN (no batch rebuild): rebuilding mcp_servers on SQLite would cascade into
    # the users' tokens.
    op.add_column("mcp_servers", sa.Column("forward_identity", sa.Boolean(), server_default=sa.text("false"), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("mcp_servers") as batch:
        batch.drop_column("forward_identity")
