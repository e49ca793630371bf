"""Completeness of the per-patient attributions on the tasks' real models and rows."""

import keras
import numpy as np
import pytest

from common.explain.attribution import attribute, complete, completeness_gap, is_linear
from common.models import build_model
from common.tasks import get_task


def _trained(task_name: str, *, epochs: int = 5):
    task = get_task(task_name)
    hospitals = task.load(2, seed=0, partition="iid", alpha=0.5, normalisation="public",
                          missing_indicator=True)
    model = build_model(task, seed=3)
    keras.utils.set_random_seed(0)  # fit shuffles: seeded (op determinism may be on)
    loss = "binary_crossentropy" if task.kind == "binary" else (
        "sparse_categorical_crossentropy")
    model.compile(optimizer="adam", loss=loss)
    x = np.concatenate([h.x_train for h in hospitals])
    y = np.concatenate([h.y_train for h in hospitals])
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0, shuffle=False)
    return model, hospitals[0].x_test


def test_logistic_attributions_sum_to_the_logit_difference_within_1e4():
    model, x = _trained("heart-disease")
    assert is_linear(model)
    baseline = np.zeros(x.shape[1])  # the public centers, after public scaling
    result = attribute(model, x, baseline)
    assert result.method == "exact-linear"
    p = model.predict(x, verbose=0)[:, 0]
    logits = np.log(p) - np.log1p(-p)
    np.testing.assert_allclose(result.output, logits, atol=1e-3)  # it explains the logit
    assert np.abs(result.difference).max() > 0.1  # a real difference to explain
    assert completeness_gap(result).max() <= 1e-4


@pytest.mark.parametrize("task_name", ["breast-cancer", "digits"])
def test_integrated_gradients_are_complete_on_the_mlps(task_name):
    model, x = _trained(task_name, epochs=3)
    assert not is_linear(model)
    result = attribute(model, x[:40], np.zeros(x.shape[1]))
    assert result.method == "integrated-gradients"
    assert np.abs(result.difference).max() > 0.1
    assert complete(result).all(), completeness_gap(result).max()


def test_integrated_gradients_with_one_step_are_not_complete_on_a_relu_network():
    """The check can fail: a one-interval rule misses the curvature of a trained MLP."""
    model, x = _trained("breast-cancer", epochs=3)
    coarse = attribute(model, x[:40], np.zeros(x.shape[1]), steps=1, refine=False)
    fine = attribute(model, x[:40], np.zeros(x.shape[1]))
    assert completeness_gap(coarse).max() > completeness_gap(fine).max()


def test_wrong_width_and_non_finite_rows_are_refused_by_name():
    model, x = _trained("heart-disease", epochs=1)
    with pytest.raises(ValueError, match="15 model inputs"):
        attribute(model, x[:, :3], np.zeros(15))
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        attribute(model, bad, np.zeros(15))
