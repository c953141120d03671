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


async def test_answers_stored_before_0009_lose_the_contact_they_held(tmp_path) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from marketplace.db.migrate import upgrade

    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'before.db'}")
    try:
        await upgrade(engine, "0008_offers_created_at")
        claim = '{"id": "exp_1", "contact": {"name": "Dana", "phone": "+972501234567", "email": null}}'
        refused = '{"title": "Conflict", "contact": {"name": "kept as it was"}}'
        async with engine.begin() as conn:
            for key, status, body in (("k1", 201, claim), ("k2", 409, refused), ("k3", 201, '{"id": "tx_1"}')):
                await conn.execute(
                    text(
                        "INSERT INTO idempotency_records (scope, key, request_hash, status_code, body, created_at)"
                        " VALUES ('biz_1', :key, 'h', :status, :body, '2026-11-26 00:00:00')"
                    ),
                    {"key": key, "status": status, "body": body},
                )
        await upgrade(engine)
        async with engine.connect() as conn:
            rows = dict((await conn.execute(text("SELECT key, body FROM idempotency_records"))).all())
    finally:
        await engine.dispose()
    import json

    assert json.loads(rows["k1"]) == {"id": "exp_1", "contact": None}
    assert json.loads(rows["k2"]) == json.loads(refused)  # not a stored answer of an exposure: untouched
    assert json.loads(rows["k3"]) == {"id": "tx_1"}


async def test_sqlite_plans_the_busy_statements_on_their_own_indexes(app: Litestar) -> None:
    """Without statistics SQLite's planner once walked every active business (through an index on status) to
    mark the three a wave offers a lead to, and every expired offer to find the open ones that lapsed."""
    from datetime import UTC, datetime

    from sqlalchemy import update

    from marketplace.db.models import Offer
    from marketplace.offers.services import _MARK_OFFERED

    if app.state.engine.dialect.name != "sqlite":
        return  # PostgreSQL plans from its own statistics
    now = datetime(2026, 1, 5, tzinfo=UTC)
    sweep = update(Offer).where(Offer.status == "open", Offer.expires_at <= now).values(status="expired")
    plans = {}
    async with app.state.engine.connect() as conn:
        for name, statement in (
            ("wave", _MARK_OFFERED),
            ("sweep", sweep),
        ):
            compiled = statement.compile(dialect=conn.dialect)
            # The wave's ids are an expanding list: rendered here as the three placeholders of a wave of three.
            compiled_sql = str(compiled).replace("(__[POSTCOMPILE_ids])", "(?, ?, ?)")
            # The plan does not depend on the values: each placeholder gets a NULL.
            nulls = (None,) * compiled_sql.count("?")
            rows = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled_sql}", nulls)
            plans[name] = " | ".join(str(r[-1]) for r in rows)
    assert "sqlite_autoindex_businesses_1 (id=?)" in plans["wave"], plans["wave"]
    assert "ix_offers_status_expires_at (status=? AND expires_at<?)" in plans["sweep"], plans["sweep"]
