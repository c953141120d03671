"""A stand-in for a process's ranker, for tests of the ranking sync: it records what it was told to read back
(and in how many reads) or to apply."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any


class RecordingRanker:
    def __init__(self) -> None:
        self.refreshed: list[str] = []
        self.reads = 0
        self.applied: list[Any] = []
        self.loads = 0  # full reads (at start, and when every business is read back)

    async def load(self, session: Any, now: datetime) -> int:
        self.loads += 1
        return 0

    async def refresh_priors(self, session: Any) -> None:
        return None

    async def refresh(self, session: Any, ids: Sequence[str], now: datetime) -> None:
        self.refreshed.extend(ids)
        self.reads += 1

    def apply(self, events: Sequence[Any]) -> list[str]:
        self.applied.extend(events)
        return []


@contextlib.asynccontextmanager
async def no_session() -> AsyncIterator[None]:
    yield None
