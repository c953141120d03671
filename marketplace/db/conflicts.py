"""Database errors that undo a transaction for another one's sake: a deadlock, a serialization failure, a lock that
could not be had in time (PostgreSQL), a write lock another process held past the wait (SQLite). Nothing of the
undone transaction stands, so the same request may simply be sent again; the HTTP layer says so (503 with
Retry-After: http/problems.py), and the ledger's group commit retries such transfers in a later batch."""

from __future__ import annotations

import sqlite3

from sqlalchemy.exc import DBAPIError

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
