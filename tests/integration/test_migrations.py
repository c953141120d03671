"""The migrations build exactly the schema the models declare, on both databases (tables, columns, indexes,
constraints): a model changed without its migration, or the reverse, fails here."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from litestar import Litestar

import marketplace.db.models  # noqa: F401  (every model registered on the metadata)
from marketplace.db.base import Base


async def test_the_migrated_database_matches_the_models(app: Litestar) -> None:
    async with app.state.engine.connect() as conn:
        differences = await conn.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
        )
    assert differences == []
