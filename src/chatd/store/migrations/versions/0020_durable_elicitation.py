"""durable_elicitation: pending_actions.resume, how a tool carries on once its question is answered

Revision ID: 0020_durable_elicitation
Revises: 0019_mcp_server_status
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

revision = "0020_durable_elicitation"
down_revision = "0019_mcp_server_status"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain nullable ADD COLUMN on both dialects (no table rebuild): replicas of the previous
    # version neither read nor write it, and their elicitations (asked inside a call) have none.
    op.add_column("pending_actions", sa.Column("resume", sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pending_actions") as batch:
        batch.drop_column("resume")
