"""Cursor pagination: `?limit=` (max 200) and `?cursor=` (the last id seen; ids are time-ordered)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar

import msgspec
from sqlalchemy import Select

from marketplace.errors import InvalidInput
from marketplace.ids import is_id

T = TypeVar("T")
MAX_LIMIT = 200


class Page(msgspec.Struct, Generic[T]):
    items: list[T]
    next_cursor: str | None


def check_limit(limit: int) -> int:
    if limit < 1 or limit > MAX_LIMIT:
        raise InvalidInput.field("limit", f"must be between 1 and {MAX_LIMIT}")
    return limit


def check_cursor(cursor: str | None, prefix: str) -> str | None:
    """The cursor of a list paged by id (the last id of the previous page), or None for the first page; anything
    else is a 422, not an empty page that reads as "nothing more"."""
    if not cursor:
        return None
    if not is_id(cursor, prefix):
        raise InvalidInput.field("cursor", "not a cursor this list gave out")
    return cursor


def paginate_desc(query: Select[Any], id_column: Any, limit: int, cursor: str | None) -> Select[Any]:
    """Newest first: ids below the cursor, one more row than asked to know whether a next page exists."""
    check_limit(limit)
    if cursor:
        query = query.where(id_column < cursor)
    return query.order_by(id_column.desc()).limit(limit + 1)


def page_of(rows: Sequence[Any], limit: int, id_of: Any) -> tuple[list[Any], str | None]:
    items = list(rows[:limit])
    return items, (id_of(items[-1]) if len(rows) > limit and items else None)
