"""Feature attributions of one prediction against a public baseline (pure: no Flower, no I/O).

What is explained: the model's output before its last activation, i.e. the logit of a binary
model (the log-odds of the positive class), the logit of one class of a multiclass model (the
predicted class, unless a target is given), and the predicted value of a regression model in
its own units. Attributions are in those units and sum, per row, to the output at the row minus
the output at the baseline (completeness).

- A linear model (the logistic regression of heart-disease; no hidden or convolutional layer):
  attribution_j = w_j (x_j - b_j), exact (its sum equals the logit difference up to float
  rounding).
- Any other Keras model here (the MLPs, the small CNN): integrated gradients (Sundararajan,
  Taly and Yan, ICML 2017) along the straight line from the baseline b to x, the path integral
  approximated by the trapezoid rule over ``steps`` intervals, gradients by TensorFlow's
  ``GradientTape`` on the Keras layers. ReLU networks are piecewise linear, so the rule's error
  shrinks with ``steps``; ``completeness_gap`` measures it for every row, and a row that fails
  the check (``complete``) is computed again with four times the steps, up to 1,024.

The baseline is a model input row. fedcare's is public: the shared normalisation's centers,
which are the zero row after public scaling (``common.normalisation``); no hospital's data
shapes it.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

IG_STEPS = 64  # trapezoid intervals of integrated gradients
MAX_IG_STEPS = 1024  # rows failing completeness are redone with 4x the steps, up to this
ROW_CHUNK = 256  # rows per gradient batch (memory: (steps + 1) x rows x features floats)
RELATIVE_TOLERANCE = 0.05  # completeness: |sum - difference| <= 0.05 |difference| + 1e-3
ABSOLUTE_TOLERANCE = 1e-3


@dataclass(frozen=True, slots=True)
class Attributions:
    """Per-row, per-feature attributions and the outputs they explain.

    Attributes
    ----------
    values : np.ndarray
        float64, shape (rows, features), in the explained output's units.
    output, baseline_output : np.ndarray
        float64, shape (rows,): the explained output at each row and at the baseline.
    target : np.ndarray
        int, shape (rows,): the explained output column per row.
    method : {"exact-linear", "integrated-gradients"}
        How they were computed.
    """

    values: np.ndarray
    output: np.ndarray
    baseline_output: np.ndarray
    target: np.ndarray
    method: str

    @property
    def difference(self) -> np.ndarray:
        """Output minus baseline output, shape (rows,): what each row's attributions sum to."""
        return np.asarray(self.output - self.baseline_output, dtype=np.float64)


def is_linear(model: keras.Model) -> bool:
    """Whether the model is one Dense layer ("output") on its inputs (logistic or linear)."""
    weighted = [layer for layer in model.layers if layer.weights]
    return len(weighted) == 1 and weighted[0].name == "output"


def _output_layer(model: keras.Model) -> Any:
    layer = model.get_layer("output")
    if not isinstance(layer, keras.layers.Dense):
        raise ValueError(f"model {model.name!r}: its 'output' layer is not Dense")
    return layer


def explained_output(model: keras.Model) -> Callable[[tf.Tensor], tf.Tensor]:
    """The function attributions explain: the model with its last activation removed.

    Returns a TensorFlow function of a (rows, features) float32 tensor, returning
    (rows, outputs): every layer as the model has it, except that the Dense layer named
    "output" gives ``x @ kernel + bias`` (its logits); a regression model's Rescaling after it
    still maps to the target's units.
    """
    output = _output_layer(model)

    def forward(x: tf.Tensor) -> tf.Tensor:
        h = x
        for layer in model.layers:
            h = tf.matmul(h, output.kernel) + output.bias if layer is output else layer(h)
        return h

    return forward


def _targets(model: keras.Model, x: np.ndarray, target: np.ndarray | int | None) -> np.ndarray:
    rows = x.shape[0]
    if target is not None:
        return np.broadcast_to(np.asarray(target, dtype=np.int64), (rows,)).copy()
    if model.output_shape[-1] == 1:
        return np.zeros(rows, dtype=np.int64)
    logits = explained_output(model)(tf.constant(x, dtype=tf.float32)).numpy()
    return np.asarray(np.argmax(logits, axis=1), dtype=np.int64)


def _check_inputs(model: keras.Model, x: np.ndarray, baseline: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float32)
    width = int(model.input_shape[-1])
    if x.ndim != 2 or x.shape[1] != width:
        raise ValueError(f"expected rows of {width} model inputs, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("the rows to explain hold a non-finite value")
    base = np.asarray(baseline, dtype=np.float32).reshape(-1)
    if base.shape != (width,) or not np.isfinite(base).all():
        raise ValueError(f"the baseline must be {width} finite model inputs, got shape "
                         f"{np.asarray(baseline).shape}")
    return x, base


def attribute(model: keras.Model, x: np.ndarray, baseline: np.ndarray, *,
              target: np.ndarray | int | None = None, steps: int = IG_STEPS,
              refine: bool = True) -> Attributions:
    """Attribute each row's explained output to its features, against ``baseline``.

    Parameters
    ----------
    x : np.ndarray
        Model inputs, shape (rows, features).
    baseline : np.ndarray
        One model input row, shape (features,).
    target : int or np.ndarray, optional
        The output column to explain (per row or for all); default: 0 for one output, else
        the predicted class.
    steps : int
        Integrated gradients' trapezoid intervals (ignored for a linear model).
    refine : bool
        Redo the rows that fail the completeness check with 4x the steps (up to 1,024).

    Raises
    ------
    ValueError
        For inputs of the wrong width or non-finite values, or steps < 1.
    """
    x, base = _check_inputs(model, x, baseline)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    targets = _targets(model, x, target)
    forward = explained_output(model)
    rows = np.arange(x.shape[0])
    output = forward(tf.constant(x)).numpy().astype(np.float64)[rows, targets]
    at_base = forward(tf.constant(base[None, :])).numpy().astype(np.float64)[0, targets]
    if is_linear(model) and len(model.layers) == 1:
        kernel = np.asarray(_output_layer(model).kernel.numpy(), dtype=np.float64)
        values = kernel[:, targets].T * (x.astype(np.float64) - base.astype(np.float64))
        return Attributions(values, output, at_base, targets, "exact-linear")
    values = _chunked(forward, x, base, targets, steps)
    result = Attributions(values, output, at_base, targets, "integrated-gradients")
    while refine and steps < MAX_IG_STEPS and not (ok := complete(result)).all():
        steps *= 4  # only the rows whose path crosses ReLU kinks the rule misses
        redo = np.flatnonzero(~ok)
        values[redo] = _chunked(forward, x[redo], base, targets[redo], steps)
        result = Attributions(values, output, at_base, targets, "integrated-gradients")
    return result


def _chunked(forward: Callable[[tf.Tensor], tf.Tensor], x: np.ndarray, base: np.ndarray,
             targets: np.ndarray, steps: int) -> np.ndarray:
    chunk = max(1, ROW_CHUNK * IG_STEPS // steps)
    return np.concatenate([_integrated_gradients(forward, x[i:i + chunk], base,
                                                 targets[i:i + chunk], steps)
                           for i in range(0, x.shape[0], chunk)] or
                          [np.zeros((0, x.shape[1]))])


def _integrated_gradients(forward: Callable[[tf.Tensor], tf.Tensor], x: np.ndarray,
                          base: np.ndarray, targets: np.ndarray, steps: int) -> np.ndarray:
    """(x - b) times the trapezoid mean of the target's gradient on the path, (rows, d)."""
    alphas = np.linspace(0.0, 1.0, steps + 1, dtype=np.float32)
    weights = np.full(steps + 1, 1.0 / steps, dtype=np.float64)
    weights[[0, -1]] = 0.5 / steps
    delta = x - base[None, :]
    path = base[None, None, :] + alphas[:, None, None] * delta[None, :, :]  # (m+1, n, d)
    flat = tf.constant(path.reshape(-1, x.shape[1]))
    picked = tf.constant(np.tile(targets, steps + 1))
    with tf.GradientTape() as tape:
        tape.watch(flat)
        chosen = tf.gather(forward(flat), picked, axis=1, batch_dims=1)
    grads = tape.gradient(chosen, flat).numpy().astype(np.float64)
    mean_grad = np.tensordot(weights, grads.reshape(steps + 1, *x.shape), axes=1)
    return np.asarray(mean_grad * delta.astype(np.float64))


def completeness_gap(attributions: Attributions) -> np.ndarray:
    """|sum of a row's attributions - (output - baseline output)|, shape (rows,)."""
    return np.asarray(np.abs(attributions.values.sum(axis=1) - attributions.difference))


def complete(attributions: Attributions, *, relative: float = RELATIVE_TOLERANCE,
             absolute: float = ABSOLUTE_TOLERANCE) -> np.ndarray:
    """Per row: whether |sum - difference| <= relative |difference| + absolute."""
    return np.asarray(completeness_gap(attributions)
                      <= relative * np.abs(attributions.difference) + absolute)
