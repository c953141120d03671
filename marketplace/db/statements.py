"""Running conditional writes (how many rows an UPDATE changed is how the database answers a race), and
putting the rows a Core statement returned into the session as objects."""

from __future__ import annotations

from typing import Any, TypeVar, cast

from sqlalchemy import CursorResult, Row, Table
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

M = TypeVar("M")


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
