"""The compiled loops of the ranking core on hand-made tables: moving an entry, making room, the exp bounds that
let the ranked scan skip exp(), and exploration picks."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tracemalloc
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketplace.ranking import kernels
from marketplace.ranking.core import WINDOWS, LeadFactor, Profile, RankingCore, _Bucket, _entry, range_class
from marketplace.ranking.kernels import BUYER, DEAD_HI, DEAD_LO, HI, LO, NEG, ROWS, SLOT
from marketplace.ranking.scoring import Score

POSTERIOR = (1.0, 2.0, 3.0, 0.0, 1.0, 0.0, 0.0)
CLASS = range_class(0, 1_000, False)  # the class of every entry these tables hold: one part


def _plain(value: float) -> Score:
    return Score(value, 2.0, 2.0, 1.0, 0.0, 1.0)


def _bucket(scores: list[float], spread: bool) -> _Bucket:
    """Entries of slots 0.. scoring `scores` (descending), deal range 0..1,000; without free places unless spread."""
    bucket = _Bucket()
    n = len(scores)
    neg = -np.array(scores)
    post = np.tile(np.array(POSTERIOR)[:, None], (1, n))
    zeros, ends = np.zeros(n, np.int64), np.full(n, 1_000, np.int64)
    bucket.lay_out([CLASS], zeros, neg, zeros, ends, np.arange(n, dtype=np.int64), post)
    if not spread:  # the same entries packed: no free place anywhere
        live = bucket.lo != DEAD_LO
        bucket._use(np.ascontiguousarray(bucket.table[:, live]))
        bucket.seg[:, 0] = (0, n)
        bucket.spans = [(0, n)]
    return bucket


def _live(bucket: _Bucket) -> list[tuple[int, float]]:
    live = bucket.lo != DEAD_LO
    return [(int(s), -float(v)) for s, v in zip(bucket.slot[live], bucket.neg[live], strict=True)]


def _laid_out(entries: list[tuple[float, int, int, bool]]) -> _Bucket:
    """A bucket of these entries (score, deal range, lead buyer), slots 0.., laid out in parts as the core does."""
    bucket = _Bucket()
    n = len(entries)
    post = np.tile(np.array(POSTERIOR)[:, None], (1, n))
    post[BUYER] = [1.0 if e[3] else 0.0 for e in entries]
    bucket.lay_out(
        [range_class(e[1], e[2], e[3]) for e in entries],
        np.arange(n, dtype=np.int64),
        -np.array([e[0] for e in entries], np.float64),
        np.array([e[1] for e in entries], np.int64),
        np.array([e[2] for e in entries], np.int64),
        np.arange(n, dtype=np.int64),
        post,
    )
    return bucket


def test_a_move_frees_the_old_place_and_takes_a_free_place_near_the_new_one():
    bucket = _bucket([float(100 - i) for i in range(40)], spread=True)
    free_before = int((bucket.lo == DEAD_LO).sum())
    assert bucket.move(CLASS, -90.0, 10, CLASS, -50.5, _entry(-50.5, 0, 1_000, 10, POSTERIOR))
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
    assert kernels.move(bucket.neg, bucket.table, -5000.0, 0, -0.5, entry, WINDOWS, 0, 5000) == 2
    assert bucket.lo[0] == DEAD_LO and bucket.hi[0] == DEAD_HI  # ended, nothing written yet
    # Through the bucket: the entry comes back at its new place, after a re-spread.
    bucket = _bucket(scores, spread=False)
    assert bucket.move(CLASS, -5000.0, 0, CLASS, -0.5, entry)
    assert _live(bucket) == [(i, 5000.0 - i) for i in range(1, 5000)] + [(0, 0.5)]
    assert int((bucket.lo == DEAD_LO).sum()) >= 5000 // 8  # spread again: a free place every 8 entries


def test_a_move_of_a_slot_without_a_live_entry_at_that_score_does_nothing():
    bucket = _bucket([3.0, 2.0, 1.0], spread=True)
    before = bucket.table.copy()
    assert not bucket.move(CLASS, -2.0, 0, CLASS, -9.0, _entry(-9.0, 0, 1_000, 0, POSTERIOR))  # slot 0 scores 3
    assert np.array_equal(bucket.table, before)


def test_make_room_keeps_the_order_among_equal_scores():
    bucket = _bucket([3.0] * 20 + [1.0] * 40, spread=True)
    for slot in range(60, 90):  # newcomers at the same score go after those already there, shifting the rest
        bucket.insert(CLASS, -3.0, _entry(-3.0, 0, 1_000, slot, POSTERIOR))
    assert [s for s, _ in _live(bucket)] == [*range(20), *range(60, 90), *range(20, 60)]
    assert bool(np.all(bucket.neg[1:] >= bucket.neg[:-1]))


@settings(max_examples=300, deadline=None)
@given(z=st.floats(-LeadFactor.BOUND, LeadFactor.BOUND, allow_nan=False))
def test_the_exp_bound_never_falls_below_exp(z):
    """Through the kernel: a lone deal maker whose factor is exp(z) is never skipped against a k-th just below it."""
    bound = LeadFactor.BOUND
    budget, w_fit = 10, -0.5

    def factor(lo: int, hi: int) -> float:  # as the kernel computes it
        fit = 1.0 - abs((budget - lo) / (hi - lo) - 0.5) * 2.0
        return math.exp(min(max(fit * w_fit + z, -bound), bound))

    # Two deal makers of one part (ranges 0..1,000 and 0..1,010: the same half-octaves). The first, scanned first, is
    # the k-th when the second's turn comes; the second's lower base times its larger factor beats it by two ulps.
    first = factor(0, 1_000)
    second = first / factor(0, 1_010) * (1 + 4e-16)
    bucket = _laid_out([(1.0, 0, 1_000, False), (second, 0, 1_010, False)])
    assert len(bucket.keys) == 1
    places, scores = np.empty(1, np.int64), np.empty(1)
    n = kernels.top(
        bucket.neg, bucket.table, bucket.seg, bucket.bounds, budget, False, 1, np.zeros(2, np.bool_), False, True, z,
        w_fit, bound, 0, places, scores,
    )  # fmt: skip
    assert n == 1
    if second < 1.0:  # (clipped alike, the two factors are equal and the second leads its part)
        assert bucket.slot[places[0]] == 1  # not skipped
        assert scores[0] == second * factor(0, 1_010)


@settings(max_examples=500, deadline=None)
@given(z=st.floats(-LeadFactor.BOUND, LeadFactor.BOUND, allow_nan=False))
def test_the_exp_bound_is_within_three_percent(z):
    c4 = math.exp(LeadFactor.BOUND) / 24.0
    assert math.exp(z) <= kernels.exp_upper(z, c4) <= math.exp(z) * 1.03


def _brute_top(entries, budget, k, lead_term, w_fit, bound):
    """(exact score, slot) of the top k of (score, lo, hi, buyer, excluded, dead) entries, slot = index."""
    exact = []
    for slot, (base, lo, hi, buyer, excluded, dead) in enumerate(entries):
        if dead or excluded or not lo <= budget <= hi:
            continue
        if buyer or not (lead_term or w_fit):
            exact.append((base, slot))
        else:
            fit = 1.0 - abs((budget - lo) / max(hi - lo, 1) - 0.5) * 2.0
            exact.append((base * math.exp(min(max(lead_term + w_fit * fit, -bound), bound)), slot))
    return sorted(exact, key=lambda e: -e[0])[:k]


def _check_top(entries, budget, k, lead_term, w_fit):
    """kernels.top over the entries laid out in parts as the core does (the dead ones ended in place) against
    scoring every entry: the same scores best first, each listed slot at its own exact score, and every slot
    strictly above the k-th listed (ties at the k-th may be listed in another order)."""
    bound = LeadFactor.BOUND
    bucket = _laid_out([(e[0], e[1], e[2], e[3]) for e in entries])
    for slot, (base, lo, hi, buyer, _, dead) in enumerate(entries):
        if dead:
            bucket.kill(range_class(lo, hi, buyer), -base, slot)
    mark = np.array([e[4] for e in entries], np.bool_)
    places, scores = np.empty(k, np.int64), np.empty(k)
    factor = bool(lead_term or w_fit)
    n = kernels.top(
        bucket.neg, bucket.table, bucket.seg, bucket.bounds, budget, False, k, mark, bool(mark.any()), factor,
        lead_term, w_fit, bound, 0, places, scores,
    )  # fmt: skip
    expected = _brute_top(entries, budget, k, lead_term, w_fit, bound)
    assert n == len(expected)
    assert scores[:n].tolist() == [pytest.approx(s, rel=1e-12) for s, _ in expected]
    slots = bucket.slot[places[:n]].tolist()
    assert len(set(slots)) == n
    # Equal scores: without a fit weight (a merge of the parts) the entry written first comes first (here, in slot
    # order); with one, by place (the parts in turn 0's order, the table's).
    merged = not factor or w_fit == 0.0
    listed = list(zip(scores[:n].tolist(), (slots if merged else places[:n].tolist()), strict=True))
    assert all(a[0] > b[0] or (a[0] == b[0] and a[1] < b[1]) for a, b in pairwise(listed)), listed
    everyone = dict((slot, s) for s, slot in _brute_top(entries, budget, 10**9, lead_term, w_fit, bound))
    assert [everyone[slot] for slot in slots] == [pytest.approx(s, rel=1e-12) for s in scores[:n].tolist()]
    if expected:
        kth = expected[-1][0]
        assert {slot for s, slot in expected if s > kth + abs(kth) * 1e-9} <= set(slots)


@settings(max_examples=200, deadline=None)
@given(
    entries=st.lists(
        st.tuples(
            st.sampled_from([-2.0, -0.5, 0.0, 0.5, 1.0, 1.5, 3.0]),  # scores, negative ones included, ties often
            st.sampled_from([(0, 1_000), (200, 400), (300, 900), (0, 300), (250, 250), (600, 5_000)]),
            st.booleans(),  # lead buyer
            st.booleans(),  # excluded
            st.booleans(),  # ended in place
        ),
        min_size=1,
        max_size=150,  # past the scan's blocks of kernels.BLOCK entries
    ),
    budget=st.sampled_from([250, 300, 600]),
    k=st.integers(1, 8),
    weights=st.sampled_from([(0.0, 0.0), (0.3, 0.0), (-0.4, 0.6), (0.2, -0.5)]),
)
def test_top_equals_scoring_everyone(entries, budget, k, weights):
    _check_top([(e[0], *e[1], e[2], e[3], e[4]) for e in entries], budget, k, *weights)


@pytest.mark.parametrize("seed", range(40))
def test_top_equals_scoring_everyone_over_many_blocks_and_parts(seed):
    """Up to 1,000 entries (the scan reads kernels.BLOCK entries at a time, from parts by deal range and mode), ties,
    ended entries and exclusions; deal ranges from 0 to 10,000,000 wide, budgets anywhere in them."""
    rng = np.random.default_rng(seed)
    size = int(rng.integers(1, 1_000))
    base = rng.choice([-1.0, 0.0, 0.25, 0.5, 1.0, 2.0], size) * rng.integers(1, 4, size)
    lo = (rng.integers(0, 5, size) * 10.0 ** rng.integers(1, 7, size)).astype(np.int64)
    hi = lo + (rng.integers(0, 8, size) * 10.0 ** rng.integers(1, 7, size)).astype(np.int64)
    buyer = rng.random(size) < 0.5
    excluded = rng.random(size) < 0.05
    dead = rng.random(size) < 0.1
    columns = (base, lo, hi, buyer, excluded, dead)
    entries = list(zip(*(c.tolist() for c in columns), strict=True))
    k = int(rng.integers(1, 150))
    budget = int(rng.integers(1, 10) * 10 ** rng.integers(1, 7))
    weights = [(0.3, 0.5), (-0.4, 0.6), (0.2, -0.5), (0.69, 0.69), (0.0, 0.0), (0.3, 0.0)][seed % 6]
    _check_top(entries, budget, k, *weights)


def _tied_top(bucket: _Bucket, k: int, weights: tuple[float, float], turn: int) -> list[int]:
    places, scores = np.empty(k, np.int64), np.empty(k)
    # budget 0 sits at the ranges' edge (fit 0): a deal maker's factor is exp(0) = 1, a tie with the buyers
    n = kernels.top(
        bucket.neg, bucket.table, bucket.seg, bucket.bounds, 0, False, k, np.zeros(8, np.bool_), False,
        bool(weights[1]), *weights, LeadFactor.BOUND, turn, places, scores,
    )  # fmt: skip
    assert n == k and scores.tolist() == [1.0] * k
    return bucket.slot[places].tolist()


TIED = [(1.0, 0, 1_000, True), (1.0, 0, 1_000, True), (1.0, 0, 1_000, False), (1.0, 0, 1_000, False)]


def test_equal_scores_go_to_the_entry_written_first_across_parts():
    """Without a fit weight (ties are common then: businesses at their category's prior) the entry written first
    comes first, whichever part it is in; a business written again (a claim moves its entry) goes last, so a tie
    takes turns as it did in one table."""
    bucket = _laid_out(TIED)  # slots 0-1 lead buyers, 2-3 deal makers, written in slot order
    assert len(bucket.keys) == 2
    for turn in range(3):
        assert _tied_top(bucket, 4, (0.0, 0.0), turn) == [0, 1, 2, 3]
    buyer = range_class(0, 1_000, True)
    assert bucket.move(buyer, -1.0, 0, buyer, -1.0, _entry(-1.0, 0, 1_000, 0, POSTERIOR, stamp=10))
    assert _tied_top(bucket, 4, (0.0, 0.0), 0) == [1, 2, 3, 0]


def test_equal_scores_take_turns_by_part_with_a_fit_weight():
    """With a fit weight exact ties are rare (a factor per deal range); when they happen, which part goes first
    turns with the lead."""
    bucket = _laid_out(TIED)
    firsts = []
    for turn in range(4):
        slots = _tied_top(bucket, 2, (0.0, 0.5), turn)
        assert len({s < 2 for s in slots}) == 1  # one part's two, in place order
        firsts.append(slots[0] < 2)
    assert firsts == [False, True, False, True]


def test_exploration_picks_skip_ineligible_ranked_and_excluded_candidates():
    r_slots = np.array([7, 8, 9, 10, 11, 12], np.int64)
    r_lo = np.array([0, 500, DEAD_LO, 0, 0, 0], np.int64)
    r_hi = np.array([1_000, 600, DEAD_HI, 1_000, 1_000, 1_000], np.int64)
    r_base = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.5])
    mark = np.zeros(16, np.bool_)
    mark[11] = True  # excluded
    out = np.empty(3, np.int64)
    ranked = np.array([10], np.int64)
    n = kernels.explore_picks(r_slots, r_lo, r_hi, r_base, 0, 6, 300, False, False, 0.0, mark, True, ranked, 3, out)
    assert out[:n].tolist() == [0, 5]  # 8: budget outside its range; 9: dead; 10: ranked; 11: excluded
    assert mark.nonzero()[0].tolist() == [11]  # the marks are read, not written
    n = kernels.explore_picks(r_slots, r_lo, r_hi, r_base, 0, 6, 300, False, False, 0.0, mark, False, ranked, 3, out)
    assert out[:n].tolist() == [0, 4, 5]  # nobody excluded: the marks are not read
    n = kernels.explore_picks(r_slots, r_lo, r_hi, r_base, 0, 6, 300, False, True, 2.0, mark, True, ranked, 3, out)
    assert out[:n].tolist() == [4, 5]  # by base: only those scoring below the last ranked; marks not read
    n = kernels.explore_picks(r_slots, r_lo, r_hi, r_base, 1, 6, 0, True, True, 9.0, mark, False, ranked, 2, out)
    assert out[:n].tolist() == [1, 3]  # an unstated budget fits every live range


def test_the_warm_up_runs_every_compiled_loop_the_service_calls():
    # In a fresh interpreter: in this one, earlier tests have compiled them already.
    script = (
        "from marketplace.ranking import kernels\n"
        "from marketplace.ranking.core import warm_up\n"
        "loops = (kernels.find, kernels.make_room, kernels.move, kernels.rank_bucket, kernels.draw_ring,\n"
        "         kernels.strike)\n"
        "assert not any(k.signatures for k in loops)\n"
        "warm_up()\n"
        "warm = [len(k.signatures) for k in loops]\n"
        # A bucket of one part and one of several, after the warm-up: no loop compiles another variant.
        "from marketplace.ranking.core import LeadFactor, Profile, RankingCore\n"
        "from marketplace.ranking.scoring import Score\n"
        "core = RankingCore(explore_share=0.5, lead_factor=LeadFactor(0.1, 0.2, {'c': 10.0}))\n"
        "for i in range(30):\n"
        "    ranges = (0, 10**6) if i % 3 else (10**4 * i, 10**5 * (i + 1))\n"
        "    core.upsert(Profile(f'b{i}', 'deal_maker', ('c',), ('r', 'r1') if i else ('r1',), *ranges),\n"
        "                {'c': Score(1.0 + i, 2.0, 2.0, 1.0, 0.0, 1.0)})\n"
        "solo = Profile('solo', 'deal_maker', ('c',), ('r2',), 0, 10**6)  # its bucket: one part\n"
        "core.upsert(solo, {'c': Score(1.0, 2.0, 2.0, 1.0, 0.0, 1.0)})\n"
        "core.compact()\n"
        "for region in ('r', 'r1', 'r2'):\n"
        "    for budget in (0, 5_000):\n"
        "        core.rank('c', region, budget, 5)\n"
        "import json; print(json.dumps([warm, [len(k.signatures) for k in loops]]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    warm, after = json.loads(done.stdout.strip())
    assert 0 not in warm
    assert after == warm


def test_everyone_is_asked_for_without_allocating_for_a_billion():
    core = RankingCore(explore_share=0.0)
    for i in range(5):
        core.upsert(Profile(f"b{i}", "deal_maker", ("c",), ("r",), 0, 10**6), {"c": _plain(float(i))})
    tracemalloc.start()
    ranking = core.rank("c", "r", 5_000, 10**9, explore=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert ranking.business_ids == [f"b{i}" for i in (4, 3, 2, 1, 0)]
    assert peak < 10_000_000


def test_a_business_welcomed_twice_into_the_ring_is_struck_where_it_waits():
    """A business still waiting in the drawn ring changes profile (not a move: its entry ends and a new one is
    made, and it is new to the bucket it joins), then is blocked: no lead may explore it."""
    core = RankingCore(explore_share=1.0, seed=1)
    for i in range(300):
        core.upsert(Profile(f"b{i}", "deal_maker", ("p",), ("n",), 0, 10**9), {"p": _plain(float(i % 50 + 1))})
    core.compact()
    core.rank("p", "n", 100, 3)  # draws the ring
    bucket = core._buckets[("p", "n")]
    assert bucket.ring is not None
    waiting = int(bucket.ring[0][bucket.ring_at + 50])
    business_id = core._ids[waiting]
    core.upsert(Profile(business_id, "deal_maker", ("p", "q"), ("n",), 0, 10**9), {"p": _plain(1.0), "q": _plain(1.0)})
    core.set_active(business_id, False)
    for _ in range(40):
        assert business_id not in core.rank("p", "n", 100, 3).business_ids


def test_a_business_welcomed_again_keeps_its_live_ring_copy_struck_after_others_are_welcomed():
    """A drawn business re-enters the bucket (its drawn copy struck), then a newcomer is welcomed, then the first
    changes and is blocked: no lead may explore it, whatever else came in between."""
    core = RankingCore(explore_share=0.0, seed=1)
    for i in range(20):
        core.upsert(Profile(f"b{i}", "deal_maker", ("c",), ("r",), 0, 10**6), {"c": _plain(float(i))})
    core.compact()
    core.rank("c", "r", 500, 3, explore=True)  # draws the ring
    bucket = core._buckets[("c", "r")]
    assert bucket.ring is not None
    business_id = core._ids[int(bucket.ring[0][bucket.ring_at + 5])]  # drawn, waiting further on
    core.set_active(business_id, False)
    core.set_active(business_id, True)  # its drawn copy struck (back from a block: not new to the bucket)
    core.upsert(Profile("new", "deal_maker", ("c",), ("r",), 0, 10**6), {"c": _plain(0.5)})  # another welcome
    core.upsert(Profile(business_id, "deal_maker", ("c",), ("r",), 2 * 10**6, 3 * 10**6), {"c": _plain(100.0)})
    core.set_active(business_id, False)
    for _ in range(20):
        ranking = core.rank("c", "r", 500, 9, explore=True)
        assert business_id not in ranking.business_ids
        assert len(set(ranking.business_ids)) == len(ranking)


def test_a_ring_draw_takes_distinct_live_places_each_drawn_from_its_own_posterior():
    # Eight entries; entry 5 dead. Posterior of entry i: Beta(1 + i, 9 - i), worth 100 + i, bonus i, reliability 1
    # (0.5 for entry 2). With every normal 0 a draw is the posterior's mean: reliability x (mean x worth + bonus).
    n = 8
    table = np.zeros((ROWS, n), np.int64)
    floats = np.zeros((ROWS, n))
    for i in range(n):
        floats[NEG, i] = -(10.0 - i)
        floats[kernels.POST:, i] = (1.0 + i, 9.0 - i, 100.0 + i, float(i), 0.5 if i == 2 else 1.0, 3.0, 0.0)
    table[:] = floats.view(np.int64)
    table[LO], table[HI], table[SLOT] = 0, 1_000, np.arange(n) + 40
    table[LO, 5], table[HI, 5] = DEAD_LO, DEAD_HI
    uniforms = (np.array([0, 1, 1, 2, 3, 5, 6, 7, 7, 4]) + 0.5) / n  # places 1 and 7 twice, the dead 5 once
    slots, lo, hi, base, shown = kernels.draw_ring(table, uniforms, np.zeros(len(uniforms)), 5)
    expected = {i: (0.5 if i == 2 else 1.0) * ((1.0 + i) / 10.0 * (100.0 + i) + i) for i in (0, 1, 2, 3, 4, 6, 7)}
    best = sorted(expected, key=lambda i: -expected[i])[:5]
    assert slots.tolist() == [40 + i for i in best]
    assert shown[:, 1].tolist() == pytest.approx([expected[i] for i in best])
    assert base.tolist() == [10.0 - i for i in best] and shown[:, 2].tolist() == base.tolist()
    assert lo.tolist() == [0] * 5 and hi.tolist() == [1_000] * 5
    assert shown[:, 3:].tolist() == [list(floats[kernels.POST:, i]) for i in best]
    # A normal moves a draw by its posterior's spread, and the chance is kept within [0, 1].
    _, _, _, _, wide = kernels.draw_ring(table, uniforms[:1], np.array([100.0]), 5)
    assert wide[0, 1] == pytest.approx(1.0 * 100.0 + 0.0)  # entry 0: chance clipped to 1


# Draws as they come: ties (a prior's value, a chance clipped at 0 or 1), zeros of both signs, infinities.
_DRAW = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, 0.5, -2.0, math.inf, -math.inf]),
    st.floats(allow_nan=False, width=64),
)


@given(st.lists(_DRAW, max_size=300))
@settings(max_examples=300, deadline=None)
def test_a_ring_orders_its_draws_best_first_equal_ones_in_sample_order(values):
    draws = np.array(values, dtype=np.float64)
    expected = np.argsort(-draws, kind="mergesort")  # what the ring's order was before the radix sort
    assert kernels._best_first_order(draws.copy()).tolist() == expected.tolist()


@given(st.lists(st.floats(0.0, 1.0, exclude_max=True), min_size=1, max_size=200), st.integers(1, 20_000))
@settings(max_examples=200, deadline=None)
def test_a_ring_samples_distinct_places_in_order_whichever_way_it_dedupes(uniforms, cap):
    # Below 32 places a sample, by marks; above, by a sort: np.unique's answer either way.
    u = np.array(uniforms)
    expected = np.unique(np.minimum((u * cap).astype(np.int64), cap - 1))
    assert kernels._distinct_places(u, cap).tolist() == expected.tolist()


def test_a_strike_ends_every_copy_of_the_business_not_read_yet():
    slots = np.array([7, 3, 7, 5, 7], np.int64)
    lo = np.array([0, 0, 0, 0, 0], np.int64)
    kernels.strike(slots, lo, 1, 7)
    assert lo.tolist() == [0, 0, DEAD_LO, 0, DEAD_LO]  # the copy before the reading place was read already
