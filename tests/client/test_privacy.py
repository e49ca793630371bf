"""Hospital-level mechanism: clip to C, then noise whose spread is the accounted 2zC."""

import numpy as np
import pytest
from scipy import stats

from client.privacy import (
    distributed_round_event,
    dp_sgd_steps,
    hospital_noise_stddev,
    plan_round_event,
    privatize_update,
)
from common.dp.accounting import epsilon_from_history
from common.dp.calibration import calibrate_to_remaining_budget
from common.dp.clipping import l2_norm
from common.dp.events import GaussianRoundEvent
from common.errors import PrivacyBudgetExceededError


def test_privatize_update_noise_std_is_twice_z_times_clip():
    """Zero update: what comes back is pure noise; its std must be 2zC (local mode).

    With 200,000 draws the sample variance's chi-square interval at a 1e-6 false-failure
    rate is about +/-1.6% of the variance.
    """
    event = GaussianRoundEvent(noise_multiplier=0.7, sample_rate=1.0, steps=1, level="hospital")
    update = [np.zeros((400, 250), np.float64), np.zeros(0)]
    stddev = hospital_noise_stddev(event, clipping_norm=0.3, noise_mode="local")
    noised = privatize_update(update, clipping_norm=0.3, stddev=stddev,
                              rng=np.random.default_rng(1))
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
    event = plan_round_event([prior], level="patient", budget_epsilon=3.0, budget_delta=1e-5,
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
    """Each of h hospitals adds 2z(C+r)/sqrt(h): the sum's stddev 2z(C+r), sensitivity 2(C+r)."""
    event = GaussianRoundEvent(noise_multiplier=1.3, sample_rate=1.0, steps=1, level="hospital")
    h, clip, rounding = 4, 0.5, 1e-9
    share = hospital_noise_stddev(event, clipping_norm=clip, noise_mode="distributed",
                                  honest_contributors=h, rounding_bound=rounding)
    rng = np.random.default_rng(2)
    total = sum(rng.normal(0, share, 200_000) for _ in range(h))
    n = total.size
    low = stats.chi2.ppf(0.5e-6, n - 1) / (n - 1)
    high = stats.chi2.ppf(1 - 0.5e-6, n - 1) / (n - 1)
    assert low <= total.var(ddof=1) / (2 * 1.3 * (clip + rounding)) ** 2 <= high


def _distributed(threshold=3, h=3, z=2.0, rounds=5):
    from dataclasses import replace

    from common.config import RunConfig
    from server.federation import round_settings

    config = RunConfig.from_run_config({"dp.mode": "hospital", "dp.noise-mode": "distributed",
                                        "secagg.enabled": True, "num-server-rounds": rounds})
    return replace(round_settings(config, "run", 1), secagg_threshold=threshold,
                   honest_contributors=h, noise_multiplier=z)


def _hospital(tmp_path, *, trusted=True, colluding=0):
    """A hospital-level hospital; `trusted`: it pinned a consortium roster (of 4, c = 0)."""
    from client.privacy import HospitalPrivacy
    from simulations.engine.ephemeral_roster import ensure_roster, key_path

    roster = {}
    if trusted:
        path, digest = ensure_roster(tmp_path, ["a", "b", "c", "d"], min_threshold=3)
        roster = {"roster_path": path, "roster_sha256": digest,
                  "signing_key_path": key_path(tmp_path, "a")}
    return HospitalPrivacy("hospital", 1.0, 1e-5, "rdp", tmp_path / "h.json",
                           colluding=colluding, **roster)


def test_distributed_noise_is_refused_without_a_trusted_peer_set(tmp_path):
    with pytest.raises(PrivacyBudgetExceededError, match="pinned consortium roster"):
        distributed_round_event(_distributed(), _hospital(tmp_path, trusted=False), [[]], 8.0, 1e-5)


def test_a_forged_honest_count_beyond_t_minus_c_is_refused(tmp_path):
    # The server claims h = 10000 (58x less noise each): the hospital checks h <= t - c.
    with pytest.raises(PrivacyBudgetExceededError, match="only t - c = 2 are guaranteed"):
        distributed_round_event(_distributed(threshold=3, h=10_000),
                                _hospital(tmp_path, colluding=1), [[]], 8.0, 1e-5)


def test_mixed_budgets_never_give_a_hospital_more_epsilon_than_its_ledger(tmp_path):
    """Budgets 1/8/8/8: every hospital adds the run's z; one that cannot afford it declines.

    Whatever the run's z, each hospital that takes part gets from the sum's noise exactly the
    epsilon Opacus computes from its own ledger's (z, 1, rounds), which is within its budget.
    """
    budgets, delta, rounds = (1.0, 8.0, 8.0, 8.0), 1e-5, 5
    for run_epsilon in (1.0, 8.0):
        z = calibrate_to_remaining_budget((), budget_epsilon=run_epsilon, delta=delta,
                                          sample_rate=1.0, steps=rounds)
        settings = _distributed(threshold=3, h=3, z=z, rounds=rounds)
        for budget in budgets:
            try:
                event = distributed_round_event(settings, _hospital(tmp_path), [[]], budget, delta)
            except PrivacyBudgetExceededError:
                assert budget < run_epsilon  # only a hospital that cannot afford z declines
                continue
            # The sum's noise: 3 honest shares of 2z(C+r)/sqrt(3) -> multiplier z on 2(C+r).
            share = hospital_noise_stddev(event, clipping_norm=0.5, noise_mode="distributed",
                                          honest_contributors=3)
            effective_z = share * np.sqrt(3) / (2 * 0.5)
            real = epsilon_from_history([(effective_z, 1.0, rounds)], delta=delta)
            ledger = epsilon_from_history([event.as_opacus_entry()] * rounds, delta=delta)
            assert real == pytest.approx(ledger, rel=1e-9) and ledger <= budget + 1e-9
