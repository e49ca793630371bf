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
    inputs = keras.Input(shape=(task.num_features,), name="features")
    hidden = inputs
    for index, units in enumerate(task.hidden_units):
        hidden = keras.layers.Dense(
            units,
            activation="relu",
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed + index),
            name=f"hidden_{index}",
        )(hidden)
    activation = {"binary": "sigmoid", "multiclass": "softmax", "regression": None}[task.kind]
    outputs = keras.layers.Dense(
        task.num_outputs,
        activation=activation,
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed + len(task.hidden_units)),
        name="output",
    )(hidden)
    if task.kind == "regression":
        outputs = keras.layers.Rescaling(
            scale=task.target_scale, offset=task.target_offset, name="target_units"
        )(outputs)
    return keras.Model(inputs, outputs, name=task.name.replace("-", "_"))
