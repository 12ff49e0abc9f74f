"""Persistence: SQLAlchemy Core tables, one function per use case (each one transaction), migrations.

The same queries serve SQLite and PostgreSQL; where they differ the difference lives in one function.
"""
