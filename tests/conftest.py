"""Fixtures: every storage test runs on SQLite and on PostgreSQL, through the real app and migrations.

Under CI=true an unreachable PostgreSQL or Redis fails the run instead of skipping.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from hypothesis import settings as hypothesis_settings
from litestar import Litestar
from sqlalchemy import func, select, text

from marketplace.app import create_app, shutdown, startup
from marketplace.clock import clock
from marketplace.db import migrate
from marketplace.db.base import Base
from marketplace.db.engine import create_engine
from marketplace.settings import Settings, load_settings

# Property tests draw the same examples at every run (a suite that passed on a clean checkout passes again: a random
# draw once found a plan the strategy should not have made, in a run of unchanged code) and assert no time: a
# deadline is a timing assertion, which a loaded machine fails. HYPOTHESIS_PROFILE=explore draws afresh, for a
# search by hand.
hypothesis_settings.register_profile("deterministic", derandomize=True, deadline=None, database=None)
hypothesis_settings.register_profile("explore", deadline=None)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))

PG_ADMIN_DSN = os.environ.get("TEST_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_TEST_DB = os.environ.get("TEST_PG_DATABASE", "marketplace_test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SECRET = "test-secret-key-0123456789abcdef"


def unavailable(what: str, exc: Exception) -> None:
    message = f"{what} is not reachable: {exc!r}"
    if IN_CI:
        pytest.fail(message + " (CI=true: a missing service is a failure, not a skip)")
    pytest.skip(message)


async def fresh_postgres(suffix: str = "") -> str:
    """An empty PostgreSQL database: the suite's own, or with a suffix a test's own beside it (the shared one stays
    at the head). Returns its URL."""
    name = f"{PG_TEST_DB}_{suffix}" if suffix else PG_TEST_DB
    try:
        admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        unavailable("PostgreSQL", exc)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return f"{base}/{name}"


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
    else:
        url = await fresh_postgres()
    engine = create_engine(url)
    await migrate.upgrade(engine)
    await engine.dispose()
    return url


def make_settings(database_url: str, **env: str) -> Settings:
    """The service's settings over a test database. Off hours are off unless a test sets them, so that what a test
    sees does not depend on the hour it runs at (tests/integration/test_off_hours.py sets them on a frozen clock).
    A new business may owe as much as any (the smaller first limit is tested where it is set: test_wallet.py)."""
    return load_settings(
        env={
            "DATABASE_URL": database_url,
            "SECRET_KEY": SECRET,
            "MARKETPLACE__SERVICE__INTAKE_RATE_LIMIT_PER_MINUTE": "100000",
            "MARKETPLACE__SERVICE__SIGNUP_RATE_LIMIT_PER_MINUTE": "100000",
            "MARKETPLACE__WINDOWS__OFF_HOURS": "",
            "MARKETPLACE__WALLET__FIRST_CREDIT_LIMIT_MINOR": "100000000",
            **env,
        }
    )


def _wallet_migration() -> Any:
    path = Path(migrate.MIGRATIONS_DIR) / "versions" / "0002_wallet.py"
    spec = importlib.util.spec_from_file_location("wallet_migration", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _truncate(database_url: str) -> None:
    engine = create_engine(database_url)
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    async with engine.begin() as conn:
        if database_url.startswith("postgresql"):
            await conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            # The ledger's append-only triggers refuse deletes; lift them for the wipe between tests only.
            ledger_rules = _wallet_migration()
            for statement in ledger_rules.SQLITE_DROP:
                await conn.execute(text(statement))
            for name in tables:
                await conn.execute(text(f"DELETE FROM {name}"))
            for statement in ledger_rules.SQLITE_TRIGGERS:
                await conn.execute(text(statement))
    await engine.dispose()


@pytest.fixture
async def settings(database_url: str) -> AsyncIterator[Settings]:
    await _truncate(database_url)
    clock.reset()
    yield make_settings(database_url)
    clock.reset()


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Litestar]:
    service = create_app(settings, migrate_on_start=False, run_jobs_in_background=False)
    yield service
    # Tests that use the app without `client` never shut it down: close its pool, so no connection outlives its test.
    await service.state.engine.dispose()


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    # The app runs on the test's own event loop, so the database pool is shared safely with `db`.
    await startup(app.state)
    try:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c
    finally:
        await shutdown(app.state)


class DbProbe:
    """Reads for assertions on what the database really holds, each in its own short transaction
    (a session left open would hold SQLite's write lock against the app)."""

    def __init__(self, app: Litestar) -> None:
        self._sessions = app.state.sessions

    async def scalar(self, query: Any) -> Any:
        async with self._sessions() as session:
            return await session.scalar(query)

    async def scalars(self, query: Any) -> list[Any]:
        async with self._sessions() as session:
            return list(await session.scalars(query))

    async def count(self, model: Any, *where: Any) -> int:
        async with self._sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


@pytest.fixture
def db(app: Litestar) -> DbProbe:
    return DbProbe(app)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Integration tests are marked as such. A test marked `postgres_only` tests what only PostgreSQL has (a
    writer connection of its own, batched commits): it is not collected for SQLite at all, rather than skipped."""
    deselected = []
    for item in items:
        if "tests/integration" in str(Path(item.path)):
            item.add_marker(pytest.mark.integration)
        callspec = getattr(item, "callspec", None)
        if item.get_closest_marker("postgres_only") and callspec and callspec.params.get("database_url") == "sqlite":
            deselected.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item not in deselected]
