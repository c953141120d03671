"""UTCDateTime hands back what it read as an aware UTC timestamp, exactly as value.replace(tzinfo=UTC) did."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy.dialects import postgresql, sqlite

from marketplace.db.base import UTCDateTime


def test_a_naive_value_is_the_same_moment_in_utc() -> None:
    column = UTCDateTime()
    rng = random.Random(7)
    span = int((datetime(9999, 12, 30) - datetime(1, 1, 1)).total_seconds()) * 10**6
    values = [datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59, 999999), datetime(2026, 1, 5, 7, 28, 21, 813674)]
    values += [datetime(1, 1, 1) + timedelta(microseconds=rng.randrange(span)) for _ in range(2000)]
    for value in values:
        for naive in (value, value.replace(fold=1)):
            read = column.process_result_value(naive, sqlite.dialect())
            expected = naive.replace(tzinfo=UTC)
            assert read is not None
            assert (read, read.tzinfo, read.fold, repr(read)) == (expected, UTC, expected.fold, repr(expected))


def test_an_aware_value_is_turned_to_utc_and_none_stays_none() -> None:
    column = UTCDateTime()
    jerusalem = timezone(timedelta(hours=2))
    read = column.process_result_value(datetime(2026, 1, 5, 9, 0, tzinfo=jerusalem), postgresql.dialect())
    assert read == datetime(2026, 1, 5, 7, 0, tzinfo=UTC) and read.tzinfo is UTC
    assert column.process_result_value(None, sqlite.dialect()) is None
