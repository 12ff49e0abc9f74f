"""mcp_servers: env for stdio servers (sealed), per-server connect and call timeouts

Revision ID: 0011_mcp_env_timeouts
Revises: 0007_mcp_forward_identity
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_mcp_env_timeouts"
down_revision = "0007_mcp_forward_identity"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMNs (no batch rebuild): rebuilding mcp_servers on SQLite would cascade into
    # the users' tokens. NULL timeouts mean "the deployment's default for this transport".
    op.add_column("mcp_servers", sa.Column("env_enc", sa.Text(), nullable=True))
    op.add_column("mcp_servers", sa.Column("connect_timeout_s", sa.Float(), nullable=True))
    op.add_column("mcp_servers", sa.Column("call_timeout_s", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mcp_servers") as batch:
        batch.drop_column("call_timeout_s")
        batch.drop_column("connect_timeout_s")
        batch.drop_column("env_enc")
