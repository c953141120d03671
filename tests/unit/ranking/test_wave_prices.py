"""A wave's lead buyers and their prices: a place in a wave is one good, so each pays what keeps it in the wave against
the best candidate outside it; and an explored place's factors multiply out to the score its draw gave."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from fractions import Fraction
from typing import Any

import pytest

from marketplace.ranking.ports import Candidate, LeadView
from marketplace.ranking.scoring import CategoryPrior
from marketplace.ranking.service import ROW_WIDTH, ProfitabilityRanker, Standing
from marketplace.settings import load_settings

NOW = datetime(2026, 3, 10, 8, 0, tzinfo=UTC)
LIST_PRICE = 6_000  # plumbing (config/categories.toml): a wave of 3, max_exposures 3, commission 15 %
# A deal maker without a record scores 0.25 x 0.8 x 300,000 x 15 % = 9,000; a lead buyer 0.9 x its bid.
PRIOR = CategoryPrior(win_rate=0.25, mean_turnover_minor=300_000.0, return_rate=0.1, strength=10.0, pay_rate=0.8)
LEAD = LeadView("lead_x", "plumbing", "center", 150_000, "ILS", NOW)


def _standing(mode: str, bid: int | None = None) -> Standing:
    return Standing(
        mode=mode,
        status="active",
        regions=("center",),
        min_deal_minor=0,
        max_deal_minor=10**9,
        daily_cap=100,
        monthly_cap=1000,
        reliability=1.0,
        bids={"plumbing": bid},
        history={"plumbing": [0] * ROW_WIDTH},
        won_at={},
        sold_minor=0,
        day=date(2026, 3, 10),
        today=0,
        this_month=0,
    )


def _ranker(businesses: list[tuple[str, str, int | None]], explore_share: float = 0.0) -> ProfitabilityRanker:
    """A ranker holding these (id, mode, bid) in sign-up order: at equal scores the one written first ranks first."""
    ranker = ProfitabilityRanker(
        load_settings(env={"SECRET_KEY": "wave-prices-test-secret-0123456789"}), explore_share=explore_share, seed=3
    )
    ranker.priors = {code: PRIOR for code in ranker.settings.categories}
    ranker._day = date(2026, 3, 10)
    for business_id, mode, bid in businesses:
        ranker._put(business_id, _standing(mode, bid))
    return ranker


def _candidates(ranker: ProfitabilityRanker) -> list[Candidate]:
    return [Candidate(b, s.mode, NOW, None) for b, s in ranker.standings.items()]


def test_equal_bids_in_one_wave_pay_the_same_price_set_by_the_best_candidate_outside_it() -> None:
    """Three buyers bidding 120.00 with the same record, offered the lead at once: they paid 120.00, 120.00 and 60.00
    by the order of their sign-ups (each against the next inside the wave). All three now keep their places against
    the fourth, outside the wave, bidding 90.00 with the same record: 90.00 each."""
    equal: list[tuple[str, str, int | None]] = [(b, "lead_buyer", 12_000) for b in ("lb_a", "lb_b", "lb_c")]
    ranker = _ranker([*equal, ("lb_d", "lead_buyer", 9_000)])
    wave = ranker.select(LEAD, 3, exclude=())
    assert sorted(p.business_id for p in wave) == ["lb_a", "lb_b", "lb_c"]
    assert [(p.price_minor, p.priced_against, p.factors["price_minor"]) for p in wave] == [(9_000, "lb_d", 9_000)] * 3
    # The database path (a club's lead; the explanation) orders every candidate and takes the first wave_size: the
    # same prices, and the next wave (nobody outside it) at the list price.
    ranked = ranker.rank(LEAD, _candidates(ranker), NOW)
    assert [(p.business_id, p.price_minor, p.priced_against) for p in ranked] == [
        ("lb_a", 9_000, "lb_d"),
        ("lb_b", 9_000, "lb_d"),
        ("lb_c", 9_000, "lb_d"),
        ("lb_d", LIST_PRICE, None),
    ]


def test_a_waves_buyers_are_priced_against_a_deal_maker_outside_it_by_its_score() -> None:
    """Whatever their own bids, each buyer of the wave pays the least whole amount whose score reaches the deal
    maker's outside it (its expected commission, 9,000): 9,000 / 0.9 = 10,000, never above its bid."""
    ranker = _ranker(
        [
            ("lb_hi", "lead_buyer", 14_000),
            ("lb_mid", "lead_buyer", 13_000),
            ("lb_lo", "lead_buyer", 12_000),
            ("dm", "deal_maker", None),
            ("lb_out", "lead_buyer", 6_500),
        ]
    )
    wave = ranker.select(LEAD, 3, exclude=())
    assert [p.business_id for p in wave] == ["lb_hi", "lb_mid", "lb_lo"]
    dm = ranker.select(LEAD, 1, exclude={p.business_id for p in wave})[0]
    assert dm.business_id == "dm" and dm.score == pytest.approx(9_000)
    expected = math.ceil(Fraction(dm.score) / Fraction(9, 10))
    assert expected == 10_000
    assert [(p.price_minor, p.priced_against) for p in wave] == [(expected, "dm")] * 3
    ranked = ranker.rank(LEAD, _candidates(ranker), NOW)
    assert [(p.business_id, p.price_minor, p.priced_against) for p in ranked] == [
        ("lb_hi", expected, "dm"),
        ("lb_mid", expected, "dm"),
        ("lb_lo", expected, "dm"),
        ("dm", None, None),
        ("lb_out", LIST_PRICE, None),  # the next wave's: nobody outside it
    ]


def test_a_wave_with_nobody_outside_it_pays_the_list_price() -> None:
    ranker = _ranker([("lb_a", "lead_buyer", 14_000), ("lb_b", "lead_buyer", 9_000), ("lb_c", "lead_buyer", 7_000)])
    wave = ranker.select(LEAD, 3, exclude=())
    assert [(p.business_id, p.price_minor, p.priced_against) for p in wave] == [
        ("lb_a", LIST_PRICE, None),
        ("lb_b", LIST_PRICE, None),
        ("lb_c", LIST_PRICE, None),
    ]
    assert [p.price_minor for p in ranker.rank(LEAD, _candidates(ranker), NOW)] == [LIST_PRICE] * 3


def _product(f: dict[str, Any]) -> float:
    """The score as the factors give it (as a reader of the explanation would multiply them out)."""
    if f["mode"] == "deal_maker":
        worth = f["p_close_and_pay"] * f["expected_turnover_minor"] * f["commission_rate_bp"] / 10_000
    else:
        worth = f["p_not_returned"] * f["price_or_bid_minor"]
    return float(f["reliability"] * (worth + f["sold_leads_bonus_minor"]) * f["lead_factor"])


def test_an_explored_places_factors_multiply_out_to_its_drawn_score_and_keep_the_mean_estimate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    businesses: list[tuple[str, str, int | None]] = [(f"dm_{i}", "deal_maker", None) for i in range(6)]
    businesses += [(f"lb_{i}", "lead_buyer", 6_000 + 500 * i) for i in range(6)]
    ranker = _ranker(businesses, explore_share=0.5)
    monkeypatch.setattr(ranker.core, "_places", lambda n: 1)  # each wave's last place explores
    seen = {"deal_maker": 0, "lead_buyer": 0}
    drawn_off_the_mean = 0
    for n in range(40):
        lead = LeadView(f"lead_{n}", "plumbing", "center", 150_000, "ILS", NOW)
        *_, explored = ranker.select(lead, 3, exclude=())
        f = explored.factors
        assert f["explored"] is True
        assert _product(f) == pytest.approx(explored.score, rel=1e-4), f
        seen[f["mode"]] += 1
        if f["mode"] == "deal_maker":
            assert f["p_won_mean"] == pytest.approx(0.25) and f["p_close_and_pay_mean"] == pytest.approx(0.2)
            assert f["p_close_and_pay"] == pytest.approx(f["p_won"] * f["p_paid_if_won"], abs=1e-6)
            drawn_off_the_mean += abs(f["p_won"] - f["p_won_mean"]) > 1e-3
        else:
            assert f["p_not_returned_mean"] == pytest.approx(0.9)
            drawn_off_the_mean += abs(f["p_not_returned"] - f["p_not_returned_mean"]) > 1e-3
    # Both kinds were explored, and the draws were not the means (or the test could not tell them apart).
    assert seen["deal_maker"] and seen["lead_buyer"] and drawn_off_the_mean
    # A place ranked by score shows its estimates only: no draw, no mean beside them.
    ranked = ranker.rank(LEAD, _candidates(ranker), NOW)
    assert not any("p_won_mean" in r.factors or "p_not_returned_mean" in r.factors for r in ranked)
