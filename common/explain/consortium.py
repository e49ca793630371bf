"""The consortium's explanation under DP: per-hospital Gaussian releases of clipped sums.

Mechanism (patient level, on the training track). A hospital computes, for the global model
and each of its n training rows, the vector of absolute attributions |a_i| (d features,
``common.explain.attribution``), clips it to L2 norm B (``bound``) and releases

    v = (sum_i clip_B(|a_i|), COUNT_WEIGHT * B * n) + N(0, sigma^2 I),   sigma = z * S,

a vector of d + 1 numbers. Sensitivity (add or remove one row): the sum moves by one clipped
vector (L2 <= B) and the count cell by COUNT_WEIGHT * B, so S = B sqrt(1 + COUNT_WEIGHT^2)
(1.03 B). The count rides on the same release, so no row count leaves outside the ledger. The
event is one Gaussian step at sample rate 1 with noise multiplier z (``explanation_event``),
charged on the training track and composed by Opacus's RDP accountant with every other entry.

z is fixed by the run's ``explain-share`` s and the hospital's own budget (epsilon, delta):
the z whose single release alone costs epsilon s * budget at delta (``explanation_noise``).
The hospital's training calibration counts that release in advance, so training and the
explanation together stay within the budget.

The consortium's value (post-processing) is the sum of the released sums over the sum of the
released counts: the mean absolute attribution per feature over all training rows of the
hospitals that released, where a small hospital's noise adds to the numerator rather than
being divided by its own small count. ``importance_intervals`` gives 95% intervals for it
from the noise alone (a parametric bootstrap over the known sigma per hospital); they do not
cover the sampling of the patients, nor the clipping's bias (rows over B count as B).
"""

import math
from dataclasses import dataclass

import numpy as np

from common.dp.accounting import AccountantName, calibrate_noise_multiplier
from common.dp.events import GaussianRoundEvent
from common.wire.modes import PrivacyLevel

COUNT_WEIGHT = 0.25  # the count cell's weight, in units of B (module docstring)
DEFAULT_BOUND = 1.0  # B, in the explained output's units (logits)
DEFAULT_SHARE = 0.25  # of each hospital's budget epsilon (RDP prices no lone release < ~0.1)
MIN_COUNT = 1.0  # the consortium's count is at least this (a noisy count can be <= 0)


def sensitivity(bound: float) -> float:
    """The release's L2 sensitivity for clip bound B: B sqrt(1 + COUNT_WEIGHT^2)."""
    if not bound > 0 or not math.isfinite(bound):
        raise ValueError(f"the clip bound must be a finite number > 0, got {bound!r}")
    return bound * math.sqrt(1.0 + COUNT_WEIGHT**2)


def explanation_noise(budget_epsilon: float, budget_delta: float, share: float,
                      accountant: AccountantName = AccountantName.RDP) -> float:
    """The noise multiplier whose one release costs ``share * budget_epsilon`` at the delta.

    Raises
    ------
    ValueError
        If ``share`` is not in (0, 1] or the budget is not a finite epsilon > 0.
    """
    if not 0 < share <= 1:
        raise ValueError(f"explain-share must be in (0, 1], got {share!r}")
    if not budget_epsilon > 0 or not math.isfinite(budget_epsilon):
        raise ValueError(f"the budget epsilon must be finite and > 0, got {budget_epsilon!r}")
    return calibrate_noise_multiplier(target_epsilon=share * budget_epsilon,
                                      target_delta=budget_delta, sample_rate=1.0, steps=1,
                                      accountant=accountant)


def explanation_event(noise_multiplier: float) -> GaussianRoundEvent:
    """The ledger event of one explanation release: (z, sample rate 1, 1 step), patient level."""
    return GaussianRoundEvent(noise_multiplier=noise_multiplier, sample_rate=1.0, steps=1,
                              level=PrivacyLevel.PATIENT)


def clip_rows(vectors: np.ndarray, bound: float) -> np.ndarray:
    """Each row scaled to L2 norm at most ``bound``, shape as given, float64."""
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.asarray(vectors * np.minimum(1.0, bound / np.maximum(norms, 1e-300)))


def exact_release(attributions: np.ndarray, bound: float) -> np.ndarray:
    """The noise-free release: (sum of clipped |a_i|, COUNT_WEIGHT B n), shape (d + 1,)."""
    values = np.asarray(attributions, dtype=np.float64)
    if values.ndim != 2 or not np.isfinite(values).all():
        raise ValueError(f"attributions must be a finite (rows, features) array, got shape "
                         f"{values.shape}")
    sums = clip_rows(np.abs(values), bound).sum(axis=0)
    return np.concatenate([sums, [COUNT_WEIGHT * bound * values.shape[0]]])


def noised_release(exact: np.ndarray, *, stddev: float, rng: np.random.Generator) -> np.ndarray:
    """``exact`` + N(0, stddev^2) on every cell (a new array; the draw happens here, once)."""
    if not stddev >= 0 or not math.isfinite(stddev):
        raise ValueError(f"stddev must be a finite number >= 0, got {stddev!r}")
    exact = np.asarray(exact, dtype=np.float64)
    return np.asarray(exact + rng.normal(0.0, stddev, size=exact.shape))


@dataclass(frozen=True, slots=True)
class HospitalRelease:
    """One hospital's released vector (d + 1 cells), its clip bound B and its noise stddev."""

    vector: np.ndarray
    bound: float
    stddev: float

    @property
    def sums(self) -> np.ndarray:
        """The noisy sum of clipped absolute attributions, shape (d,)."""
        return np.asarray(self.vector[:-1])

    @property
    def count(self) -> float:
        """The noisy row count (the count cell divided by COUNT_WEIGHT B)."""
        return float(self.vector[-1]) / (COUNT_WEIGHT * self.bound)


def consortium_importance(releases: list[HospitalRelease]) -> tuple[np.ndarray, float]:
    """Sum of sums over sum of counts (the count at least MIN_COUNT), and that count."""
    if not releases:
        raise ValueError("no hospital released an explanation")
    total = np.sum([r.sums for r in releases], axis=0)
    count = max(sum(r.count for r in releases), MIN_COUNT)
    return np.asarray(total / count), count


def importance_intervals(releases: list[HospitalRelease], *, draws: int = 2000,
                         seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """95% intervals (low, high), shape (d,) each, for the exact mean importance.

    Parametric bootstrap over the noise: each hospital's vector is noised again with its own
    stddev ``draws`` times, the ratio recomputed, and the 2.5th and 97.5th percentiles of the
    differences turned around the released value (the basic bootstrap). They cover the DP
    noise only (module docstring).
    """
    point, _ = consortium_importance(releases)
    rng = np.random.default_rng(seed)
    differences = []
    for _ in range(draws):
        again = [HospitalRelease(r.vector + rng.normal(0.0, r.stddev, size=r.vector.shape),
                                 r.bound, r.stddev) for r in releases]
        differences.append(consortium_importance(again)[0] - point)
    low, high = np.percentile(np.asarray(differences), [2.5, 97.5], axis=0)
    return np.asarray(point - high), np.asarray(point - low)


def ranking(importance: np.ndarray) -> np.ndarray:
    """Feature indices from the most to the least important (ties: the lower index first)."""
    return np.asarray(np.argsort(-np.asarray(importance), kind="stable"))


def top_k_overlap(a: np.ndarray, b: np.ndarray, k: int = 5) -> float:
    """|top-k of a ∩ top-k of b| / k, for two importance vectors of one length."""
    k = min(k, len(a))
    return len(set(ranking(a)[:k].tolist()) & set(ranking(b)[:k].tolist())) / k
