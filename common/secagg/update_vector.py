"""What a hospital feeds into secure aggregation: its update, clipped per coordinate and encoded.

No weight coordinate travels: every hospital sends ``u`` and the server divides by the
survivor count (weighting by examples is refused under secure aggregation: a weight the
hospital encodes could steer the mean). An honest input is the update (L2 norm <= C) plus its
noise, cut to [-range, range] per coordinate (range = C + k sigma_share) and rounded. There is
no proof on a masked input, so one hospital's input can be any value the decoder accepts; the
server checks the decoded sum per coordinate (at most n x range) and in L2 norm (at most
n x (C + noise bound + rounding bound), ``decode_unweighted_mean``'s ``max_sum_norm``). That
bounds the mean's L2 norm by C + noise bound + rounding bound, and one hospital's effect on it
by twice that (docs/reliability-influence.md); a sum beyond either check aborts the round, and
it does not tell whose input was at fault. Bonawitz et al. (CCS 2017), Section 3 (encoding).
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
# Standard deviations of a Gaussian noise vector's norm allowed above sqrt(d) sigma: an honest
# hospital's noise exceeds the bound with probability below exp(-8**2 / 2) ~ 1e-14 per round.
NOISE_NORM_SIGMAS = 8.0
_DECODE = "decode"


@dataclass(frozen=True, slots=True)
class EncodedUpdate:
    """A hospital's encoded update (uint64, shape (d,)) and how many coordinates were cut."""

    values: npt.NDArray[np.uint64]
    num_clipped: int


def tail_multiplier(num_parameters: int, *, failure_probability: float = FAILURE_PROBABILITY
                    ) -> float:
    """The k such that d Gaussian coordinates all stay within k sigma with probability 1 - p.

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


def noise_norm_bound(*, noise_stddev: float, num_parameters: int) -> float:
    """A bound on ||N(0, sigma^2 I_d)||_2 exceeded with probability below 1e-14.

    The norm of d-dimensional Gaussian noise is sigma chi_d, with mean below sigma sqrt(d), and
    (Lipschitz concentration) P(norm > sigma (sqrt(d) + s)) <= exp(-s^2 / 2); s = 8.
    """
    if not (math.isfinite(noise_stddev) and noise_stddev >= 0):
        raise ValueError(f"noise_stddev must be a finite number >= 0, got {noise_stddev!r}")
    return noise_stddev * (math.sqrt(num_parameters) + NOISE_NORM_SIGMAS)


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
    max_sum_norm: float | None = None,
) -> NDArrays:
    """The mean of ``num_summands`` unweighted inputs (the survivor count the server knows).

    ``max_sum_norm`` is the L2 norm no sum of honest inputs exceeds (the server passes
    ``common.secagg.round_settings.sum_norm_bound``); None checks the coordinates only.

    Raises
    ------
    SecAggProtocolError
        If the sum cannot be decoded (wrong length, or out of range: not an unmasked sum), or
        its L2 norm exceeds ``max_sum_norm`` (some input was beyond its bound; the sum does not
        tell whose).
    """
    summed = _decode(total, num_summands=num_summands, clip_bound=coordinate_range, scale=scale,
                     like=like)
    if max_sum_norm is not None:
        norm = float(np.linalg.norm(summed))
        if not norm <= max_sum_norm:
            raise SecAggProtocolError(
                _DECODE, f"the sum's L2 norm {norm:.6g} exceeds {max_sum_norm:.6g}, the most "
                f"{num_summands} honest inputs (each at most C + noise + rounding) can sum to: "
                "an input was beyond its bound (the sum does not tell whose)")
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
