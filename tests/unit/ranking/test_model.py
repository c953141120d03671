"""The conversion model learns what the history shows, and stays silent while there is too little of it."""

from __future__ import annotations

import random

from marketplace.ranking.model import MIN_SAMPLES, Sample, train


def _history(n: int, seed: int = 1) -> list[Sample]:
    rng = random.Random(seed)
    samples = []
    for _ in range(n):
        lo = rng.randrange(0, 500_000)
        hi = lo + rng.randrange(100_000, 1_000_000)
        budget = rng.randrange(lo, hi)
        centred = 1 - abs((budget - lo) / (hi - lo) - 0.5) * 2
        # Truth of this market: deals close more often when the budget sits well inside the range.
        paid = rng.random() < 0.1 + 0.5 * centred
        samples.append(Sample("plumbing", budget, lo, hi, 0.3, paid))
    return samples


def test_learns_that_well_fitting_leads_close_more():
    trained = train(_history(3000))
    assert trained is not None
    assert trained.coefficients.w_fit > 1.0
    assert trained.auc is not None and trained.auc > 0.6
    assert 0.2 < trained.positive_rate < 0.5
    assert "plumbing" in trained.coefficients.mean_log_budget


def test_too_little_or_one_sided_history_trains_nothing():
    assert train(_history(MIN_SAMPLES - 1)) is None
    one_sided = [Sample("plumbing", 100, 0, 1000, 0.3, False) for _ in range(MIN_SAMPLES + 10)]
    assert train(one_sided) is None
