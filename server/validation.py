"""Validation of a hospital's update before it is averaged in (pure numpy, no Flower).

A malformed, non-finite or out-of-bound update is rejected with a reason and never averaged
in. The norm bound applies where updates are clipped and visible to the server: patient-level
DP and ``clip-updates`` clip every update to ``dp.update-clipping-norm`` exactly; a
hospital-level update is clipped to C and then noised, so its bound is C plus a tolerance for
the noise level the hospital states in its reply. Secure aggregation hides single updates, so
each hospital's own code enforces its clip there.
"""

import numpy as np

from common.types import NDArrays
from common.weights import arrays_problem

NORM_TOLERANCE = 1e-5  # relative: float32 rounding of a clipped update
# Standard deviations of the noise's norm allowed above its mean (false rejection < 1e-15).
NOISE_NORM_SIGMAS = 8.0


def noise_tolerance(stddev: float, size: int) -> float:
    """Return a bound on ||N(0, stddev^2 I_size)|| exceeded with probability below 1e-15.

    The norm of d-dimensional Gaussian noise is stddev * chi_d: mean < stddev * sqrt(d), and
    (Lipschitz concentration) P(norm > stddev * (sqrt(d) + t)) <= exp(-t^2 / 2); t = 8.
    """
    return stddev * (float(np.sqrt(size)) + NOISE_NORM_SIGMAS)


def update_problem(update: NDArrays, like: NDArrays, *, max_norm: float | None) -> str | None:
    """Return why `update` is unusable against the global weights `like`, or None if fine."""
    problem = arrays_problem(update, like)
    if problem is not None:
        return problem
    if max_norm is not None:
        norm = float(np.sqrt(sum(np.sum(np.square(a, dtype=np.float64)) for a in update)))
        if norm > max_norm * (1 + NORM_TOLERANCE):
            return f"update norm {norm:.4g} exceeds the clip bound {max_norm:.4g}"
    return None
