"""Persistence: the declarative base, the models, the engine and Alembic migrations."""
