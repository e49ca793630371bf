"""Sum of per-example gradients, each clipped to L2 norm C: the sensitivity bound of DP-SGD.

Mechanism: record i's gradient g_i over all trainable variables is scaled by min(1, C/||g_i||)
before summing (Abadi et al. CCS 2016, Algorithm 1), so one record moves the sum by <= C.
Nothing here is released; the noise is added by ``client.dp_sgd``. For Dense chains the norms
come from ||a_i||, ||dL_i/dz_i|| without materialising g_i (Goodfellow 2015, arXiv:1510.01799;
"ghost clipping", Li et al. ICLR 2022, Section 4); Sequential models with Conv2D layers take
``client.ghost_clipping`` (per-layer Gram or per-example rule); anything else takes
``tf.vectorized_map``. Unit of privacy: one patient's record.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Real
from typing import Any, Literal

import keras
import numpy as np
import tensorflow as tf

from client.ghost_clipping import (
    GhostPlan,
    compiled_clipped_sum,
    ghost_clipped_sum,
    per_record_activation,
)

__all__ = [
    "DenseLink",
    "LossName",
    "dense_chain",
    "is_finite_number",
    "make_clipped_sum",
    "per_example_loss_fn",
    "validate_records",
]

LossName = Literal["binary_crossentropy", "sparse_categorical_crossentropy", "mse"]
LossFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
ClippedSum = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tuple[list[tf.Tensor], tf.Tensor]]


def per_example_loss_fn(loss: LossName) -> LossFn:
    """Return ``f(y, predictions) -> loss per example``, shape (rows,), for a loss name.

    ``y`` has shape (rows,): 0/1 labels, class indices (as floats) or regression targets;
    predictions are the model's outputs (probabilities for the two cross-entropies).
    """
    if loss == "binary_crossentropy":
        return lambda y, p: keras.losses.binary_crossentropy(tf.reshape(y, tf.shape(p)), p)
    if loss == "mse":
        return lambda y, p: keras.losses.mean_squared_error(tf.reshape(y, tf.shape(p)), p)
    if loss == "sparse_categorical_crossentropy":
        return lambda y, p: keras.losses.sparse_categorical_crossentropy(tf.cast(y, tf.int32), p)
    raise ValueError(
        "loss must be 'binary_crossentropy', 'sparse_categorical_crossentropy' or 'mse', "
        f"got {loss!r}"
    )


def is_finite_number(value: object) -> bool:
    """Return True for a finite int or float (bool excluded)."""
    return not isinstance(value, bool) and isinstance(value, Real) and math.isfinite(value)


def validate_records(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (x, y) as float32 arrays of shapes (rows >= 1, features...) and (rows,).

    Raises
    ------
    ValueError
        If the shapes disagree or a value is NaN or infinite (its gradient could not be
        bounded, and a non-finite update must never leave the hospital).
    """
    features, labels = np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.float32)
    if features.ndim < 2 or features.shape[0] < 1:
        raise ValueError(f"x must have shape (rows >= 1, features...), got {features.shape}")
    if labels.shape != (features.shape[0],):
        raise ValueError(f"y must have shape ({features.shape[0]},), got {labels.shape}")
    if not (np.isfinite(features).all() and np.isfinite(labels).all()):
        raise ValueError("x and y must be finite (no NaN or infinity)")
    return features, labels


@dataclass(frozen=True, slots=True)
class DenseLink:
    """One Dense layer of a chain and the positions of its kernel and bias in the variables."""

    layer: Any
    kernel: int
    bias: int | None


def dense_chain(model: keras.Model, variables: list[Any]) -> list[DenseLink] | None:
    """Return the model's Dense layers in order if the norm shortcut applies, else None.

    It applies to a ``keras.Sequential`` with rank-2 input made only of plain Dense layers
    (no LoRA, no quantisation, Keras's own activations), each used once, whose kernels and
    biases are exactly ``variables``.
    """
    if not isinstance(model, keras.Sequential):
        return None
    try:  # the norm identity needs one feature vector per record: inputs of rank 2
        if len(model.inputs[0].shape) != 2:
            return None
    except (AttributeError, IndexError, ValueError):
        return None
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if not layers or not all(type(layer) is keras.layers.Dense for layer in layers):
        return None
    index = {id(v): i for i, v in enumerate(variables)}
    chain: list[DenseLink] = []
    seen: set[int] = set()
    for layer in layers:
        if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
            return None
        if not per_record_activation(layer):  # a callable of one's own could mix records
            return None
        kernel = index.get(id(layer.kernel))
        bias = index.get(id(layer.bias)) if layer.bias is not None else None
        if kernel is None or (layer.bias is not None and bias is None) or kernel in seen:
            return None  # a layer used twice has one gradient from both uses: not a chain
        chain.append(DenseLink(layer, kernel, bias))
        seen.update(i for i in (kernel, bias) if i is not None)
    return chain if len(seen) == len(variables) else None


def make_clipped_sum(
    model: keras.Model, loss_fn: LossFn, variables: list[Any],
    path: list[DenseLink] | GhostPlan | None,
) -> ClippedSum:
    """Return ``f(x, y, clip) -> (clipped sums, norms)`` for use inside a ``tf.function``.

    ``sums[j]`` has the shape of ``variables[j]`` and is ``sum_i min(1, clip / n_i) g_ij``;
    ``norms`` has shape (rows,) and holds n_i = ||g_i||, the unclipped per-example norms over
    all variables together. ``path``: a Dense chain (``dense_chain``) takes the Dense
    shortcut, a ``GhostPlan`` (``client.ghost_clipping.ghost_plan``) the per-layer norms,
    None ``tf.vectorized_map``. An empty batch gives zero sums and no norms, without running
    the model (a Poisson batch may be empty; on zero rows ``tf.vectorized_map`` of a
    convolution fails to stack, and TensorFlow's oneDNN kernels mis-shape a convolution's
    gradient, as seen on AMD EPYC CPUs).
    """
    if isinstance(path, GhostPlan) and path.compiled:
        return compiled_clipped_sum(path, loss_fn)  # fixed-size chunks: never zero rows
    shapes = [list(v.shape) for v in variables]
    return _zeros_when_empty(_clipped_sum_of_rows(model, loss_fn, variables, path), shapes)


def _clipped_sum_of_rows(model: keras.Model, loss_fn: LossFn, variables: list[Any],
                         path: list[DenseLink] | GhostPlan | None) -> ClippedSum:
    """``make_clipped_sum``'s function for batches of at least one row."""
    if isinstance(path, GhostPlan):
        plan = path
        return lambda x, y, clip: ghost_clipped_sum(plan, loss_fn, x, y, clip)
    if path is not None:
        chain = path
        return lambda x, y, clip: _dense_clipped_sum(chain, loss_fn, len(variables), x, y, clip)
    return lambda x, y, clip: _vectorized_clipped_sum(model, loss_fn, variables, x, y, clip)


def _zeros_when_empty(clipped_sum: ClippedSum, shapes: list[list[int]]) -> ClippedSum:
    """``clipped_sum`` for a batch of >= 1 rows; zero sums and no norms for an empty one."""
    def guarded(x: Any, y: Any, clip: Any) -> tuple[list[Any], Any]:
        def nothing() -> tuple[list[Any], Any]:
            return [tf.zeros(shape, x.dtype) for shape in shapes], tf.zeros([0], x.dtype)

        result = tf.cond(tf.shape(x)[0] > 0, lambda: clipped_sum(x, y, clip), nothing)
        return list(result[0]), result[1]

    return guarded


def _dense_clipped_sum(chain: list[DenseLink], loss_fn: LossFn, num_variables: int, x: Any,
                       y: Any, clip: Any) -> tuple[list[Any], Any]:
    # For a Dense layer z = a W + b, record i's gradient is outer(a_i, g_i) for W and g_i for
    # b, with g_i = dL_i/dz_i; its squared norm is (||a_i||^2 + 1) ||g_i||^2. One backward pass
    # to the pre-activations gives every g_i, and A^T diag(c) G is the clipped sum for W.
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        inputs, pre_activations = [], []
        a = x
        for link in chain:
            inputs.append(a)
            z = tf.matmul(a, link.layer.kernel)
            if link.bias is not None:
                z = z + link.layer.bias
            tape.watch(z)
            pre_activations.append(z)
            a = link.layer.activation(z)
        total = tf.reduce_sum(loss_fn(y, a))
    grads = tape.gradient(total, pre_activations)
    squared = tf.zeros(tf.shape(x)[:1], x.dtype)
    for link, a, g in zip(chain, inputs, grads, strict=True):
        a_squared = tf.reduce_sum(tf.square(a), axis=1) + (0.0 if link.bias is None else 1.0)
        squared += a_squared * tf.reduce_sum(tf.square(g), axis=1)
    norms = tf.sqrt(squared)
    factor = clip / tf.maximum(norms, clip)
    sums: list[Any] = [None] * num_variables
    for link, a, g in zip(chain, inputs, grads, strict=True):
        weighted = g * factor[:, None]
        sums[link.kernel] = tf.matmul(a, weighted, transpose_a=True)
        if link.bias is not None:
            sums[link.bias] = tf.reduce_sum(weighted, axis=0)
    return sums, norms


def _vectorized_clipped_sum(model: keras.Model, loss_fn: LossFn, variables: list[Any], x: Any,
                            y: Any, clip: Any) -> tuple[list[Any], Any]:
    def one(record: tuple[Any, Any]) -> Any:
        xi, yi = record
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(loss_fn(yi[None], model(xi[None], training=True)))
        return tape.gradient(loss, variables)

    grads = tf.vectorized_map(one, (x, y))
    rows = tf.shape(x)[0]
    squared = tf.add_n(
        [tf.reduce_sum(tf.square(tf.reshape(g, [rows, -1])), axis=1) for g in grads]
    )
    norms = tf.sqrt(squared)
    factor = clip / tf.maximum(norms, clip)
    return [tf.tensordot(factor, g, axes=1) for g in grads], norms
