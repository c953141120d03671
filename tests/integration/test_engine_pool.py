"""The PostgreSQL pool: a connection lost while idle in the pool is replaced before a request gets it, without
a ping on every checkout."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from marketplace.db import engine as engine_module
from marketplace.db.engine import create_engine


@pytest.mark.postgres_only
async def test_a_connection_killed_while_idle_in_the_pool_is_replaced_before_use(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as conn:
            first_pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        # Returned a moment ago: handed out again as it is (the same backend, no ping needed).
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one() == first_pid
        # The server drops it while it sits in the pool (a restart, an idle timeout, an operator).
        killer = create_engine(database_url)
        async with killer.connect() as conn:
            await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first_pid})
        await killer.dispose()
        # After a while in the pool it is pinged, found dead and replaced: the request never sees the loss.
        monkeypatch.setattr(engine_module, "PING_AFTER_IDLE_SECONDS", 0.0)
        async with engine.connect() as conn:
            second_pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        assert second_pid != first_pid
    finally:
        await engine.dispose()


@pytest.mark.postgres_only
async def test_a_connection_whose_protocol_lost_track_is_dropped_not_pooled(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # asyncpg's InternalClientError ("cannot switch to state 12; another operation is in progress") on one
    # statement: that statement fails, and the connection is not handed to the next request.
    import asyncpg
    from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection
    from sqlalchemy.exc import DBAPIError

    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    confused: list[object] = []
    original = AsyncAdapt_asyncpg_connection._prepare

    async def prepare(self, operation, invalidate_timestamp):  # type: ignore[no-untyped-def]
        if self in confused:
            raise asyncpg.exceptions.InternalClientError("cannot switch to state 12; another operation is in progress")
        return await original(self, operation, invalidate_timestamp)

    monkeypatch.setattr(AsyncAdapt_asyncpg_connection, "_prepare", prepare)
    try:
        async with engine.connect() as conn:
            first_pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            confused.append((await conn.get_raw_connection()).dbapi_connection)
            with pytest.raises(DBAPIError) as failed:
                await conn.execute(text("SELECT 1"))
            assert failed.value.connection_invalidated
        async with engine.connect() as conn:  # the pool's one place: a fresh connection, not the confused one
            assert (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one() != first_pid
    finally:
        await engine.dispose()
