"""The in-memory core: filters, order, exploration share, incremental updates equal a fresh build."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketplace.ranking import core as ranking_core
from marketplace.ranking.core import (
    LeadFactor,
    Profile,
    RankingCore,
    _band,
    _class_bounds,
    build,
    range_class,
)
from marketplace.ranking.scoring import CategoryPrior, History, Terms, score

PRIOR = CategoryPrior(0.2, 1_000_000, 0.1, 10)


def _score(received: int, paid: int, mode: str = "deal_maker"):
    return score(History(received, paid, paid * 1_000_000, 0), PRIOR, Terms(mode, 6000, 1500))


def _profile(i: int, lo: int = 0, hi: int = 10**9, active: bool = True, regions=("north",)) -> Profile:
    return Profile(f"b{i:04d}", "deal_maker", ("plumbing",), tuple(regions), lo, hi, active)


def test_ranks_best_first_and_applies_every_filter():
    core = RankingCore(explore_share=0.0)
    for i in range(10):
        core.upsert(_profile(i), {"plumbing": _score(100, i * 5)})
    core.upsert(_profile(10, lo=500_000, hi=900_000), {"plumbing": _score(100, 90)})  # best, narrow range
    core.upsert(_profile(11, active=False), {"plumbing": _score(100, 95)})  # best of all, but blocked
    core.upsert(_profile(12, regions=("south",)), {"plumbing": _score(100, 99)})  # another region
    ranking = core.rank("plumbing", "north", budget_minor=100_000, k=3)
    assert ranking.business_ids == ["b0009", "b0008", "b0007"]
    assert list(ranking.scores) == sorted(ranking.scores, reverse=True)
    in_range = core.rank("plumbing", "north", budget_minor=600_000, k=1)
    assert in_range.business_ids == ["b0010"]
    excluded = core.rank("plumbing", "north", budget_minor=100_000, k=2, exclude=["b0009"])
    assert excluded.business_ids == ["b0008", "b0007"]
    assert core.rank("plumbing", "west", 100_000, 3).business_ids == []
    core.set_active("b0009", False)
    assert core.rank("plumbing", "north", 100_000, 1).business_ids == ["b0008"]


def test_a_business_is_never_listed_twice_after_updates():
    core = RankingCore(explore_share=0.0)
    for i in range(50):
        core.upsert(_profile(i), {"plumbing": _score(10, i % 7)})
    core.compact()
    for i in range(50):  # every business updated once more: old main entries die, new ones in the delta
        core.upsert(_profile(i), {"plumbing": _score(20, (i * 3) % 11)})
    ids = core.rank("plumbing", "north", 0, k=50, explore=False).business_ids
    assert len(ids) == len(set(ids)) == 50


def test_incremental_updates_equal_a_fresh_build(monkeypatch):
    # Updates go in place once a bucket is laid out; a bucket laid out small runs out of free places as businesses
    # join, and is re-spread. Count the re-spreads, so that the loop is known to cross several in every bucket.
    respreads: dict[int, int] = {}
    respread = ranking_core._Bucket.respread

    def counted(bucket, *args, **kwargs):
        respreads[id(bucket)] = respreads.get(id(bucket), 0) + 1
        return respread(bucket, *args, **kwargs)

    monkeypatch.setattr(ranking_core._Bucket, "respread", counted)
    rng = random.Random(7)
    final: dict[int, tuple[Profile, dict]] = {}
    core = RankingCore(explore_share=0.0)
    first = Profile("b0000", "deal_maker", ("plumbing",), ("east", "north", "south"), 0, 10**9, True)
    core.upsert(first, {"plumbing": _score(0, 0)})
    final[0] = (first, {"plumbing": _score(0, 0)})
    core.compact()  # every bucket laid out with one entry: from here on, updates go in place
    for step in range(1500):  # joins, moves, changes of region, blocks
        i = rng.randrange(120)
        regions = tuple(sorted(rng.sample(["north", "south", "east"], rng.randint(1, 3))))
        profile = Profile(f"b{i:04d}", "deal_maker", ("plumbing",), regions, 0, 10**9, rng.random() > 0.1)
        scores = {"plumbing": _score(rng.randint(0, 80), rng.randint(0, 20))}
        core.upsert(profile, scores)
        final[i] = (profile, scores)
        if step % 97 == 0:
            core.set_active(profile.business_id, False)
            final[i] = (
                Profile(
                    *[
                        getattr(profile, f)
                        for f in ("business_id", "mode", "categories", "regions", "min_deal_minor", "max_deal_minor")
                    ],
                    False,
                ),
                scores,
            )
    assert len(respreads) == 3 and min(respreads.values()) >= 3
    fresh = build(list(final.values()), explore_share=0.0)
    assert core.snapshot() == fresh.snapshot()
    for region in ("north", "south", "east"):
        # Ties may come out in another order; the scores at every rank may not.
        mine, theirs = core.rank("plumbing", region, 0, 10), fresh.rank("plumbing", region, 0, 10)
        assert list(mine.scores) == list(theirs.scores)


def test_exploration_place_counts_follow_the_share_in_force():
    core = RankingCore(explore_share=0.25, seed=4)
    draws = [core._places(12) for _ in range(2000)]
    assert all(0 <= d <= 12 for d in draws)
    assert sum(draws) / (12 * len(draws)) == pytest.approx(0.25, abs=0.02)
    core.explore_share = 0.0  # counts drawn ahead for the old share are dropped at once
    assert {core._places(12) for _ in range(50)} == {0}
    core.explore_share = 1.0
    assert {core._places(12) for _ in range(50)} == {12}
    core.explore_share = 0.1  # a ranking of everyone in a large bucket: drawn one at a time
    big = [core._places(5000) for _ in range(200)]
    assert sum(big) / (5000 * len(big)) == pytest.approx(0.1, abs=0.01)


def test_exploration_takes_the_configured_share_of_places_and_reaches_newcomers():
    core = RankingCore(explore_share=0.2, seed=3)
    for i in range(300):
        core.upsert(_profile(i), {"plumbing": _score(200, 40 + i % 20)})  # established, well known
    for i in range(300, 320):
        core.upsert(_profile(i), {"plumbing": _score(0, 0)})  # newcomers: prior only, wide posterior
    core.compact()
    places = explored = newcomer_places = 0
    for _ in range(400):
        ranking = core.rank("plumbing", "north", 0, k=10)
        places += len(ranking)
        explored += int(ranking.explored.sum())
        newcomer_places += sum(1 for b in ranking.business_ids if int(b[1:]) >= 300)
    assert explored / places == pytest.approx(0.2, abs=0.03)
    assert newcomer_places > 0
    no_exploration = core.rank("plumbing", "north", 0, k=10, explore=False)
    assert not no_exploration.explored.any()
    assert all(int(b[1:]) < 300 for b in no_exploration.business_ids)


def test_lead_factor_reorders_within_its_bound_and_the_scan_stays_exact():
    # A learned factor favouring budgets in the middle of a business's range.
    factor = LeadFactor(w_budget=0.0, w_fit=0.7)
    core = RankingCore(explore_share=0.0, lead_factor=factor)
    core.upsert(Profile("wide", "deal_maker", ("plumbing",), ("north",), 0, 10_000_000), {"plumbing": _score(100, 31)})
    core.upsert(
        Profile("fit", "deal_maker", ("plumbing",), ("north",), 900_000, 1_100_000), {"plumbing": _score(100, 30)}
    )
    for i in range(600):  # many weaker ones the scan should stop before
        core.upsert(_profile(i), {"plumbing": _score(100, 1)})
    core.compact()
    ranking = core.rank("plumbing", "north", 1_000_000, k=2)
    assert ranking.business_ids == ["fit", "wide"]
    assert ranking.lead_factor(0) > 1.0
    brute = sorted(
        (
            (b, s)
            for b, s in zip(
                core.rank("plumbing", "north", 1_000_000, k=1000).business_ids,
                core.rank("plumbing", "north", 1_000_000, k=1000).scores,
                strict=True,
            )
        ),
        key=lambda e: -e[1],
    )
    assert [b for b, _ in brute[:2]] == ranking.business_ids


@pytest.mark.parametrize("factor", [LeadFactor(), LeadFactor(w_budget=0.2, w_fit=0.5)], ids=["plain", "factor"])
def test_each_place_is_explained_by_its_own_business_posterior(factor):
    """Ranked and explored places alike: the posterior a ranking explains a place with is its business's."""
    core = RankingCore(explore_share=0.3, seed=5, lead_factor=factor)
    scores = {}
    for i in range(200):
        mode = "lead_buyer" if i % 3 == 0 else "deal_maker"
        scores[f"b{i:04d}"] = _score(10 + i % 50, i % 9, mode)
        profile = Profile(f"b{i:04d}", mode, ("plumbing",), ("north",), 0, 2_000_000)
        core.upsert(profile, {"plumbing": scores[f"b{i:04d}"]})
    core.compact()
    explored = 0
    for lead in range(40):
        ranking = core.rank("plumbing", "north", 100_000 + 20_000 * lead, k=12)
        explored += int(ranking.explored.sum())
        for i, business_id in enumerate(ranking.business_ids):
            expected = scores[business_id]
            parts = ranking.parts(i)
            assert (parts.alpha, parts.beta, parts.worth, parts.bonus, parts.reliability) == (
                expected.alpha, expected.beta, expected.worth, expected.bonus, expected.reliability
            )
            assert bool(ranking.buyer[i]) == (int(business_id[1:]) % 3 == 0)
        # An update between leads: the next ranking reads the bucket as it is then.
        changed = f"b{lead:04d}"
        scores[changed] = _score(60, 20, "lead_buyer" if lead % 3 == 0 else "deal_maker")
        mode = "lead_buyer" if lead % 3 == 0 else "deal_maker"
        core.upsert(Profile(changed, mode, ("plumbing",), ("north",), 0, 2_000_000), {"plumbing": scores[changed]})
    assert explored > 0


def test_explanations_read_after_the_bucket_changed_are_refused():
    core = RankingCore(explore_share=0.0)
    for i in range(20):
        core.upsert(_profile(i), {"plumbing": _score(100, i)})
    core.compact()
    read_at_once = core.rank("plumbing", "north", 0, k=3)
    assert read_at_once.parts(0).alpha > 0  # read before the change: kept
    late = core.rank("plumbing", "north", 0, k=3)
    core.upsert(_profile(19), {"plumbing": _score(100, 0)})  # the best business falls to the bottom
    with pytest.raises(RuntimeError, match="changed since this ranking was made"):
        late.parts(0)
    assert read_at_once.parts(0).alpha == _score(100, 19).alpha
    assert late.business_ids[0] == "b0019"  # ids, scores and base were taken at once


def test_leads_nobody_fits_leave_the_exploration_ring_where_it_was():
    # A newcomer waits for the next explored place; leads no business fits rank nobody and explore nobody, so
    # they must not use its turn up.
    core = RankingCore(explore_share=0.3, seed=5)
    for i in range(200):
        core.upsert(_profile(i), {"plumbing": _score(200, 40 + i % 20)})
    core.compact()
    core.rank("plumbing", "north", 0, k=10, explore=True)  # the ring is drawn
    core.upsert(_profile(999), {"plumbing": _score(0, 0)})
    for _ in range(30):
        assert len(core.rank("plumbing", "north", 10**12, k=10, explore=True)) == 0  # above every deal range
    ranking = core.rank("plumbing", "north", 0, k=10, explore=True)
    explored = [b for b, e in zip(ranking.business_ids, ranking.explored, strict=True) if e]
    assert "b0999" in explored


@settings(max_examples=500, deadline=None)
@given(
    lo=st.one_of(st.integers(0, 2_000), st.integers(0, 10**15)),
    width=st.one_of(st.integers(0, 2_000), st.integers(0, 10**15)),
    budget=st.integers(1, 2 * 10**15),
    buyer=st.booleans(),
)
def test_a_part_s_bounds_hold_for_every_range_of_its_class(lo, width, budget, buyer):
    """The scan trusts a part's bounds: twice the range's centre and its span within them (half-octave edges
    included, found with integers), a range that holds the budget never in a part the budget skips, and its fit
    never above the part's best."""
    hi = lo + width
    key = range_class(lo, hi, buyer)
    is_buyer, low, high, span_hi, best = _class_bounds(key)
    span = max(hi - lo, 1)
    assert is_buyer == (1.0 if buyer else 0.0) and best == -math.inf
    assert low <= 2 * lo + span < high and span < span_hi
    d2 = max(0.0, low - 2.0 * budget, 2.0 * budget - high)
    if lo <= budget <= hi:
        assert d2 <= span_hi  # not skipped
        fit = 1.0 - abs((budget - lo) / span - 0.5) * 2.0
        assert fit <= 1.0 - d2 / span_hi + 1e-9


def test_bands_split_at_powers_of_two():
    assert [_band(x) for x in (1, 2, 3, 4, 7, 8, 2**40 - 1, 2**40)] == [0, 1, 1, 2, 2, 3, 39, 40]
