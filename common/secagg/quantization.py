"""Fixed-point quantisation with stochastic rounding into Z_(2**64), for masking and summing.

Masks cancel only mod 2**64, so each hospital maps its clipped, noised float update to
integers first: ``q = round_stochastic(clip(x, -B, B) * scale)``, stored two's-complement in
uint64. The server only ever sees masked words; after unmasking it sees the exact integer sum,
decoded by centring at zero. Stochastic rounding is unbiased (E[q] = x * scale) and errs by less
than one step, 1/scale, per coordinate and summand. Bonawitz et al. (CCS 2017), Section 3.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

MODULUS_BITS = 64
# A single quantised value must stay far from the int64 limits, so |clip_bound * scale| is
# capped at 2**62: float64 products below it convert to int64 exactly.
_MAX_SCALED_BOUND = float(2**62)


class QuantizedUpdate(NamedTuple):
    """A quantised vector and how many of its coordinates were clipped."""

    values: npt.NDArray[np.uint64]
    num_clipped: int


def choose_scale(clip_bound: float, max_summands: int, modulus_bits: int = MODULUS_BITS) -> float:
    """Choose the largest power-of-two scale whose sum of ``max_summands`` values cannot wrap.

    Each quantised value satisfies ``|q| <= ceil(clip_bound * scale) <= clip_bound * scale + 1``;
    the scale is chosen so that ``max_summands * (clip_bound * scale + 1)`` is at most
    ``2**(modulus_bits - 1) - 1``, i.e. every possible sum decodes correctly from its
    ``modulus_bits``-bit two's complement.
    Arithmetic is always mod 2**64; a smaller ``modulus_bits`` only buys headroom.

    Parameters
    ----------
    clip_bound
        Per-coordinate bound B (same unit as the update); values are clipped to [-B, B].
    max_summands
        Largest number of hospitals whose values will be summed.
    modulus_bits
        Bits of the decoding range, 2..64.

    Returns
    -------
    float
        A power of two; the quantisation step is its inverse.

    Raises
    ------
    ValueError
        If an argument is out of range or no positive float scale fits.
    """
    _check_positive("clip_bound", clip_bound)
    if not isinstance(max_summands, int) or max_summands < 1:
        raise ValueError(f"max_summands must be an int >= 1, got {max_summands!r}")
    if not isinstance(modulus_bits, int) or not 2 <= modulus_bits <= MODULUS_BITS:
        raise ValueError(f"modulus_bits must be an int in [2, 64], got {modulus_bits!r}")
    per_summand = (2 ** (modulus_bits - 1) - 1) // max_summands - 1  # bound on clip_bound*scale
    if per_summand < 1:
        raise ValueError(
            f"modulus_bits={modulus_bits} leaves no headroom for {max_summands} summands"
        )
    exponent = math.floor(math.log2(min(per_summand, _MAX_SCALED_BOUND) / clip_bound))
    # log2 is rounded; step down until the bound holds exactly.
    while clip_bound * 2.0**exponent > per_summand:
        exponent -= 1
    scale = 2.0**exponent
    if scale == 0.0:
        raise ValueError(f"clip_bound={clip_bound!r} is too large to quantise")
    return scale


def quantize(
    values: npt.NDArray[np.floating],
    *,
    clip_bound: float,
    scale: float,
    rng: np.random.Generator,
) -> QuantizedUpdate:
    """Clip to [-clip_bound, clip_bound], scale, round stochastically and encode mod 2**64.

    Parameters
    ----------
    values
        Flat float vector, shape (d,).
    clip_bound
        Per-coordinate bound B; coordinates with ``|x| > B`` are clipped and counted.
    scale
        Fixed-point scale (e.g. from :func:`choose_scale`); one step is ``1 / scale``.
    rng
        Source of the rounding randomness.

    Returns
    -------
    QuantizedUpdate
        ``values`` (uint64, shape (d,), two's complement of the signed integers) and
        ``num_clipped``. ``|q / scale - clip(x)| < 1 / scale`` per coordinate and
        ``E[q] = clip(x) * scale``.

    Raises
    ------
    ValueError
        If ``values`` is not a flat finite float vector, or the bound/scale are invalid.
    """
    array = np.asarray(values)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"values must be a flat float vector, got {array.dtype} {array.shape}")
    _check_bound_and_scale(clip_bound=clip_bound, scale=scale)
    if not np.all(np.isfinite(array)):
        raise ValueError("values must be finite; quantising NaN or inf is undefined")
    x = array.astype(np.float64)
    num_clipped = int(np.count_nonzero(np.abs(x) > clip_bound))
    scaled = np.clip(x, -clip_bound, clip_bound) * scale
    floor = np.floor(scaled)
    round_up = rng.random(scaled.shape) < (scaled - floor)
    signed = floor.astype(np.int64) + round_up
    return QuantizedUpdate(values=signed.view(np.uint64), num_clipped=num_clipped)


def dequantize_sum(
    total: npt.NDArray[np.uint64],
    *,
    num_summands: int,
    clip_bound: float,
    scale: float,
) -> npt.NDArray[np.float64]:
    """Decode a mod-2**64 sum of quantised vectors back to a float sum.

    Parameters
    ----------
    total
        uint64 vector, shape (d,): the sum mod 2**64 of ``num_summands`` quantised vectors.
    num_summands
        How many vectors were summed.
    clip_bound, scale
        The values used by every :func:`quantize` call in the sum.

    Returns
    -------
    numpy.ndarray
        float64, shape (d,): the sum of the clipped values, within ``num_summands / scale`` per
        coordinate (so the mean is within ``1 / scale``).

    Raises
    ------
    ValueError
        If the sum could have wrapped for these parameters, or a decoded value is larger than
        ``num_summands`` quantised values can be (the input was not an unmasked sum). This is a
        sanity check, not an integrity guarantee: with the largest safe scale a wrong sum
        passes it about half the time.
    """
    array = np.asarray(total)
    if array.ndim != 1 or array.dtype != np.uint64:
        raise ValueError(f"total must be a flat uint64 vector, got {array.dtype} {array.shape}")
    if not isinstance(num_summands, int) or num_summands < 1:
        raise ValueError(f"num_summands must be an int >= 1, got {num_summands!r}")
    _check_bound_and_scale(clip_bound=clip_bound, scale=scale)
    per_value = math.ceil(clip_bound * scale)
    limit = num_summands * per_value
    if limit > 2**63 - 1:
        raise ValueError(
            f"{num_summands} summands of up to {per_value} can wrap mod 2**64; "
            "choose the scale with choose_scale(clip_bound, max_summands)"
        )
    signed = array.view(np.int64)  # centred decoding: [2**63, 2**64) are the negatives
    if np.any((signed > limit) | (signed < -limit)):
        raise ValueError(
            f"decoded sum exceeds {num_summands} x {per_value}: the masks were not removed"
        )
    return signed.astype(np.float64) / scale


def _check_positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _check_bound_and_scale(*, clip_bound: float, scale: float) -> None:
    _check_positive("clip_bound", clip_bound)
    _check_positive("scale", scale)
    if clip_bound * scale > _MAX_SCALED_BOUND:
        raise ValueError(
            f"clip_bound * scale = {clip_bound * scale:.3g} exceeds 2**62; use a smaller scale"
        )
