"""Compiled loops of the ranking core (numba): the steps where a numpy call per step costs more than the work.

Moving an entry in its bucket touches a few dozen bytes, but as numpy calls it takes two binary searches, a
slice copy with a temporary and a column write, each a microsecond of call overhead and most of it cache
misses on the table rows; as one compiled loop it is one call. The layout constants are the core's
(`ranking/core.py` imports them from here), so both read a table the same way.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Rows of a bucket's table, all int64; the score row and the posterior rows hold float64 bits.
NEG, LO, HI, SLOT, POST = range(5)
POSTERIOR_COLUMNS = 7
ROWS = POST + POSTERIOR_COLUMNS
DEAD_LO = np.iinfo(np.int64).max
DEAD_HI = np.iinfo(np.int64).min


@njit(cache=True, nogil=True)
def find(negs: np.ndarray, table: np.ndarray, neg: float, slot: int) -> int:  # pragma: no cover - compiled
    """The place of this slot's live entry scoring -neg, or -1: a binary search, then the run of equal scores."""
    cap = negs.shape[0]
    i = np.searchsorted(negs, neg)
    while i < cap and negs[i] == neg:
        if table[SLOT, i] == slot and table[LO, i] != DEAD_LO:
            return i
        i += 1
    return -1


@njit(cache=True, nogil=True)
def make_room(negs: np.ndarray, table: np.ndarray, neg: float, windows: tuple[int, int]) -> int:  # pragma: no cover
    """A free place where an entry scoring -neg keeps the table sorted: the one at its sorted place or just
    before, else made there by shifting the entries up to the nearest free place within the first window on
    either side, then the second; -1 if there is none (the caller re-spreads the bucket)."""
    cap = negs.shape[0]
    p = np.searchsorted(negs, neg, side="right")  # after every entry scoring at least as high
    if p < cap and table[LO, p] == DEAD_LO:
        return p
    if p > 0 and table[LO, p - 1] == DEAD_LO:
        return p - 1
    rows = table.shape[0]
    for window in windows:
        # Nearest free place on the right: the entries in [p, j) move up one place.
        for j in range(p, min(cap, p + window)):
            if table[LO, j] == DEAD_LO:
                for r in range(rows):
                    row = table[r]
                    for m in range(j, p, -1):
                        row[m] = row[m - 1]
                return p
        # On the left: the entries in (q, p) move down one place.
        for q in range(p - 1, max(-1, p - 1 - window), -1):
            if table[LO, q] == DEAD_LO:
                for r in range(rows):
                    row = table[r]
                    for m in range(q, p - 1):
                        row[m] = row[m + 1]
                return p - 1
    return -1


@njit(cache=True, nogil=True)
def move(
    negs: np.ndarray, table: np.ndarray, old: float, slot: int, neg: float, entry: np.ndarray, windows: tuple[int, int]
) -> int:  # pragma: no cover - compiled
    """The slot's entry scoring -old is rewritten as `entry`, scoring -neg, at its new sorted place. Its old
    place becomes free and the new one is made from the nearest free place there (see make_room), so an update
    moves a handful of entries, not all those between its two places. 0: the slot has no live entry scoring
    -old here (nothing done); 1: moved; 2: its old entry ended but there is no free place near the new one (the
    caller re-spreads the bucket and inserts it)."""
    i = find(negs, table, old, slot)
    if i < 0:
        return 0
    table[LO, i] = DEAD_LO
    table[HI, i] = DEAD_HI
    at = make_room(negs, table, neg, windows)
    if at < 0:
        return 2
    for r in range(table.shape[0]):
        table[r, at] = entry[r]
    return 1
