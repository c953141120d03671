"""The conversion model: which leads a deal maker wins (of those decided), learned with scikit-learn from
history, and handed to the ranking core as two weights it applies with plain numpy arithmetic.

Features of an exposure: the lead's budget against its category's mean (log ratio), how centrally the
budget sits in the business's deal range, and the business's own shrunk win rate (as a logit, so the
other two weights learn only what the history does not already say). Pure: no database.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

MIN_SAMPLES = 200


@dataclass(frozen=True, slots=True)
class Sample:
    category: str
    budget_minor: int
    min_deal_minor: int
    max_deal_minor: int
    business_win_rate: float
    won: bool


@dataclass(frozen=True, slots=True)
class Coefficients:
    w_budget: float
    w_fit: float
    w_history: float
    intercept: float
    mean_log_budget: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "w_budget": self.w_budget,
            "w_fit": self.w_fit,
            "w_history": self.w_history,
            "intercept": self.intercept,
            "mean_log_budget": self.mean_log_budget,
        }


@dataclass(frozen=True, slots=True)
class Trained:
    coefficients: Coefficients
    samples: int
    positive_rate: float
    auc: float | None


def _fit_feature(budget: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    span = np.maximum(hi - lo, 1)
    return 1.0 - np.abs((budget - lo) / span - 0.5) * 2.0


def features(samples: Sequence[Sample], mean_log_budget: dict[str, float]) -> np.ndarray:
    budget = np.array([max(s.budget_minor, 1) for s in samples], np.float64)
    lo = np.array([s.min_deal_minor for s in samples], np.float64)
    hi = np.array([s.max_deal_minor for s in samples], np.float64)
    means = np.array([mean_log_budget.get(s.category, 0.0) for s in samples])
    p = np.clip(np.array([s.business_win_rate for s in samples]), 1e-4, 1 - 1e-4)
    return np.column_stack([np.log(budget) - means, _fit_feature(budget, lo, hi), np.log(p / (1 - p))])


def train(samples: Sequence[Sample], seed: int = 0) -> Trained | None:
    """Logistic regression on the history; None while there is too little of it (or only one outcome)."""
    if len(samples) < MIN_SAMPLES:
        return None
    labels = np.array([s.won for s in samples], np.int64)
    if labels.min() == labels.max():
        return None
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    by_category: dict[str, list[float]] = {}
    for s in samples:
        if s.budget_minor > 0:
            by_category.setdefault(s.category, []).append(math.log(s.budget_minor))
    mean_log_budget = {c: float(np.mean(v)) for c, v in by_category.items()}
    x = features(samples, mean_log_budget)
    model = LogisticRegression(C=1.0, random_state=seed, max_iter=200)
    model.fit(x, labels)
    w_budget, w_fit, w_history = (float(w) for w in model.coef_[0])
    auc = float(roc_auc_score(labels, model.predict_proba(x)[:, 1]))
    return Trained(
        Coefficients(w_budget, w_fit, w_history, float(model.intercept_[0]), mean_log_budget),
        samples=len(samples),
        positive_rate=float(labels.mean()),
        auc=auc,
    )
