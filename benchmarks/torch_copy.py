"""A torch copy of a Keras Sequential model (same layers, same weights) for the Opacus runs.

Covers the layers of ``benchmarks.dp_epoch``'s workloads: Input, Reshape to an image
(channels last), ZeroPadding2D, Conv2D ("valid"), MaxPooling2D, Flatten and Dense, with
ReLU, sigmoid, softmax or no activation. The copy returns logits: a final sigmoid or softmax
is left to the loss (``BCEWithLogitsLoss`` / ``CrossEntropyLoss``), as Opacus users write it.
Flatten flattens in Keras's (height, width, channels) order, so Dense kernels copy as they are.
``torch_copy`` checks that the copy's outputs equal the Keras model's on random inputs.
"""

from typing import Any

import keras
import numpy as np
import torch

__all__ = ["torch_copy"]


class _ImageFromRow(torch.nn.Module):
    """(rows, h*w*c) row-major channels-last -> (rows, c, h, w)."""

    def __init__(self, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, *self.shape).permute(0, 3, 1, 2)


class _FlattenChannelsLast(torch.nn.Module):
    """(rows, c, h, w) -> (rows, h*w*c), Keras's Flatten order."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1).flatten(1)


def _activation(layer: Any, last: bool) -> list[torch.nn.Module]:
    name = layer.get_config()["activation"]
    if name == "relu":
        return [torch.nn.ReLU()]
    if name == "linear" or (last and name in ("sigmoid", "softmax")):
        return []
    raise ValueError(f"activation {name!r} of layer {layer.name!r} is not covered")


def _module(layer: Any, last: bool) -> list[torch.nn.Module]:
    if isinstance(layer, keras.layers.Reshape):
        return [_ImageFromRow(tuple(layer.target_shape))]
    if isinstance(layer, keras.layers.ZeroPadding2D):
        (top, bottom), (left, right) = layer.padding
        return [torch.nn.ZeroPad2d((left, right, top, bottom))]
    if isinstance(layer, keras.layers.MaxPooling2D):
        return [torch.nn.MaxPool2d(layer.pool_size, layer.strides)]
    if isinstance(layer, keras.layers.Flatten):
        return [_FlattenChannelsLast()]
    if isinstance(layer, keras.layers.Conv2D) and layer.padding == "valid":
        kernel, bias = (np.asarray(w) for w in layer.get_weights())
        conv = torch.nn.Conv2d(kernel.shape[2], kernel.shape[3], kernel.shape[:2],
                               stride=layer.strides)
        conv.weight.data = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
        conv.bias.data = torch.from_numpy(bias.copy())
        return [conv, *_activation(layer, last)]
    if isinstance(layer, keras.layers.Dense):
        kernel, bias = (np.asarray(w) for w in layer.get_weights())
        dense = torch.nn.Linear(*kernel.shape)
        dense.weight.data = torch.from_numpy(kernel.T.copy())
        dense.bias.data = torch.from_numpy(bias.copy())
        return [dense, *_activation(layer, last)]
    raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) is not covered")


def torch_copy(model: keras.Sequential) -> torch.nn.Sequential:
    """Return the torch copy of ``model`` (logits out); ValueError if it does not match."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    modules = [m for i, layer in enumerate(layers) for m in _module(layer, i == len(layers) - 1)]
    copy = torch.nn.Sequential(*modules)
    x = np.random.default_rng(0).random((4, *model.inputs[0].shape[1:])).astype(np.float32)
    with torch.no_grad():
        logits = copy(torch.from_numpy(x))
    final = layers[-1].get_config()["activation"]
    if final == "sigmoid":
        logits = torch.sigmoid(logits)
    elif final == "softmax":
        logits = torch.softmax(logits, dim=1)
    if not np.allclose(logits.numpy(), np.asarray(model(x)), atol=1e-5):
        raise ValueError(f"the torch copy of {model.name!r} computes other outputs")
    return copy
