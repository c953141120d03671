"""SQLite for the async engine, run on the event loop's own thread.

SQLAlchemy's aiosqlite adapter sends every cursor operation (open, execute, fetch, close, commit) to
aiosqlite's worker thread and waits for a future: a queue put, a thread wake-up and a wake-up of the event
loop each time. On a virtual machine where waking a thread is dear, those hand-offs cost several times the
statement itself: a point query or a one-row insert takes SQLite tens of microseconds, the hand-offs hundreds
(and most of the process's system time). This adapter runs the statement, its fetch and the commit directly
on the calling thread, the event loop's, through the very sqlite3 connection aiosqlite opened.

That is safe because an engine built by ``marketplace.db.engine.create_engine`` keeps **one** SQLite
connection per engine (a pool of one): a request that wants the database while another request holds it waits
for the connection asynchronously, on the pool, and never inside SQLite. SQLite allows one writer at a time and
the service begins every transaction IMMEDIATE (it takes the write lock at BEGIN), so one connection per
process serialises no more than the database already did. Another *process* on the same file (a second server
worker, `marketplace worker`, a CLI command) can hold the write lock when a transaction begins: SQLite's own
busy handler would then sleep on this thread and stall the event loop, so the connection's busy timeout is a
few milliseconds and `BEGIN IMMEDIATE` is retried here, asynchronously, until LOCK_WAIT_SECONDS have passed.

Registered as the `sqlite+aiosqlite_inloop` dialect; ``create_engine`` uses it for every `sqlite+aiosqlite` URL.
Server-side cursors keep SQLAlchemy's own adapter (aiosqlite's thread).
"""

from __future__ import annotations

import asyncio
import collections
import sqlite3
from typing import Any

from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
    SQLiteDialect_aiosqlite,
)
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

from marketplace.db.conflicts import sqlite_locked

DRIVER = "aiosqlite_inloop"
BEGIN = "BEGIN IMMEDIATE"
# How long a transaction waits for another process's write lock before it fails ("database is locked").
LOCK_WAIT_SECONDS = 30.0
# SQLite's own busy handler (PRAGMA busy_timeout, set by db/engine.py): it sleeps on the event loop's thread.
BUSY_TIMEOUT_MS = 5

Outcome = tuple[Any, list[Any], int, int | None]


def _run(connection: sqlite3.Connection, operation: str, parameters: Any) -> Outcome:
    """The whole statement, and what its cursor would report."""
    cursor = connection.cursor()
    try:
        cursor.execute(operation, () if parameters is None else parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        return description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


def _run_many(connection: sqlite3.Connection, operation: str, seq_of_parameters: Any) -> Outcome:
    cursor = connection.cursor()
    try:
        cursor.executemany(operation, seq_of_parameters)
        return cursor.description, [], cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


class InLoopCursor(AsyncAdapt_aiosqlite_cursor):
    """A DBAPI cursor whose statements run at once on the calling thread; every row is fetched at execute."""

    __slots__ = ("_arraysize", "_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: Any) -> None:
        # No aiosqlite cursor: each statement opens and closes its own sqlite3 cursor.
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self._arraysize = 1

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value

    def _keep(self, outcome: Outcome) -> None:
        self._description, rows, self._rowcount, self._lastrowid = outcome
        self._rows = collections.deque(rows)

    # SQLAlchemy's execute() awaits these through its greenlet bridge (it insists that a statement of an async
    # engine awaits something); they finish without giving the event loop a turn.
    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        try:
            self._keep(_run(self._connection._conn, operation, parameters))
        except sqlite3.OperationalError as exc:
            if operation != BEGIN or not sqlite_locked(exc):
                raise
            await self._begin_when_free()
        return self

    async def _begin_when_free(self) -> None:
        """Another process holds the write lock: try again, letting the event loop run meanwhile."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LOCK_WAIT_SECONDS
        pause = 0.001
        while True:
            await asyncio.sleep(pause)
            try:
                self._keep(_run(self._connection._conn, BEGIN, None))
                return
            except sqlite3.OperationalError as exc:
                if not sqlite_locked(exc) or loop.time() >= deadline:
                    raise
            pause = min(pause * 2, 0.02)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        self._keep(_run_many(self._connection._conn, operation, seq_of_parameters))
        return self

    async def _async_soft_close(self) -> None:
        return None  # nothing stays open between statements

    def close(self) -> None:
        self._rows.clear()

    def nextset(self) -> None:
        self._rows.clear()

    def setinputsizes(self, *inputsizes: Any) -> None:
        return None


class InLoopConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = InLoopCursor

    def commit(self) -> None:
        self._end_transaction("commit")

    def rollback(self) -> None:
        self._end_transaction("rollback")

    def _end_transaction(self, how: str) -> None:
        if self._connection._connection:
            try:
                await_(_call(getattr(self._connection._conn, how)))
            except Exception as error:
                self._handle_exception(error)


async def _call(method: Any) -> Any:
    return method()


class InLoopDBAPI(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> InLoopConnection:
        # aiosqlite opens the connection on its worker thread; this adapter then uses it from the event loop's.
        # Never from two threads at once: aiosqlite's thread only runs what is awaited (open, close).
        kw["check_same_thread"] = False
        connection = self.aiosqlite.connect(*arg, **kw)
        connection._thread.daemon = True
        return InLoopConnection(self, await_(connection))


class InLoopDialect(SQLiteDialect_aiosqlite):
    driver = DRIVER
    supports_statement_cache = True

    @classmethod
    def import_dbapi(cls) -> InLoopDBAPI:
        return InLoopDBAPI(__import__("aiosqlite"), __import__("sqlite3"))


dialect = InLoopDialect
registry.register(f"sqlite.{DRIVER}", __name__, "InLoopDialect")
