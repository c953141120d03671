"""Apply or create Alembic migrations on an async engine (SQLite or PostgreSQL); say whether a database is at the
revision this code needs."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def _config(connection: Any) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    async with engine.begin() as conn:
        await conn.run_sync(lambda sync_conn: command.upgrade(_config(sync_conn), revision))


async def revision(engine: AsyncEngine, message: str) -> None:
    """Autogenerate a new migration from the difference between the models and the database."""
    async with engine.begin() as conn:
        await conn.run_sync(lambda sync_conn: command.revision(_config(sync_conn), message=message, autogenerate=True))


# --- is the database at this code's revision? ----------------------------------------------------------------------
# PostgreSQL is migrated by hand (`marketplace db upgrade`): code deployed without it started, said healthy and
# answered 500s (a column it writes missing). The processes that use the database check first.


@lru_cache(maxsize=1)
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config(None))


def head() -> str:
    """The revision this code needs: the last migration it ships."""
    heads = _scripts().get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"the migrations have {len(heads)} heads: {', '.join(heads)}")
    return heads[0]


async def revisions(conn: AsyncConnection) -> set[str]:
    """The revisions the database is at, in one query; none when no migration was ever applied."""
    try:
        return set((await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars())
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) == "42P01" or "no such table" in str(exc.orig):
            return set()  # an empty database: no alembic_version table
        raise


def schema_problem(found: set[str]) -> str | None:
    """None when `found` is this code's head; else one line saying what is wrong and what to do."""
    needed = head()
    if found == {needed}:
        return None
    unknown = sorted(r for r in found if not _known(r))
    if unknown:
        return (
            f"the database is at revision {', '.join(unknown)}, which this code does not know (a later release "
            f"migrated it?); this code needs {needed}: run the release that migrated it"
        )
    at = f"at revision {', '.join(sorted(found))}" if found else "empty (no migration applied)"
    return f"the database is {at}; this code needs {needed}: run `marketplace db upgrade`"


def _known(revision: str) -> bool:
    try:
        return _scripts().get_revision(revision) is not None
    except CommandError:  # no script of that revision
        return False


async def check(engine: AsyncEngine) -> str | None:
    """schema_problem() of the database behind `engine` (connection errors propagate)."""
    async with engine.connect() as conn:
        return schema_problem(await revisions(conn))
