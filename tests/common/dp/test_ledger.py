"""Tests for common.dp.ledger: charged once, persisted before release, budget kept, tamper-evident.

"Restarts" are simulated by dropping the ledger object and opening the file again, which is
all a new client process does.
"""

import hashlib
import json
import math
import os

import pytest
from opacus.accountants import RDPAccountant

from common.dp.events import GaussianRoundEvent
from common.dp.ledger import PrivacyLedger
from common.errors import LedgerError, PrivacyBudgetExceededError

HOSPITAL_ROUND = GaussianRoundEvent(3.0, 1.0, 1, "hospital")
PATIENT_ROUND = GaussianRoundEvent(1.1, 0.08, 13, "patient")


def _open(path, epsilon=10.0, delta=1e-5, hospital="cleveland"):
    """Create the ledger the first time (as ``fedcare budget init`` does), else open it."""
    if not path.exists():
        return PrivacyLedger.create(path, hospital=hospital, budget_epsilon=epsilon,
                                    budget_delta=delta)
    return PrivacyLedger.open(path, hospital=hospital, budget_epsilon=epsilon, budget_delta=delta)


@pytest.fixture
def ledger_path(tmp_path):
    return tmp_path / "ledger" / "privacy.json"


def test_ledger_file_has_the_documented_format(ledger_path):
    # Act
    ledger = _open(ledger_path, epsilon=50.0)
    ledger.charge("run-1", 1, HOSPITAL_ROUND)
    ledger.charge("run-1", 1, PATIENT_ROUND)

    # Assert
    data = json.loads(ledger_path.read_text())
    assert list(data) == ["hospital", "budget", "accountant", "sequence", "previous",
                          "head_file", "test_budget", "split_key", "entries", "checksum"]
    assert data["hospital"] == "cleveland"
    assert data["budget"] == {"epsilon": 50.0, "delta": 1e-5}
    assert data["accountant"] == "rdp"
    assert data["sequence"] == 3  # create, two charges
    assert data["head_file"] == str(ledger_path.with_name(".privacy.json.head"))
    figures = [entry.pop("after") for entry in data["entries"]]
    assert data["entries"] == [
        {"run": "run-1", "round": 1, "level": "hospital", "noise_multiplier": 3.0,
         "sample_rate": 1.0, "steps": 1, "noise_mode": "local"},
        {"run": "run-1", "round": 1, "level": "patient", "noise_multiplier": 1.1,
         "sample_rate": 0.08, "steps": 13},
    ]
    assert [list(f) for f in figures] == [["delta", "epsilon", "budget_epsilon",
                                           "rounds_left", "test_delta",
                                           "test_budget_epsilon"]] * 2
    assert [list(f["epsilon"]) for f in figures] == [["patient", "hospital", "test"]] * 2
    assert figures[1]["epsilon"]["hospital"] is None  # unbounded after a patient-level entry
    assert figures[1]["epsilon"]["test"] == 0.0  # nothing charged on the test track


def test_ledger_records_the_opacus_figures_after_each_entry(ledger_path):
    # Arrange: an independent accountant per level, stepped as the ledger composes them
    ledger = _open(ledger_path, epsilon=50.0)
    patient, hospital = RDPAccountant(), RDPAccountant()
    expected = []

    # Act
    for round_, event in enumerate((HOSPITAL_ROUND, HOSPITAL_ROUND, PATIENT_ROUND), start=1):
        ledger.charge("run-1", round_, event)
        for _ in range(event.steps):
            patient.step(noise_multiplier=event.noise_multiplier, sample_rate=event.sample_rate)
            if event.level == "hospital":
                hospital.step(noise_multiplier=event.noise_multiplier, sample_rate=1.0)
        expected.append((patient.get_epsilon(delta=1e-5),
                         hospital.get_epsilon(delta=1e-5) if event.level == "hospital"
                         else math.inf, ledger.rounds_left(event)))

    # Assert: what a reader gets without any accountant equals Opacus on the history
    recorded = [entry.after for entry in PrivacyLedger.read(ledger_path).entries]
    for after, (want_patient, want_hospital, want_left) in zip(recorded, expected, strict=True):
        assert after.delta == 1e-5 and after.budget_epsilon == 50.0
        assert after.patient == pytest.approx(want_patient, rel=1e-9)
        assert after.hospital == pytest.approx(want_hospital, rel=1e-9)
        assert after.rounds_left == want_left > 0
    assert ledger.recorded_figures == recorded[-1]
    assert recorded[-1].patient == pytest.approx(ledger.epsilon_spent("patient"), rel=1e-12)


def test_ledger_prv_records_epsilons_but_not_rounds_left(ledger_path):
    ledger = PrivacyLedger.create(ledger_path, hospital="cleveland", budget_epsilon=50.0,
                                  budget_delta=1e-5, accountant="prv")
    ledger.charge("run-1", 1, HOSPITAL_ROUND)

    after = PrivacyLedger.read(ledger_path).recorded_figures
    assert after.rounds_left is None
    assert after.patient == pytest.approx(ledger.epsilon_spent("patient"), rel=1e-12)


def test_ledger_patient_epsilon_composes_every_entry_as_stepped_opacus(ledger_path):
    # Arrange: hospital-level rounds first, then patient-level ones (one patient, one budget)
    ledger = _open(ledger_path, epsilon=50.0)
    distributed = GaussianRoundEvent(2.0, 1.0, 1, "hospital", noise_mode="distributed")
    for round_ in range(1, 4):
        ledger.charge("run-1", round_, HOSPITAL_ROUND)
    ledger.charge("run-2", 1, distributed)
    hospital_only = ledger.epsilon_spent("hospital")
    for round_ in range(1, 4):
        ledger.charge("run-3", round_, PATIENT_ROUND)
    patient, hospital = RDPAccountant(), RDPAccountant()
    for _ in range(3):
        for accountant in (patient, hospital):
            accountant.step(noise_multiplier=3.0, sample_rate=1.0)
    for accountant in (patient, hospital):
        accountant.step(noise_multiplier=2.0, sample_rate=1.0)
    for _ in range(3 * PATIENT_ROUND.steps):
        patient.step(noise_multiplier=1.1, sample_rate=0.08)

    # Act
    reopened = _open(ledger_path, epsilon=50.0)

    # Assert: a hospital-level release is a patient-level (z, q=1, 1 step) mechanism too;
    # after a patient-level release the hospital-level guarantee is unbounded
    assert hospital_only == pytest.approx(hospital.get_epsilon(1e-5), rel=1e-9)
    assert reopened.epsilon_spent("patient") == pytest.approx(patient.get_epsilon(1e-5), rel=1e-9)
    assert reopened.epsilon_spent("hospital") == math.inf
    assert reopened.is_hospital_level_unbounded()
    assert reopened.history("patient")[:4] == [(3.0, 1.0, 1)] * 3 + [(2.0, 1.0, 1)]


def test_ledger_refuses_hospital_level_charge_after_a_patient_level_one(ledger_path):
    # Arrange
    ledger = _open(ledger_path, epsilon=50.0)
    ledger.charge("run-1", 1, PATIENT_ROUND)
    before = ledger_path.read_bytes()

    # Act / Assert
    with pytest.raises(PrivacyBudgetExceededError,
                       match="already holds patient-level releases; the hospital-level "
                             "guarantee is unbounded"):
        ledger.charge("run-2", 1, HOSPITAL_ROUND)
    assert ledger_path.read_bytes() == before
    assert ledger.would_exceed(HOSPITAL_ROUND)
    assert ledger.rounds_left(HOSPITAL_ROUND) == 0
    assert ledger.remaining("hospital") == 0.0
    assert ledger.projected_epsilon(HOSPITAL_ROUND) == math.inf
    assert not ledger.would_exceed(PATIENT_ROUND)


def test_ledger_patient_budget_limits_hospital_level_charges(ledger_path):
    # Arrange: the patient level already spent most of what a hospital-level round would add
    ledger = _open(ledger_path, epsilon=3.0)
    hospital_round = GaussianRoundEvent(2.0, 1.0, 1, "hospital")
    ledger.charge("run-1", 1, hospital_round)
    fits = ledger.rounds_left(hospital_round)
    for round_ in range(2, fits + 2):
        ledger.charge("run-1", round_, hospital_round)

    # Act
    patient_after = GaussianRoundEvent(0.8, 0.5, 50, "patient")

    # Assert: a patient-level charge is checked against the composition of everything
    assert ledger.would_exceed(patient_after)
    assert ledger.projected_epsilon(patient_after) == pytest.approx(
        _rdp([(2.0, 1.0, fits + 1), (0.8, 0.5, 50)]), rel=1e-9)
    with pytest.raises(PrivacyBudgetExceededError, match="patient-level epsilon"):
        ledger.charge("run-2", 1, patient_after)
    assert ledger.epsilon_spent("patient") == pytest.approx(ledger.epsilon_spent("hospital"))


def test_ledger_hospital_charge_is_checked_at_patient_level_too(ledger_path):
    # Arrange: an entry with q < 1 at hospital level counts with q = 1 at patient level
    ledger = _open(ledger_path, epsilon=2.0)
    sampled = GaussianRoundEvent(1.0, 0.01, 1, "hospital")

    # Act
    hospital_left = ledger.rounds_left(sampled, limit=10_000)

    # Assert: the patient level (no amplification) is the binding one
    assert hospital_left == _max_fitting(2.0, (1.0, 1.0, 1))
    assert ledger.projected_epsilon(sampled, "patient") == pytest.approx(_rdp([(1.0, 1.0, 1)]))
    assert ledger.projected_epsilon(sampled) == pytest.approx(_rdp([(1.0, 0.01, 1)]))


def _rdp(history, delta=1e-5):
    accountant = RDPAccountant()
    for z, q, steps in history:
        for _ in range(steps):
            accountant.step(noise_multiplier=z, sample_rate=q)
    return accountant.get_epsilon(delta)


def _max_fitting(budget, entry):
    k = 0
    while _rdp([(entry[0], entry[1], entry[2] * (k + 1))]) <= budget:
        k += 1
    return k


def test_ledger_charge_same_round_twice_is_a_no_op_also_after_restart(ledger_path):
    # Arrange
    ledger = _open(ledger_path)

    # Act
    first = ledger.charge("run-1", 4, HOSPITAL_ROUND)
    again = ledger.charge("run-1", 4, HOSPITAL_ROUND)
    after_restart = _open(ledger_path).charge("run-1", 4, HOSPITAL_ROUND)

    # Assert
    assert (first, again, after_restart) == (True, False, False)
    assert len(_open(ledger_path).entries) == 1
    assert _open(ledger_path).history("hospital") == [(3.0, 1.0, 1)]


def test_ledger_same_round_at_other_level_or_run_is_charged(ledger_path):
    # Arrange
    ledger = _open(ledger_path)

    # Act
    charged = [
        ledger.charge("run-1", 1, HOSPITAL_ROUND),
        ledger.charge("run-2", 1, HOSPITAL_ROUND),
        ledger.charge("run-1", 1, PATIENT_ROUND),
    ]

    # Assert
    assert charged == [True, True, True]


def test_ledger_same_round_with_different_event_is_refused(ledger_path):
    # Arrange
    ledger = _open(ledger_path)
    ledger.charge("run-1", 1, HOSPITAL_ROUND)
    weaker = GaussianRoundEvent(noise_multiplier=0.5, sample_rate=1.0, steps=1, level="hospital")

    # Act / Assert
    with pytest.raises(LedgerError, match="already charged"):
        ledger.charge("run-1", 1, weaker)


def test_ledger_detects_over_budget_also_after_restart(ledger_path):
    # Arrange: charge as many rounds as fit
    ledger = _open(ledger_path, epsilon=4.0)
    fits = ledger.rounds_left(HOSPITAL_ROUND)
    for round_ in range(1, fits + 1):
        ledger.charge("run-1", round_, HOSPITAL_ROUND)
    before = ledger_path.read_bytes()

    # Act
    restarted = _open(ledger_path, epsilon=4.0)

    # Assert
    assert fits > 0
    assert restarted.epsilon_spent("hospital") <= 4.0
    assert restarted.would_exceed(HOSPITAL_ROUND)
    assert restarted.rounds_left(HOSPITAL_ROUND) == 0
    with pytest.raises(PrivacyBudgetExceededError, match="budget 4"):
        restarted.charge("run-1", fits + 1, HOSPITAL_ROUND)
    assert ledger_path.read_bytes() == before


def test_ledger_charge_is_on_disk_before_it_returns(ledger_path):
    # Arrange
    ledger = _open(ledger_path)

    # Act: the process "crashes" right after charging, before sending the update
    ledger.charge("run-1", 7, PATIENT_ROUND)
    del ledger

    # Assert: the raw file (no ledger object involved) already holds the charge
    entries = json.loads(ledger_path.read_text())["entries"]
    assert [(e["run"], e["round"]) for e in entries] == [("run-1", 7)]
    assert _open(ledger_path).epsilon_spent("patient") > 0


def test_ledger_failed_write_raises_and_records_nothing(ledger_path, monkeypatch):
    # Arrange
    ledger = _open(ledger_path)
    before = ledger_path.read_bytes()

    def fail(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)

    # Act / Assert
    with pytest.raises(LedgerError, match="disk full"):
        ledger.charge("run-1", 1, HOSPITAL_ROUND)
    monkeypatch.undo()
    assert ledger_path.read_bytes() == before
    assert ledger.entries == ()
    assert [p.name for p in ledger_path.parent.iterdir() if p.suffix == ".tmp"] == []


def test_ledger_atomic_writes_leave_no_temporary_files(ledger_path):
    # Act
    ledger = _open(ledger_path)
    for round_ in range(1, 6):
        ledger.charge("run-1", round_, HOSPITAL_ROUND)

    # Assert: only the ledger, its lock file and its fallback head file remain
    names = sorted(p.name for p in ledger_path.parent.iterdir())
    assert names == [".privacy.json.head", ".privacy.json.lock", "privacy.json"]


def test_ledger_stale_instances_never_lose_an_entry(ledger_path):
    # Arrange: two workers hold the same ledger (as Ray workers in a simulation may)
    first, second = _open(ledger_path), _open(ledger_path)

    # Act
    first.charge("run-1", 1, HOSPITAL_ROUND)
    second.charge("run-1", 2, HOSPITAL_ROUND)

    # Assert
    assert [e.round for e in _open(ledger_path).entries] == [1, 2]


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda text: text.replace('"steps": 1', '"steps": 0'), "checksum mismatch"),
        (lambda text: text.replace('"sample_rate": 1.0', '"sample_rate": 0.1'), "checksum"),
        (lambda text: text.replace('"epsilon": 10.0', '"epsilon": 100.0'), "checksum mismatch"),
        (lambda text: text[: len(text) // 2], "not valid JSON"),
        (lambda text: "", "not valid JSON"),
        (lambda text: "\x00\xff garbage", "not valid JSON"),
        (lambda text: json.dumps({"hospital": "cleveland"}), "exactly the keys"),
        (lambda text: text.replace('"delta": 1e-05', '"delta": NaN'), "not valid JSON"),
    ],
    ids=["steps", "noise", "budget", "truncated", "empty", "binary", "missing-keys", "nan"],
)
def test_ledger_rejects_tampered_or_garbled_file(ledger_path, corrupt, message):
    # Arrange
    _open(ledger_path).charge("run-1", 1, HOSPITAL_ROUND)
    ledger_path.write_text(corrupt(ledger_path.read_text()))

    # Act / Assert
    with pytest.raises(LedgerError, match=message):
        _open(ledger_path)


def test_ledger_rejects_invalid_entry_even_with_a_matching_checksum(ledger_path):
    # Arrange: recompute the documented checksum after an edit that breaks an entry
    _open(ledger_path).charge("run-1", 1, HOSPITAL_ROUND)
    data = json.loads(ledger_path.read_text())
    del data["checksum"]
    data["entries"][0]["sample_rate"] = 0.0
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    data["checksum"] = hashlib.sha256(canonical.encode()).hexdigest()
    ledger_path.write_text(json.dumps(data))

    # Act / Assert
    with pytest.raises(LedgerError, match="entries\\[0\\]: sample_rate must be in"):
        _open(ledger_path)


def test_ledger_rejects_a_file_edited_after_opening(ledger_path):
    # Arrange
    ledger = _open(ledger_path)
    ledger_path.write_text(ledger_path.read_text().replace('"epsilon": 10.0', '"epsilon": 99.0'))

    # Act / Assert
    with pytest.raises(LedgerError, match="checksum mismatch"):
        ledger.charge("run-1", 1, HOSPITAL_ROUND)


def test_ledger_rejects_another_hospitals_file(ledger_path):
    # Arrange
    _open(ledger_path, hospital="cleveland")

    # Act / Assert
    with pytest.raises(LedgerError, match="belongs to hospital 'cleveland', not 'hungary'"):
        _open(ledger_path, hospital="hungary")


def test_ledger_budget_can_be_lowered_but_never_raised(ledger_path):
    # Arrange
    _open(ledger_path, epsilon=5.0, delta=1e-5)

    # Act
    raised = _open(ledger_path, epsilon=50.0, delta=1e-3)
    lowered = _open(ledger_path, epsilon=2.0, delta=1e-6)
    after_restart = _open(ledger_path, epsilon=50.0, delta=1e-3)

    # Assert
    assert (raised.budget_epsilon, raised.budget_delta) == (5.0, 1e-5)
    assert (lowered.budget_epsilon, lowered.budget_delta) == (2.0, 1e-6)
    assert (after_restart.budget_epsilon, after_restart.budget_delta) == (2.0, 1e-6)


def test_ledger_rounds_left_all_fit_and_no_more(ledger_path):
    # Arrange
    ledger = _open(ledger_path, epsilon=6.0)
    ledger.charge("run-1", 1, HOSPITAL_ROUND)

    # Act
    left = ledger.rounds_left(HOSPITAL_ROUND)
    for round_ in range(2, left + 2):
        ledger.charge("run-1", round_, HOSPITAL_ROUND)

    # Assert
    assert left > 0
    assert ledger.would_exceed(HOSPITAL_ROUND)
    assert ledger.remaining("hospital") == pytest.approx(6.0 - ledger.epsilon_spent("hospital"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"budget_epsilon": 0.0}, "budget_epsilon must be > 0"),
        ({"budget_epsilon": -1.0}, "budget_epsilon must be > 0"),
        ({"budget_delta": 0.0}, "budget_delta must be in \\(0, 1\\)"),
        ({"budget_delta": 1.0}, "budget_delta must be in \\(0, 1\\)"),
        ({"accountant": "gdp"}, "accountant must be one of"),
    ],
    ids=["epsilon-zero", "epsilon-negative", "delta-zero", "delta-one", "accountant"],
)
def test_ledger_open_rejects_bad_budget(ledger_path, kwargs, message):
    # Arrange
    arguments = {"hospital": "cleveland", "budget_epsilon": 1.0, "budget_delta": 1e-5, **kwargs}

    # Act / Assert
    with pytest.raises(ValueError, match=message):
        PrivacyLedger.create(ledger_path, **arguments)
    assert not ledger_path.exists()


def test_ledger_refuses_to_switch_accountant(ledger_path):
    # Arrange
    _open(ledger_path)

    # Act / Assert
    with pytest.raises(LedgerError, match="uses accountant 'rdp', not 'prv'"):
        PrivacyLedger.open(ledger_path, hospital="cleveland", budget_epsilon=10.0,
                           budget_delta=1e-5, accountant="prv")
