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
        # scikit-learn's trees send a missing value their own way; the arrays know only finite ones.
        scorer = self._forest() if np.isfinite(x).all() else self.estimator
        outlier = -scorer.score_samples(x)
        percentile = np.searchsorted(self.reference, outlier, side="left") / max(len(self.reference), 1)
        return np.clip((percentile - ORDINARY_PERCENTILE) / (1.0 - ORDINARY_PERCENTILE), 0.0, 1.0)

    def _forest(self) -> Any:
        """The IsolationForest's scorer: its trees as arrays (`Forest`) once they are checked to score a probe sample
        exactly as scikit-learn does, else the estimator itself (for finite features only: see scores). Built on
        first use (also for models pickled before), kept with the model."""
        forest = self.__dict__.get("_compact")
        if forest is None:
            forest = self.__dict__["_compact"] = Forest.of(self.estimator) or self.estimator
        return forest

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


def _average_path_length(n: np.ndarray) -> np.ndarray:
    """c(n): the average path length of an unsuccessful search in a binary search tree of n points (the part of a
    path a leaf holding n training points stands for), as the IsolationForest paper and scikit-learn define it."""
    n = np.asarray(n, dtype=float)
    out = np.zeros(n.shape)
    out[n == 2] = 1.0
    many = n > 2
    out[many] = 2.0 * (np.log(n[many] - 1.0) + np.euler_gamma) - 2.0 * (n[many] - 1.0) / n[many]
    return out


class Forest:
    """A fitted IsolationForest's trees as padded arrays, scored level by level with a few numpy steps for all
    trees and rows at once. scikit-learn scores tree by tree through joblib: ~16 ms for one business, most of a
    fraud scan's time for a business with evidence. Same result: the leaf a row reaches in each tree (left where
    its float32 feature is at most the threshold, as scikit-learn's trees compare), the leaf's depth plus c(its
    training points), summed over the trees in order, and 2^(-mean / c(max_samples)), negated."""

    def __init__(self, estimator: Any) -> None:
        trees = [e.tree_ for e in estimator.estimators_]
        size = max(t.node_count for t in trees)
        count = len(trees)
        self.left = np.full((count, size), -1, np.int64)
        self.right = np.full((count, size), -1, np.int64)
        self.feature = np.zeros((count, size), np.int64)
        self.threshold = np.zeros((count, size))
        self.value = np.zeros((count, size))
        self.levels = 0
        for i, tree in enumerate(trees):
            n = tree.node_count
            left, right = tree.children_left[:n], tree.children_right[:n]
            depth = np.zeros(n)
            for node in range(n):  # a node's children come after it
                if left[node] >= 0:
                    depth[left[node]] = depth[right[node]] = depth[node] + 1
            self.left[i, :n], self.right[i, :n] = left, right
            self.feature[i, :n] = np.maximum(tree.feature[:n], 0)
            self.threshold[i, :n] = tree.threshold[:n]
            # As scikit-learn adds it up: the nodes on the path (depth + 1), plus c(n), minus 1.
            self.value[i, :n] = (depth + 1.0) + _average_path_length(tree.n_node_samples[:n]) - 1.0
            self.levels = max(self.levels, int(depth.max()))
        self.denominator = count * float(_average_path_length(np.array([estimator.max_samples_]))[0])

    @classmethod
    def of(cls, estimator: Any) -> Forest | None:
        """The arrays of a forest whose trees read every feature in order (no feature subsampling), if they score
        a probe sample exactly as scikit-learn does; else None (and scikit-learn scores)."""
        try:
            n_features = int(estimator.n_features_in_)
            if any(list(f) != list(range(n_features)) for f in estimator.estimators_features_):
                return None
            forest = cls(estimator)
            probe = np.random.default_rng(0).normal(size=(64, n_features)) * 3.0
            if not np.array_equal(forest.score_samples(probe), estimator.score_samples(probe)):
                return None
        except (AttributeError, ValueError):
            return None
        return forest

    def score_samples(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32).astype(np.float64)
        trees = np.arange(self.left.shape[0])[:, None]
        rows = np.arange(x.shape[0])[None, :]
        node = np.zeros((self.left.shape[0], x.shape[0]), np.int64)
        for _ in range(self.levels):
            go_left = x[rows, self.feature[trees, node]] <= self.threshold[trees, node]
            step = np.where(go_left, self.left[trees, node], self.right[trees, node])
            node = np.where(step >= 0, step, node)  # a leaf stays where it is
        depths = np.cumsum(self.value[trees, node], axis=0)[-1]  # summed tree by tree, in order
        return -(2 ** (-np.divide(depths, self.denominator)))


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
