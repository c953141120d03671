"""Alembic environment: runs on the connection handed over by marketplace.db.migrate (async engines)."""

from __future__ import annotations

from alembic import context

import marketplace.db.models  # noqa: F401  (registers every table)
from marketplace.db.base import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `marketplace db upgrade`, which supplies the connection")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
