"""Canary inclusion (seeded, balanced, recorded), canary rows, the guessing rule and the audit."""

import json
from itertools import pairwise

import numpy as np
import pytest

from simulations.audit.canaries import (
    CanaryInclusion,
    audit_scores,
    count_correct,
    default_grid,
    draw_inclusion,
    guess,
    make_tabular_canaries,
)
from simulations.audit.lower_bound import eps_lower_bound, eps_lower_bound_bonferroni


def test_inclusion_is_seeded():
    a, b = draw_inclusion(500, seed=3), draw_inclusion(500, seed=3)
    assert np.array_equal(a.included, b.included)
    assert not np.array_equal(a.included, draw_inclusion(500, seed=4).included)
    # A prefix of a larger draw: the coin of canary i does not depend on m.
    assert np.array_equal(draw_inclusion(200, seed=3).included, a.included[:200])


def test_inclusion_uses_its_own_stream_of_the_run_seed():
    for seed in range(5):
        naive = np.random.default_rng(seed).random(64) < 0.5
        assert not np.array_equal(draw_inclusion(64, seed).included, naive)


def test_inclusion_is_balanced_and_independent():
    big = draw_inclusion(10_000, seed=0)
    assert big.n_in + big.n_out == 10_000
    assert abs(big.n_in - 5_000) < 4 * 50  # 4 standard deviations of Binomial(10000, 1/2)
    coins = np.concatenate([draw_inclusion(64, seed=s).included for s in range(200)])
    assert abs(coins.mean() - 0.5) < 4 * np.sqrt(0.25 / coins.size)
    # Neighbouring canaries agree half the time (no serial dependence).
    agree = np.mean(big.included[1:] == big.included[:-1])
    assert abs(agree - 0.5) < 4 * np.sqrt(0.25 / 9_999)


def test_inclusion_record_round_trips_through_json():
    inclusion = draw_inclusion(37, seed=11)
    record = json.loads(json.dumps(inclusion.to_dict()))
    assert record["n_in"] == int(inclusion.included.sum())
    assert record["n_in"] + record["n_out"] == record["m"] == 37
    assert record["in_indices"] == np.flatnonzero(inclusion.included).tolist()
    again = CanaryInclusion.from_dict(record)
    assert np.array_equal(again.included, inclusion.included) and again.seed == 11


def test_inconsistent_inclusion_record_is_refused():
    record = draw_inclusion(20, seed=1).to_dict()
    record["n_in"] += 1
    with pytest.raises(ValueError):
        CanaryInclusion.from_dict(record)
    record = draw_inclusion(20, seed=1).to_dict()
    record["in_indices"].append(20)
    with pytest.raises(ValueError):
        CanaryInclusion.from_dict(record)


def test_far_canaries_lie_outside_the_data():
    rng = np.random.default_rng(0)
    data = rng.standard_normal((300, 13))
    canaries = make_tabular_canaries(400, 13, 2, seed=5, reference_x=data, distance=2.0)
    max_norm = np.linalg.norm(data, axis=1).max()
    norms = np.linalg.norm(canaries.x, axis=1)
    np.testing.assert_allclose(norms, 2.0 * max_norm, rtol=1e-5)
    gaps = np.linalg.norm(canaries.x[:, None, :] - data[None, :, :], axis=2)
    assert gaps.min() >= (2.0 - 1.0) * max_norm * (1 - 1e-5)
    # Directions are spread over the sphere, not bunched.
    directions = canaries.x / norms[:, None]
    assert np.linalg.norm(directions.mean(axis=0)) < 4 / np.sqrt(400)
    assert canaries.x.dtype == np.float32 and canaries.y.dtype == np.float32


def test_far_canaries_without_reference_use_the_z_scored_norm():
    canaries = make_tabular_canaries(10, 16, 3, seed=0, distance=3.0)
    np.testing.assert_allclose(np.linalg.norm(canaries.x, axis=1), 3.0 * 4.0, rtol=1e-5)


def test_canary_labels_are_uniform_and_independent_of_features():
    canaries = make_tabular_canaries(6_000, 5, 3, seed=2, kind="random")
    counts = np.bincount(canaries.y.astype(int), minlength=3)
    assert counts.size == 3 and set(np.unique(canaries.y)) == {0.0, 1.0, 2.0}
    assert np.all(np.abs(counts - 2_000) < 4 * np.sqrt(6_000 * (1 / 3) * (2 / 3)))
    for j in range(5):
        corr = np.corrcoef(canaries.x[:, j], canaries.y)[0, 1]
        assert abs(corr) < 4 / np.sqrt(6_000)
    # "random" rows look like z-scored data.
    assert np.all(np.abs(canaries.x.mean(axis=0)) < 0.06)
    assert np.all(np.abs(canaries.x.std(axis=0) - 1) < 0.05)


def test_canaries_are_seeded_and_recorded():
    a = make_tabular_canaries(20, 4, 2, seed=9)
    b = make_tabular_canaries(20, 4, 2, seed=9)
    c = make_tabular_canaries(20, 4, 2, seed=10)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    assert not np.array_equal(a.x, c.x)
    record = json.loads(json.dumps(a.to_dict()))
    np.testing.assert_allclose(np.array(record["x"]), a.x)
    assert record["y"] == a.y.astype(int).tolist() and record["kind"] == "far"


@pytest.mark.parametrize(
    "kwargs",
    [dict(kind="nearby"), dict(n_classes=1), dict(reference_x=np.zeros((5, 3))), dict(distance=0)],
)
def test_bad_canary_requests_are_refused(kwargs):
    args = dict(m=5, n_features=4, n_classes=2, seed=0) | kwargs
    with pytest.raises(ValueError):
        make_tabular_canaries(**args)


def test_guess_small_example():
    scores = np.array([0.1, 0.9, 0.5, 0.3, 0.7])
    assert guess(scores, 2, 1).tolist() == [-1, 1, 0, 0, 1]
    assert guess(scores, 0, 0).tolist() == [0] * 5
    assert guess(scores, 0, 5).tolist() == [-1] * 5


def test_guess_takes_the_extremes():
    rng = np.random.default_rng(1)
    for _ in range(50):
        m = int(rng.integers(2, 60))
        scores = rng.normal(size=m).round(1)  # rounding makes ties
        k_plus = int(rng.integers(0, m + 1))
        k_minus = int(rng.integers(0, m - k_plus + 1))
        g = guess(scores, k_plus, k_minus)
        assert (g == 1).sum() == k_plus and (g == -1).sum() == k_minus
        if k_plus and k_plus < m:
            assert scores[g == 1].min() >= scores[g != 1].max()
        if k_minus and k_minus < m:
            assert scores[g == -1].max() <= scores[g != -1].min()


def test_ties_are_broken_by_index_not_by_inclusion():
    assert guess(np.zeros(6), 2, 2).tolist() == [-1, -1, 0, 0, 1, 1]


@pytest.mark.parametrize("scores, kp, km", [([1.0, np.nan], 1, 0), ([1.0, 2.0], 2, 1)])
def test_bad_guess_requests_are_refused(scores, kp, km):
    with pytest.raises(ValueError):
        guess(np.array(scores), kp, km)


def test_count_correct_small_example():
    guesses = np.array([1, 1, -1, -1, 0, 0])
    included = np.array([True, False, False, True, True, False])
    outcome = count_correct(guesses, included)
    assert (outcome.k_plus, outcome.k_minus, outcome.correct_in, outcome.correct_out) == (
        2, 2, 1, 1,
    )
    assert (outcome.r, outcome.v) == (4, 2)


def test_default_grid_is_small_and_feasible():
    for m in (2, 3, 10, 101, 1000):
        grid = default_grid(m)
        assert 1 <= len(grid) <= 4 and len(set(grid)) == len(grid)
        assert all(kp >= 1 and kp + km <= m for kp, km in grid)
        assert max(kp + km for kp, km in grid) == 2 * (m // 2)


def test_perfect_scores_audit_matches_the_bonferroni_bound():
    inclusion = draw_inclusion(200, seed=0)
    audit = audit_scores(inclusion.included.astype(float), inclusion)
    # Perfectly separating scores: every "in" guess is right until the included run out.
    for o in audit.outcomes:
        assert o.correct_in == min(o.k_plus, inclusion.n_in)
        assert o.correct_out == min(o.k_minus, inclusion.n_out)
    assert audit.outcomes[0].v == audit.outcomes[0].r
    expected = eps_lower_bound_bonferroni(
        200, [(o.r, o.v) for o in audit.outcomes], 0.95, 1e-5
    )
    assert audit.epsilon == expected.epsilon > 2.0
    assert (audit.n_in, audit.n_out) == (inclusion.n_in, inclusion.n_out)
    record = json.loads(json.dumps(audit.to_dict()))
    assert record["epsilon"] == audit.epsilon and len(record["grid"]) == len(default_grid(200))


def test_inverted_scores_prove_nothing():
    inclusion = draw_inclusion(200, seed=0)
    assert audit_scores(-inclusion.included.astype(float), inclusion).epsilon == 0.0


def test_audit_bound_grows_with_the_attack_signal():
    inclusion = draw_inclusion(400, seed=1)
    noise = np.random.default_rng(2).normal(size=400)
    bounds = [
        audit_scores(shift * inclusion.included + noise, inclusion).epsilon
        for shift in (0.0, 1.0, 2.0, 4.0, 8.0)
    ]
    assert bounds[0] < 0.5
    assert all(b2 >= b1 for b1, b2 in pairwise(bounds))
    perfect = audit_scores(inclusion.included.astype(float), inclusion).epsilon
    assert bounds[-1] > 0.9 * perfect
    assert perfect <= eps_lower_bound(400, 400, 400, 1 - 0.05 / 4)


def test_audit_of_uninformative_scores_is_valid():
    # Scores independent of inclusion: a 0-DP mechanism. A positive bound is a false claim,
    # which the 95% guarantee allows in at most 5% of runs (binomial 200 x 0.05: mean 10).
    false_claims = 0
    rng = np.random.default_rng(3)
    for seed in range(200):
        inclusion = draw_inclusion(60, seed)
        scores = rng.normal(size=60)
        false_claims += audit_scores(scores, inclusion, grid=[(10, 10)]).epsilon > 0
    assert false_claims <= 20


def test_audit_of_randomized_response_is_valid_and_has_power():
    # Each canary's score is its inclusion bit through eps0-randomized response: an
    # eps0-DP release of that bit. The 95% bound may exceed eps0 in at most 5% of runs
    # (binomial 100 x 0.05: mean 5, P[> 12] about 0.2%), and should come close to it.
    eps0, m = 2.0, 1000
    keep = np.exp(eps0) / (1 + np.exp(eps0))
    rng = np.random.default_rng(4)
    bounds = []
    for seed in range(100):
        inclusion = draw_inclusion(m, seed)
        truthful = rng.random(m) < keep
        scores = np.where(truthful, inclusion.included, ~inclusion.included).astype(float)
        bounds.append(audit_scores(scores, inclusion, grid=[(m // 2, m // 2)]).epsilon)
    bounds = np.array(bounds)
    assert np.sum(bounds > eps0) <= 12
    assert np.median(bounds) > 0.75 * eps0
