"""Tests for common.dp.accounting and common.dp.events against Opacus's own accountants.

Reference values are built independently of the code under test: an Opacus accountant fed
one ``.step()`` call per step, as a DP-SGD loop would.
"""

import math

import pytest
from opacus.accountants import PRVAccountant, RDPAccountant

from common.dp.accounting import (
    calibrate_noise_multiplier,
    effective_noise_multiplier,
    epsilon_from_history,
    max_repetitions,
)
from common.dp.events import GaussianRoundEvent


def _stepped(accountant, entries):
    for z, q, steps in entries:
        for _ in range(steps):
            accountant.step(noise_multiplier=z, sample_rate=q)
    return accountant


def test_epsilon_from_history_matches_opacus_golden_value():
    # Arrange: Opacus's own accountants_test pins this value for z=1.5, q=0.04, 90 epochs
    history = [GaussianRoundEvent(1.5, 0.04, 2250, "patient")]

    # Act
    epsilon = epsilon_from_history(history, delta=1e-5)

    # Assert
    assert epsilon == pytest.approx(7.32911117143, abs=1e-7)


def test_epsilon_from_history_equals_stepped_rdp_accountant():
    # Arrange: interleaved levels of noise, as rounds with different sample rates produce
    entries = [(1.1, 0.05, 40), (0.8, 1.0, 1), (1.1, 0.05, 40), (1.1, 0.06, 30), (0.8, 1.0, 1)]
    reference = _stepped(RDPAccountant(), entries).get_epsilon(1e-5)

    # Act
    from_tuples = epsilon_from_history(entries, delta=1e-5)
    from_events = epsilon_from_history(
        [GaussianRoundEvent(z, q, s, "hospital") for z, q, s in entries], delta=1e-5
    )

    # Assert
    assert from_tuples == pytest.approx(reference, rel=1e-9)
    assert from_events == from_tuples


def test_epsilon_from_history_prv_matches_stepped_prv_accountant_and_is_tighter():
    # Arrange
    entries = [(1.0, 0.1, 50), (1.0, 0.1, 50)]
    reference = _stepped(PRVAccountant(), entries).get_epsilon(1e-5)

    # Act
    prv = epsilon_from_history(entries, delta=1e-5, accountant="prv")

    # Assert
    assert prv == pytest.approx(reference, rel=1e-6)
    assert prv < epsilon_from_history(entries, delta=1e-5, accountant="rdp")


def test_epsilon_from_history_is_monotone_in_rounds():
    # Arrange
    event = GaussianRoundEvent(noise_multiplier=1.0, sample_rate=1.0, steps=1, level="hospital")

    # Act
    epsilons = [epsilon_from_history([event] * rounds, delta=1e-5) for rounds in range(0, 30, 5)]

    # Assert
    assert epsilons[0] == 0.0
    assert all(a < b for a, b in zip(epsilons, epsilons[1:], strict=False))


def test_epsilon_from_history_without_noise_is_infinite():
    assert math.isinf(epsilon_from_history([(0.0, 1.0, 1)], delta=1e-5))


@pytest.mark.parametrize(
    ("target_epsilon", "sample_rate", "steps"),
    [(1.0, 1.0, 20), (3.0, 0.05, 1000), (8.0, 0.04, 2250)],
    ids=["hospital-level", "patient-short", "opacus-90-epochs"],
)
def test_calibrate_noise_multiplier_meets_target_without_overshoot(
    target_epsilon, sample_rate, steps
):
    # Act
    z = calibrate_noise_multiplier(
        target_epsilon=target_epsilon, target_delta=1e-5, sample_rate=sample_rate, steps=steps
    )

    # Assert: never above the target, and within Opacus's search tolerance of it
    reference = RDPAccountant()
    reference.history = [(z, sample_rate, steps)]
    epsilon = reference.get_epsilon(1e-5)
    assert epsilon <= target_epsilon
    assert epsilon >= target_epsilon - 0.011


def test_effective_noise_multiplier_local_mode_halves_z():
    # Arrange: z * C noise on an update whose replacement moves it by up to 2C
    z, clip = 1.2, 0.5

    # Act
    effective = effective_noise_multiplier(noise_stddev=z * clip, sensitivity=2 * clip)

    # Assert
    assert effective == pytest.approx(z / 2)


def test_max_repetitions_is_the_exact_boundary():
    # Arrange
    history = [(2.0, 1.0, 3)]
    event = GaussianRoundEvent(noise_multiplier=2.0, sample_rate=1.0, steps=1, level="hospital")

    # Act
    k = max_repetitions(history, event, budget_epsilon=8.0, delta=1e-5)

    # Assert
    assert k > 0
    assert epsilon_from_history([*history, (2.0, 1.0, k)], delta=1e-5) <= 8.0
    assert epsilon_from_history([*history, (2.0, 1.0, k + 1)], delta=1e-5) > 8.0


def _epsilon(history=(), **overrides):
    return lambda: epsilon_from_history(list(history), **{"delta": 1e-5, **overrides})


def _calibrate(**overrides):
    valid = {"target_epsilon": 1.0, "target_delta": 1e-5, "sample_rate": 1.0, "steps": 1}
    return lambda: calibrate_noise_multiplier(**{**valid, **overrides})


def _effective(**overrides):
    valid = {"noise_stddev": 1.0, "sensitivity": 1.0}
    return lambda: effective_noise_multiplier(**{**valid, **overrides})


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (_epsilon(delta=0.0), "delta must be in \\(0, 1\\), got 0.0"),
        (_epsilon(delta=1.0), "delta must be in \\(0, 1\\), got 1.0"),
        (_epsilon(accountant="gdp"), "accountant must be one of"),
        (_epsilon([(-1.0, 0.5, 1)]), "noise_multiplier must be >= 0, got -1.0"),
        (_epsilon([(1.0, 0.0, 1)]), "sample_rate must be in \\(0, 1\\], got 0.0"),
        (_epsilon([(1.0, 1.5, 1)]), "sample_rate must be in \\(0, 1\\], got 1.5"),
        (_calibrate(target_epsilon=0.0), "target_epsilon must be > 0, got 0.0"),
        (_calibrate(target_epsilon=-2.0), "target_epsilon must be > 0, got -2.0"),
        (_calibrate(target_delta=2.0), "target_delta must be in \\(0, 1\\), got 2.0"),
        (_calibrate(sample_rate=0.0), "sample_rate must be in \\(0, 1\\]"),
        (_calibrate(steps=0), "steps must be >= 1"),
        (_effective(sensitivity=0.0), "sensitivity must be > 0"),
        (_effective(noise_stddev=-1.0), "noise_stddev must be >= 0"),
    ],
    ids=[
        "delta-zero", "delta-one", "unknown-accountant", "negative-z", "zero-q", "q-above-one",
        "epsilon-zero", "epsilon-negative", "target-delta", "calibrate-q", "calibrate-steps",
        "sensitivity", "stddev",
    ],
)
def test_accounting_rejects_bad_input_naming_the_parameter(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"noise_multiplier": -0.5}, "noise_multiplier must be >= 0, got -0.5"),
        ({"sample_rate": 0.0}, "sample_rate must be in \\(0, 1\\], got 0.0"),
        ({"sample_rate": 1.01}, "sample_rate must be in \\(0, 1\\]"),
        ({"steps": 0}, "steps must be >= 1"),
        ({"steps": 1.5}, "steps must be an integer"),
        ({"level": "server"}, "level must be one of"),
        ({"noise_multiplier": True}, "noise_multiplier must be a number"),
    ],
    ids=["negative-z", "zero-q", "big-q", "zero-steps", "float-steps", "level", "bool"],
)
def test_gaussian_round_event_rejects_bad_fields(fields, message):
    # Arrange
    valid = {"noise_multiplier": 1.0, "sample_rate": 0.5, "steps": 3, "level": "patient"}

    # Act / Assert
    with pytest.raises(ValueError, match=message):
        GaussianRoundEvent(**{**valid, **fields})


def test_gaussian_round_event_is_frozen_and_normalises_ints():
    # Act
    event = GaussianRoundEvent(noise_multiplier=1, sample_rate=1, steps=2, level="hospital")

    # Assert
    assert isinstance(event.noise_multiplier, float) and event.as_opacus_entry() == (1.0, 1.0, 2)
    with pytest.raises(AttributeError):
        event.steps = 3  # type: ignore[misc]
