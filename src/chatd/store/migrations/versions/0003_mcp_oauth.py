"""MCP OAuth2: grant type per server, discovered authorization servers / registered clients,
pending browser authorizations.

Revision ID: 0003_mcp_oauth
Revises: 0002_workspaces
Create Date: 2026-11-26 10:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import chatd.store.types

revision = "0003_mcp_oauth"
down_revision = "0002_workspaces"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN on both dialects: batch mode would recreate mcp_servers on SQLite, and
    # with foreign keys on, dropping the old table would cascade-delete every user token.
    op.add_column(
        "mcp_servers",
        sa.Column("oauth2_grant_type", sa.String(length=32), server_default="authorization_code", nullable=False),
    )
    op.create_table(
        "mcp_oauth_clients",
        sa.Column("server_id", sa.Uuid(), nullable=False),
        sa.Column("server_url", sa.Text(), nullable=False),
        sa.Column("redirect_uri", sa.Text(), nullable=False),
        sa.Column("issuer", sa.Text(), nullable=True),
        sa.Column("authorization_endpoint", sa.Text(), nullable=True),
        sa.Column("token_endpoint", sa.Text(), nullable=False),
        sa.Column("resource", sa.Text(), nullable=True),
        sa.Column("client_id", sa.Text(), nullable=False),
        sa.Column("client_secret_enc", sa.Text(), nullable=True),
        sa.Column("auth_method", sa.String(length=32), nullable=False),
        sa.Column("dynamic", sa.Boolean(), nullable=False),
        sa.Column("created_at", chatd.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["server_id"], ["mcp_servers.id"], name=op.f("fk_mcp_oauth_clients_server_id_mcp_servers"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("server_id", name=op.f("pk_mcp_oauth_clients")),
    )
    op.create_table(
        "mcp_oauth_states",
        sa.Column("state_hash", sa.String(length=64), nullable=False),
        sa.Column("server_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("code_verifier_enc", sa.Text(), nullable=False),
        sa.Column("redirect_uri", sa.Text(), nullable=False),
        sa.Column("client_id", sa.Text(), nullable=False),
        sa.Column("auth_method", sa.String(length=32), nullable=False),
        sa.Column("token_endpoint", sa.Text(), nullable=False),
        sa.Column("resource", sa.Text(), nullable=True),
        sa.Column("created_at", chatd.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", chatd.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["server_id"], ["mcp_servers.id"], name=op.f("fk_mcp_oauth_states_server_id_mcp_servers"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_mcp_oauth_states_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("state_hash", name=op.f("pk_mcp_oauth_states")),
    )
    op.create_index(op.f("ix_mcp_oauth_states_expires_at"), "mcp_oauth_states", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_mcp_oauth_states_expires_at"), table_name="mcp_oauth_states")
    op.drop_table("mcp_oauth_states")
    op.drop_table("mcp_oauth_clients")
    # SQLite >= 3.35 drops a column in place (no table rebuild, no cascade).
    op.drop_column("mcp_servers", "oauth2_grant_type")
