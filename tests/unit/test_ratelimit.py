"""The sliding window's Retry-After: a client that waits as long as it was told gets through, and not much sooner."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from marketplace.http.ratelimit import WINDOW_SECONDS, retry_after


def weighted(current: int, previous: int, at: float) -> float:
    """What the window counts `at` seconds into the current minute (past 60: into the next one, no new requests)."""
    if at < WINDOW_SECONDS:
        return previous * (1 - at / WINDOW_SECONDS) + current
    return current * (1 - (at - WINDOW_SECONDS) / WINDOW_SECONDS)


@given(
    limit=st.integers(1, 500),
    current=st.integers(0, 500),
    previous=st.integers(0, 500),
    into_minute=st.floats(0, WINDOW_SECONDS - 1e-6),
)
def test_waiting_as_told_lets_one_more_through(limit, current, previous, into_minute):
    current = min(current, limit)  # never more than the limit is let through in a minute
    if weighted(current, previous, into_minute) + 1 <= limit:
        return  # not refused now
    wait = retry_after(current, previous, into_minute, limit)
    assert weighted(current, previous, into_minute + wait) + 1 <= limit + 1e-9
    if wait >= 1:
        assert weighted(current, previous, into_minute + wait - 1) + 1 > limit - 1e-9


def test_a_full_minute_waits_for_the_next_one_and_part_of_it():
    assert retry_after(10, 0, 30.0, 10) == 30.0 + WINDOW_SECONDS * (1 - 9 / 10)
    assert retry_after(3, 10, 0.0, 10) == WINDOW_SECONDS * (1 - 6 / 10)


def test_the_header_rounds_the_wait_up_to_whole_seconds():
    from marketplace.http.ratelimit import _refuse

    assert _refuse(5, 8.07).extra["retry_after_seconds"] == 9  # waiting 8 s would be refused again
    assert _refuse(5, 0.2).extra["retry_after_seconds"] == 1
