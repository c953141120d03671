"""The learned part of the risk score, with scikit-learn, on the features of `signals.assess`.

- While operators have decided too few alerts, an IsolationForest over every business's features says how
  unusual a business is (its percentile among all): an unsupervised start.
- Once they have confirmed and dismissed enough, a logistic regression learns from those labels how likely
  an operator is to confirm an alert with these features.

A trained model is kept in the database as a pickle signed with the service's secret key: only a pickle the
service itself signed is ever loaded. Pure: no web framework, no database.
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from marketplace.fraud.signals import FEATURES

ISOLATION_FOREST = "isolation_forest"
LOGISTIC_REGRESSION = "logistic_regression"
MIN_UNSUPERVISED_SAMPLES = 30
# The unsupervised model ignores size: a large business is not suspicious for being large.
OUTLIER_FEATURES = tuple(f for f in FEATURES if f != "log_deals")
# Below this percentile of outlier scores a business counts as ordinary (model score 0).
ORDINARY_PERCENTILE = 0.5


@dataclass
class RiskModel:
    kind: str
    estimator: Any
    features: tuple[str, ...]
    samples: int
    labels: int
    metrics: dict[str, Any] = field(default_factory=dict)
    # IsolationForest: the training population's outlier scores (sorted) and each feature's 95th percentile.
    reference: np.ndarray | None = None
    high: np.ndarray | None = None

    @property
    def supervised(self) -> bool:
        return self.kind == LOGISTIC_REGRESSION

    def score(self, features: Mapping[str, float]) -> float:
        return float(self.scores([features])[0])

    def scores(self, rows: Sequence[Mapping[str, float]]) -> np.ndarray:
        """0..1 per row: the probability of a confirmation (supervised), or how far into the outliers."""
        if not rows:
            return np.zeros(0)
        x = matrix(rows, self.features)
        if self.supervised:
            return np.asarray(self.estimator.predict_proba(x)[:, 1], dtype=float)
        assert self.reference is not None
        outlier = -self.estimator.score_samples(x)
        percentile = np.searchsorted(self.reference, outlier, side="left") / max(len(self.reference), 1)
        return np.clip((percentile - ORDINARY_PERCENTILE) / (1.0 - ORDINARY_PERCENTILE), 0.0, 1.0)

    def explain(self, features: Mapping[str, float], score: float | None = None) -> dict[str, Any] | None:
        """The model's reason, for operators: what in this business pushed its score up."""
        score = self.score(features) if score is None else score
        if score <= 0:
            return None
        x = matrix([features], self.features)[0]
        if self.supervised:
            scaler, regression = self.estimator[0], self.estimator[-1]
            contributions = regression.coef_[0] * (x - scaler.mean_) / np.where(scaler.scale_ > 0, scaler.scale_, 1)
            toward = 1.0 if score >= 0.5 else -1.0
            top = [self.features[i] for i in np.argsort(-toward * contributions)[:2] if toward * contributions[i] > 0]
            likeness = "confirmed cases" if score >= 0.5 else "dismissed cases (lowers the risk)"
            text = f"the model ({self.labels} operator decisions) likens it to {likeness}"
        else:
            assert self.high is not None
            top = [self.features[i] for i in np.argsort(-(x - self.high), kind="stable") if x[i] > self.high[i]][:2]
            text = f"unusual among {self.samples} businesses"
        detail = f" ({', '.join(name.replace('_', ' ') for name in top)})" if top else ""
        return {"kind": f"model_{self.kind}", "text": text + detail, "weight": round(score, 4), "leads": []}


def matrix(rows: Sequence[Mapping[str, float]], names: Sequence[str]) -> np.ndarray:
    return np.asarray([[float(row.get(name, 0.0)) for name in names] for row in rows], dtype=float).reshape(
        len(rows), len(names)
    )


def train_unsupervised(rows: Sequence[Mapping[str, float]], seed: int = 0) -> RiskModel | None:
    """An IsolationForest over every business's features; None while there are too few businesses."""
    from sklearn.ensemble import IsolationForest

    if len(rows) < MIN_UNSUPERVISED_SAMPLES:
        return None
    x = matrix(rows, OUTLIER_FEATURES)
    forest = IsolationForest(n_estimators=100, max_samples=min(256, len(rows)), random_state=seed)
    forest.fit(x)
    reference = np.sort(-forest.score_samples(x))
    high = np.quantile(x, 0.95, axis=0)
    return RiskModel(
        ISOLATION_FOREST,
        forest,
        OUTLIER_FEATURES,
        samples=len(rows),
        labels=0,
        metrics={"samples": len(rows)},
        reference=reference,
        high=high,
    )


def train_supervised(
    rows: Sequence[Mapping[str, float]], confirmed: Sequence[bool], min_per_class: int, seed: int = 0
) -> RiskModel | None:
    """A logistic regression on operators' decisions (confirm = 1); None until each class has enough."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(confirmed, dtype=int)
    positives, negatives = int(y.sum()), int(len(y) - y.sum())
    if min(positives, negatives) < min_per_class:
        return None
    x = matrix(rows, FEATURES)

    def pipeline() -> Any:
        return make_pipeline(
            StandardScaler(), LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000, random_state=seed)
        )

    metrics: dict[str, Any] = {"samples": len(y), "confirmed": positives, "dismissed": negatives}
    folds = min(5, positives, negatives)
    if folds >= 2:
        cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        predicted = cross_val_predict(pipeline(), x, y, cv=cv, method="predict_proba")[:, 1]
        metrics["cv_auc"] = round(float(roc_auc_score(y, predicted)), 4)
    estimator = pipeline().fit(x, y)
    return RiskModel(LOGISTIC_REGRESSION, estimator, FEATURES, samples=len(y), labels=len(y), metrics=metrics)


def _sign(blob: bytes, secret: str) -> str:
    return hmac.new(secret.encode(), blob, hashlib.sha256).hexdigest()


def dumps(model: RiskModel, secret: str) -> tuple[bytes, str]:
    blob = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    return blob, _sign(blob, secret)


def loads(blob: bytes, signature: str, secret: str) -> RiskModel:
    """Unpickle only what this service signed: a row written by anyone else is refused, never loaded."""
    if not hmac.compare_digest(_sign(blob, secret), signature):
        raise ValueError("the stored fraud model's signature does not match this service's secret key")
    model = pickle.loads(blob)  # signed by this service: checked above
    if not isinstance(model, RiskModel):
        raise ValueError("the stored fraud model is not a RiskModel")
    return model
