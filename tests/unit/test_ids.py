"""Ids sort in the order a process made them: in the same millisecond, and when the clock steps back.

A fake clock starts from no id made before (and puts the last id back after), so that the order tests run in
does not matter.
"""

from __future__ import annotations

import threading
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketplace import ids
from marketplace.ids import is_id, new_id

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def _value(id_: str) -> int:
    value = 0
    for char in id_.partition("_")[2]:
        value = value * 32 + _ALPHABET.index(char)
    return value


def test_ids_made_in_a_tight_loop_are_strictly_increasing() -> None:
    made = [new_id("ntf") for _ in range(20_000)]  # many share a millisecond
    assert all(a < b for a, b in pairwise(made))
    assert all(is_id(i, "ntf") for i in made)


def fake_clock(mp: pytest.MonkeyPatch, now: list[int]) -> None:
    mp.setattr(ids, "_now_ms", lambda: now[0])
    mp.setattr(ids, "_last", 0)


def test_in_the_same_millisecond_an_id_is_the_last_one_plus_one(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_clock(monkeypatch, [1_500_000_000_000])
    first, second = new_id("x"), new_id("x")
    assert _value(second) == _value(first) + 1


def test_a_later_millisecond_starts_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_500_000_100_000]
    fake_clock(monkeypatch, now)
    new_id("x")
    now[0] += 1
    later = _value(new_id("x"))
    assert later >> 80 == now[0]  # its own time, a random part of its own


@given(steps=st.lists(st.integers(min_value=-10_000, max_value=10_000), min_size=1, max_size=50))
@settings(max_examples=200)
def test_ids_increase_whatever_the_clock_does(steps: list[int]) -> None:
    now = [1_500_000_200_000]
    with pytest.MonkeyPatch.context() as mp:
        fake_clock(mp, now)
        made = [new_id("x")]
        for step in steps:
            now[0] += step  # forward, still, or back
            made.append(new_id("x"))
    assert all(a < b for a, b in pairwise(made))
    assert all(is_id(i, "x") and len(i) == 28 for i in made)


def test_ids_made_from_threads_are_unique_and_each_thread_sees_them_increase() -> None:
    per_thread: list[list[str]] = [[] for _ in range(8)]

    def make(out: list[str]) -> None:
        out.extend(new_id("x") for _ in range(5_000))

    threads = [threading.Thread(target=make, args=(out,)) for out in per_thread]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({i for out in per_thread for i in out}) == 8 * 5_000
    for out in per_thread:
        assert all(a < b for a, b in pairwise(out))
