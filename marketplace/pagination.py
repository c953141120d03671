"""Cursor pagination: `?limit=` (max 200) and `?cursor=` (the last id seen, ids being time-ordered; for a list
computed whole at each request, the last position seen; for a list ordered by a time that can change, that time and
the id)."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar

import msgspec

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


def page_of(rows: Sequence[Any], limit: int, id_of: Any) -> tuple[list[Any], str | None]:
    items = list(rows[:limit])
    return items, (id_of(items[-1]) if len(rows) > limit and items else None)


_POSITION = re.compile(r"[1-9][0-9]{0,8}")


def position_cursor(list_key: str, position: int) -> str:
    """The cursor after `position` (from 1) of a list computed whole at each request (a lead's ranking), tied to
    that list (`list_key`): opaque to clients, who send it back as they got it."""
    return base64.urlsafe_b64encode(f"{list_key}:{position}".encode()).decode("ascii").rstrip("=")


def after_position(cursor: str | None, list_key: str) -> int:
    """The position a page of such a list starts after: 0 for the first page; a cursor this list did not give out
    (another list's, altered, made up) is a 422."""
    if not cursor:
        return 0
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode("utf-8")
    except (binascii.Error, ValueError):  # ValueError: a cursor that is not ASCII (UnicodeDecodeError is one too)
        raw = ""
    key, _, position = raw.rpartition(":")
    # Only the exact text it gives out: no other spelling (padding, leading zeros) of the same position.
    if key != list_key or not _POSITION.fullmatch(position) or position_cursor(key, int(position)) != cursor:
        raise InvalidInput.field("cursor", "not a cursor this list gave out")
    return int(position)


def time_cursor(at: datetime, item_id: str) -> str:
    """The cursor after an item of a list ordered by a time that can change (newest first, then id): the time and id
    themselves, so the next page goes on from there even once that item has left the list or moved in it."""
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{item_id}".encode()).decode("ascii").rstrip("=")


def after_time_cursor(cursor: str) -> tuple[datetime, str]:
    """The time and id a time_cursor holds; a cursor no list gave out (altered, made up) is a 422."""
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode("utf-8")
        at_text, _, item_id = raw.partition("|")
        at = datetime.fromisoformat(at_text)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        at, item_id = None, ""
    if at is None or at.tzinfo is None or not item_id or time_cursor(at, item_id) != cursor:
        raise InvalidInput.field("cursor", "not a cursor this list gave out")
    return at, item_id

