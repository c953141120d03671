"""The marketplace's off hours: the nightly stretch in which no wave of offers escalates and an offer's time stands
still (pure; no database).

Businesses do not answer offers at night. Without off hours a lead submitted in the evening went through dozens
of waves before morning, every offer expiring unseen, and its places went at 07:00 to whoever the last waves had
reached instead of the businesses ranked first. With them, a lead's first wave still goes out at once; later
waves wait for the end of the off hours, and an offer's lifetime counts open time only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class OffHoursError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class OffHours:
    """A daily stretch `[start, end)` of local time in `zone`; it may cross midnight (21:00-07:00). `start is None`:
    no off hours at all."""

    start: time | None
    end: time | None
    zone: ZoneInfo

    @classmethod
    def parse(cls, spec: str, zone: str) -> OffHours:
        """`"21:00-07:00"` in an IANA zone; an empty spec means none."""
        try:
            tz = ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise OffHoursError(f"unknown time zone {zone!r}") from exc
        spec = spec.strip()
        if not spec:
            return cls(None, None, tz)
        try:
            start_text, end_text = (part.strip() for part in spec.split("-"))
            start, end = time.fromisoformat(start_text), time.fromisoformat(end_text)
        except ValueError as exc:
            raise OffHoursError(f"expected HH:MM-HH:MM, got {spec!r}") from exc
        if start == end:
            raise OffHoursError(f"start and end are the same ({spec!r}): leave it empty for no off hours")
        return cls(start, end, tz)

    def _stretches_around(self, at: datetime) -> tuple[tuple[datetime, datetime], ...]:
        """The off stretches that begin on the local day before `at`'s, on its day and on the day after (UTC)."""
        assert self.start is not None and self.end is not None
        return _stretches_of_day(self.start, self.end, self.zone, at.astimezone(self.zone).date())

    def open_at(self, at: datetime) -> datetime:
        """`at` itself when it is open time, else the moment the off hours it falls in end (the first open moment:
        where a change of clocks swallows a day's open window, one stretch ends as the next begins)."""
        if self.start is None:
            return at
        for _ in range(8):  # a day's open window lost to a change of clocks at most every few months
            inside = [finish for begin, finish in self._stretches_around(at) if begin <= at < finish]
            if not inside:
                return at
            at = max(inside)
        return at

    def is_off(self, at: datetime) -> bool:
        return self.open_at(at) != at

    def add(self, at: datetime, duration: timedelta) -> datetime:
        """`at` plus `duration` of open time: the clock stands still in off hours (an offer made at 20:30 with two
        hours to live, off hours 21:00-07:00, lives until 08:30; one made at 23:00 until 09:00)."""
        if self.start is None:
            return at + duration
        t, left = self.open_at(at), duration
        while True:
            next_off = min(begin for begin, _ in self._stretches_around(t) if begin > t)
            if t + left <= next_off:
                return t + left
            left -= next_off - t
            t = self.open_at(next_off)


# Every wave and offer asks (is it off now, when does this offer expire, when is the next wave due), a few times each:
# the same few days' stretches, computed once.
@lru_cache(maxsize=256)
def _stretches_of_day(start: time, end: time, zone: ZoneInfo, day: date) -> tuple[tuple[datetime, datetime], ...]:
    stretches = []
    for offset in (-1, 0, 1):
        d = day + timedelta(days=offset)
        begin = datetime.combine(d, start, zone)
        end_day = d if start < end else d + timedelta(days=1)
        finish = datetime.combine(end_day, end, zone)
        stretches.append((begin.astimezone(UTC), finish.astimezone(UTC)))
    return tuple(stretches)


NO_OFF_HOURS = OffHours(None, None, ZoneInfo("UTC"))
