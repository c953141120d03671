"""The rule score, the model's influence, reliability, and an alert's life: open, update, confirm, dismiss, and
reopen only on new evidence."""

from __future__ import annotations

import math

import pytest

from marketplace.fraud import rules
from marketplace.fraud.rules import NOTHING, OPEN, UPDATE, PastAlert, alert_action
from marketplace.fraud.signals import assess, undecided_features
from tests.unit.fraud.histories import ME, NOW, answer, deal, peers

THRESHOLD = 0.5


def signals_of(deals, mode="deal_maker"):
    return assess(ME, mode, deals, peers(), NOW).signals


def evidence(signals):
    return [s.to_json() for s in signals]


def test_rule_score_one_contradiction_is_enough_patterns_never_are():
    hidden = signals_of([deal("lost", answer())])
    assert rules.rule_score(hidden) == pytest.approx(1 - math.exp(-1.0))
    assert rules.rule_score(()) == 0.0
    # Every pattern at once: below-budget deals, a high lost rate, stale leads, unpaid deals.
    patterns = signals_of(
        [
            *(deal("paid", turnover=10_000, budget=100_000) for _ in range(5)),
            *(deal("lost") for _ in range(20)),
            *(deal("contacted", stale=True) for _ in range(10)),
            *(deal("won", turnover=100_000, days_ago=90) for _ in range(5)),
        ]
    )
    assert len(patterns) >= 3 and not any(s.strong for s in patterns)
    assert sum(s.weight for s in patterns) > 0.6
    assert rules.rule_score(patterns) == pytest.approx(1 - math.exp(-0.6))
    assert rules.rule_score(patterns) < THRESHOLD


def test_the_model_moves_the_score_but_never_makes_evidence():
    assert rules.combine(0.0, 1.0, supervised=True) == 0.0
    assert rules.combine(0.0, 1.0, supervised=False) == 0.0
    assert rules.combine(0.4, 0.9, supervised=True) == pytest.approx(0.56)  # a confirmed-like case rises
    assert rules.combine(0.45, 0.1, supervised=True) == pytest.approx(0.27)  # a dismissed-like one falls,
    assert rules.combine(0.7, 0.1, supervised=True, strong=0.63) == pytest.approx(0.63)  # not below its contradictions
    # Unsupervised, an outlier tips a borderline case that rests on a contradiction...
    assert rules.combine(0.4, 1.0, supervised=False, strong=0.26) == pytest.approx(0.5)
    # ...but never lifts patterns alone past what they reach on their own (no alert from them).
    assert rules.combine(rules.PATTERNS_ALONE, 1.0, supervised=False) == pytest.approx(rules.PATTERNS_ALONE)
    assert rules.combine(0.3, 1.0, supervised=False) == pytest.approx(0.375)
    assert rules.PATTERNS_ALONE < THRESHOLD
    assert rules.combine(0.9, 1.0, supervised=True) == 1.0
    assert rules.combine(0.3, None, supervised=False) == 0.3


def test_reasons_are_the_strongest_signals_with_their_leads():
    hidden = deal("lost", answer())
    returned = deal("returned", answer())
    scored = rules.score(signals_of([hidden, returned]), None, False, None)
    assert [r["kind"] for r in scored.reasons] == ["hidden_deal", "returned_then_hired"]
    assert scored.reasons[0]["leads"] == [hidden.lead_id]
    model_reason = {"kind": "model_isolation_forest", "text": "unusual", "weight": 0.8, "leads": []}
    with_model = rules.score(signals_of([hidden]), 0.8, False, model_reason)
    assert with_model.reasons[-1] == model_reason and with_model.risk > with_model.rule
    # Without evidence the model's reason is not shown: it has nothing to explain.
    assert rules.score((), 0.8, False, model_reason).reasons == ()


def test_reliability_follows_the_risk():
    assert rules.reliability_bp(0.0) == rules.reliability_bp(0.1) == 10_000
    assert rules.reliability_bp(0.55) == 5000
    assert rules.reliability_bp(1.0) == rules.RELIABILITY_FLOOR_BP
    assert rules.reliability_bp(0.3) > rules.reliability_bp(0.6)


# --- the alert's life -----------------------------------------------------------------------------------


def test_an_alert_opens_above_the_threshold_and_is_then_only_updated():
    first = deal("lost", answer())
    signals = signals_of([first])
    assert alert_action(0.63, THRESHOLD, signals, []) == OPEN
    assert alert_action(0.3, THRESHOLD, signals, []) == NOTHING
    opened = [PastAlert("open", evidence(signals))]
    # One alert per business: more evidence updates it, whatever the number of signals.
    more = signals_of([first, deal("returned", answer()), deal("lost", answer())])
    assert alert_action(0.95, THRESHOLD, more, opened) == UPDATE
    assert alert_action(0.2, THRESHOLD, more, opened) == UPDATE  # an operator still decides it


def test_a_confirmed_alert_counts_once_if_the_business_is_let_back_in():
    # (While it stays blocked nothing opens at all: tests/integration/test_fraud.py.) An operator who reactivates
    # a confirmed business has forgiven what the alert held; only new evidence opens another.
    first = deal("lost", answer())
    confirmed = [PastAlert("confirmed", evidence(signals_of([first])))]
    assert alert_action(0.63, THRESHOLD, signals_of([first]), confirmed) == NOTHING
    later = signals_of([first, deal("lost", answer())])
    assert alert_action(0.9, THRESHOLD, later, confirmed) == OPEN


def test_a_dismissed_alert_stays_closed_on_the_same_evidence():
    first = deal("lost", answer())
    signals = signals_of([first])
    dismissed = [PastAlert("dismissed", evidence(signals))]
    assert alert_action(0.63, THRESHOLD, signals, dismissed) == NOTHING
    # The same contradiction with a patterns' growth too small to count: still closed.
    small = signals_of([first, *(deal("paid", turnover=10_000, budget=100_000) for _ in range(1))])
    assert alert_action(0.66, THRESHOLD, small, dismissed) == NOTHING


def test_a_dismissed_alert_reopens_on_a_new_contradiction():
    first = deal("lost", answer())
    dismissed = [PastAlert("dismissed", evidence(signals_of([first])))]
    second = deal("contacted", answer(days_ago=3))  # another lead: hired, never reported
    signals = signals_of([first, second])
    assert rules.new_evidence(signals, dismissed) == pytest.approx(0.8)
    assert alert_action(0.83, THRESHOLD, signals, dismissed) == OPEN
    # Reopened once, it is the open alert that is updated from then on.
    reopened = [*dismissed, PastAlert("open", evidence(signals))]
    assert alert_action(0.83, THRESHOLD, signals, reopened) == UPDATE


def test_a_dismissed_alert_reopens_when_a_pattern_grows_clearly():
    first = deal("lost", answer())
    low = [deal("paid", turnover=10_000, budget=100_000) for _ in range(3)]
    dismissed = [PastAlert("dismissed", evidence(signals_of([first, low[0]])))]
    slightly = signals_of([first, *low[:2]])  # 0.15 -> 0.3: grown, but by too little to reopen
    assert alert_action(0.74, THRESHOLD, slightly, dismissed) == NOTHING
    grown = signals_of([first, *low, deal("paid", turnover=10_000, budget=100_000)])  # 0.15 -> 0.45 (its cap)
    assert rules.new_evidence(grown, dismissed) == pytest.approx(0.45 - 0.15)
    assert alert_action(0.8, THRESHOLD, grown, dismissed) == OPEN


def test_new_evidence_below_the_threshold_opens_nothing():
    first = deal("lost", answer())
    dismissed = [PastAlert("dismissed", evidence(signals_of([first])))]
    signals = signals_of([first, deal("contacted", answer(days_ago=3))])
    assert alert_action(0.4, THRESHOLD, signals, dismissed) == NOTHING


def test_evidence_of_every_dismissed_alert_counts():
    a, b = deal("lost", answer()), deal("lost", answer())
    past = [
        PastAlert("dismissed", evidence(signals_of([a]))),
        PastAlert("dismissed", evidence(signals_of([a, b]))),
    ]
    assert alert_action(0.86, THRESHOLD, signals_of([a, b]), past) == NOTHING
    assert alert_action(0.95, THRESHOLD, signals_of([a, b, deal("returned", answer())]), past) == OPEN


def reliability(signals, model, supervised, past):
    """As the assessment computes it: the risk of the evidence no decided alert held."""
    return rules.reliability_bp(rules.score(rules.undecided(signals, past), model, supervised, None).risk)


def test_reliability_rests_only_on_evidence_nobody_decided():
    first = deal("lost", answer())
    signals = signals_of([first])
    assert reliability(signals, None, False, []) < 10_000
    dismissed = [PastAlert("dismissed", evidence(signals))]
    assert rules.undecided(signals, dismissed) == []
    assert reliability(signals, 0.9, True, dismissed) == 10_000
    # A contradiction on another deal counts again, by itself: the dismissed one stays out.
    second = deal("contacted", answer(days_ago=3))
    later = signals_of([first, second])
    (fresh,) = [s for s in rules.undecided(later, dismissed) if s.strong]
    assert fresh.count == 1 and fresh.weight == pytest.approx(0.8)  # a deal never reported weighs 0.8
    assert reliability(later, None, False, dismissed) == reliability(
        signals_of([second]), None, False, []
    )
    # An open alert decides nothing: all of its evidence counts.
    assert rules.undecided(signals, [PastAlert("open", evidence(signals))]) == list(signals)


def test_the_model_reads_only_the_contradictions_nobody_decided():
    first, second = deal("lost", answer()), deal("contacted", answer(days_ago=3))
    found = assess(ME, "deal_maker", [first, second], peers(), NOW)
    assert found.features["hidden_weight"] > 0 and found.features["contradicted_share"] > 0
    # Nothing decided: the features as they are.
    assert undecided_features(found.features, found.signals, rules.undecided(found.signals, [])) is found.features
    # Both hidden deals dismissed: the model no longer sees them either.
    dismissed = [PastAlert("dismissed", evidence(found.signals))]
    none_left = undecided_features(found.features, found.signals, rules.undecided(found.signals, dismissed))
    assert none_left["hidden_weight"] == 0.0 and none_left["contradicted_share"] == 0.0
    assert none_left["log_deals"] == found.features["log_deals"]  # what is not evidence stays
    # One of them dismissed: the other counts, by itself.
    only_first = [PastAlert("dismissed", evidence(signals_of([first])))]
    one_left = undecided_features(found.features, found.signals, rules.undecided(found.signals, only_first))
    alone = assess(ME, "deal_maker", [second], peers(), NOW).features
    assert one_left["hidden_weight"] == pytest.approx(alone["hidden_weight"])
    assert one_left["contradicted_share"] == pytest.approx(found.features["contradicted_share"] / 2)


def test_patterns_count_only_by_what_they_grew_since_a_dismissal():
    first = deal("lost", answer())
    low = [deal("paid", turnover=10_000, budget=100_000) for _ in range(3)]
    dismissed = [PastAlert("dismissed", evidence(signals_of([first, low[0]])))]
    grown = rules.undecided(signals_of([first, *low]), dismissed)
    assert [s.strong for s in grown] == [False]
    assert grown[0].weight == pytest.approx(0.45 - 0.15)
