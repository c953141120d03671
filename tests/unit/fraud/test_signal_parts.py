"""Each signal function of `assess` on its own, and what one signal hands to another (the exposures a strong
signal already counts, which a pattern must not count again)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from marketplace.fraud.signals import (
    HIDDEN_DEAL,
    NEVER_PAID,
    RETURN_RATE,
    SATISFACTION_PRIOR,
    CategoryCounts,
    RuleConfig,
    _below_budget,
    _hidden_deals,
    _low_satisfaction,
    _lowered_turnover,
    _never_paid,
    _own_and_others,
    _return_rate,
    _returned_then_hired,
    _under_reported,
)
from tests.unit.fraud.histories import ME, NOW, answer, deal, peers


def hired(*deals):
    """The `hired_me` pairs `assess` prepares: deals whose customer says it hired this business."""
    return [(d, a) for d in deals if (a := d.verdict()) is not None and a.hired and a.business_id == ME]


def test_returned_then_hired_needs_a_returned_deal():
    returned = deal("returned", answer())
    assert _returned_then_hired(hired(deal("lost", answer()))) is None
    signal = _returned_then_hired(hired(returned))
    assert signal is not None and signal.keys == (returned.exposure_id,) and signal.key_weights == (1.0,)


def test_hidden_deals_keep_their_parts_in_order_and_hand_the_unpaid_ones_on():
    unpaid = deal("won", answer(amount=100_000), turnover=100_000, days_ago=60, changed_days_ago=50)
    lost = deal("lost", answer())
    silent = deal("contacted", answer(days_ago=3))
    signal, hidden_unpaid = _hidden_deals(hired(unpaid, lost, silent), NOW, RuleConfig())
    assert signal is not None and signal.kind == HIDDEN_DEAL
    assert signal.keys == (lost.exposure_id, silent.exposure_id, unpaid.exposure_id)
    assert signal.key_weights == (1.0, 0.8, 0.4)
    assert hidden_unpaid == {unpaid.exposure_id}
    # Within the unpaid term: no signal and nothing handed on.
    assert _hidden_deals(hired(unpaid), NOW, RuleConfig(unpaid_after=timedelta(days=51))) == (None, set())


def test_never_paid_leaves_out_what_the_hidden_deal_counted():
    vouched = deal("won", turnover=100_000, days_ago=60, changed_days_ago=50)
    bare = deal("invoiced", turnover=100_000, days_ago=60, changed_days_ago=50)
    signal = _never_paid([vouched, bare], NOW, RuleConfig(), {vouched.exposure_id})
    assert signal is not None and signal.kind == NEVER_PAID and signal.leads == (bare.lead_id,)
    assert _never_paid([vouched], NOW, RuleConfig(), {vouched.exposure_id}) is None


def test_under_reported_hands_its_exposures_to_the_turnover_patterns():
    under = deal("paid", answer(amount=200_000), turnover=30_000, budget=100_000, highest=200_000)
    plain = deal("paid", turnover=30_000, budget=100_000, highest=200_000)
    signal, under_ids = _under_reported(hired(under, plain))
    assert signal is not None and signal.keys == (under.exposure_id,) and under_ids == {under.exposure_id}
    assert _under_reported(hired(plain)) == (None, set())

    below = _below_budget([under, plain], under_ids)
    assert below is not None and below.leads == (plain.lead_id,)
    assert _below_budget([under], under_ids) is None
    assert _below_budget([under], set()) is not None

    mine = [(d, d.verdict()) for d in (under, plain)]
    lowered = _lowered_turnover(mine, ME, under_ids)
    assert lowered is not None and lowered.leads == (plain.lead_id,)
    assert _lowered_turnover(mine[:1], ME, under_ids) is None


def test_lowered_turnover_agreed_by_the_customer_is_renegotiated():
    agreed = deal("paid", answer(amount=50_000), turnover=50_000, highest=100_000)
    assert _lowered_turnover([(agreed, agreed.verdict())], ME, set()) is None
    assert _lowered_turnover([(agreed, None)], ME, set()) is not None


def test_own_and_others_takes_the_business_out_of_its_peers():
    deals = [deal("lost"), deal("returned"), deal("new", days_ago=1)]
    own, others = _own_and_others(deals, peers(), None)
    assert own == {"plumbing": CategoryCounts(exposures=3, decided=1, lost=1, returned=1, stale=0)}
    assert others == {"plumbing": CategoryCounts(exposures=1497, decided=999, lost=699, returned=99, stale=100)}
    # As the norms stood 5 days ago: the new deal was not made yet.
    _, before = _own_and_others(deals, peers(), NOW - timedelta(days=5))
    assert before["plumbing"].exposures == 1498
    # A category the peers have no figures for.
    _, none = _own_and_others(deals, {}, None)
    assert none == {"plumbing": CategoryCounts()}


def test_return_rate_gives_its_z_with_or_without_a_signal():
    few = [deal("returned"), deal("new")]
    own, others = _own_and_others(few, peers(), None)
    signal, z = _return_rate(few, own, others)
    assert signal is None and z > 0  # too few deals for a rate, but the model reads the z
    many = [deal("returned") for _ in range(4)] + [deal("contacted") for _ in range(4)]
    own, others = _own_and_others(many, peers(), None)
    signal, z = _return_rate(many, own, others)
    assert signal is not None and signal.kind == RETURN_RATE and signal.value == z and z >= 2.0


def test_low_satisfaction_gives_the_prior_without_ratings():
    assert _low_satisfaction([]) == (None, SATISFACTION_PRIOR)
    unrated = deal("paid", answer(satisfaction=0))
    assert _low_satisfaction(hired(unrated)) == (None, SATISFACTION_PRIOR)
    two_low = hired(deal("paid", answer(satisfaction=1)), deal("paid", answer(satisfaction=1)))
    signal, mean = _low_satisfaction(two_low)
    assert signal is None and mean == pytest.approx((2 + 12) / 5)  # below the low mark, but too few ratings
    three_low = hired(*(deal("paid", answer(satisfaction=1)) for _ in range(3)))
    signal, mean = _low_satisfaction(three_low)
    assert signal is not None and signal.value == mean == pytest.approx((3 + 12) / 6)
