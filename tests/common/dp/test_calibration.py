"""Tests for common.dp.calibration.calibrate_for_ledger: noise fitted to the composed budget."""

import pytest
from opacus.accountants import RDPAccountant

from common.dp.accounting import within_budget
from common.dp.calibration import calibrate_for_ledger, calibrate_to_remaining_budget
from common.dp.events import GaussianRoundEvent
from common.dp.ledger import PrivacyLedger
from common.errors import PrivacyBudgetExceededError


def _rdp(history, delta=1e-5):
    """Opacus's RDPAccountant epsilon of (z, q, steps) entries (its history's own form)."""
    accountant = RDPAccountant()
    accountant.history = list(history)
    return accountant.get_epsilon(delta)


@pytest.fixture
def ledger(tmp_path):
    return PrivacyLedger.create(tmp_path / "va.json", hospital="va", budget_epsilon=4.0,
                                budget_delta=1e-5)


def test_patient_run_is_calibrated_against_every_entry(ledger):
    for round_ in (1, 2):
        ledger.charge("earlier", round_, GaussianRoundEvent(2.0, 1.0, 1, "hospital"))

    z = calibrate_for_ledger(ledger, level="patient", sample_rate=0.1, steps=200)
    alone = calibrate_for_ledger(PrivacyLedger.create(
        ledger.path.with_name("fresh.json"), hospital="va", budget_epsilon=4.0,
        budget_delta=1e-5), level="patient", sample_rate=0.1, steps=200)

    composed = _rdp([(2.0, 1.0, 2), (z, 0.1, 200)])
    assert composed <= 4.0
    assert z > alone  # the hospital-level releases left less room for the patients
    assert _rdp([(2.0, 1.0, 2), (z * 0.99, 0.1, 200)]) > 4.0 * 0.99


def test_hospital_run_on_a_ledger_with_patient_entries_is_refused(ledger):
    ledger.charge("earlier", 1, GaussianRoundEvent(1.0, 0.1, 10, "patient"))

    with pytest.raises(PrivacyBudgetExceededError, match="hospital-level guarantee is unbounded"):
        calibrate_for_ledger(ledger, level="hospital", sample_rate=1.0, steps=5)


def test_own_run_is_excluded_so_z_stays_fixed_within_a_run(ledger):
    first = calibrate_for_ledger(ledger, level="hospital", sample_rate=1.0, steps=5,
                                 exclude_run="run")
    ledger.charge("run", 1, GaussianRoundEvent(first, 1.0, 1, "hospital"))

    again = calibrate_for_ledger(ledger, level="hospital", sample_rate=1.0, steps=5,
                                 exclude_run="run")

    assert again == first and _rdp([(first, 1.0, 5)]) <= 4.0


# Histories a hospital's calibration meets (Opacus's epsilon 0.24-1.1 at delta 1e-5): an
# explanation release (q = 1), earlier runs at either level; budgets from tight to loose.
PRIORS = [
    [(15.0, 1.0, 1)],
    [(15.0, 1.0, 1), (3.0, 0.05, 100)],
    [(8.0, 1.0, 2), (3.0, 0.1, 30)],
    [(6.0, 1.0, 1), (15.0, 1.0, 1)],
]


@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize(("budget", "sample_rate", "steps"),
                         [(1.5, 0.1, 40), (3.0, 0.02, 1000), (8.0, 0.5, 6)])
def test_calibration_around_a_history_is_the_least_z_opacus_allows(prior, budget, sample_rate,
                                                                     steps):
    # Act
    z = calibrate_to_remaining_budget(prior, budget_epsilon=budget, delta=1e-5,
                                      sample_rate=sample_rate, steps=steps)

    # Assert: by Opacus's accountant the run fits at z, and not at 0.1% less noise (the
    # search's precision)
    assert _rdp([*prior, (z, sample_rate, steps)]) <= budget
    assert _rdp([*prior, (z * (1 - 1e-3), sample_rate, steps)]) > budget


@pytest.mark.parametrize("prior", PRIORS)
def test_within_budget_is_opacus_at_the_boundary(prior):
    # Arrange: budgets at Opacus's epsilon of the history and a hair either side
    history = [*prior, (1.3, 0.1, 50)]
    exact = _rdp(history)

    # Act / Assert
    assert within_budget(history, budget_epsilon=exact, delta=1e-5)
    assert within_budget(history, budget_epsilon=exact * (1 + 1e-12), delta=1e-5)
    assert not within_budget(history, budget_epsilon=exact * (1 - 1e-12), delta=1e-5)
    assert within_budget(history, budget_epsilon=exact * 1.5, delta=1e-5)
    assert not within_budget(history, budget_epsilon=exact / 1.5, delta=1e-5)
