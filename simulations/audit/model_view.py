"""What an attacker computes with the task's model: per-example losses, confidences, gradients.

The audit's attackers evaluate the very Keras model the hospitals train (``client.training``'s
cached trainer, so nothing is rebuilt or retraced per call) at weights they saw: the final
model (anyone), each round's global weights (the server).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np
import tensorflow as tf

from client.per_example_clipping import per_example_loss_fn
from client.training import get_trainer
from common.tasks import TaskSpec
from common.types import NDArrays
from simulations.audit.membership import logit_confidence_from_loss

__all__ = ["ModelView", "flatten"]

_LOSS_NAMES: dict[str, Any] = {"binary": "binary_crossentropy",
                               "multiclass": "sparse_categorical_crossentropy"}


def flatten(weights: NDArrays) -> np.ndarray:
    """All arrays of a model (or an update) as one float64 vector, in model order."""
    return np.concatenate([np.asarray(w, dtype=np.float64).ravel() for w in weights])


class ModelView:
    """Per-example views of a classification task's model at given weights."""

    def __init__(self, task: TaskSpec) -> None:
        if task.kind not in _LOSS_NAMES:
            raise ValueError(f"the audit needs a classification task; {task.name!r} is a "
                             f"{task.kind} task")
        self.task = task
        self.model = get_trainer(task).model
        self._loss = per_example_loss_fn(_LOSS_NAMES[task.kind])

    def losses(self, weights: NDArrays, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Per-example training loss (cross-entropy, nats), shape (rows,)."""
        self.model.set_weights(weights)
        predictions = self.model(tf.constant(x, tf.float32), training=False)
        return np.asarray(self._loss(tf.constant(y, tf.float32), predictions), dtype=np.float64)

    def confidence(self, weights: NDArrays, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """LiRA's logit-scaled confidence ``log(p_y / (1 - p_y))`` of each example's label."""
        return logit_confidence_from_loss(self.losses(weights, x, y))

    def clipped_gradients(self, weights: NDArrays, x: np.ndarray, y: np.ndarray, *,
                          clipping_norm: float) -> np.ndarray:
        """Each example's loss gradient over all trainable weights, clipped to L2 norm C.

        Returns float64, shape (rows, parameters): what DP-SGD adds to a step's sum for a
        sampled example (before the noise), in model order.
        """
        self.model.set_weights(weights)
        grads = np.asarray(self._per_example_gradients(tf.constant(x, tf.float32),
                                                       tf.constant(y, tf.float32)),
                           dtype=np.float64)
        norms = np.linalg.norm(grads, axis=1, keepdims=True)
        return np.asarray(grads * np.minimum(1.0, clipping_norm / np.maximum(norms, 1e-12)),
                          dtype=np.float64)

    @cached_property
    def _per_example_gradients(self) -> Any:
        """(x, y) -> (rows, parameters) gradients, traced once (``tf.vectorized_map``)."""
        model, loss_fn = self.model, self._loss
        variables = model.trainable_variables
        features = tf.TensorSpec([None, self.task.num_features], tf.float32)

        def one(record: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
            x, y = record
            with tf.GradientTape() as tape:
                loss = loss_fn(y[None], model(x[None], training=False))
            return tf.concat([tf.reshape(g, [-1]) for g in tape.gradient(loss, variables)], 0)

        return tf.function(lambda x, y: tf.vectorized_map(one, (x, y)),
                           input_signature=[features, tf.TensorSpec([None], tf.float32)])
