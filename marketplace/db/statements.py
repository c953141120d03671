"""Running conditional writes (how many rows an UPDATE changed is how the database answers a race), putting the
rows a Core statement returned into the session as objects, and statements that differ by database (upserts:
INSERT ... ON CONFLICT is spelled by each dialect's own `insert`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from sqlalchemy import CursorResult, Row, Table, and_
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

M = TypeVar("M")
S = TypeVar("S")
_INSERTS: dict[str, Any] = {"postgresql": pg_insert, "sqlite": sqlite_insert}


def per_database(build: Callable[[Any], S]) -> dict[str, S]:
    """A statement built once per database from that database's `insert` (for ON CONFLICT)."""
    return {name: build(make) for name, make in _INSERTS.items()}


def of_session(statements: dict[str, S], session: AsyncSession | Session) -> S:
    """The one of `per_database`'s statements for the database this session talks to."""
    return statements[session.get_bind().dialect.name]


def insert_for(session: AsyncSession | Session) -> Any:
    """This session's database's `insert` (for a statement built on the spot: ON CONFLICT differs by dialect)."""
    return _INSERTS[session.get_bind().dialect.name]


def starts_with(session: AsyncSession | Session, column: Any, prefix: str) -> Any:
    """`column` begins with `prefix`, as an index can read it on this session's database: on PostgreSQL a LIKE (which
    an index with text_pattern_ops serves under any collation, the unique one only under "C"), on SQLite a range of
    the column's own index (its BINARY collation is byte order, and SQLite's LIKE ignores case, so reads no index).
    For ASCII prefixes, such as the service's keys."""
    if session.get_bind().dialect.name == "sqlite" and prefix and prefix.isascii() and ord(prefix[-1]) < 127:
        return and_(column >= prefix, column < prefix[:-1] + chr(ord(prefix[-1]) + 1))
    return column.startswith(prefix, autoescape=True)


async def rows_changed(session: AsyncSession, statement: Any, params: dict[str, Any] | None = None) -> int:
    result = cast(CursorResult[Any], await session.execute(statement, params))
    return int(result.rowcount)


def table(model: type[Any]) -> Table:
    """A model's table, for the Core statements that hot paths build once (no ORM objects to keep in step)."""
    return cast(Table, model.__table__)


_COLUMN_KEYS: dict[type[Any], dict[str, str]] = {}


def attach(session: AsyncSession, model: type[M], row: Row[Any]) -> M:
    """The object of a row that a Core statement just read or wrote (UPDATE ... RETURNING every column), in the
    session as persistent and unchanged, without a query: what `populate_existing` on an ORM statement gives,
    for a fraction of its cost. An object the session already holds for that row is refreshed from it."""
    mapper = sa_inspect(model)
    keys = _COLUMN_KEYS.get(model)
    if keys is None:
        keys = {column.name: mapper.get_property_by_column(column).key for column in mapper.local_table.columns}
        _COLUMN_KEYS[model] = keys
    values = {keys[name]: value for name, value in row._mapping.items()}
    identity = mapper.identity_key_from_primary_key([values[keys[c.name]] for c in mapper.primary_key])
    held = session.sync_session.identity_map.get(identity)
    if held is not None:
        for key, value in values.items():
            set_committed_value(held, key, value)
        return cast(M, held)
    obj = model(**values)
    make_transient_to_detached(obj)
    session.add(obj)
    return obj
