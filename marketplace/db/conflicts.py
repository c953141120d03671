"""Database errors that undo a transaction for another one's sake: a deadlock, a serialization failure, a lock that
could not be had in time (PostgreSQL), a write lock another process held past the wait (SQLite). Nothing of the
undone transaction stands, so the same request may simply be sent again; the HTTP layer says so (503 with
Retry-After: http/problems.py), and the ledger's group commit retries such transfers in a later batch.

And which unique key an IntegrityError broke (`violates`): only the one a service expects is a conflict with the
current state; any other (a foreign key, a check) is a fault, a logged 500."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from functools import cache

from sqlalchemy import Index, PrimaryKeyConstraint, UniqueConstraint
from sqlalchemy.exc import DBAPIError, IntegrityError

# PostgreSQL's SQLSTATEs for them: deadlock detected, serialization failure, lock not available.
TRANSIENT_SQLSTATES = frozenset({"40P01", "40001", "55P03"})


def is_transient(exc: DBAPIError) -> bool:
    """Whether the database undid the statement's transaction only because of another transaction."""
    return getattr(exc.orig, "sqlstate", None) in TRANSIENT_SQLSTATES or sqlite_locked(exc.orig)


def sqlite_locked(error: BaseException | None) -> bool:
    """SQLite's "database is locked": another connection holds the write lock."""
    return isinstance(error, sqlite3.OperationalError) and (
        (getattr(error, "sqlite_errorcode", 0) or 0) & 0xFF == sqlite3.SQLITE_BUSY or "database is locked" in str(error)
    )


def violates(exc: IntegrityError, name: str) -> bool:
    """Whether `exc` broke the unique constraint, primary key or unique index `name` (as db/base.py's naming
    convention names it in the models and the migrations: `uq_businesses_email`, `pk_used_links`).

    PostgreSQL names the constraint (asyncpg's `constraint_name`). SQLite names none: it says "UNIQUE constraint
    failed: " and the key's `table.column`s, in the key's order (or `index 'name'` for an index on expressions), so
    the key is told by its columns, which no other unique key of its table shares (`_unique_key` makes sure)."""
    table, columns = _unique_key(name)
    for error in _driver_errors(exc):
        constraint = getattr(error, "constraint_name", None)
        if constraint is not None:
            return bool(constraint == name)
        failed = str(error).partition("UNIQUE constraint failed: ")[2]
        if failed:
            return failed in (", ".join(f"{table}.{column}" for column in columns), f"index '{name}'")
    return False


def _driver_errors(exc: BaseException) -> Iterator[BaseException]:
    """The driver's errors under SQLAlchemy's: `orig`, and what that was raised from (asyncpg's own error, under
    SQLAlchemy's adapter)."""
    seen: set[int] = set()
    error: BaseException | None = getattr(exc, "orig", None)
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = getattr(error, "orig", None) or error.__cause__


@cache
def _unique_key(name: str) -> tuple[str, tuple[str, ...]]:
    """The table and the columns of the unique key `name`; a name the models do not have is a programming error."""
    from marketplace.db import models  # noqa: F401 (every table in the metadata)
    from marketplace.db.base import Base

    for table in Base.metadata.tables.values():
        keys: dict[str, tuple[str, ...]] = {}
        for constraint in table.constraints:
            if isinstance(constraint, UniqueConstraint | PrimaryKeyConstraint) and isinstance(constraint.name, str):
                keys[constraint.name] = tuple(column.name for column in constraint.columns)
        for index in table.indexes:
            if isinstance(index, Index) and index.unique and isinstance(index.name, str):
                keys[index.name] = tuple(getattr(column, "name", "") for column in index.columns)
        if name in keys:
            shared = [other for other, columns in keys.items() if other != name and columns == keys[name]]
            if shared:  # SQLite could not tell them apart
                raise ValueError(f"unique keys {name} and {shared} of {table.name} have the same columns")
            return table.name, keys[name]
    raise ValueError(f"no unique key named {name!r} in the models")
