import numpy as np
import pytest
from sklearn.metrics import accuracy_score, log_loss, mean_absolute_error, r2_score, roc_auc_score

from common.metrics import (
    class_counts,
    evaluation_statistics,
    majority_rate,
    metrics_from_statistics,
    sum_statistics,
)


def _binary(seed, n):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(float)
    p = np.clip(0.3 * y + 0.7 * rng.random(n), 0, 1)
    return y, p


def test_binary_metrics_match_sklearn():
    y, p = _binary(0, 500)
    m = metrics_from_statistics("binary", evaluation_statistics("binary", y, p))
    assert m["accuracy"] == pytest.approx(accuracy_score(y, p >= 0.5))
    assert m["loss"] == pytest.approx(log_loss(y, p), rel=1e-6)
    assert m["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-3)


def test_pooled_statistics_equal_metrics_on_union():
    parts = [_binary(seed, n) for seed, n in [(1, 50), (2, 120), (3, 17)]]
    pooled = sum_statistics([evaluation_statistics("binary", y, p) for y, p in parts])
    y = np.concatenate([y for y, _ in parts])
    p = np.concatenate([p for _, p in parts])
    m = metrics_from_statistics("binary", pooled)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, p >= 0.5))
    assert m["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-3)


def test_multiclass_auc_is_macro_one_vs_rest():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 4, 400)
    logits = rng.normal(size=(400, 4)) + 1.5 * np.eye(4)[y]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    m = metrics_from_statistics("multiclass", evaluation_statistics("multiclass", y, probs))
    assert m["accuracy"] == pytest.approx(accuracy_score(y, probs.argmax(axis=1)))
    assert m["auc"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr"), abs=2e-3)


def test_regression_metrics_match_sklearn_and_pool_exactly():
    rng = np.random.default_rng(5)
    y1, y2 = rng.normal(150, 70, 80), rng.normal(140, 60, 30)
    p1, p2 = y1 + rng.normal(0, 30, 80), y2 + rng.normal(0, 30, 30)
    pooled = sum_statistics([evaluation_statistics("regression", y1, p1),
                             evaluation_statistics("regression", y2, p2)])
    m = metrics_from_statistics("regression", pooled)
    y, p = np.concatenate([y1, y2]), np.concatenate([p1, p2])
    assert m["mae"] == pytest.approx(mean_absolute_error(y, p))
    assert m["r2"] == pytest.approx(r2_score(y, p))


def test_auc_is_nan_for_one_class_test_set():
    statistics = evaluation_statistics("binary", np.ones(5), np.full(5, 0.7))
    m = metrics_from_statistics("binary", statistics)
    assert np.isnan(m["auc"]) and m["accuracy"] == 1.0


def test_class_counts_and_majority_rate_come_from_the_statistics():
    y, p = _binary(6, 40)
    stats = evaluation_statistics("binary", y, p)
    assert list(class_counts(stats)) == [np.sum(y == 0), np.sum(y == 1)]
    assert majority_rate(stats) == pytest.approx(max(np.mean(y), 1 - np.mean(y)))
    assert float(stats["count"]) == 40  # the test-set size the report shows


def test_multiclass_majority_rate_is_the_most_frequent_class_share():
    y = np.array([0, 1, 1, 2, 2, 2, 2, 3])
    probs = np.full((8, 4), 0.25)
    stats = evaluation_statistics("multiclass", y, probs)
    assert list(class_counts(stats)) == [1, 2, 4, 1]
    assert majority_rate(stats) == 0.5


def test_regression_has_no_majority_rate():
    stats = evaluation_statistics("regression", np.arange(5.0), np.arange(5.0))
    assert class_counts(stats) is None and np.isnan(majority_rate(stats))
