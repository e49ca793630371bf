"""Keras models for the tasks: small Dense networks, or a small CNN, with seeded initialisers.

Only Dense and Conv2D layers carry weights (plus weightless Reshape, Flatten and, for
regression, Rescaling): no layer keeps data-derived state, so the trainable weights are the
whole model and nothing else leaks through them. Both are ``keras.Sequential``, so DP-SGD's
per-example norms need no per-example gradients (``client.per_example_clipping``: the Dense
shortcut for the MLP, ``client.ghost_clipping`` for the CNN).
"""

import math

import keras

from common.tasks.base import TaskSpec

CNN_FILTERS = (8, 16)  # two 3x3 "valid" convolutions, ReLU
CNN_KERNEL = 3


def build_model(task: TaskSpec, *, seed: int) -> keras.Model:
    """Build the task's model; the same seed gives the same initial weights, in any process.

    Inputs are (batch, num_features) float32. Outputs: a sigmoid probability (binary), class
    probabilities (multiclass) or the target in its own units (regression).

    "mlp": ``hidden_units`` Dense ReLU layers, then the output layer. "cnn": each row read as
    an image of ``task.image_shape`` (row-major, channels last), Conv2D(8, 3x3) ->
    Conv2D(16, 3x3) (ReLU, no padding) -> Flatten -> the output layer; 8x8 digits: 3,818
    weights against the MLP's 8,970.
    """
    layers: list[keras.layers.Layer] = [keras.Input(shape=(task.num_features,), name="features")]
    if task.architecture == "cnn":
        layers += _convolutions(task, seed=seed)
        output_seed = seed + len(CNN_FILTERS)
    elif task.architecture == "mlp":
        for index, units in enumerate(task.hidden_units):
            layers.append(keras.layers.Dense(
                units,
                activation="relu",
                kernel_initializer=keras.initializers.GlorotUniform(seed=seed + index),
                name=f"hidden_{index}",
            ))
        output_seed = seed + len(task.hidden_units)
    else:
        raise ValueError(f"task {task.name!r}: architecture must be 'mlp' or 'cnn', got "
                         f"{task.architecture!r}")
    activation = {"binary": "sigmoid", "multiclass": "softmax", "regression": None}[task.kind]
    layers.append(keras.layers.Dense(
        task.num_outputs,
        activation=activation,
        kernel_initializer=keras.initializers.GlorotUniform(seed=output_seed),
        name="output",
    ))
    if task.kind == "regression":
        layers.append(keras.layers.Rescaling(
            scale=task.target_scale, offset=task.target_offset, name="target_units"
        ))
    return keras.Sequential(layers, name=task.name.replace("-", "_"))


def _convolutions(task: TaskSpec, *, seed: int) -> list[keras.layers.Layer]:
    """Reshape to the image, the two convolutions and Flatten; ValueError for a bad shape."""
    shape = task.image_shape
    if (len(shape) != 3 or math.prod(shape) != task.num_features
            or min(shape[:2]) < 1 + len(CNN_FILTERS) * (CNN_KERNEL - 1)):
        raise ValueError(f"task {task.name!r}: image_shape must be (height, width, channels) "
                         f"with product num_features={task.num_features} and height and "
                         f"width >= {1 + len(CNN_FILTERS) * (CNN_KERNEL - 1)}, got {shape!r}")
    layers: list[keras.layers.Layer] = [keras.layers.Reshape(shape, name="image")]
    for index, filters in enumerate(CNN_FILTERS):
        layers.append(keras.layers.Conv2D(
            filters, CNN_KERNEL, activation="relu",
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed + index),
            name=f"conv_{index}",
        ))
    layers.append(keras.layers.Flatten(name="flatten"))
    return layers
