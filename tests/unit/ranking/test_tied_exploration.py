"""Businesses tied with a lead's last ranked place are explored like any other business not ranked: exploration
skips the ranked picks themselves, not everyone whose score equals the last pick's (a tester saw 8 newcomers at the
category prior, 2 places a lead and 10 % exploration give all 200 places of 100 leads to the same two, none
explored)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from marketplace.ranking import kernels
from marketplace.ranking.core import Profile, RankingCore
from marketplace.ranking.scoring import CategoryPrior, History, Terms, score

PRIOR = CategoryPrior(0.2, 1_000_000, 0.1, 10)


def _score(received: int, paid: int):
    return score(History(received, paid, paid * 1_000_000, 0), PRIOR, Terms("deal_maker", 6000, 1500))


def _profile(name: str) -> Profile:
    return Profile(name, "deal_maker", ("legal",), ("haifa",), 0, 10_000_000, True)


def test_explore_picks_by_base_skips_the_ranked_not_those_tied_with_the_last():
    r_slots = np.array([3, 4, 5, 6, 7], np.int64)
    r_lo = np.zeros(5, np.int64)
    r_hi = np.full(5, 1_000, np.int64)
    r_base = np.array([9.0, 5.0, 5.0, 5.0, 1.0])  # 3 above the last ranked (5.0): ranked; 4, 5, 6 tie with it
    mark = np.zeros(16, np.bool_)
    ranked = np.array([3, 5], np.int64)  # the ranked: 3, and 5 of the tied
    out = np.empty(4, np.int64)
    n = kernels.explore_picks(r_slots, r_lo, r_hi, r_base, 0, 5, 300, False, True, 5.0, mark, False, ranked, 4, out)
    assert r_slots[out[:n]].tolist() == [4, 6, 7]  # the tied who were not ranked are explored, 5 (ranked) is not


def _tied_core(n: int, seed: int) -> RankingCore:
    core = RankingCore(explore_share=0.1, seed=seed)
    for i in range(n):
        core.upsert(_profile(f"N{i}"), {"legal": _score(0, 0)})  # no history: all at the prior, equal scores
    core.compact()
    return core


@pytest.mark.parametrize("seed", [1, 7])
def test_tied_newcomers_are_explored_at_the_configured_share_and_all_get_places(seed):
    core = _tied_core(8, seed)
    places = Counter()
    explored = Counter()
    total = explored_total = 0
    for _ in range(2000):
        ranking = core.rank("legal", "haifa", 500_000, k=2)
        ids = ranking.business_ids
        assert len(ids) == 2 and len(set(ids)) == 2
        total += len(ids)
        for b, e in zip(ids, ranking.explored, strict=True):
            places[b] += 1
            explored[b] += bool(e)
            explored_total += bool(e)
    assert explored_total / total == pytest.approx(0.1, abs=0.02)
    ranked_first = {core.rank("legal", "haifa", 500_000, k=2, explore=False).business_ids[i] for i in range(2)}
    # The explored places go to the tied businesses the ranking did not pick, each about as often.
    assert not {b for b, c in explored.items() if c} & ranked_first
    others = [f"N{i}" for i in range(8) if f"N{i}" not in ranked_first]
    assert all(places[b] > 0 for b in [f"N{i}" for i in range(8)])  # every tied newcomer reaches the first wave
    share = [explored[b] / explored_total for b in others]
    assert min(share) > 0.5 / len(others) and max(share) < 2.0 / len(others)


def test_tied_veterans_below_the_top_are_explored_with_a_newcomer():
    # 6 veterans with the same history (equal scores) and a newcomer at the prior: the explored share is the
    # configured one, and the veterans outside the two ranked places are explored too.
    core = RankingCore(explore_share=0.1, seed=3)
    for i in range(6):
        core.upsert(_profile(f"V{i}"), {"legal": _score(40, 12)})
    core.upsert(_profile("NEW"), {"legal": _score(0, 0)})
    core.compact()
    explored = Counter()
    total = explored_total = 0
    for _ in range(2000):
        ranking = core.rank("legal", "haifa", 500_000, k=2)
        total += len(ranking)
        for b, e in zip(ranking.business_ids, ranking.explored, strict=True):
            explored[b] += bool(e)
            explored_total += bool(e)
    assert explored_total / total == pytest.approx(0.1, abs=0.02)
    top = core.rank("legal", "haifa", 500_000, k=2, explore=False).business_ids
    tied_below = [f"V{i}" for i in range(6) if f"V{i}" not in top]
    assert len(tied_below) == 4 and all(explored[b] > 0 for b in tied_below)
