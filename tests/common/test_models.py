"""Tests for common.models: the default MLPs are unchanged, the CNN is the one documented."""

from dataclasses import replace

import keras
import numpy as np
import pytest

from common.models import build_model
from common.tasks import get_task


def _weights(model: keras.Model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.get_weights())


def test_the_digits_task_keeps_its_mlp():
    # Arrange
    task = get_task("digits")

    # Act
    model = build_model(task, seed=0)

    # Assert: 64 -> 64 -> 64 -> 10, Dense layers only
    assert task.architecture == "mlp"
    assert [type(layer) for layer in model.layers] == [keras.layers.Dense] * 3
    assert [layer.units for layer in model.layers] == [64, 64, 10]
    assert _weights(model) == 8970


def test_digits_cnn_is_two_convolutions_and_a_softmax_over_the_8x8_image():
    # Arrange
    task = get_task("digits-cnn")
    x = np.random.default_rng(0).random((5, 64)).astype(np.float32)

    # Act
    model, again = build_model(task, seed=3), build_model(task, seed=3)

    # Assert
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Reshape", "Conv2D", "Conv2D", "Flatten", "Dense"]
    assert [layer.filters for layer in model.layers[1:3]] == [8, 16]
    assert model.layers[3].output.shape[1:] == (4 * 4 * 16,)
    assert _weights(model) == 3818
    probabilities = np.asarray(model(x))
    assert probabilities.shape == (5, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    for a, b in zip(model.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_digits_cnn_serves_the_same_hospitals_as_digits():
    digits = get_task("digits").load(4, seed=1, partition="dirichlet", alpha=0.5)
    cnn = get_task("digits-cnn").load(4, seed=1, partition="dirichlet", alpha=0.5)

    for a, b in zip(digits, cnn, strict=True):
        assert a.name == b.name
        np.testing.assert_array_equal(a.x_train, b.x_train)
        np.testing.assert_array_equal(a.y_test, b.y_test)


@pytest.mark.parametrize(("changes", "message"), [
    ({"image_shape": (8, 8)}, "image_shape must be"),
    ({"image_shape": (4, 16, 1)}, "image_shape must be"),
    ({"image_shape": (8, 8, 2)}, "product num_features=64"),
    ({"architecture": "rnn"}, "architecture must be 'mlp' or 'cnn'"),
], ids=["rank-2", "too-short", "wrong-product", "unknown"])
def test_a_bad_architecture_is_refused_naming_the_task(changes, message):
    task = replace(get_task("digits-cnn"), name="mine", **changes)

    with pytest.raises(ValueError, match=message) as caught:
        build_model(task, seed=0)
    assert "task 'mine'" in str(caught.value)
