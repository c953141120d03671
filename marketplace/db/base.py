"""Declarative base with a constraint naming convention and the column types every model shares."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import DateTime, MetaData, String, literal_column
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.sql import operators
from sqlalchemy.sql.sqltypes import Concatenable
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def one_of(column: str, names: tuple[str, ...]) -> str:
    """The text of a CHECK that `column` holds one of `names` (a status set kept as one tuple in its model's module):
    `status IN ('open', 'full')`."""
    quoted = ", ".join(f"'{name}'" for name in names)
    return f"{column} IN ({quoted})"


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps are stored in UTC and always come back timezone-aware, on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            # As value.replace(tzinfo=UTC), at a fifth of its cost: replace() parses keyword arguments, about 3 us a
            # call here, and every timestamp a SQLite row holds comes through here (a fraud scan reads thousands).
            return datetime.combine(value, value.time(), UTC)
        return value.astimezone(UTC)


class PartialIndexKey(TypeDecorator[str]):
    """A status column that a partial index's condition names (`offers.status = 'open'`). One of its status names
    compared with it for (in)equality is written into the SQL instead of being bound as a parameter:

    - SQLite re-prepares a statement at every execution when a parameter is compared with such a column (the value
      decides whether the partial index may serve): about 20 us more for a one-line SELECT, 130 us for the owed-
      replacement read, and each row of the wave's offer upsert;
    - PostgreSQL plans a prepared statement with a parameter there for any value once it settles on a generic plan,
      and a generic plan cannot use the partial index.

    Only the column's own status names are written in (`names`); any other value stays a parameter, so what a caller
    sends never becomes SQL text, and each status name makes one statement text, not one per value."""

    impl = String
    cache_ok = True

    def __init__(self, length: int, names: tuple[str, ...]) -> None:
        plain = re.compile(r"[a-z_]+")
        if not all(plain.fullmatch(name) for name in names):
            raise ValueError(f"status names are plain lower-case words (they are written into SQL): {names}")
        super().__init__(length)
        self.names = frozenset(names)

    class comparator_factory(TypeDecorator.Comparator[str], Concatenable.Comparator[str]):
        def operate(self, op: Any, *other: Any, **kwargs: Any) -> Any:
            named = cast(PartialIndexKey, self.type).names
            if op in (operators.eq, operators.ne) and len(other) == 1 and type(other[0]) is str and other[0] in named:
                other = (literal_column(f"'{other[0]}'", String()),)
            return super().operate(op, *other, **kwargs)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
