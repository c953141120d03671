"""The turn of the local day: businesses held out at a cap come back in one order, whatever the process."""

from __future__ import annotations

from datetime import UTC, date, datetime

from marketplace.ranking.service import ProfitabilityRanker, Standing
from marketplace.settings import load_settings


def _capped_yesterday(day: date) -> Standing:
    return Standing(
        mode="lead_buyer",
        status="active",
        regions=("center",),
        min_deal_minor=0,
        max_deal_minor=10**9,
        daily_cap=1,
        monthly_cap=100,
        reliability=1.0,
        bids={"plumbing": None},
        history={},
        won_at={},
        sold_minor=0,
        day=day,
        today=1,
        this_month=1,
    )


def test_capped_businesses_come_back_at_the_turn_of_day_in_id_order_not_the_sets() -> None:
    ranker = ProfitabilityRanker(load_settings(env={"SECRET_KEY": "turn-of-day-test-secret-0123456789"}))
    ids = [f"biz_{i:02d}" for i in range(40)]
    # The set's own order (hash-seeded per process) is not the ids' order, or this test could not tell them apart.
    assert list(set(ids)) != sorted(ids)
    yesterday = date(2026, 3, 9)
    ranker.standings = {b: _capped_yesterday(yesterday) for b in ids}
    ranker._capped = set(ids)
    ranker._day = yesterday
    put: list[str] = []
    ranker._put = lambda business_id, standing: put.append(business_id)  # type: ignore[method-assign]

    ranker.turn_of_day(datetime(2026, 3, 10, 8, 0, tzinfo=UTC))

    # Written to the core in id (sign-up) order: at equal scores the core prefers the entry written first, so the
    # order decides who of the tied is offered a lead first, and a seeded simulation must decide it alike each run.
    assert put == ids
    assert all(ranker.standings[b].day == date(2026, 3, 10) and ranker.standings[b].today == 0 for b in ids)
