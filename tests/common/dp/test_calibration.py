"""Tests for common.dp.calibration.calibrate_for_ledger: noise fitted to the composed budget."""

import pytest
from opacus.accountants import RDPAccountant

from common.dp.calibration import calibrate_for_ledger
from common.dp.events import GaussianRoundEvent
from common.dp.ledger import PrivacyLedger
from common.errors import PrivacyBudgetExceededError


def _rdp(history, delta=1e-5):
    accountant = RDPAccountant()
    for z, q, steps in history:
        for _ in range(steps):
            accountant.step(noise_multiplier=z, sample_rate=q)
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
