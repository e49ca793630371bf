"""What a hospital feeds into secure aggregation: its weighted update and its weight, encoded.

The vector is ``[w * flatten(update), w]``, quantised to uint64. Summed over hospitals it gives
``sum_i w_i u_i`` and ``sum_i w_i``, so the server gets the weighted (or, with w = 1, the plain)
mean without learning any single update or weight. The fixed-point encoding's worst-case L2
error per hospital is ``sqrt(d + 1) / scale``, which the distributed-noise accounting adds to
the sensitivity.
"""

import math

import numpy as np

from common.secagg.quantization import choose_scale, dequantize_sum, quantize
from common.types import NDArrays
from common.weights import flatten_arrays, unflatten_arrays


def encoding_scale(*, clip_bound: float, num_hospitals: int) -> float:
    """The shared fixed-point scale: the sum of `num_hospitals` inputs cannot wrap mod 2**64."""
    return choose_scale(clip_bound, num_hospitals)


def rounding_bound(*, num_parameters: int, scale: float) -> float:
    """Worst-case L2 norm of one hospital's rounding error (each coordinate < 1/scale)."""
    return math.sqrt(num_parameters + 1) / scale


def encode_update(
    update: NDArrays, *, weight: float, clip_bound: float, scale: float, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """Return the uint64 vector ``[w * u, w]`` (stochastic rounding) and how many were clipped."""
    vector = np.append(weight * flatten_arrays(update), weight)
    encoded = quantize(vector, clip_bound=clip_bound, scale=scale, rng=rng)
    return encoded.values, int(encoded.num_clipped)


def decode_mean(
    total: np.ndarray, *, num_summands: int, clip_bound: float, scale: float, like: NDArrays
) -> NDArrays:
    """Decode the sum of `num_summands` encoded vectors into the weighted mean update."""
    summed = dequantize_sum(total, num_summands=num_summands, clip_bound=clip_bound, scale=scale)
    weight = float(summed[-1])
    if weight <= 0:
        raise ValueError(f"the summed weight must be > 0, got {weight}")
    return unflatten_arrays(summed[:-1] / weight, like)
