"""Declarative base with a constraint naming convention and the column types every model shares."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, MetaData, String, literal_column
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.sql import operators
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


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
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class PartialIndexKey(TypeDecorator[str]):
    """A string column that a partial index's condition names (`offers.status = 'open'`). A constant compared with it
    for (in)equality is written into the SQL instead of being bound as a parameter:

    - SQLite re-prepares a statement at every execution when a parameter is compared with such a column (the value
      decides whether the partial index may serve): about 20 us more for a one-line SELECT, 130 us for the owed-
      replacement read, and each row of the wave's offer upsert;
    - PostgreSQL's generic plan of a prepared statement cannot prove a parameter equal to the index's condition, so
      it cannot use the index at all.
    """

    impl = String
    cache_ok = True

    class comparator_factory(TypeDecorator.Comparator[str]):
        def operate(self, op: Any, *other: Any, **kwargs: Any) -> Any:
            if op in (operators.eq, operators.ne) and len(other) == 1 and isinstance(other[0], str):
                other = (_constant(other[0]),)
            return super().operate(op, *other, **kwargs)


_WORD = re.compile(r"[a-z_]+")


def _constant(value: str) -> Any:
    """A status name written into the SQL as it is compiled (so executemany takes it too); anything that is not a
    plain lower-case word stays a parameter."""
    return literal_column(f"'{value}'", String()) if _WORD.fullmatch(value) else value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
