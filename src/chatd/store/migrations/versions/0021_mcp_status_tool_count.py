"""mcp_server_status.tool_count: how many tools the server offered at its last successful connect

Revision ID: 0021_mcp_status_tool_count
Revises: 0020_durable_elicitation
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021_mcp_status_tool_count"
down_revision = "0020_durable_elicitation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: rows written before (and by replicas of the previous version) have no count.
    with op.batch_alter_table("mcp_server_status") as batch:
        batch.add_column(sa.Column("tool_count", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mcp_server_status") as batch:
        batch.drop_column("tool_count")
