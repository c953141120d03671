"""Off hours: when later waves wait and an offer's time stands still (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from marketplace.off_hours import NO_OFF_HOURS, OffHours, OffHoursError

JERUSALEM = ZoneInfo("Asia/Jerusalem")
NIGHTS = OffHours.parse("21:00-07:00", "Asia/Jerusalem")


def local(day: int, hour: int, minute: int = 0, month: int = 1) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=JERUSALEM).astimezone(UTC)


@pytest.mark.parametrize(
    ("spec", "zone", "reason"),
    [
        ("21:00", "UTC", "HH:MM-HH:MM"),
        ("25:00-07:00", "UTC", "HH:MM-HH:MM"),
        ("21:00-21:00", "UTC", "the same"),
        ("21:00-07:00", "Mars/Olympus", "unknown time zone"),
    ],
)
def test_a_wrong_spec_is_refused_with_its_reason(spec: str, zone: str, reason: str) -> None:
    with pytest.raises(OffHoursError, match=reason):
        OffHours.parse(spec, zone)


def test_open_at_is_the_end_of_the_stretch_a_moment_falls_in() -> None:
    assert NIGHTS.open_at(local(5, 20, 59)) == local(5, 20, 59)
    assert NIGHTS.open_at(local(5, 21)) == local(6, 7)
    assert NIGHTS.open_at(local(6, 3)) == local(6, 7)
    assert NIGHTS.open_at(local(6, 7)) == local(6, 7)
    assert NIGHTS.is_off(local(5, 23)) and not NIGHTS.is_off(local(6, 12))
    early = OffHours.parse("00:00-06:00", "UTC")  # a stretch that does not cross midnight
    at = datetime(2026, 1, 5, 3, tzinfo=UTC)
    assert early.open_at(at) == datetime(2026, 1, 5, 6, tzinfo=UTC)
    assert early.open_at(at.replace(hour=23)) == at.replace(hour=23)


def test_an_offers_lifetime_counts_open_time_only() -> None:
    two_hours = timedelta(hours=2)
    assert NIGHTS.add(local(5, 10), two_hours) == local(5, 12)
    assert NIGHTS.add(local(5, 20, 30), two_hours) == local(6, 8, 30)  # 30 minutes before, 90 after the night
    assert NIGHTS.add(local(5, 23), two_hours) == local(6, 9)  # made at night: counted from 07:00
    # 30 hours of open time from 07:00: 14 hours a day, so two nights are skipped.
    assert NIGHTS.add(local(5, 7), timedelta(hours=30)) == local(7, 9)
    assert NIGHTS.add(local(5, 23), timedelta()) == local(6, 7)  # nothing to wait, but not before the night ends


def test_a_night_across_a_change_of_clocks_is_counted_in_local_time() -> None:
    # Israel moves its clocks forward at 02:00 on Friday 27 March 2026: that night is nine hours long.
    made = local(26, 20, month=3)
    expires = NIGHTS.add(made, timedelta(hours=2))
    assert expires.astimezone(JERUSALEM).replace(tzinfo=None) == datetime(2026, 3, 27, 8, 0)
    assert expires - made == timedelta(hours=11)


def test_no_off_hours_adds_plain_time() -> None:
    at = datetime(2026, 1, 5, 23, tzinfo=UTC)
    assert NO_OFF_HOURS.add(at, timedelta(minutes=5)) == at + timedelta(minutes=5)
    assert NO_OFF_HOURS.open_at(at) == at and not NO_OFF_HOURS.is_off(at)
    assert OffHours.parse("", "UTC") == NO_OFF_HOURS


moments = st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC))
spans = st.timedeltas(min_value=timedelta(seconds=1), max_value=timedelta(days=5))


@given(moments, spans, spans)
def test_open_time_adds_up(at: datetime, first: timedelta, second: timedelta) -> None:
    assert NIGHTS.add(NIGHTS.add(at, first), second) == NIGHTS.add(at, first + second)


@given(moments, spans)
def test_adding_open_time_never_takes_less_than_the_time_itself_nor_ends_inside_the_night(
    at: datetime, span: timedelta
) -> None:
    end = NIGHTS.add(at, span)
    assert end - at >= span
    assert not NIGHTS.is_off(end) or end.astimezone(JERUSALEM).time() == time(21)  # at most as the night begins


BERLIN_LONG_NIGHTS = OffHours.parse("03:00-02:00", "Europe/Berlin")  # one open hour a day, 02:00-03:00


@given(st.datetimes(min_value=datetime(2026, 3, 20), max_value=datetime(2026, 4, 5), timezones=st.just(UTC)), spans)
def test_a_days_open_window_lost_to_a_change_of_clocks_is_skipped(at: datetime, span: timedelta) -> None:
    # On 29 March 2026 Berlin's clocks jump from 02:00 to 03:00: that day has no open hour at all.
    opened = BERLIN_LONG_NIGHTS.open_at(at)
    assert opened >= at and not BERLIN_LONG_NIGHTS.is_off(opened)
    end = BERLIN_LONG_NIGHTS.add(at, span)
    assert end - at >= span
    assert not BERLIN_LONG_NIGHTS.is_off(end) or end.astimezone(ZoneInfo("Europe/Berlin")).time() == time(3)
