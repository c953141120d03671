"""Running conditional writes: how many rows an UPDATE changed is how the database answers a race."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession


async def rows_changed(session: AsyncSession, statement: Any, params: dict[str, Any] | None = None) -> int:
    result = cast(CursorResult[Any], await session.execute(statement, params))
    return int(result.rowcount)
