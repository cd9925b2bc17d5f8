"""Alembic migrations: the only source of syncd's schema (shipped as ``syncd.migrations``)."""
