"""chats.generation: the turn generation that fences every worker write

Revision ID: 0008_turn_generation
Revises: 0011_mcp_env_timeouts (0011 landed first; the lead fixes the chain)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_turn_generation"
down_revision = "0011_mcp_env_timeouts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN with a constant default: no table rebuild on SQLite, no rewrite on PostgreSQL.
    op.add_column("chats", sa.Column("generation", sa.BigInteger(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("chats") as batch:
        batch.drop_column("generation")
