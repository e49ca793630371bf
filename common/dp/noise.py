"""Add Gaussian noise to a clipped update: the Gaussian mechanism (Dwork-Roth 2014, Thm A.1).

Mechanism: i.i.d. N(0, (zC)^2) per coordinate (McMahan et al. ICLR 2018, Algorithm 1), or the
share zC/sqrt(n) per hospital when secure aggregation reveals only the sum of n (Kairouz et al.
ICML 2021). Sensitivity: the update was clipped to L2 norm C. The adversary sees the noised
update (or only the sum). Unit of privacy: the hospital; deployment draws from ``SecureRandom``.
"""

import math
from collections.abc import Sequence
from numbers import Integral, Real

import numpy as np
import numpy.typing as npt

from common.dp.secure_random import RandomSource, require_rng

__all__ = ["add_gaussian_noise", "gaussian_stddev"]


def _require_real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


def gaussian_stddev(
    *, noise_multiplier: float, clipping_norm: float, num_contributors: int = 1
) -> float:
    """Return the per-coordinate noise standard deviation one hospital adds.

    Parameters
    ----------
    noise_multiplier : float
        z, the noise standard deviation in units of the clipping norm; must be >= 0.
    clipping_norm : float
        C, the L2 bound the update was clipped to; must be > 0.
    num_contributors : int, default 1
        n, the hospitals whose noise is summed under secure aggregation ("distributed" mode):
        each adds the share z * C / sqrt(n), so the sum of n shares has stddev z * C. Use 1
        ("local" mode) when every update must be private on its own.

    Returns
    -------
    float
        ``noise_multiplier * clipping_norm / sqrt(num_contributors)``, in the update's units.

    Raises
    ------
    ValueError
        If ``noise_multiplier < 0``, ``clipping_norm <= 0`` or ``num_contributors < 1``.
    """
    z = _require_real("noise_multiplier", noise_multiplier)
    if z < 0:
        raise ValueError(f"noise_multiplier must be >= 0, got {noise_multiplier!r}")
    c = _require_real("clipping_norm", clipping_norm)
    if c <= 0:
        raise ValueError(f"clipping_norm must be > 0, got {clipping_norm!r}")
    if isinstance(num_contributors, bool) or not isinstance(num_contributors, Integral):
        raise ValueError(f"num_contributors must be an integer, got {num_contributors!r}")
    if num_contributors < 1:
        raise ValueError(f"num_contributors must be >= 1, got {num_contributors!r}")
    return z * c / math.sqrt(int(num_contributors))


def add_gaussian_noise(
    arrays: Sequence[npt.ArrayLike], *, stddev: float, rng: RandomSource
) -> list[np.ndarray]:
    """Return copies of ``arrays`` with i.i.d. N(0, stddev^2) noise added to every entry.

    Parameters
    ----------
    arrays : sequence of array_like
        The clipped update (any shapes, including 0-d and scalars). Not modified.
    stddev : float
        Per-coordinate standard deviation in the update's units (see ``gaussian_stddev``);
        must be >= 0. 0 returns exact copies.
    rng : numpy.random.Generator or SecureRandom
        Source of the noise, drawn array by array in list order. In deployment pass a
        ``common.dp.secure_random.SecureRandom()`` (ChaCha20 keyed from OS entropy), never a
        generator seeded with anything the server knows; simulations may pass a seeded
        NumPy generator to reproduce runs.

    Returns
    -------
    list of np.ndarray
        New arrays with the input shapes and floating dtypes (integer inputs become float64).
        Noise is drawn in float64 and rounded once to the array's dtype.

    Raises
    ------
    ValueError
        If ``stddev`` is negative or not finite, or an array is not numeric.
    TypeError
        If ``rng`` is neither a ``numpy.random.Generator`` nor a ``SecureRandom`` (the legacy
        global ``np.random`` state cannot be injected or audited).
    """
    sigma = _require_real("stddev", stddev)
    if sigma < 0:
        raise ValueError(f"stddev must be >= 0, got {stddev!r}")
    require_rng(rng)
    noised = []
    for index, array in enumerate(arrays):
        values = np.asarray(array)
        if not (np.issubdtype(values.dtype, np.number) or values.dtype == np.bool_):
            raise ValueError(f"arrays[{index}] must be numeric, got dtype {values.dtype}")
        dtype = values.dtype if np.issubdtype(values.dtype, np.floating) else np.float64
        if sigma == 0:
            noised.append(np.array(values, dtype=dtype, copy=True))
            continue
        noise = rng.normal(0.0, sigma, size=values.shape)
        noised.append(np.asarray(values.astype(np.float64) + noise, dtype=dtype))
    return noised
