"""server_meta: facts about the deployment kept with its data (the secret key's fingerprint)

Revision ID: 0009_server_meta
Revises: 0008_turn_generation
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_server_meta"
down_revision = "0008_turn_generation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "server_meta",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_server_meta")),
    )


def downgrade() -> None:
    op.drop_table("server_meta")
