"""The one clock the service reads time from; a simulation drives it, production reads the wall clock."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo


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


def rfc3339(at: datetime) -> str:
    """A timestamp as the API writes every one: RFC 3339 in UTC, with `Z` (JSON, CSV and problem details alike)."""
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- the marketplace's calendar: days and months as its businesses live them ---------------------------------


def local_date(at: datetime, zone: ZoneInfo) -> date:
    """The date `at` falls on where the marketplace trades."""
    return at.astimezone(zone).date()


def day_start(now: datetime, zone: ZoneInfo) -> datetime:
    """The instant (UTC) the local day holding `now` began: a daily cap counts from the local midnight."""
    return _local_midnight(local_date(now, zone), zone)


def next_day_start(now: datetime, zone: ZoneInfo) -> datetime:
    """The instant (UTC) the local day after the one holding `now` begins: when daily caps start again."""
    return _local_midnight(local_date(now, zone) + timedelta(days=1), zone)


def month_start(now: datetime, zone: ZoneInfo) -> datetime:
    """The instant (UTC) the local month holding `now` began."""
    return _local_midnight(local_date(now, zone).replace(day=1), zone)


def _local_midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)
