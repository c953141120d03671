"""The learned part: an unsupervised start, a supervised model on operators' decisions, signed storage."""

from __future__ import annotations

import numpy as np
import pytest

from marketplace.fraud import model as risk_model
from marketplace.fraud.signals import FEATURES

SECRET = "test-secret-key-0123456789abcdef"


def population(n: int = 200, seed: int = 3) -> list[dict[str, float]]:
    g = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        row = dict.fromkeys(FEATURES, 0.0)
        row["log_deals"] = float(g.uniform(1, 4))
        row["lost_z"] = float(max(0.0, g.normal(0, 1)))
        rows.append(row)
    return rows


def suspicious(weight: float = 2.0) -> dict[str, float]:
    row = dict.fromkeys(FEATURES, 0.0)
    row.update(hidden_weight=weight, contradicted_share=1.0, lost_z=3.0, log_deals=2.0)
    return row


def test_unsupervised_start_scores_outliers_high_and_ordinary_businesses_zero():
    assert risk_model.train_unsupervised(population(10)) is None  # too few to learn what is ordinary
    trained = risk_model.train_unsupervised(population())
    assert trained is not None and not trained.supervised and trained.labels == 0
    ordinary = dict.fromkeys(FEATURES, 0.0)
    assert trained.score(ordinary) == 0.0
    assert trained.score(suspicious()) > 0.9
    reason = trained.explain(suspicious())
    assert reason is not None and "hidden weight" in reason["text"] and reason["kind"] == "model_isolation_forest"
    assert trained.explain(ordinary) is None
    again = risk_model.train_unsupervised(population())
    assert again is not None and again.score(suspicious(1.0)) == trained.score(suspicious(1.0))  # seeded


def labelled(seed: int = 5) -> tuple[list[dict[str, float]], list[bool]]:
    """Operators confirmed contradictions and dismissed alerts that rested on lost rates alone."""
    g = np.random.default_rng(seed)
    rows, labels = [], []
    for i in range(30):
        row = dict.fromkeys(FEATURES, 0.0)
        row["log_deals"] = float(g.uniform(1, 4))
        if i % 2 == 0:
            row.update(hidden_weight=float(g.uniform(1, 3)), contradicted_share=float(g.uniform(0.5, 1)))
        else:
            row.update(lost_z=float(g.uniform(2, 5)), stale_z=float(g.uniform(2, 4)))
        rows.append(row)
        labels.append(i % 2 == 0)
    return rows, labels


def test_supervised_model_learns_what_operators_confirm():
    rows, labels = labelled()
    assert risk_model.train_supervised(rows[:6], labels[:6], min_per_class=5) is None  # 3 of each: too few
    trained = risk_model.train_supervised(rows, labels, min_per_class=5)
    assert trained is not None and trained.supervised and trained.labels == 30
    assert trained.metrics["confirmed"] == 15 and trained.metrics["cv_auc"] > 0.9
    assert trained.score(suspicious()) > 0.8
    lost_only = dict.fromkeys(FEATURES, 0.0)
    lost_only.update(lost_z=4.0, stale_z=3.0, log_deals=2.0)
    assert trained.score(lost_only) < 0.2
    assert "confirmed cases" in (trained.explain(suspicious()) or {})["text"]
    assert "dismissed cases" in (trained.explain(lost_only) or {})["text"]


def test_a_stored_model_loads_only_with_its_signature():
    trained = risk_model.train_unsupervised(population())
    assert trained is not None
    blob, signature = risk_model.dumps(trained, SECRET)
    loaded = risk_model.loads(blob, signature, SECRET)
    assert loaded.score(suspicious()) == trained.score(suspicious())
    with pytest.raises(ValueError, match="signature"):
        risk_model.loads(blob, signature, "another-secret-0123456789abcdef")
    with pytest.raises(ValueError, match="signature"):
        risk_model.loads(blob[:-1] + bytes([blob[-1] ^ 1]), signature, SECRET)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_forest_as_arrays_scores_exactly_as_scikit_learn(seed):
    # The scan scores businesses with the forest's trees as arrays (scikit-learn takes ~10 ms for one row): the
    # same numbers to the last bit, for the training population and for rows far outside it.
    rows = population(300, seed)
    trained = risk_model.train_unsupervised(rows, seed=seed)
    assert trained is not None
    forest = risk_model.Forest.of(trained.estimator)
    assert forest is not None
    g = np.random.default_rng(seed + 10)
    x = np.vstack(
        [
            risk_model.matrix(rows, trained.features),
            g.normal(size=(200, len(trained.features))) * 5.0,
            risk_model.matrix([suspicious(w) for w in (0.5, 1.0, 4.0)], trained.features),
        ]
    )
    assert np.array_equal(forest.score_samples(x), trained.estimator.score_samples(x))
    # And the model's scores through it equal those through scikit-learn (a model pickled before had no arrays).
    batch = [*rows[:50], suspicious()]
    through_arrays = trained.scores(batch)
    trained.__dict__["_compact"] = trained.estimator
    assert np.array_equal(trained.scores(batch), through_arrays)


def test_a_forest_that_subsamples_features_is_scored_by_scikit_learn():
    from sklearn.ensemble import IsolationForest

    x = np.random.default_rng(4).normal(size=(300, 6))
    forest = IsolationForest(n_estimators=20, max_features=3, random_state=0).fit(x)
    assert risk_model.Forest.of(forest) is None


def test_a_row_with_a_missing_feature_is_scored_by_scikit_learn():
    # scikit-learn's trees send a missing value their own way; the arrays would not: such a batch goes to it.
    trained = risk_model.train_unsupervised(population())
    assert trained is not None
    row = suspicious()
    row["lost_z"] = float("nan")
    expected = -trained.estimator.score_samples(risk_model.matrix([row], trained.features))
    outlier = np.searchsorted(trained.reference, expected, side="left") / len(trained.reference)
    assert trained.scores([row])[0] == pytest.approx(max(0.0, (outlier[0] - 0.5) / 0.5))
