"""Copying a whole archive between endpoints (files, PostgreSQL, SQLAlchemy schema)."""
