"""Profitability scores against hand-computed examples; shrinkage; second prices."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketplace.ranking.events import Moved
from marketplace.ranking.scoring import (
    CategoryPrior,
    History,
    Score,
    Terms,
    category_prior,
    exact_value,
    gsp_price,
    outcome,
    score,
    unpaid_weight,
)
from marketplace.ranking.service import reliability_bp

PRIOR = CategoryPrior(win_rate=0.2, mean_turnover_minor=1_000_000, return_rate=0.1, strength=10)


def test_deal_maker_score_by_hand():
    # 30 exposures, 9 paid deals with 9,000,000 turnover: p = (9 + 10*0.2) / (30 + 10) = 11/40 = 0.275;
    # turnover = (9,000,000 + 10*1,000,000) / (9 + 10) = 1,000,000; worth at 15 % = 150,000.
    s = score(History(received=30, paid_deals=9, turnover_minor=9_000_000), PRIOR, Terms("deal_maker", 6000, 1500))
    assert s.value == pytest.approx(0.275 * 150_000)
    assert s.factors["p_close_and_pay"] == pytest.approx(0.275)
    assert s.factors["expected_turnover_minor"] == 1_000_000


def test_lead_buyer_score_by_hand_uses_the_higher_of_price_and_bid():
    # 20 exposures, 2 returned: p_keep = (18 + 10*0.9) / (20 + 10) = 0.9; bid 8,000 above the price 6,000.
    s = score(History(received=20, returned=2), PRIOR, Terms("lead_buyer", 6000, 1500, bid_minor=8000))
    assert s.value == pytest.approx(0.9 * 8000)
    low_bid = score(History(received=20, returned=2), PRIOR, Terms("lead_buyer", 6000, 1500, bid_minor=100))
    assert low_bid.value == pytest.approx(0.9 * 6000)


def test_sold_leads_bonus_and_reliability():
    # 10 received, 50,000 earned from its sold leads: bonus = 50,000 / (10 + 10) = 2,500 per exposure.
    s = score(
        History(received=10, returned=0, sold_revenue_minor=50_000),
        PRIOR,
        Terms("lead_buyer", 6000, 0),
        reliability=0.5,
    )
    p_keep = (10 + 9) / 20
    assert s.value == pytest.approx(0.5 * (p_keep * 6000 + 2500))


def test_the_sold_leads_bonus_counts_only_what_the_marketplace_keeps_of_a_sold_lead():
    # 50,000 brought in by its sold leads, 70 % of it the seller's own share: the marketplace keeps 15,000, so the
    # bonus is 15,000 / (10 + 10) = 750 per exposure (it was 2,500: what buyers paid, the seller's share included).
    history = History(received=10, returned=0, sold_revenue_minor=50_000)
    s = score(history, PRIOR, Terms("lead_buyer", 6000, 0, sold_kept_bp=3000))
    assert s.bonus == pytest.approx(750)
    assert s.factors["sold_leads_bonus_minor"] == 750 and s.factors["sold_revenue_minor"] == 50_000
    assert s.factors["sold_kept_bp"] == 3000
    assert s.value == pytest.approx((10 + 9) / 20 * 6000 + 750)


def test_refunds_beyond_the_earnings_never_make_a_score_negative():
    # A seller's refunds applied before its earnings (events out of order): the bonus stops at zero.
    s = score(History(received=0, sold_revenue_minor=-90_000), PRIOR, Terms("lead_buyer", 6000, 0))
    assert s.bonus == 0 and s.value == score(History(received=0), PRIOR, Terms("lead_buyer", 6000, 0)).value > 0
    plain = score(History(received=0), PRIOR, Terms("deal_maker", 6000, 1500))
    owing = score(History(received=0, sold_revenue_minor=-90_000), PRIOR, Terms("deal_maker", 6000, 1500))
    assert owing.value == plain.value > 0


def test_a_newcomer_starts_at_the_category_prior_not_at_zero():
    s = score(History(), PRIOR, Terms("deal_maker", 6000, 1500))
    assert s.value == pytest.approx(0.2 * 1_000_000 * 0.15)
    assert s.factors["prior_weight"] == 1.0


def test_shrinkage_moves_toward_the_evidence_as_it_grows():
    terms = Terms("deal_maker", 6000, 1500)
    closes = [
        score(History(received=n, paid_deals=n // 2, turnover_minor=(n // 2) * 1_000_000), PRIOR, terms).factors[
            "p_close_and_pay"
        ]
        for n in (0, 10, 100, 10_000)
    ]
    assert closes[0] == pytest.approx(0.2)
    assert closes == sorted(closes)
    assert closes[-1] == pytest.approx(0.5, abs=0.001)
    # A lucky newcomer (1 deal of 1) does not jump to certainty.
    lucky = score(History(received=1, paid_deals=1, turnover_minor=1_000_000), PRIOR, terms)
    assert lucky.factors["p_close_and_pay"] < 0.3


def test_category_prior_is_itself_shrunk_toward_the_defaults():
    empty = category_prior(History(), default=PRIOR)
    assert (empty.win_rate, empty.return_rate, empty.pay_rate) == (0.2, 0.1, 1.0)
    busy = category_prior(History(1000, 500, 500 * 2_000_000, 50), default=PRIOR)
    assert busy.close_rate == pytest.approx((500 + 2) / 1010)
    assert busy.mean_turnover_minor == pytest.approx((1_000_000_000 + 10_000_000) / 510)
    # Deals waiting: 400 undecided are left out of the win rate; 100 unpaid wins weigh 25 failures to pay by the
    # time gone by in their payment terms; 20 of the 400 wins stated no turnover. The return rate is the lead
    # buyers' when given.
    waiting = category_prior(
        History(1000, 300, 380 * 2_000_000, 50, undecided=400, won_unpaid=100, unpaid_weight=25.0, stated=380),
        default=CategoryPrior(0.25, 1_000_000, 0.1, 10, pay_rate=0.8),
        returns=History(500, returned=100),
    )
    assert waiting.win_rate == pytest.approx((400 + 2.5) / 610)
    assert waiting.pay_rate == pytest.approx((300 + 8) / (300 + 25 + 10))
    assert waiting.mean_turnover_minor == pytest.approx((760_000_000 + 10_000_000) / 390)
    assert waiting.return_rate == pytest.approx((100 + 1) / 510)


def test_deals_still_waiting_are_not_failures():
    # 40 received: 10 decided (3 won, 7 lost), 30 the customers have not decided on yet. Counting those 30 as
    # failures would give (1 + 2) / 50 = 0.06; of the decided ones, 3 of 10 were won: (3 + 2) / (10 + 10) = 0.25.
    terms = Terms("deal_maker", 6000, 1500)
    s = score(History(40, 0, 3_000_000, 0, undecided=30, won_unpaid=3), PRIOR, terms)
    assert s.factors["p_won"] == pytest.approx(0.25)
    # Its wins are fresh (no time gone by in their payment terms): P(paid | won) is the prior's (1.0 here).
    assert s.factors["p_paid_if_won"] == 1.0
    assert s.factors["p_close_and_pay"] == pytest.approx(0.25)
    # The turnover of a win counts as soon as it is stated: (3,000,000 + 10 x 1,000,000) / (3 + 10).
    assert s.factors["expected_turnover_minor"] == round(13_000_000 / 13)
    assert s.value == pytest.approx(0.25 * 13_000_000 / 13 * 0.15)
    # A win reported without a turnover does not drag the expected turnover toward zero.
    unstated = score(History(40, 0, 3_000_000, 0, undecided=30, won_unpaid=4, stated=3), PRIOR, terms)
    assert unstated.factors["expected_turnover_minor"] == round(13_000_000 / 13)


def test_unpaid_wins_turn_into_failures_as_their_payment_term_runs():
    now = datetime(2026, 3, 1, tzinfo=UTC)
    term = timedelta(days=40)
    won_at = [now, now - timedelta(days=10), now - timedelta(days=20), now - timedelta(days=90), now + timedelta(1)]
    assert unpaid_weight(won_at, now, term) == pytest.approx(0 + 0.25 + 0.5 + 1 + 0)
    terms = Terms("deal_maker", 6000, 1500)
    prior = CategoryPrior(0.2, 1_000_000, 0.1, 10, pay_rate=0.8)
    # 20 decided, 10 won: 4 paid, 6 unpaid whose terms are over. P(paid | won) = (4 + 10 x 0.8) / (4 + 6 + 10).
    late = score(History(20, 4, 10_000_000, 0, won_unpaid=6, unpaid_weight=6.0), prior, terms)
    assert late.factors["p_paid_if_won"] == pytest.approx(0.6)
    assert late.factors["p_won"] == pytest.approx((10 + 2) / 30)
    assert late.factors["p_close_and_pay"] == pytest.approx(0.6 * 12 / 30)
    # The same 6 wins a quarter of the way into their terms: 1.5 failures, not 6 nor 0.
    young = score(History(20, 4, 10_000_000, 0, won_unpaid=6, unpaid_weight=1.5), prior, terms)
    assert young.factors["p_paid_if_won"] == pytest.approx(12 / 15.5)
    prompt = score(History(20, 10, 10_000_000, 0), prior, terms)
    assert prompt.factors["p_paid_if_won"] == pytest.approx(18 / 20)
    assert prompt.value > young.value > late.value


def test_a_stale_open_deal_is_a_failure_and_a_fresh_one_is_not():
    assert outcome("new") == outcome("quoted") == "undecided"
    assert outcome("contacted", stale=True) == "silent"
    assert outcome("won") == outcome("invoiced", stale=True) == "won_unpaid"
    assert [outcome(s) for s in ("paid", "lost", "returned")] == ["paid", "lost", "returned"]
    # The business that says nothing: 10 received, all stale, so all decided and none won.
    silent = score(History(10), PRIOR, Terms("deal_maker", 6000, 1500))
    waiting = score(History(10, undecided=10), PRIOR, Terms("deal_maker", 6000, 1500))
    assert silent.factors["p_won"] == pytest.approx(2 / 20)
    assert waiting.factors["p_won"] == pytest.approx(0.2)


def test_which_moves_change_a_score():
    assert not Moved("b", "c", "contacted", was="undecided").moves_score
    assert Moved("b", "c", "contacted", was="silent").moves_score  # a stale deal came back to life
    assert Moved("b", "c", "won", 100, was="undecided").moves_score
    assert Moved("b", "c", "paid", 100, was="won_unpaid", was_turnover_minor=100).moves_score
    # An invoice neither restarts a win's payment term nor changes a count, unless the turnover changes.
    assert not Moved("b", "c", "invoiced", 100, was="won_unpaid", was_turnover_minor=100).moves_score
    assert Moved("b", "c", "invoiced", 120, was="won_unpaid", was_turnover_minor=100).moves_score
    assert Moved("b", "c", "invoiced", 100, was="won_unpaid", was_turnover_minor=None).moves_score
    assert Moved("b", "c", "contacted").moves_score  # not known what it was: the business is read back


def ratio(value: int | Fraction) -> tuple[int, int]:
    exact = Fraction(value)
    return exact.numerator, exact.denominator


def test_exact_value_is_the_score_without_rounding():
    # reliability 0.5 x (alpha 1 / (1 + 2) x 3,000 + 0.25) = 500.125, exactly.
    assert Fraction(*exact_value(1.0, 2.0, 3000.0, 0.25, 5000)) == Fraction(4001, 8)
    s = score(History(received=7, returned=2, sold_revenue_minor=300), PRIOR, Terms("lead_buyer", 6000, 0, 9000), 0.8)
    exact = Fraction(*exact_value(s.alpha, s.beta, s.worth, s.bonus, 8000))
    assert float(exact) == pytest.approx(s.value, rel=1e-12)


def test_generalised_second_price():
    # The next candidate scores 5,400; this buyer keeps 90 % of its leads (alpha 9, beta 1): it needs a bid of 6,000.
    assert gsp_price(ratio(5400), 9.0, 1.0, 10_000, 0.0, reserve=5000, ceiling=9000) == 6000
    # Never below the category's price, never above its own bid.
    assert gsp_price(ratio(100), 9.0, 1.0, 10_000, 0.0, reserve=5000, ceiling=9000) == 5000
    assert gsp_price(ratio(50_000), 9.0, 1.0, 10_000, 0.0, reserve=5000, ceiling=9000) == 9000
    # The last one pays the reserve.
    assert gsp_price(None, 9.0, 1.0, 10_000, 0.0, reserve=5000, ceiling=9000) == 5000
    # A bonus of its own counts toward its place, so it needs to bid less.
    assert gsp_price(ratio(5400), 9.0, 1.0, 10_000, 900.0, reserve=1000, ceiling=9000) == 5000
    # Exact, not float: 20,000 at p = 10/13 is 26,000 (in floats 20,000.0 / 0.7692307692307692 = 26,000.000000000004,
    # once charged as 26,001); half a minor unit more is rounded up.
    assert gsp_price(ratio(20_000), 10.0, 3.0, 10_000, 0.0, reserve=25_000, ceiling=28_000) == 26_000
    half_more = Fraction(52_001, 2) * Fraction(10, 13)
    assert gsp_price(ratio(half_more), 10.0, 3.0, 10_000, 0.0, reserve=25_000, ceiling=28_000) == 26_001
    # Any excess at all is a minor unit more: at 26,000 this buyer would score below the next one. (The float rule's
    # epsilon took 26,000 + 1e-10 for 26,000, and above 5e8 minor units rounded to the nearest instead of up.)
    tiny_more = (26_000 + Fraction(1, 10**10)) * Fraction(10, 13)
    assert gsp_price(ratio(tiny_more), 10.0, 3.0, 10_000, 0.0, reserve=25_000, ceiling=28_000) == 26_001
    large = Fraction(10**9) + Fraction(3, 10)
    assert gsp_price(ratio(large), 1.0, 0.0, 10_000, 0.0, reserve=1, ceiling=10**12) == 10**9 + 1
    # Reliabilities are whole basis points, not the floats 0.9 and 0.75 (0.9 / 0.75 x 10,000 = 12,000.000000000002):
    # the next bidder bids 10,000 at 90 %, this one, at 75 % and the same record, needs exactly 12,000.
    next_score = exact_value(9.0, 1.0, 10_000.0, 0.0, 9000)
    assert gsp_price(next_score, 9.0, 1.0, 7500, 0.0, reserve=6000, ceiling=30_000) == 12_000


def test_a_reliability_is_read_back_as_the_basis_points_it_was_made_of():
    for bp in range(10_001):
        parts = Score(0.0, 1.0, 1.0, 0.0, 0.0, bp / 10_000)  # as load_standings and Joined make it
        assert reliability_bp(parts) == bp


_parts = st.fixed_dictionaries(
    {
        "alpha": st.floats(min_value=1e-9, max_value=1e4),
        "beta": st.floats(min_value=0.0, max_value=1e4),
        "bonus": st.floats(min_value=0.0, max_value=1e6),
        "reliability_bp": st.integers(min_value=1, max_value=10_000),
    }
)


def _own_value(parts: dict[str, float], price: int) -> Fraction:
    return Fraction(*exact_value(parts["alpha"], parts["beta"], float(price), parts["bonus"], parts["reliability_bp"]))


@settings(max_examples=500, deadline=None)
@given(
    own=_parts,
    other=_parts,
    next_bid=st.integers(min_value=1, max_value=10**12),
    reserve=st.integers(min_value=1, max_value=10**8),
    extra=st.integers(min_value=0, max_value=10**12),
)
def test_a_second_price_stays_between_reserve_and_bid_and_is_the_exact_rule_rounded_up(
    own, other, next_bid, reserve, extra
):
    ceiling = reserve + extra
    next_score = exact_value(other["alpha"], other["beta"], float(next_bid), other["bonus"], other["reliability_bp"])
    price = gsp_price(next_score, own["alpha"], own["beta"], own["reliability_bp"], own["bonus"], reserve, ceiling)
    assert isinstance(price, int) and reserve <= price <= ceiling
    # The documented rule, computed here with Python's exact ceiling of a rational.
    a, b = Fraction(own["alpha"]), Fraction(own["beta"])
    needed = (Fraction(*next_score) / Fraction(own["reliability_bp"], 10_000) - Fraction(own["bonus"])) * (a + b) / a
    assert price == max(reserve, min(ceiling, math.ceil(needed)))
    # Unclamped, it is the least whole amount that keeps the place: one minor unit less would not.
    if reserve < price < ceiling:
        assert _own_value(own, price) >= Fraction(*next_score) > _own_value(own, price - 1)


@settings(max_examples=300, deadline=None)
@given(parts=_parts, next_bid=st.integers(min_value=1, max_value=10**12))
def test_a_second_price_is_the_next_bid_when_both_keep_alike(parts, next_bid):
    # The next bidder has the same return record, bonus and reliability: keeping the place costs exactly its bid.
    next_score = exact_value(parts["alpha"], parts["beta"], float(next_bid), parts["bonus"], parts["reliability_bp"])
    price = gsp_price(next_score, parts["alpha"], parts["beta"], parts["reliability_bp"], parts["bonus"], 1, 10**13)
    assert price == next_bid


def test_a_turnover_reported_far_beyond_the_category_is_believed_only_up_to_its_cap():
    capped = CategoryPrior(win_rate=0.2, mean_turnover_minor=1_000_000, return_rate=0.1, strength=10,
                           turnover_cap_minor=10_000_000)  # fmt: skip
    honest = History(received=30, paid_deals=9, turnover_minor=9_000_000)
    inflated = History(received=30, paid_deals=9, turnover_minor=10**15)
    terms = Terms("deal_maker", 6000, 1500)
    assert score(honest, capped, terms).value == score(honest, PRIOR, terms).value  # below the cap: no change
    assert not score(honest, capped, terms).factors["turnover_capped"]
    gamed = score(inflated, capped, terms)
    assert gamed.factors["turnover_capped"] and gamed.factors["expected_turnover_minor"] == 10_000_000
    assert gamed.value == pytest.approx(0.275 * 10_000_000 * 0.15)  # 10x an honest business's, not 10^8x
    # The category's own mean is capped too: one business's invented turnover does not lift every prior.
    default = CategoryPrior(0.25, 1_000_000, 0.1, 10, 0.8, 10_000_000)
    assert category_prior(inflated, default=default).mean_turnover_minor == 10_000_000
