"""Tests for client.dp_sgd: per-example clipping against a Python loop, the DP-SGD step, noise.

The reference computes each record's gradient separately (one GradientTape per record, in
float64 NumPy afterwards), so it shares no per-example trick with the code under test.
Statistical tolerance of the noise test: chi-square interval at a 1e-6 false-failure rate.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from client import dp_sgd
from client.dp_sgd import DpSgdTrainer, make_plain_epoch_fn
from client.per_example_clipping import per_example_loss_fn

METHODS = ["dense_norms", "ghost_norms", "vectorized_map"]  # ghost_norms covers Dense chains too
TASKS = {
    # name: (layer widths and activations, loss, input width, label maker)
    "mlp-softmax": ([(6, "relu"), (3, "softmax")], "sparse_categorical_crossentropy", 8,
                    lambda rng, n: rng.integers(0, 3, n)),
    "logistic": ([(1, "sigmoid")], "binary_crossentropy", 13,
                 lambda rng, n: rng.integers(0, 2, n)),
    "regression": ([(4, "tanh"), (1, None)], "mse", 5, lambda rng, n: rng.normal(size=n)),
}


def _model(task: str, seed: int = 0) -> keras.Sequential:
    layers, _, width, _ = TASKS[task]
    dense = [keras.layers.Dense(units, activation=act) for units, act in layers]
    model = keras.Sequential([keras.Input((width,)), *dense])
    rng = np.random.default_rng(seed)
    model.set_weights(
        [rng.normal(scale=0.8, size=w.shape).astype(np.float32) for w in model.get_weights()]
    )
    return model


def _data(task: str, rows: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    _, _, width, labels = TASKS[task]
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, width)).astype(np.float32), labels(rng, rows).astype(np.float32)


def _per_example_gradients(model, loss, x, y) -> list[list[np.ndarray]]:
    loss_fn = per_example_loss_fn(loss)
    grads = []
    for i in range(len(x)):
        with tf.GradientTape() as tape:
            value = tf.reduce_sum(loss_fn(tf.constant(y[i : i + 1]), model(x[i : i + 1])))
        gradient = tape.gradient(value, model.trainable_variables)
        grads.append([g.numpy().astype(np.float64) for g in gradient])
    return grads


def _clipped_reference(grads, clip):
    norms = np.array([math.sqrt(sum(float(np.sum(g**2)) for g in record)) for record in grads])
    factors = np.minimum(1.0, clip / np.maximum(norms, 1e-30))
    clipped = [[f * g for g in record] for f, record in zip(factors, grads, strict=True)]
    return norms, clipped


def _trainer(model, loss, method, *, clip=1.0, z=0.0, lr=0.1):
    return DpSgdTrainer(model, loss=loss, optimizer=keras.optimizers.SGD(lr), l2_norm_clip=clip,
                        noise_multiplier=z, method=method)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("task", list(TASKS))
def test_dp_sgd_clipped_per_example_gradients_equal_python_loop(task, method):
    # Arrange: clip at the median norm so that some records are clipped and some are not
    model, loss = _model(task), TASKS[task][1]
    x, y = _data(task, rows=24)
    grads = _per_example_gradients(model, loss, x, y)
    norms, _ = _clipped_reference(grads, 1.0)
    clip = float(np.median(norms))
    _, clipped = _clipped_reference(grads, clip)
    trainer = _trainer(model, loss, method, clip=clip)

    # Act
    measured_norms = trainer.per_example_norms(x, y)
    total = trainer.clipped_gradient_sum(x, y)
    singles = [trainer.clipped_gradient_sum(x[i : i + 1], y[i : i + 1]) for i in (0, 1, 2)]

    # Assert
    assert trainer.method == method
    np.testing.assert_allclose(measured_norms, norms, rtol=1e-5, atol=1e-6)
    for j, summed in enumerate(total):
        np.testing.assert_allclose(summed, sum(record[j] for record in clipped), atol=1e-5)
    for i, single in enumerate(singles):
        for j, gradient in enumerate(single):
            np.testing.assert_allclose(gradient, clipped[i][j], atol=1e-5)
    assert trainer.trace_count == 1


@pytest.mark.parametrize("method", METHODS)
def test_dp_sgd_noiseless_steps_equal_sequential_reference(method):
    # Arrange
    task, lr, clip, rate = "mlp-softmax", 0.5, 0.7, 0.5
    model, reference = _model(task), _model(task)
    x, y = _data(task, rows=20)
    masks = np.random.default_rng(2).random((3, 20)) < rate
    trainer = _trainer(model, TASKS[task][1], method, clip=clip, lr=lr)

    # Act
    trainer.run_steps(x, y, masks=masks, sample_rate=rate, rng=np.random.default_rng(0))

    # Assert: w <- w - lr * sum(clipped per-example gradients) / (q n), step after step
    for mask in masks:
        grads = _per_example_gradients(reference, TASKS[task][1], x[mask], y[mask])
        _, clipped = _clipped_reference(grads, clip)
        weights = reference.get_weights()
        for j in range(len(weights)):
            weights[j] = weights[j] - lr * sum(record[j] for record in clipped) / (rate * 20)
        reference.set_weights([w.astype(np.float32) for w in weights])
    for got, want in zip(model.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("chunk_floats", [1 << 22, 1], ids=["one-chunk", "chunk-per-step"])
@pytest.mark.parametrize("method", METHODS)
def test_dp_sgd_noise_has_stddev_z_times_clip_per_step(method, chunk_floats, monkeypatch):
    # Arrange: empty batches leave only noise; 4 SGD steps with lr 1 add 4 independent draws
    monkeypatch.setattr(dp_sgd, "_NOISE_CHUNK_FLOATS", chunk_floats)
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(64), keras.layers.Dense(64), keras.layers.Dense(1)]
    )
    before = np.concatenate([w.ravel() for w in model.get_weights()])
    z, clip, rows, rate, steps = 2.0, 0.5, 50, 0.2, 4
    trainer = _trainer(model, "mse", method, clip=clip, z=z, lr=1.0)
    x, y = np.zeros((rows, 64), np.float32), np.zeros(rows, np.float32)

    # Act
    empty = np.zeros((steps, rows), bool)
    trainer.run_steps(x, y, masks=empty, sample_rate=rate, rng=np.random.default_rng(4))

    # Assert: total change = -(sum of 4 draws) / (q n), so its stddev is 2 z C / (q n)
    change = np.concatenate([w.ravel() for w in model.get_weights()]) - before
    scaled = change * rate * rows / math.sqrt(steps)
    low, high = stats.chi2.ppf([5e-7, 1 - 5e-7], df=scaled.size)
    assert low <= np.sum(scaled.astype(np.float64) ** 2) / (z * clip) ** 2 <= high


def test_dp_sgd_train_returns_the_event_applied_and_reproduces_under_a_seed():
    # Arrange
    x, y = _data("logistic", rows=50)
    models = [_model("logistic") for _ in range(3)]
    trainers = [_trainer(m, "binary_crossentropy", "auto", clip=1.0, z=1.1) for m in models]

    # Act
    events = [t.train(x, y, batch_size=16, rng=np.random.default_rng(seed), epochs=2)
              for t, seed in zip(trainers, (7, 7, 8), strict=True)]

    # Assert
    assert events[0].level == "patient" and events[0].noise_multiplier == 1.1
    assert events[0].sample_rate == 16 / 50 and events[0].steps == 2 * math.ceil(50 / 16)
    for a, b in zip(models[0].get_weights(), models[1].get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(models[0].get_weights()[0], models[2].get_weights()[0])


def test_dp_sgd_does_not_retrace_for_other_dataset_sizes():
    # Arrange
    trainer = _trainer(_model("mlp-softmax"), "sparse_categorical_crossentropy", "auto", z=1.0)
    rng = np.random.default_rng(0)

    # Act
    for rows in (30, 17, 101, 5):
        trainer.train(*_data("mlp-softmax", rows=rows), batch_size=8, rng=rng)

    # Assert
    assert trainer.trace_count == 1


def test_dp_sgd_picks_the_dense_shortcut_only_for_dense_chains():
    # Arrange
    dense = _model("logistic")
    other = keras.Sequential([keras.Input((13,)), keras.layers.Dense(4), keras.layers.Dropout(0.1),
                              keras.layers.Dense(1, activation="sigmoid")])

    shared = keras.layers.Dense(13, activation="relu")
    tied = keras.Sequential([keras.Input((13,)), shared, shared,
                             keras.layers.Dense(1, activation="sigmoid")])

    # Act / Assert
    assert _trainer(dense, "binary_crossentropy", "auto").method == "dense_norms"
    assert _trainer(other, "binary_crossentropy", "auto").method == "vectorized_map"
    assert _trainer(tied, "binary_crossentropy", "auto").method == "vectorized_map"
    with pytest.raises(ValueError, match="dense_norms"):
        _trainer(other, "binary_crossentropy", "dense_norms")
    with pytest.raises(ValueError, match="dense_norms"):
        _trainer(tied, "binary_crossentropy", "dense_norms")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"l2_norm_clip": 0.0}, "l2_norm_clip must be > 0"),
        ({"l2_norm_clip": -1.0}, "l2_norm_clip must be > 0"),
        ({"noise_multiplier": -0.5}, "noise_multiplier must be >= 0"),
        ({"loss": "hinge"}, "loss must be"),
    ],
    ids=["zero-clip", "negative-clip", "negative-z", "loss"],
)
def test_dp_sgd_rejects_bad_parameters(kwargs, message):
    # Arrange
    arguments = {"loss": "binary_crossentropy", "optimizer": keras.optimizers.SGD(0.1),
                 "l2_norm_clip": 1.0, "noise_multiplier": 1.0, **kwargs}

    # Act / Assert
    with pytest.raises(ValueError, match=message):
        DpSgdTrainer(_model("logistic"), **arguments)


def test_dp_sgd_train_rejects_bad_batch_and_labels():
    # Arrange
    trainer = _trainer(_model("logistic"), "binary_crossentropy", "auto")
    x, y = _data("logistic", rows=10)

    # Act / Assert
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        trainer.train(x, y, batch_size=0, rng=np.random.default_rng())
    with pytest.raises(ValueError, match="y must have shape"):
        trainer.train(x, y[:5], batch_size=4, rng=np.random.default_rng())


def test_plain_epoch_fn_lowers_the_loss():
    # Arrange
    model = _model("logistic")
    x, y = _data("logistic", rows=200)
    y = (x[:, 0] > 0).astype(np.float32)
    epoch = make_plain_epoch_fn(model, "binary_crossentropy", keras.optimizers.SGD(0.5))
    loss_fn = per_example_loss_fn("binary_crossentropy")
    before = float(tf.reduce_mean(loss_fn(y, model(x))))

    # Act
    for _ in range(5):
        epoch(x, y, batch_size=32, rng=np.random.default_rng(0))

    # Assert
    assert float(tf.reduce_mean(loss_fn(y, model(x)))) < before / 2


def _noise_only_setup(method, z, clip, rows=50):
    model = keras.Sequential(
        [keras.Input((32,)), keras.layers.Dense(32), keras.layers.Dense(1)]
    )
    trainer = _trainer(model, "mse", method, clip=clip, z=z, lr=1.0)
    x, y = np.zeros((rows, 32), np.float32), np.zeros(rows, np.float32)
    return model, trainer, x, y


def _weights(model):
    return np.concatenate([w.ravel() for w in model.get_weights()]).astype(np.float64)


@pytest.mark.parametrize("method", METHODS)
def test_dp_sgd_compiled_at_z0_then_run_at_z_adds_noise_of_the_right_spread(method):
    # Arrange: compile and run at z = 0 first (empty batches, no noise: nothing moves)
    clip, rows, rate, steps = 0.5, 50, 0.2, 3
    model, trainer, x, y = _noise_only_setup(method, 0.0, clip, rows)
    empty = np.zeros((steps, rows), bool)
    before = _weights(model)
    trainer.run_steps(x, y, masks=empty, sample_rate=rate, rng=np.random.default_rng(0))
    assert np.array_equal(_weights(model), before) and trainer.trace_count == 1

    # Act: same compiled graph, now at z = 5
    z = 5.0
    trainer.set_privacy(l2_norm_clip=clip, noise_multiplier=z)
    trainer.run_steps(x, y, masks=empty, sample_rate=rate, rng=np.random.default_rng(1))

    # Assert: the change is -(sum of 3 draws of N(0, (zC)^2)) / (q n) per coordinate;
    # chi-square interval at a 1e-6 false-failure rate
    scaled = (_weights(model) - before) * rate * rows / math.sqrt(steps)
    low, high = stats.chi2.ppf([5e-7, 1 - 5e-7], df=scaled.size)
    assert low <= np.sum(scaled**2) / (z * clip) ** 2 <= high
    assert trainer.trace_count == 1


def test_dp_sgd_returns_the_event_it_applied_with_a_secure_generator():
    # Arrange: zero features and labels give zero gradients, so only noise moves the weights
    from common.dp.secure_random import SecureRandom

    clip, rows, batch = 0.5, 40, 8
    model, trainer, x, y = _noise_only_setup("auto", 0.0, clip, rows)
    trainer.train(x, y, batch_size=batch, rng=SecureRandom(), steps=1)  # compiled at z = 0
    trainer.set_privacy(l2_norm_clip=clip, noise_multiplier=3.0)
    before = _weights(model)

    # Act
    event = trainer.train(x, y, batch_size=batch, rng=SecureRandom(), steps=4)

    # Assert: the event is what was applied -- its z explains the measured spread
    assert (event.noise_multiplier, event.sample_rate, event.steps) == (3.0, batch / rows, 4)
    scaled = (_weights(model) - before) * event.sample_rate * rows / math.sqrt(event.steps)
    low, high = stats.chi2.ppf([5e-7, 1 - 5e-7], df=scaled.size)
    assert low <= np.sum(scaled**2) / (event.noise_multiplier * clip) ** 2 <= high


def test_dp_sgd_secure_generator_with_explicit_key_reproduces():
    from common.dp.secure_random import SecureRandom

    x, y = _data("logistic", rows=30)
    models = [_model("logistic") for _ in range(3)]
    trainers = [_trainer(m, "binary_crossentropy", "auto", z=1.0) for m in models]

    for trainer, key in zip(trainers, (b"k" * 32, b"k" * 32, None), strict=True):
        trainer.train(x, y, batch_size=8, rng=SecureRandom(key), epochs=1)

    np.testing.assert_array_equal(models[0].get_weights()[0], models[1].get_weights()[0])
    assert not np.array_equal(models[0].get_weights()[0], models[2].get_weights()[0])


def test_dp_sgd_rejects_the_legacy_global_random_state():
    trainer = _trainer(_model("logistic"), "binary_crossentropy", "auto")
    with pytest.raises(TypeError, match="numpy.random.Generator or a SecureRandom"):
        trainer.train(*_data("logistic", rows=10), batch_size=4, rng=np.random)
