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
    # A plain nullable ADD COLUMN on both dialects (no table rebuild). Rolling upgrades: safe for
    # the schema, but a replica of the previous version takes every MCP form for one asked
    # inside a running call: a chat waiting on a 2026-07-28 server's form that it resumes has
    # the form cancelled, and an answer sent through it is refused. Where such forms may be
    # waiting, stop, migrate, start (docs/deployment.md, "Upgrades").
    op.add_column("pending_actions", sa.Column("resume", sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pending_actions") as batch:
        batch.drop_column("resume")
