"""Businesses that join while leads are being ranked reach the explored places too, not only those present
when a bucket's exploration order was drawn (the market simulator saw newcomers' share fall to zero)."""

from __future__ import annotations

from marketplace.ranking.core import Profile, RankingCore
from marketplace.ranking.scoring import CategoryPrior, History, Terms, score

PRIOR = CategoryPrior(0.2, 1_000_000, 0.1, 10)


def _score(received: int, paid: int):
    return score(History(received, paid, paid * 1_000_000, 0), PRIOR, Terms("deal_maker", 6000, 1500))


def _profile(i: int) -> Profile:
    return Profile(f"b{i:04d}", "deal_maker", ("plumbing",), ("north",), 0, 10**9, True)


def test_newcomers_joining_after_ranking_began_are_explored():
    core = RankingCore(explore_share=0.1, seed=5)
    for i in range(300):
        core.upsert(_profile(i), {"plumbing": _score(200, 40 + i % 20)})
    core.compact()
    for _ in range(20):  # the market is running: leads ranked, established businesses' scores move
        core.rank("plumbing", "north", 0, k=4)
    for i in range(300, 320):
        core.upsert(_profile(i), {"plumbing": _score(0, 0)})  # they sign up now
    newcomer_places = 0
    for n in range(60):  # fewer leads than it takes to go once through an exploration order drawn before
        ranking = core.rank("plumbing", "north", 0, k=10)
        newcomer_places += sum(1 for b in ranking.business_ids if int(b[1:]) >= 300)
        if n % 10 == 0:  # claims keep updating the established ones in place
            core.upsert(_profile(n % 300), {"plumbing": _score(201, 41 + n % 20)})
    # 60 leads x 10 places x 10 % explored = 60 explored places; the 20 newcomers are 1/16 of the bucket
    # but have the widest posteriors: they must get a fair part of them.
    assert newcomer_places >= 5
