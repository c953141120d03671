"""Apply or create Alembic migrations on an async engine (SQLite or PostgreSQL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncEngine

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
