"""mcp_server_status: each MCP server's last known health (connected / failing / unauthorized)

Revision ID: 0019_mcp_server_status
Revises: 0018_named_providers
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import chatd.store.types

revision = "0019_mcp_server_status"
down_revision = "0018_named_providers"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A new table: replicas of the previous version never name it.
    op.create_table(
        "mcp_server_status",
        sa.Column("server_id", sa.Uuid(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("last_error_at", chatd.store.types.UTCDateTime(), nullable=True),
        sa.Column("last_connected_at", chatd.store.types.UTCDateTime(), nullable=True),
        sa.Column("updated_at", chatd.store.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["server_id"], ["mcp_servers.id"], name=op.f("fk_mcp_server_status_server_id_mcp_servers"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("server_id", name=op.f("pk_mcp_server_status")),
    )


def downgrade() -> None:
    op.drop_table("mcp_server_status")
