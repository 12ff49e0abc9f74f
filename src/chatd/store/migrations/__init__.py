"""Alembic migrations (run on both SQLite and PostgreSQL)."""
