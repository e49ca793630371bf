"""Epsilon lower bound of a one-run privacy audit (Steinke, Nasr, Jagielski, NeurIPS 2023).

"Privacy Auditing with One (1) Training Run", arXiv:2305.08846: m canaries, each included
independently with probability 1/2; the auditor guesses r of them and gets v right. The p-value
of v under an (eps, delta)-DP mechanism and the bisection for the largest rejected eps follow
the paper's reference code (Appendix D, ``p_value_DP_audit`` and ``get_eps_audit``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.special
import scipy.stats

__all__ = [
    "GridBound",
    "bonferroni_confidence",
    "canaries_needed",
    "eps_lower_bound",
    "eps_lower_bound_bonferroni",
    "p_value_one_run",
]

# The reference code's search: step an upper bracket by 1 from eps = 1, then bisect 30 times.
_BISECTION_STEPS = 30
# No (eps, delta) test with a non-trivial delta rejects beyond this; a guard against looping.
_EPS_SEARCH_CAP = 1000.0


def _check_counts(m: int, r: int, v: int) -> tuple[int, int, int]:
    if any(isinstance(x, bool) or int(x) != x for x in (m, r, v)):
        raise ValueError(f"m, r, v must be integers; got m={m!r}, r={r!r}, v={v!r}")
    m, r, v = int(m), int(r), int(v)
    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= v <= r <= m; got m={m}, r={r}, v={v}")
    return m, r, v


def _check_delta(delta: float) -> float:
    delta = float(delta)
    if not 0.0 <= delta <= 1.0:
        raise ValueError(f"delta must be in [0, 1]; got {delta!r}")
    return delta


def _check_confidence(confidence: float) -> float:
    confidence = float(confidence)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1); got {confidence!r}")
    return confidence


def p_value_one_run(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """P-value of at least ``v`` correct guesses out of ``r`` under (eps, delta)-DP.

    Parameters
    ----------
    m : int
        Number of canaries, each included independently with probability 1/2.
    r : int
        Number of guesses made (abstentions excluded), ``0 <= r <= m``.
    v : int
        Number of correct guesses, ``0 <= v <= r``.
    eps : float
        Epsilon of the null hypothesis, ``eps >= 0`` (natural-log units).
    delta : float
        Delta of the null hypothesis, in ``[0, 1]``.

    Returns
    -------
    float
        ``min(1, beta + 2 m delta alpha)``, where ``beta = P[Binomial(r, q) >= v]`` with
        ``q = e^eps / (1 + e^eps)`` (the accuracy of eps-DP randomized response) and
        ``alpha = max_{1 <= i <= v} P[v - i <= Binomial(r, q) < v] / i``. Under any
        (eps, delta)-DP mechanism the probability of ``v`` or more correct guesses is at most
        this value. With ``delta = 0`` it is the exact binomial tail ``beta``.

    Notes
    -----
    Same quantity as ``p_value_DP_audit`` in Appendix D of arXiv:2305.08846; the loop over
    ``i`` there is computed here as a cumulative sum (same values, O(v) vectorised).
    """
    m, r, v = _check_counts(m, r, v)
    delta = _check_delta(delta)
    eps = float(eps)
    if not (math.isfinite(eps) and eps >= 0.0):
        raise ValueError(f"eps must be finite and >= 0; got {eps!r}")
    q = float(scipy.special.expit(eps))
    beta = float(scipy.stats.binom.sf(v - 1, r, q))
    alpha = 0.0
    if v > 0 and delta > 0.0:
        # pmf at v-1, v-2, ..., 0: cumulative sums are P[v - i <= Binomial(r, q) < v].
        below = np.cumsum(scipy.stats.binom.pmf(np.arange(v - 1, -1, -1), r, q))
        alpha = max(0.0, float(np.max(below / np.arange(1, v + 1))))
    return min(beta + alpha * delta * 2 * m, 1.0)


def eps_lower_bound(
    m: int, r: int, v: int, confidence: float = 0.95, delta: float = 1e-5
) -> float:
    """Largest epsilon that ``v`` correct guesses out of ``r`` show the run exceeds.

    Parameters
    ----------
    m : int
        Number of canaries, each included independently with probability 1/2.
    r : int
        Number of guesses made (``k+`` "in" plus ``k-`` "out"), ``0 <= r <= m``.
    v : int
        Number of correct guesses, ``0 <= v <= r``.
    confidence : float, default 0.95
        Confidence level in ``(0, 1)``; the test's significance is ``1 - confidence``.
    delta : float, default 1e-5
        Delta of the (eps, delta)-DP claims that are tested.

    Returns
    -------
    float
        An epsilon (natural-log units, ``>= 0``) such that, with probability at least
        ``confidence`` over the canaries' inclusion, the mechanism is not (eps', delta)-DP
        for any eps' up to the returned value: the p-value at the returned eps is below
        ``1 - confidence``. ``0.0`` when the guesses are not significantly better than chance.

    Notes
    -----
    Reproduces ``get_eps_audit`` of Appendix D of arXiv:2305.08846: the upper end of the
    bracket is stepped by 1 from eps = 1 until the p-value reaches the significance level,
    then 30 bisection steps; the low (conservative) end is returned, so the value is within
    ``bracket / 2**30`` below the exact root. With 95% confidence and delta 1e-5, all guesses
    right: 10 canaries give 1.05, 24 give 2.02, 166 give 4.00 (the paper's reference code).
    """
    m, r, v = _check_counts(m, r, v)
    delta = _check_delta(delta)
    significance = 1.0 - _check_confidence(confidence)
    eps_min, eps_max = 0.0, 1.0  # keep p(eps_min) < significance <= p(eps_max)
    while p_value_one_run(m, r, v, eps_max, delta) < significance:
        eps_max += 1.0
        if eps_max > _EPS_SEARCH_CAP:
            raise ValueError(f"no epsilon up to {_EPS_SEARCH_CAP} is consistent with the guesses")
    for _ in range(_BISECTION_STEPS):
        eps = (eps_min + eps_max) / 2
        if p_value_one_run(m, r, v, eps, delta) < significance:
            eps_min = eps
        else:
            eps_max = eps
    return eps_min


def bonferroni_confidence(confidence: float, n_tests: int) -> float:
    """Per-test confidence so that ``n_tests`` tests hold jointly at ``confidence``.

    Parameters
    ----------
    confidence : float
        Joint confidence level in ``(0, 1)``.
    n_tests : int
        Number of tests (e.g. grid points, or audit views of one run), ``>= 1``.

    Returns
    -------
    float
        ``1 - (1 - confidence) / n_tests``. By the union bound, the probability that any of
        the tests errs is at most ``1 - confidence``, whatever their dependence.
    """
    confidence = _check_confidence(confidence)
    if int(n_tests) != n_tests or n_tests < 1:
        raise ValueError(f"n_tests must be an integer >= 1; got {n_tests!r}")
    return 1.0 - (1.0 - confidence) / int(n_tests)


@dataclass(frozen=True)
class GridBound:
    """Result of :func:`eps_lower_bound_bonferroni`.

    Attributes
    ----------
    epsilon : float
        The largest per-candidate bound: a lower bound at the joint ``confidence``.
    best_index : int
        Index of the candidate that gave ``epsilon`` (first one on ties).
    per_candidate : tuple of float
        Each candidate's bound, computed at ``per_test_confidence``.
    confidence : float
        Joint confidence level of ``epsilon``.
    per_test_confidence : float
        ``1 - (1 - confidence) / n_candidates``.
    """

    epsilon: float
    best_index: int
    per_candidate: tuple[float, ...]
    confidence: float
    per_test_confidence: float

    def to_dict(self) -> dict:
        """JSON-able dict of every field."""
        return {
            "epsilon": self.epsilon,
            "best_index": self.best_index,
            "per_candidate": list(self.per_candidate),
            "confidence": self.confidence,
            "per_test_confidence": self.per_test_confidence,
        }


def eps_lower_bound_bonferroni(
    m: int,
    outcomes: Sequence[tuple[int, int]],
    confidence: float = 0.95,
    delta: float = 1e-5,
) -> GridBound:
    """Best bound over a small, pre-stated grid of guessing rules, Bonferroni-corrected.

    Parameters
    ----------
    m : int
        Number of canaries.
    outcomes : sequence of (r, v)
        For each grid candidate (e.g. each ``(k+, k-)`` pair, fixed before the scores are
        seen), the number of guesses ``r`` and of correct guesses ``v`` it produced.
    confidence : float, default 0.95
        Joint confidence of the returned bound.
    delta : float, default 1e-5
        Delta of the tested (eps, delta)-DP claims.

    Returns
    -------
    GridBound
        Every candidate's bound at ``1 - (1 - confidence) / len(outcomes)``; their maximum is
        a lower bound on epsilon at ``confidence`` (union bound over the candidates).
    """
    if len(outcomes) == 0:
        raise ValueError("need at least one (r, v) outcome")
    per_test = bonferroni_confidence(confidence, len(outcomes))
    bounds = tuple(eps_lower_bound(m, r, v, per_test, delta) for r, v in outcomes)
    best = int(np.argmax(bounds))
    return GridBound(
        epsilon=bounds[best],
        best_index=best,
        per_candidate=bounds,
        confidence=float(confidence),
        per_test_confidence=per_test,
    )


def canaries_needed(
    target_eps: float,
    confidence: float = 0.95,
    delta: float = 1e-5,
    max_canaries: int = 100_000,
) -> int | None:
    """Fewest canaries for which a perfect attack proves ``eps >= target_eps``.

    Parameters
    ----------
    target_eps : float
        Epsilon the audit should be able to demonstrate (natural-log units, ``> 0``).
    confidence : float, default 0.95
        Confidence level of the bound.
    delta : float, default 1e-5
        Delta of the tested (eps, delta)-DP claims.
    max_canaries : int, default 100000
        Largest canary count searched.

    Returns
    -------
    int or None
        The smallest m with ``eps_lower_bound(m, m, m, confidence, delta) >= target_eps``
        (every canary guessed, every guess right), or ``None`` if no m up to
        ``max_canaries`` reaches it. About 10 for eps 1, 24 for 2, 166 for 4, 1,250 for 6 and
        13,000 for 8 at 95% and delta 1e-5; beyond about 8.2 the delta term ``2 m delta``
        grows faster than the binomial tail shrinks and no m reaches the target.

    Notes
    -----
    Doubling, then bisection between the last two powers of two. The bisection assumes the
    perfect-attack bound increases with m up to the first crossing, which holds on the
    rising branch (checked for small m in the tests); a wrong guess costs several canaries.
    """
    target_eps = float(target_eps)
    if not target_eps > 0.0:
        raise ValueError(f"target_eps must be > 0; got {target_eps!r}")

    def reaches(m: int) -> bool:
        return eps_lower_bound(m, m, m, confidence, delta) >= target_eps

    lo, hi = 0, 1  # reaches(lo) is False (0 canaries prove nothing); test hi
    while not reaches(hi):
        if hi >= max_canaries:
            return None
        lo, hi = hi, min(2 * hi, int(max_canaries))
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if reaches(mid):
            hi = mid
        else:
            lo = mid
    return hi
