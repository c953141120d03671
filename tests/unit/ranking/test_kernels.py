"""The compiled loops of the ranking core on hand-made tables: moving an entry, making room, the exp bounds that
let the ranked scan skip exp(), and exploration picks."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from marketplace.ranking import kernels
from marketplace.ranking.core import WINDOWS, LeadFactor, _Bucket, _entry, warm_up
from marketplace.ranking.kernels import DEAD_HI, DEAD_LO

POSTERIOR = (1.0, 2.0, 3.0, 0.0, 1.0, 0.0, 0.0)


def _bucket(scores: list[float], spread: bool) -> _Bucket:
    """Entries of slots 0.. scoring `scores` (descending), deal range 0..1,000; without free places unless spread."""
    bucket = _Bucket()
    n = len(scores)
    neg = -np.array(scores)
    post = np.tile(np.array(POSTERIOR)[:, None], (1, n))
    bucket.lay_out(neg, np.zeros(n, np.int64), np.full(n, 1_000, np.int64), np.arange(n, dtype=np.int64), post)
    if not spread:  # the same entries packed: no free place anywhere
        live = bucket.lo != DEAD_LO
        bucket._use(np.ascontiguousarray(bucket.table[:, live]))
    return bucket


def _live(bucket: _Bucket) -> list[tuple[int, float]]:
    live = bucket.lo != DEAD_LO
    return [(int(s), -float(v)) for s, v in zip(bucket.slot[live], bucket.neg[live], strict=True)]


def test_a_move_frees_the_old_place_and_takes_a_free_place_near_the_new_one():
    bucket = _bucket([float(100 - i) for i in range(40)], spread=True)
    free_before = int((bucket.lo == DEAD_LO).sum())
    assert bucket.move(-90.0, 10, -50.5, _entry(-50.5, 0, 1_000, 10, POSTERIOR))
    live = _live(bucket)
    assert (10, 50.5) in live and (10, 90.0) not in live
    assert [v for _, v in live] == sorted((v for _, v in live), reverse=True)
    assert bool(np.all(bucket.neg[1:] >= bucket.neg[:-1]))  # free places included
    assert int((bucket.lo == DEAD_LO).sum()) == free_before  # one freed, one taken


def test_a_move_with_no_free_place_near_ends_the_old_entry_and_reinserts_after_a_respread():
    scores = [float(5000 - i) for i in range(5000)]
    bucket = _bucket(scores, spread=False)
    assert int((bucket.lo == DEAD_LO).sum()) == 0
    entry = _entry(-0.5, 0, 1_000, 0, POSTERIOR)  # from the top to the bottom: its freed place is far away
    assert kernels.move(bucket.neg, bucket.table, -5000.0, 0, -0.5, entry, WINDOWS) == 2
    assert bucket.lo[0] == DEAD_LO and bucket.hi[0] == DEAD_HI  # ended, nothing written yet
    # Through the bucket: the entry comes back at its new place, after a re-spread.
    bucket = _bucket(scores, spread=False)
    assert bucket.move(-5000.0, 0, -0.5, entry)
    assert _live(bucket) == [(i, 5000.0 - i) for i in range(1, 5000)] + [(0, 0.5)]
    assert int((bucket.lo == DEAD_LO).sum()) > 0  # spread again


def test_a_move_of_a_slot_without_a_live_entry_at_that_score_does_nothing():
    bucket = _bucket([3.0, 2.0, 1.0], spread=True)
    before = bucket.table.copy()
    assert not bucket.move(-2.0, 0, -9.0, _entry(-9.0, 0, 1_000, 0, POSTERIOR))  # slot 0 scores 3, not 2
    assert np.array_equal(bucket.table, before)


def test_make_room_keeps_the_order_among_equal_scores():
    bucket = _bucket([2.0] * 20, spread=True)
    for slot in range(20, 30):  # newcomers at the same score go after those already there
        bucket.insert(-2.0, _entry(-2.0, 0, 1_000, slot, POSTERIOR))
    assert [s for s, _ in _live(bucket)] == list(range(30))


@settings(max_examples=300, deadline=None)
@given(z=st.floats(-LeadFactor.BOUND, LeadFactor.BOUND, allow_nan=False))
def test_the_exp_bounds_never_fall_below_exp(z):
    bound = LeadFactor.BOUND
    table = kernels.exp_bounds(bound)
    cells = len(table) - 2
    assert table[int((z + bound) * (cells / (2.0 * bound))) + 1] >= math.exp(z)
    assert table[int((z + bound) * (cells / (2.0 * bound))) + 1] <= math.exp(z) * math.exp(4 * bound / cells) * 1.01


def test_exploration_picks_skip_ineligible_ranked_and_excluded_candidates():
    r_slots = np.array([7, 8, 9, 10, 11, 12], np.int64)
    r_lo = np.array([0, 500, DEAD_LO, 0, 0, 0], np.int64)
    r_hi = np.array([1_000, 600, DEAD_HI, 1_000, 1_000, 1_000], np.int64)
    r_base = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.5])
    mark = np.zeros(16, np.bool_)
    mark[11] = True  # excluded
    out = np.empty(3, np.int64)
    ranked = np.array([10], np.int64)
    n = kernels.explore_picks(r_slots, r_lo, r_hi, r_base, 0, 6, 300, False, False, 0.0, mark, ranked, 3, out)
    assert out[:n].tolist() == [0, 5]  # 8: budget outside its range; 9: dead; 10: ranked; 11: excluded
    assert not mark[10] and mark[11]  # the ranked slots are unmarked again
    n = kernels.explore_picks(r_slots, r_lo, r_hi, r_base, 0, 6, 300, False, True, 2.0, mark, ranked, 3, out)
    assert out[:n].tolist() == [4, 5]  # by base: only those scoring below the last ranked; marks not read
    n = kernels.explore_picks(r_slots, r_lo, r_hi, r_base, 1, 6, 0, True, True, 9.0, mark, ranked, 2, out)
    assert out[:n].tolist() == [1, 3]  # an unstated budget fits every live range


def test_the_warm_up_runs_every_compiled_loop_the_service_calls():
    warm_up()
    for kernel in (kernels.find, kernels.make_room, kernels.move, kernels.top, kernels.explore_picks):
        assert kernel.signatures, kernel
