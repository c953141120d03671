"""The marketplace's calendar: local days and months as instants in UTC, across changes of clocks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from marketplace.clock import day_start, local_date, month_start

BERLIN, JERUSALEM = ZoneInfo("Europe/Berlin"), ZoneInfo("Asia/Jerusalem")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_a_local_day_begins_at_the_local_midnight():
    assert day_start(utc(2026, 1, 14, 22, 5), JERUSALEM) == utc(2026, 1, 14, 22, 0)  # winter, UTC+2
    assert day_start(utc(2026, 1, 14, 21, 55), JERUSALEM) == utc(2026, 1, 13, 22, 0)
    assert day_start(utc(2026, 7, 1, 12, 0), JERUSALEM) == utc(2026, 6, 30, 21, 0)  # summer, UTC+3
    assert local_date(utc(2026, 1, 14, 22, 5), JERUSALEM).isoformat() == "2026-01-15"
    assert day_start(utc(2026, 1, 14, 22, 5), ZoneInfo("UTC")) == utc(2026, 1, 14, 0, 0)


def test_a_month_begins_at_the_local_midnight_of_its_first_day():
    assert month_start(utc(2026, 1, 31, 22, 30), JERUSALEM) == utc(2026, 1, 31, 22, 0)  # February in Jerusalem
    assert month_start(utc(2026, 3, 29, 12, 0), BERLIN) == utc(2026, 2, 28, 23, 0)  # set before the spring change
    assert month_start(utc(2026, 4, 1, 0, 0), BERLIN) == utc(2026, 3, 31, 22, 0)


def test_days_across_a_change_of_clocks_are_23_and_25_hours_long():
    spring = day_start(utc(2026, 3, 29, 12, 0), BERLIN)
    assert day_start(utc(2026, 3, 30, 12, 0), BERLIN) - spring == timedelta(hours=23)
    autumn = day_start(utc(2026, 10, 25, 12, 0), BERLIN)
    assert day_start(utc(2026, 10, 26, 12, 0), BERLIN) - autumn == timedelta(hours=25)


@given(
    st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31), timezones=st.just(UTC)),
    st.sampled_from([BERLIN, JERUSALEM, ZoneInfo("UTC")]),
)
def test_now_lies_in_its_local_day_and_month(now, zone):
    day, month = day_start(now, zone), month_start(now, zone)
    assert month <= day <= now < day + timedelta(hours=25)
    assert local_date(day, zone) == local_date(now, zone)
    assert day.astimezone(zone).hour == 0 and month.astimezone(zone).day == 1
    assert local_date(day - timedelta(seconds=1), zone) < local_date(now, zone)
