"""Tests for client.ghost_clipping: Conv2D per-example norms and clipped sums without vmap.

The reference computes each record's gradient on its own (one GradientTape per record, the
model called as Keras calls it, float64 NumPy afterwards), so it shares no per-example trick
with the code under test. Noise: chi-square interval at a 1e-6 false-failure rate.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from client.dp_sgd import DpSgdTrainer
from client.ghost_clipping import (
    choose_rule,
    compiled_clipped_sum,
    ghost_clipped_sum,
    ghost_plan,
)
from client.per_example_clipping import make_clipped_sum, per_example_loss_fn
from client.training import get_trainer
from common.models import build_model
from common.tasks import get_task

L = keras.layers
LOSS = "sparse_categorical_crossentropy"


def _digits_cnn(seed: int = 0) -> keras.Sequential:
    return build_model(get_task("digits-cnn"), seed=seed)


def _conv_variants() -> dict[str, keras.Sequential]:
    """Conv2D configurations beyond the digits CNN: padding, strides, dilation, pooling."""
    image = [keras.Input((64,)), L.Reshape((8, 8, 1))]
    return {
        "same-stride2-pool": keras.Sequential([
            *image, L.Conv2D(4, 3, padding="same", strides=2, activation="tanh"),
            L.MaxPooling2D(2, 1), L.Conv2D(6, 2, use_bias=False, activation="relu"),
            L.Flatten(), L.Dense(10, activation="softmax")]),
        "dilated-padded-avgpool": keras.Sequential([
            *image, L.ZeroPadding2D(1), L.Conv2D(5, 3, dilation_rate=2, activation="relu"),
            L.AveragePooling2D(2), L.Flatten(), L.Dense(7, activation="relu"),
            L.Dense(10, activation="softmax")]),
        "dense-on-image-rows": keras.Sequential([
            *image, L.Conv2D(3, 3, activation="relu"), L.Dense(4, activation="relu"),
            L.Flatten(), L.Dense(10, activation="softmax")]),
        # Opacus's MNIST CNN's layer kinds, scaled to 8x8: strided convs, overlapping pools
        "mnist-like": keras.Sequential([
            *image, L.ZeroPadding2D(2), L.Conv2D(4, 4, strides=2, activation="relu"),
            L.MaxPooling2D(2, 1), L.Conv2D(6, 2, strides=2, activation="relu"),
            L.MaxPooling2D(2, 1), L.Flatten(), L.Dense(8, activation="relu"),
            L.Dense(10, activation="softmax")]),
    }


def _scaled(model: keras.Sequential, seed: int) -> keras.Sequential:
    """Random weights of scale 0.5, so gradient norms spread over an order of magnitude."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(scale=0.5, size=w.shape).astype(np.float32)
                       for w in model.get_weights()])
    return model


def _data(rows: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((rows, 64)).astype(np.float32), rng.integers(0, 10, rows).astype(np.float32)


def _per_example_gradients(model, x, y) -> list[list[np.ndarray]]:
    loss_fn = per_example_loss_fn(LOSS)
    grads = []
    for i in range(len(x)):
        with tf.GradientTape() as tape:
            value = tf.reduce_sum(loss_fn(tf.constant(y[i : i + 1]), model(x[i : i + 1])))
        grads.append([g.numpy().astype(np.float64)
                      for g in tape.gradient(value, model.trainable_variables)])
    return grads


def _norms(grads) -> np.ndarray:
    return np.array([math.sqrt(sum(float(np.sum(g**2)) for g in record)) for record in grads])


def _trainer(model, *, clip=1.0, z=0.0, lr=0.1, method="ghost_norms"):
    return DpSgdTrainer(model, loss=LOSS, optimizer=keras.optimizers.SGD(lr), l2_norm_clip=clip,
                        noise_multiplier=z, method=method)


MODELS = {"digits-cnn": _digits_cnn, **{name: (lambda n=name: _conv_variants()[n])
                                        for name in _conv_variants()}}


CASES = [("digits-cnn", None), ("digits-cnn", "gram"), ("digits-cnn", "per_example"),
         *((name, rule) for name in _conv_variants() for rule in (None, "gram"))]


@pytest.mark.parametrize(("name", "rule"), CASES, ids=[f"{n}-{r or 'chosen'}" for n, r in CASES])
def test_conv_norms_and_clipped_sum_equal_explicit_per_example_gradients(name, rule):
    # Arrange: clip at the median norm so that some records are clipped and some are not
    model = _scaled(MODELS[name](), seed=3)
    x, y = _data(rows=20)
    grads = _per_example_gradients(model, x, y)
    norms = _norms(grads)
    clip = float(np.median(norms))
    factors = np.minimum(1.0, clip / norms)
    plan = ghost_plan(model, list(model.trainable_variables), rule=rule)
    assert plan is not None
    run = tf.function(lambda x_, y_, c_: ghost_clipped_sum(plan, per_example_loss_fn(LOSS),
                                                           x_, y_, c_), autograph=False)

    # Act
    total, measured = run(tf.constant(x), tf.constant(y), tf.constant(clip))

    # Assert
    assert 0 < np.sum(factors < 1) < len(factors)
    np.testing.assert_allclose(measured.numpy(), norms, rtol=1e-5)
    for j, summed in enumerate(total):
        want = sum(f * record[j] for f, record in zip(factors, grads, strict=True))
        np.testing.assert_allclose(summed.numpy(), want, rtol=1e-5, atol=1e-6 * clip)


COMPILED = ["digits-cnn", "same-stride2-pool", "mnist-like"]


@pytest.mark.parametrize("name", COMPILED)
def test_compiled_chunks_equal_explicit_per_example_gradients(name):
    # Arrange: 19 records in chunks of 8 (the last padded with 5 absent rows), XLA-compiled
    model = _scaled(MODELS[name](), seed=3)
    x, y = _data(rows=19, seed=8)
    grads = _per_example_gradients(model, x, y)
    norms = _norms(grads)
    clip = float(np.median(norms))
    factors = np.minimum(1.0, clip / norms)
    plan = ghost_plan(model, list(model.trainable_variables), compiled=True)
    assert plan is not None and plan.compiled
    if name == "mnist-like":  # both stride-2 convolutions take space-to-depth patches
        assert [s.order is not None for s in plan.weighted] == [True, True, False, False]
    run = tf.function(compiled_clipped_sum(plan, per_example_loss_fn(LOSS), chunk=8),
                      autograph=False)

    # Act
    total, measured = run(tf.constant(x), tf.constant(y), tf.constant(clip))
    empty, no_norms = run(tf.zeros((0, 64)), tf.zeros(0), tf.constant(clip))

    # Assert
    assert 0 < np.sum(factors < 1) < len(factors)
    np.testing.assert_allclose(measured.numpy(), norms, rtol=1e-5)
    for j, summed in enumerate(total):
        want = sum(f * record[j] for f, record in zip(factors, grads, strict=True))
        np.testing.assert_allclose(summed.numpy(), want, rtol=1e-5, atol=1e-6 * clip)
    assert no_norms.shape == (0,) and all(not np.any(t.numpy()) for t in empty)


def test_compiled_clipped_per_example_gradients_have_norm_at_most_c():
    # Arrange: the MNIST-like CNN through the trainer, compiled, clip below every norm
    model = _scaled(MODELS["mnist-like"](), seed=5)
    x, y = _data(rows=6, seed=2)
    clip = 0.25 * float(np.min(_norms(_per_example_gradients(model, x, y))))
    trainer = DpSgdTrainer(model, loss=LOSS, optimizer=keras.optimizers.SGD(0.1),
                           l2_norm_clip=clip, noise_multiplier=0.0, jit_compile=True)

    # Act: a batch of one record is that record's clipped gradient (15 padded rows beside it)
    clipped = [trainer.clipped_gradient_sum(x[i : i + 1], y[i : i + 1]) for i in range(len(x))]

    # Assert: and one trace for every batch size
    for record in clipped:
        norm = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in record))
        assert clip * (1 - 1e-5) <= norm <= clip * (1 + 1e-6)
    trainer.clipped_gradient_sum(x, y)
    assert trainer.trace_count == 1


def test_sliced_max_pool_equals_keras_max_pool_and_its_gradient_with_ties():
    # Arrange: small integers, so windows hold tied maxima; 2x2 pools with strides 1 and 2
    from client.ghost_clipping import _max_pool

    a = tf.constant(np.random.default_rng(4).integers(0, 3, (3, 7, 7, 2)).astype(np.float32))
    weights = tf.constant(np.random.default_rng(5).normal(size=(3, 6, 6, 2)), tf.float32)
    for layer in (L.MaxPooling2D(2, 1), L.MaxPooling2D(2, 2), L.MaxPooling2D((3, 2), (2, 1))):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(a)
            want, got = layer(a), _max_pool(layer, a)
            want_loss = tf.reduce_sum(want * weights[:, : want.shape[1], : want.shape[2]])
            got_loss = tf.reduce_sum(got * weights[:, : got.shape[1], : got.shape[2]])

        # Act
        want_grad, got_grad = tape.gradient(want_loss, a), tape.gradient(got_loss, a)

        # Assert: the same values, and each window's gradient on one of its maxima
        np.testing.assert_array_equal(got.numpy(), want.numpy())
        np.testing.assert_allclose(got_grad.numpy(), want_grad.numpy(), rtol=1e-6)


def test_plans_of_large_models_are_compiled_and_small_ones_not():
    # Arrange: 28x28 CNN of Opacus's MNIST example (~4.2e5 multiply-adds a record)
    mnist = keras.Sequential([
        keras.Input((784,)), L.Reshape((28, 28, 1)), L.ZeroPadding2D(3),
        L.Conv2D(16, 8, strides=2, activation="relu"), L.MaxPooling2D(2, 1),
        L.Conv2D(32, 4, strides=2, activation="relu"), L.MaxPooling2D(2, 1), L.Flatten(),
        L.Dense(32, activation="relu"), L.Dense(10, activation="softmax")])

    # Act
    digits = _digits_cnn()
    large = ghost_plan(mnist, list(mnist.trainable_variables))
    small = ghost_plan(digits, list(digits.trainable_variables))

    # Assert: and the per-layer rules the docstring states
    assert large is not None and large.compiled
    assert [s.rule for s in large.weighted] == ["per_example", "per_example", "gram", "gram"]
    assert small is not None and not small.compiled


@pytest.mark.parametrize("name", list(MODELS))
def test_every_clipped_per_example_gradient_has_norm_at_most_c(name):
    # Arrange: a clip well below most norms
    model = _scaled(MODELS[name](), seed=5)
    x, y = _data(rows=16, seed=2)
    clip = 0.25 * float(np.min(_norms(_per_example_gradients(model, x, y))))
    trainer = _trainer(model, clip=clip)

    # Act: a batch of one record is that record's clipped gradient
    clipped = [trainer.clipped_gradient_sum(x[i : i + 1], y[i : i + 1]) for i in range(len(x))]

    # Assert
    for record in clipped:
        norm = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in record))
        assert clip * (1 - 1e-5) <= norm <= clip * (1 + 1e-6)
    assert trainer.trace_count == 1


@pytest.mark.parametrize("path", ["ghost_norms", "vectorized_map"])
def test_empty_batch_gives_zero_sums(path):
    # Arrange: a Poisson batch may be empty (on zero rows a convolution's gradient fails under
    # oneDNN on some CPUs, and vectorized_map cannot stack it: the batch must not reach them)
    model = _digits_cnn()
    variables = list(model.trainable_variables)
    plan = ghost_plan(model, variables) if path == "ghost_norms" else None
    assert plan is not None or path == "vectorized_map"
    clipped = make_clipped_sum(model, per_example_loss_fn(LOSS), variables, plan)
    run = tf.function(lambda x_, y_: clipped(x_, y_, tf.constant(1.0)), autograph=False)

    # Act
    total, norms = run(tf.zeros((0, 64)), tf.zeros(0))
    some, _ = run(tf.ones((2, 64)), tf.zeros(2))  # the same function, two records

    # Assert
    assert norms.shape == (0,)
    assert [t.shape for t in total] == [tuple(v.shape) for v in variables]
    assert all(not np.any(t.numpy()) for t in total)
    assert any(np.any(t.numpy()) for t in some)


def test_the_digits_cnn_takes_the_per_layer_rules_its_shapes_call_for():
    # Arrange
    model = _digits_cnn()

    # Act
    plan = ghost_plan(model, list(model.trainable_variables))

    # Assert: (T, d, p) per layer and the documented choice
    assert plan is not None
    shapes = [(s.positions, s.depth, s.width, s.rule) for s in plan.weighted]
    assert shapes == [(36, 9, 8, "per_example"), (16, 72, 16, "per_example"),
                      (1, 256, 10, "gram")]
    assert _trainer(model, method="auto").method == "ghost_norms"


@pytest.mark.parametrize(("positions", "depth", "width", "rule"), [
    (1, 3, 1, "gram"), (36, 9, 8, "per_example"), (9, 1152, 128, "gram"),
    (25, 256, 32, "per_example"), (4, 2048, 64, "gram")])
def test_choose_rule_prefers_gram_only_where_its_cost_is_below_half(positions, depth, width,
                                                                    rule):
    assert choose_rule(positions, depth, width) == rule


def test_models_the_fast_path_does_not_cover_fall_back_to_vectorized_map():
    # Arrange: Dropout draws randomness; BatchNormalization and a batch-centring activation
    # couple records; a layer used twice has one gradient from both uses
    dropout = keras.Sequential([keras.Input((64,)), L.Reshape((8, 8, 1)), L.Conv2D(2, 3),
                                L.Dropout(0.1), L.Flatten(), L.Dense(10, activation="softmax")])
    batch_norm = keras.Sequential([keras.Input((64,)), L.Reshape((8, 8, 1)), L.Conv2D(2, 3),
                                   L.BatchNormalization(), L.Flatten(),
                                   L.Dense(10, activation="softmax")])
    shared = L.Dense(64, activation="relu")
    tied = keras.Sequential([keras.Input((64,)), shared, shared,
                             L.Dense(10, activation="softmax")])

    def centred(t):  # an activation of one's own that looks at the other records
        return t - tf.reduce_mean(t, axis=0)

    mixing_conv = keras.Sequential([keras.Input((64,)), L.Reshape((8, 8, 1)),
                                    L.Conv2D(2, 3, activation=centred), L.Flatten(),
                                    L.Dense(10, activation="softmax")])
    mixing_dense = keras.Sequential([keras.Input((64,)), L.Dense(8, activation=centred),
                                     L.Dense(10, activation="softmax")])

    # Act / Assert
    for model in (dropout, batch_norm, tied, mixing_conv, mixing_dense):
        assert ghost_plan(model, list(model.trainable_variables)) is None
        assert _trainer(model, method="auto").method == "vectorized_map"
        with pytest.raises(ValueError, match="ghost_norms"):
            _trainer(model, method="ghost_norms")


def test_cnn_noise_has_stddev_z_times_clip_per_step():
    # Arrange: empty batches leave only noise; 3 SGD steps with lr 1 add 3 independent draws
    model = _digits_cnn()
    before = np.concatenate([w.ravel() for w in model.get_weights()]).astype(np.float64)
    z, clip, rows, rate, steps = 1.5, 0.5, 40, 0.25, 3
    trainer = _trainer(model, clip=clip, z=z, lr=1.0)
    x, y = _data(rows)

    # Act
    empty = np.zeros((steps, rows), bool)
    trainer.run_steps(x, y, masks=empty, sample_rate=rate, rng=np.random.default_rng(9))

    # Assert: the change is -(sum of 3 draws of N(0, (zC)^2)) / (q n) per coordinate
    after = np.concatenate([w.ravel() for w in model.get_weights()]).astype(np.float64)
    scaled = (after - before) * rate * rows / math.sqrt(steps)
    low, high = stats.chi2.ppf([5e-7, 1 - 5e-7], df=scaled.size)
    assert low <= np.sum(scaled**2) / (z * clip) ** 2 <= high


def test_noiseless_cnn_steps_equal_the_sequential_reference():
    # Arrange
    lr, clip, rate, rows = 0.3, 0.4, 0.5, 16
    model, reference = _scaled(_digits_cnn(), seed=2), _scaled(_digits_cnn(), seed=2)
    x, y = _data(rows, seed=4)
    masks = np.random.default_rng(6).random((3, rows)) < rate
    trainer = _trainer(model, clip=clip, lr=lr)

    # Act
    trainer.run_steps(x, y, masks=masks, sample_rate=rate, rng=np.random.default_rng(0))

    # Assert: w <- w - lr * sum(clipped per-example gradients) / (q n), step after step
    for mask in masks:
        grads = _per_example_gradients(reference, x[mask], y[mask])
        factors = np.minimum(1.0, clip / _norms(grads))
        weights = reference.get_weights()
        for j in range(len(weights)):
            step = sum(f * record[j] for f, record in zip(factors, grads, strict=True))
            weights[j] = (weights[j] - lr * step / (rate * rows)).astype(np.float32)
        reference.set_weights(weights)
    for got, want in zip(model.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_the_digits_cnn_trains_under_dp_sgd_in_the_hospital_trainer():
    # Arrange: one digits hospital, the ClientApp's own trainer (op determinism on)
    task = get_task("digits-cnn")
    hospital = task.load(3, seed=0)[0]
    trainer = get_trainer(task)
    start = build_model(task, seed=0).get_weights()
    loss_fn = per_example_loss_fn(LOSS)

    def loss(weights):
        probabilities = trainer.predict(weights, hospital.x_train)
        return float(np.mean(loss_fn(hospital.y_train, probabilities)))

    # Act
    weights, event = trainer.fit_dp_sgd(
        start, hospital.x_train, hospital.y_train, steps=150, batch_size=32,
        learning_rate=0.5, clipping_norm=1.0, noise_multiplier=0.8,
        rng=np.random.default_rng(0))

    # Assert
    assert trainer.dp_sgd.method == "ghost_norms"
    assert (event.noise_multiplier, event.steps, event.level) == (0.8, 150, "patient")
    assert event.sample_rate == 32 / hospital.num_train
    assert all(np.isfinite(w).all() for w in weights)
    assert math.isfinite(loss(weights)) and loss(weights) < 0.8 * loss(start)


def test_a_regression_model_with_rescaling_takes_the_fast_path_with_exact_norms():
    # Arrange: diabetes's model ends in a weightless Rescaling (no Dense chain); MSE loss
    model = build_model(get_task("diabetes"), seed=0)
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(12, 10)).astype(np.float32), rng.normal(150, 60, 12).astype(np.float32)
    loss_fn = per_example_loss_fn("mse")
    reference = []
    for i in range(len(x)):
        with tf.GradientTape() as tape:
            value = tf.reduce_sum(loss_fn(tf.constant(y[i : i + 1]), model(x[i : i + 1])))
        reference.append([g.numpy().astype(np.float64)
                          for g in tape.gradient(value, model.trainable_variables)])
    trainer = DpSgdTrainer(model, loss="mse", optimizer=keras.optimizers.SGD(0.1),
                           l2_norm_clip=1.0, noise_multiplier=0.0)

    # Act
    norms = trainer.per_example_norms(x, y)

    # Assert
    assert trainer.method == "ghost_norms"
    np.testing.assert_allclose(norms, _norms(reference), rtol=1e-5)
