"""replicas: internal addresses and heartbeats of server replicas

Revision ID: 0005_replicas
Revises: 0003_mcp_oauth
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import chatd.store.types

revision = "0005_replicas"
down_revision = "0003_mcp_oauth"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "replicas",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("address", sa.Text(), nullable=True),
        sa.Column("started_at", chatd.store.types.UTCDateTime(), nullable=False),
        sa.Column("heartbeat_at", chatd.store.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_replicas")),
    )


def downgrade() -> None:
    op.drop_table("replicas")
