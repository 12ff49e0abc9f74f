"""providers.provider and mcp_servers.auth_type: checked by the application, not the database

The allowed values live in one registry each (`providers.registry`, `domain.mcp.McpAuthType`),
and the service refuses anything else; a CHECK listing them again made every new provider kind
or MCP auth type a migration.

Revision ID: 0013_app_checked_kinds
Revises: 0012_queued_count
"""

from __future__ import annotations

from alembic import op

revision = "0013_app_checked_kinds"
down_revision = "0012_queued_count"
branch_labels = None
depends_on = None

_CHECKS = (
    ("providers", "ck_providers_provider", "provider in ('anthropic', 'openai', 'openai-compatible', 'google')"),
    ("mcp_servers", "ck_mcp_servers_auth_type", "auth_type in ('none', 'oauth2', 'api_key', 'custom_headers')"),
)


def upgrade() -> None:
    for table, name, _ in _CHECKS:
        if op.get_bind().dialect.name == "sqlite":
            # SQLite cannot drop a constraint: the table is rebuilt (store.migrate turns foreign
            # keys off around migrations, so dropping the old table cascades into nothing).
            with op.batch_alter_table(table, recreate="always") as batch:
                batch.drop_constraint(op.f(name), type_="check")
        else:
            op.drop_constraint(op.f(name), table, type_="check")


def downgrade() -> None:
    for table, name, condition in _CHECKS:
        with op.batch_alter_table(table) as batch:
            batch.create_check_constraint(op.f(name), condition)
