"""What a hospital feeds into secure aggregation: its update, clipped per coordinate and encoded.

No weight coordinate travels: every hospital sends ``u`` and the server divides by the
survivor count (weighting by examples is refused under secure aggregation: a weight the
hospital encodes could steer the mean). So each hospital's influence is bounded to range/n per coordinate (range = C + k sigma_share); a masked input beyond it is
not detectable (no range proof). Bonawitz et al. (CCS 2017), Section 3 (encoding the inputs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from common.errors import SecAggProtocolError
from common.secagg.quantization import choose_scale, dequantize_sum, quantize
from common.types import NDArrays
from common.weights import flatten_arrays, unflatten_arrays

FAILURE_PROBABILITY = 1e-9  # chance, per hospital and round, that an honest coordinate is cut
_DECODE = "decode"


@dataclass(frozen=True, slots=True)
class EncodedUpdate:
    """A hospital's encoded update (uint64, shape (d,)) and how many coordinates were cut."""

    values: npt.NDArray[np.uint64]
    num_clipped: int


def tail_multiplier(num_parameters: int, *, failure_probability: float = FAILURE_PROBABILITY
                    ) -> float:
    """k such that d Gaussian coordinates all stay within k sigma with probability 1 - p.

    k = Phi^-1(1 - p / (2 d)), so that, by the union bound over the d coordinates,
    P(some |Z_j| > k) <= d * 2 (1 - Phi(k)) = p. For d = 10**4, p = 1e-9: k = 7.44.
    """
    if isinstance(num_parameters, bool) or not isinstance(num_parameters, int) \
            or num_parameters < 1:
        raise ValueError(f"num_parameters must be an int >= 1, got {num_parameters!r}")
    if not 0 < failure_probability < 1:
        raise ValueError(f"failure_probability must be in (0, 1), got {failure_probability!r}")
    return -NormalDist().inv_cdf(failure_probability / (2 * num_parameters))


def noise_share_stddev(*, clip_norm: float, noise_multiplier: float, honest: int) -> float:
    """sigma_share = z C / sqrt(h): each hospital's share of distributed noise (h = 1: local)."""
    if isinstance(honest, bool) or not isinstance(honest, int) or honest < 1:
        raise ValueError(f"honest must be an int >= 1, got {honest!r}")
    return noise_multiplier * clip_norm / math.sqrt(honest)


def coordinate_range(
    *,
    clip_norm: float,
    noise_stddev: float,
    num_parameters: int,
    failure_probability: float = FAILURE_PROBABILITY,
) -> float:
    """The per-coordinate clip of the encoding: range = C + k * sigma_share.

    An honest coordinate is the clipped update's (|x_j| <= ||x||_2 <= C) plus N(0, sigma_share^2)
    noise, so it exceeds the range only if the noise exceeds k sigma_share: with k from
    :func:`tail_multiplier` that happens for some coordinate with probability at most
    ``failure_probability`` per hospital and round.

    Parameters
    ----------
    clip_norm
        C, the update's L2 clip.
    noise_stddev
        sigma_share, the per-coordinate standard deviation of the noise this hospital adds
        (0 without noise; see :func:`noise_share_stddev`).
    num_parameters
        d.
    failure_probability
        p, the allowed chance of cutting an honest coordinate per round.
    """
    if not (math.isfinite(clip_norm) and clip_norm > 0):
        raise ValueError(f"clip_norm must be a finite number > 0, got {clip_norm!r}")
    if not (math.isfinite(noise_stddev) and noise_stddev >= 0):
        raise ValueError(f"noise_stddev must be a finite number >= 0, got {noise_stddev!r}")
    k = tail_multiplier(num_parameters, failure_probability=failure_probability)
    return clip_norm + k * noise_stddev


def unweighted_scale(*, coordinate_range: float, num_hospitals: int) -> float:
    """The fixed-point scale for ``num_hospitals`` inputs in [-range, range] (no wrap mod 2**64)."""
    return choose_scale(coordinate_range, num_hospitals)


def encode_unweighted(
    update: NDArrays, *, coordinate_range: float, scale: float, rng: np.random.Generator
) -> EncodedUpdate:
    """Encode ``u`` (no weight coordinate), each coordinate cut to [-range, range] and counted."""
    encoded = quantize(flatten_arrays(update), clip_bound=coordinate_range, scale=scale, rng=rng)
    return EncodedUpdate(encoded.values, int(encoded.num_clipped))


def decode_unweighted_mean(
    total: npt.NDArray[np.uint64],
    *,
    num_summands: int,
    coordinate_range: float,
    scale: float,
    like: NDArrays,
) -> NDArrays:
    """The mean of ``num_summands`` unweighted inputs (the survivor count the server knows).

    Raises
    ------
    SecAggProtocolError
        If the sum cannot be decoded (wrong length, or out of range: not an unmasked sum).
    """
    summed = _decode(total, num_summands=num_summands, clip_bound=coordinate_range, scale=scale,
                     like=like)
    return unflatten_arrays(summed / num_summands, like)


def _decode(total: npt.NDArray[np.uint64], *, num_summands: int, clip_bound: float, scale: float,
            like: NDArrays) -> npt.NDArray[np.float64]:
    size = sum(int(np.size(array)) for array in like)
    array = np.asarray(total)
    if array.shape != (size,):
        raise SecAggProtocolError(_DECODE, f"the sum has shape {array.shape}, expected ({size},)")
    try:
        return dequantize_sum(array, num_summands=num_summands, clip_bound=clip_bound,
                              scale=scale)
    except ValueError as error:
        raise SecAggProtocolError(_DECODE, str(error)) from None


def rounding_bound(*, num_parameters: int, scale: float) -> float:
    """Worst-case L2 norm of one hospital's rounding error (each coordinate < 1/scale)."""
    return math.sqrt(num_parameters) / scale
