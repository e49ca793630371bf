"""Hospital-level mechanism: clip to C, then noise whose spread is the accounted 2zC."""

import numpy as np
import pytest
from scipy import stats

from client.privacy import dp_sgd_steps, hospital_noise_stddev, plan_round_event, privatize_update
from common.dp.accounting import epsilon_from_history
from common.dp.clipping import l2_norm
from common.dp.events import GaussianRoundEvent


def test_privatize_update_noise_std_is_twice_z_times_clip():
    """Zero update: what comes back is pure noise; its std must be 2zC (local mode).

    With 200,000 draws the sample variance's chi-square interval at a 1e-6 false-failure
    rate is about +/-1.6% of the variance.
    """
    event = GaussianRoundEvent(noise_multiplier=0.7, sample_rate=1.0, steps=1, level="hospital")
    update = [np.zeros((400, 250), np.float64), np.zeros(0)]
    stddev = hospital_noise_stddev(event, clipping_norm=0.3, noise_mode="local")
    noised = privatize_update(update, clipping_norm=0.3, stddev=stddev, rng=np.random.default_rng(1))
    samples = noised[0].ravel()
    n, expected = samples.size, 2 * 0.7 * 0.3
    low = stats.chi2.ppf(0.5e-6, n - 1) / (n - 1)
    high = stats.chi2.ppf(1 - 0.5e-6, n - 1) / (n - 1)
    assert low <= samples.var(ddof=1) / expected**2 <= high


def test_privatize_update_clips_before_noise():
    big = [np.full(10, 100.0), np.array(3.0)]
    out = privatize_update(big, clipping_norm=2.0, stddev=0.0, rng=np.random.default_rng(0))
    assert l2_norm(out) == pytest.approx(2.0)


def test_planned_run_fits_budget_with_prior_spend():
    prior = [(2.0, 0.1, 50)]
    event = plan_round_event(prior, level="patient", budget_epsilon=3.0, budget_delta=1e-5,
                             accountant="rdp", planned_rounds=10, sample_rate=0.1,
                             steps_per_round=5)
    whole_run = [*prior, *[event] * 10]
    assert epsilon_from_history(whole_run, delta=1e-5) <= 3.0
    # and it is not wastefully noisy: 1% less noise would overspend
    louder = GaussianRoundEvent(noise_multiplier=event.noise_multiplier * 0.99, sample_rate=0.1,
                                steps=5, level="patient")
    assert epsilon_from_history([*prior, *[louder] * 10], delta=1e-5) > 3.0


def test_dp_sgd_steps_per_round():
    assert dp_sgd_steps(rows=30, batch_size=12, local_steps=0, local_epochs=2) == 6
    assert dp_sgd_steps(rows=30, batch_size=12, local_steps=4, local_epochs=2) == 4


def test_distributed_noise_shares_sum_to_the_accounted_noise():
    """t hospitals each adding z(C+r)/sqrt(t) give a sum with stddev z(C+r), sensitivity C+r."""
    event = GaussianRoundEvent(noise_multiplier=1.3, sample_rate=1.0, steps=1, level="hospital")
    t, clip, rounding = 4, 0.5, 1e-9
    share = hospital_noise_stddev(event, clipping_norm=clip, noise_mode="distributed",
                                  min_contributors=t, rounding_bound=rounding)
    rng = np.random.default_rng(2)
    total = sum(rng.normal(0, share, 200_000) for _ in range(t))
    n = total.size
    low = stats.chi2.ppf(0.5e-6, n - 1) / (n - 1)
    high = stats.chi2.ppf(1 - 0.5e-6, n - 1) / (n - 1)
    assert low <= total.var(ddof=1) / (1.3 * (clip + rounding)) ** 2 <= high
