"""The one-run epsilon lower bound against the paper's reference values and brute force."""

import math
from fractions import Fraction
from itertools import pairwise

import numpy as np
import pytest

from simulations.audit.lower_bound import (
    bonferroni_confidence,
    canaries_needed,
    eps_lower_bound,
    eps_lower_bound_bonferroni,
    p_value_one_run,
)


# Values printed by the reference code of Steinke et al. (arXiv:2305.08846, Appendix D) and
# quoted in issue 14: 95% confidence, delta 1e-5, every canary guessed and every guess right.
@pytest.mark.parametrize("m, expected", [(10, 1.05), (24, 2.02), (166, 4.00)])
def test_reference_values_all_guesses_right(m, expected):
    assert round(eps_lower_bound(m, m, m, 0.95, 1e-5), 2) == expected


def _exact_tail(r, v, q):
    """P[Binomial(r, q) >= v] by summing the pmf in exact rational arithmetic."""
    q = Fraction(q)
    return float(sum(math.comb(r, k) * q**k * (1 - q) ** (r - k) for k in range(v, r + 1)))


def _brute_force_eps(r, v, significance):
    """Largest eps whose exact tail is below ``significance``, by bisection to 1e-12."""
    lo, hi = 0.0, 60.0
    if _exact_tail(r, v, 0.5) >= significance:
        return 0.0
    for _ in range(60):
        mid = (lo + hi) / 2
        q = 1 / (1 + math.exp(-mid))
        if _exact_tail(r, v, q) < significance:
            lo = mid
        else:
            hi = mid
    return lo


@pytest.mark.parametrize("m", [3, 6, 11, 16])
def test_delta_zero_matches_exact_binomial_tail(m):
    rng = np.random.default_rng(m)
    for _ in range(6):
        r = int(rng.integers(1, m + 1))
        v = int(rng.integers(0, r + 1))
        for eps in (0.0, 0.3, 1.7):
            q = 1 / (1 + math.exp(-eps))
            assert p_value_one_run(m, r, v, eps, 0.0) == pytest.approx(
                _exact_tail(r, v, q), rel=1e-9, abs=1e-15
            )
        # Bisection from a bracket of width <= 2 over 30 steps: within 2 / 2**30 below.
        got = eps_lower_bound(m, r, v, 0.9, 0.0)
        want = _brute_force_eps(r, v, 0.1)
        assert want - 2 / 2**30 - 1e-9 <= got <= want + 1e-9


@pytest.mark.parametrize("m", [1, 5, 10, 40])
def test_perfect_guesses_delta_zero_closed_form(m):
    # P[Binomial(m, q) >= m] = q**m < 0.05  <=>  q < 0.05**(1/m)  <=>  eps < logit(0.05**(1/m)).
    q = 0.05 ** (1 / m)
    closed = math.log(q / (1 - q))
    assert eps_lower_bound(m, m, m, 0.95, 0.0) == pytest.approx(max(closed, 0.0), abs=1e-7)


def _loop_p_value(m, r, v, eps, delta):
    """The approximate-DP p-value term by term (loop over i), as the paper states it."""
    from scipy.stats import binom

    q = math.exp(eps) / (1 + math.exp(eps))
    beta = binom.sf(v - 1, r, q)
    best, running = 0.0, 0.0
    for i in range(1, v + 1):
        running += binom.pmf(v - i, r, q)
        best = max(best, running / i)
    return min(1.0, beta + 2 * m * delta * best)


def test_vectorised_p_value_matches_the_loop():
    rng = np.random.default_rng(7)
    for _ in range(60):
        m = int(rng.integers(1, 300))
        r = int(rng.integers(0, m + 1))
        v = int(rng.integers(0, r + 1))
        eps = float(rng.uniform(0, 6))
        delta = float(10 ** rng.uniform(-7, -1))
        assert p_value_one_run(m, r, v, eps, delta) == pytest.approx(
            _loop_p_value(m, r, v, eps, delta), rel=1e-10, abs=1e-14
        )


def test_delta_correction_only_lowers_the_bound():
    for m in (10, 24, 166, 500):
        assert eps_lower_bound(m, m, m, 0.95, 1e-5) < eps_lower_bound(m, m, m, 0.95, 0.0)
        assert eps_lower_bound(m, m, m, 0.95, 1e-3) < eps_lower_bound(m, m, m, 0.95, 1e-5)


def test_more_correct_guesses_give_a_larger_bound():
    m, r = 200, 100
    bounds = [eps_lower_bound(m, r, v) for v in range(50, r + 1)]
    assert all(b2 >= b1 for b1, b2 in pairwise(bounds))
    assert bounds[-1] > bounds[len(bounds) // 2] > 0.0


def test_higher_confidence_gives_a_smaller_bound():
    m, r, v = 200, 100, 90
    bounds = [eps_lower_bound(m, r, v, c) for c in (0.5, 0.8, 0.9, 0.95, 0.99, 0.999)]
    assert all(b2 < b1 for b1, b2 in pairwise(bounds))


@pytest.mark.parametrize("m, r", [(10, 10), (100, 40), (1000, 1000)])
def test_chance_level_guesses_give_zero(m, r):
    assert eps_lower_bound(m, r, r // 2) == 0.0
    assert eps_lower_bound(m, r, 0) == 0.0
    assert eps_lower_bound(m, 0, 0) == 0.0


def test_bound_is_where_the_p_value_crosses_the_significance():
    m, r, v = 300, 120, 100
    eps = eps_lower_bound(m, r, v, 0.95, 1e-5)
    assert eps > 0
    assert p_value_one_run(m, r, v, eps, 1e-5) < 0.05
    assert p_value_one_run(m, r, v, eps + 1e-6, 1e-5) >= 0.05


def test_bonferroni_grid_is_the_max_at_the_corrected_confidence():
    m = 100
    outcomes = [(10, 10), (40, 38), (100, 80)]
    grid = eps_lower_bound_bonferroni(m, outcomes, 0.95, 1e-5)
    assert grid.per_test_confidence == pytest.approx(1 - 0.05 / 3)
    expected = [eps_lower_bound(m, r, v, 1 - 0.05 / 3, 1e-5) for r, v in outcomes]
    assert list(grid.per_candidate) == expected
    assert grid.epsilon == max(expected)
    assert grid.per_candidate[grid.best_index] == grid.epsilon
    # The correction costs: the same candidate alone, uncorrected, bounds higher.
    r, v = outcomes[grid.best_index]
    assert eps_lower_bound(m, r, v, 0.95, 1e-5) > grid.epsilon
    assert grid.to_dict()["per_candidate"] == expected


def test_bonferroni_confidence():
    assert bonferroni_confidence(0.95, 1) == pytest.approx(0.95)
    assert bonferroni_confidence(0.95, 2) == pytest.approx(0.975)
    assert bonferroni_confidence(0.99, 4) == pytest.approx(0.9975)
    with pytest.raises(ValueError):
        bonferroni_confidence(0.95, 0)


@pytest.mark.parametrize("target, expected", [(1, 10), (2, 24), (4, 166)])
def test_canaries_needed_small_targets(target, expected):
    m = canaries_needed(target, 0.95, 1e-5)
    assert m == expected
    assert eps_lower_bound(m, m, m) >= target > eps_lower_bound(m - 1, m - 1, m - 1)


@pytest.mark.parametrize("target, quoted", [(6, 1250), (8, 13000)])
def test_canaries_needed_large_targets_match_the_issue(target, quoted):
    m = canaries_needed(target, 0.95, 1e-5)
    assert abs(m - quoted) <= 0.01 * quoted
    assert eps_lower_bound(m, m, m) >= target > eps_lower_bound(m - 1, m - 1, m - 1)


def test_perfect_attack_bound_rises_with_canaries_for_small_m():
    bounds = [eps_lower_bound(m, m, m) for m in range(1, 200)]
    assert all(b2 > b1 or b2 == b1 == 0.0 for b1, b2 in pairwise(bounds))


def test_unreachable_target_gives_none():
    # The 2 m delta term caps a perfect attack near eps 8.2 at delta 1e-5.
    assert canaries_needed(9, 0.95, 1e-5, max_canaries=2**16) is None


@pytest.mark.parametrize(
    "args",
    [(5, 6, 1), (5, 4, 5), (-1, 0, 0), (5, 5, 5, 1.5), (5, 5, 5, 0.95, -0.1), (5.5, 5, 5)],
)
def test_invalid_inputs_are_refused(args):
    with pytest.raises(ValueError):
        eps_lower_bound(*args)
