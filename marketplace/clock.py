"""The one clock the service reads time from; a simulation drives it, production reads the wall clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class Clock:
    """Wall-clock time unless frozen or advanced (simulations and tests)."""

    def __init__(self) -> None:
        self._frozen: datetime | None = None
        self._offset = timedelta()

    def now(self) -> datetime:
        if self._frozen is not None:
            return self._frozen
        return datetime.now(UTC) + self._offset

    def freeze(self, at: datetime) -> None:
        self._frozen = at.astimezone(UTC)

    def advance(self, delta: timedelta) -> None:
        if self._frozen is not None:
            self._frozen += delta
        else:
            self._offset += delta

    def reset(self) -> None:
        self._frozen = None
        self._offset = timedelta()


clock = Clock()


def utcnow() -> datetime:
    return clock.now()
