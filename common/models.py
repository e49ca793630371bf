"""Keras models for the tasks: small Dense networks with seeded initialisers.

Only Dense layers (plus a weightless Rescaling for regression): no layer keeps data-derived
state, so the trainable weights are the whole model and nothing else leaks through them.
"""

import keras

from common.tasks.base import TaskSpec


def build_model(task: TaskSpec, *, seed: int) -> keras.Model:
    """Build the task's model; the same seed gives the same initial weights, in any process.

    Inputs are (batch, num_features) float32. Outputs: a sigmoid probability (binary), class
    probabilities (multiclass) or the target in its own units (regression).
    """
    layers: list[keras.layers.Layer] = [keras.Input(shape=(task.num_features,), name="features")]
    for index, units in enumerate(task.hidden_units):
        layers.append(keras.layers.Dense(
            units,
            activation="relu",
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed + index),
            name=f"hidden_{index}",
        ))
    activation = {"binary": "sigmoid", "multiclass": "softmax", "regression": None}[task.kind]
    layers.append(keras.layers.Dense(
        task.num_outputs,
        activation=activation,
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed + len(task.hidden_units)),
        name="output",
    ))
    if task.kind == "regression":
        layers.append(keras.layers.Rescaling(
            scale=task.target_scale, offset=task.target_offset, name="target_units"
        ))
    # A Sequential stack of Dense layers lets DP-SGD use the per-example norm shortcut.
    return keras.Sequential(layers, name=task.name.replace("-", "_"))
