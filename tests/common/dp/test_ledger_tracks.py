"""The ledger's two tracks (training rows, test rows), their budgets and the pinned split."""

import json

import pytest
from opacus.accountants import RDPAccountant

from common.dp.events import GaussianRoundEvent
from common.dp.ledger import PrivacyLedger, SplitMismatch
from common.dp.ledger_store import parse_ledger
from common.errors import PrivacyBudgetExceededError
from common.wire.modes import LedgerTrack, PrivacyLevel

TRAIN = GaussianRoundEvent(noise_multiplier=1.2, sample_rate=0.1, steps=10, level="patient")
EVALUATION = GaussianRoundEvent(noise_multiplier=4.1, sample_rate=1.0, steps=1, level="patient")
HOSPITAL = GaussianRoundEvent(noise_multiplier=3.0, sample_rate=1.0, steps=1, level="hospital")
SPLIT = "ab" * 32
OTHER_SPLIT = "cd" * 32


def _ledger(tmp_path, epsilon=5.0, test_epsilon=None, test_delta=None):
    return PrivacyLedger.create(tmp_path / "ledgers" / "va.json", hospital="va",
                                budget_epsilon=epsilon, budget_delta=1e-5,
                                head_path=tmp_path / "heads" / "va.head",
                                test_budget_epsilon=test_epsilon, test_budget_delta=test_delta)


def _opacus(history, delta):
    accountant = RDPAccountant()
    for z, q, steps in history:
        for _ in range(steps):
            accountant.step(noise_multiplier=z, sample_rate=q)
    return accountant.get_epsilon(delta) if history else 0.0


def test_test_budget_defaults_to_the_training_budget_and_can_be_set(tmp_path):
    default = _ledger(tmp_path / "a")
    own = _ledger(tmp_path / "b", test_epsilon=0.5, test_delta=1e-6)
    assert (default.test_budget_epsilon, default.test_budget_delta) == (5.0, 1e-5)
    assert (own.test_budget_epsilon, own.test_budget_delta) == (0.5, 1e-6)
    stored = json.loads(own.path.read_text())["test_budget"]
    assert stored == {"epsilon": 0.5, "delta": 1e-6}


def test_with_the_split_pinned_first_the_tracks_compose_in_parallel(tmp_path):
    ledger = _ledger(tmp_path, epsilon=5.0)
    ledger.pin_split(SPLIT)
    rounds = 0
    while not ledger.would_exceed(TRAIN):  # spend the training budget to the last round
        rounds += 1
        ledger.charge("run", rounds, TRAIN)
    # The test track still has its whole budget: its patients are not the training ones.
    assert rounds >= 2
    assert ledger.charge("run", rounds, EVALUATION, LedgerTrack.TEST)
    train = ledger.epsilon_spent(PrivacyLevel.PATIENT)
    test = ledger.epsilon_spent(PrivacyLevel.PATIENT, LedgerTrack.TEST)
    assert train == pytest.approx(_opacus([TRAIN.as_opacus_entry()] * rounds, 1e-5), rel=1e-9)
    assert test == pytest.approx(_opacus([EVALUATION.as_opacus_entry()], 1e-5), rel=1e-9)
    assert ledger.patient_guarantee() == (max(train, test), 1e-5, "parallel")
    assert ledger.split.parallel and ledger.tracks_parallel


def test_a_second_evaluation_past_the_test_budget_is_refused_while_training_goes_on(tmp_path):
    ledger = _ledger(tmp_path, epsilon=8.0, test_epsilon=1.0)
    ledger.pin_split(SPLIT)
    ledger.charge("run", 1, EVALUATION, LedgerTrack.TEST)
    assert "test-track patient-level epsilon would reach" in ledger.would_exceed(
        EVALUATION, LedgerTrack.TEST)
    with pytest.raises(PrivacyBudgetExceededError, match="test track"):
        ledger.charge("run", 2, EVALUATION, LedgerTrack.TEST)
    assert ledger.charge("run", 2, TRAIN)  # the training track is untouched


def test_without_a_split_pinned_first_the_tracks_compose_sequentially(tmp_path):
    ledger = _ledger(tmp_path, epsilon=5.0)
    ledger.charge("run", 1, TRAIN)  # a release before any split was pinned
    ledger.pin_split(SPLIT)
    assert not ledger.split.parallel
    ledger.charge("run", 1, EVALUATION, LedgerTrack.TEST)
    epsilon, delta, how = ledger.patient_guarantee()
    both = [TRAIN.as_opacus_entry(), EVALUATION.as_opacus_entry()]
    assert how == "sequential" and delta == 1e-5
    assert epsilon == pytest.approx(_opacus(both, 1e-5), rel=1e-9)
    assert epsilon > max(ledger.epsilon_spent(PrivacyLevel.PATIENT),
                         ledger.epsilon_spent(PrivacyLevel.PATIENT, LedgerTrack.TEST))
    # Every charge is also held to the composition within the training budget.
    while not ledger.would_exceed(TRAIN):
        ledger.charge("run", 2 + len(ledger.entries), TRAIN)
    assert "both tracks composed" in ledger.would_exceed(EVALUATION, LedgerTrack.TEST)


def test_a_run_with_another_split_is_refused(tmp_path):
    ledger = _ledger(tmp_path)
    ledger.pin_split(SPLIT)
    ledger.pin_split(SPLIT)  # the same split again changes nothing
    with pytest.raises(SplitMismatch, match="pinned the split abababababababab"):
        ledger.pin_split(OTHER_SPLIT)
    assert PrivacyLedger.read(ledger.path).split.digest == SPLIT


def test_hospital_level_evaluation_composes_with_training_at_hospital_level(tmp_path):
    ledger = _ledger(tmp_path, epsilon=50.0)
    ledger.pin_split(SPLIT)
    ledger.charge("run", 1, HOSPITAL)
    ledger.charge("run", 1, HOSPITAL, LedgerTrack.TEST)  # same round, the other track
    hospital = ledger.epsilon_spent(PrivacyLevel.HOSPITAL)
    assert hospital == pytest.approx(_opacus([HOSPITAL.as_opacus_entry()] * 2, 1e-5), rel=1e-9)
    single = _opacus([HOSPITAL.as_opacus_entry()], 1e-5)
    assert ledger.epsilon_spent(PrivacyLevel.PATIENT) == pytest.approx(single, rel=1e-9)
    assert ledger.epsilon_spent(PrivacyLevel.PATIENT, LedgerTrack.TEST) == pytest.approx(
        single, rel=1e-9)


def test_every_recorded_figure_is_opacus_on_its_tracks_history(tmp_path):
    ledger = _ledger(tmp_path, epsilon=20.0, test_epsilon=3.0, test_delta=1e-6)
    ledger.pin_split(SPLIT)
    charges = [(1, TRAIN, LedgerTrack.TRAIN), (1, EVALUATION, LedgerTrack.TEST),
               (2, TRAIN, LedgerTrack.TRAIN), (2, EVALUATION, LedgerTrack.TEST)]
    train, test = [], []
    for round_, event, track in charges:
        ledger.charge("run", round_, event, track)
        (train if track == LedgerTrack.TRAIN else test).append(event.as_opacus_entry())
        after = PrivacyLedger.read(ledger.path).recorded_figures
        assert after.patient == pytest.approx(_opacus(train, 1e-5), rel=1e-9)
        assert after.test == pytest.approx(_opacus(test, 1e-6), rel=1e-9)
        assert (after.test_delta, after.test_budget_epsilon) == (1e-6, 3.0)


def test_a_ledger_from_before_the_tracks_reads_with_the_training_budget(tmp_path):
    ledger = _ledger(tmp_path)
    ledger.charge("run", 1, TRAIN)
    data = json.loads(ledger.path.read_text())
    assert "track" not in data["entries"][0]  # training entries are stored as before
    state = PrivacyLedger.read(ledger.path)
    assert state.entries[0].track == LedgerTrack.TRAIN and state.split is None


def _charge_both_tracks(tmp_path):
    ledger = _ledger(tmp_path, epsilon=50.0)
    ledger.pin_split(SPLIT)
    for round_, track in ((1, LedgerTrack.TRAIN), (1, LedgerTrack.TEST), (2, LedgerTrack.TRAIN),
                          (3, LedgerTrack.TRAIN), (3, LedgerTrack.TEST)):
        ledger.charge("run", round_, TRAIN if track == LedgerTrack.TRAIN else EVALUATION, track)
    return ledger


def test_the_file_keeps_training_entries_apart_so_entries_alone_are_the_training_track(tmp_path):
    ledger = _charge_both_tracks(tmp_path)
    in_memory = [entry.key for entry in ledger.entries]
    data = json.loads(ledger.path.read_text())
    assert [(e["round"], "track" in e) for e in data["entries"]] == [(1, False), (2, False),
                                                                      (3, False)]
    assert [(e["round"], e["at"], e["track"]) for e in data["test_entries"]] == [
        (1, 1, "test"), (3, 4, "test")]
    # A reader of "entries" alone (the run-directory contract) composes the training track.
    training = [(e["noise_multiplier"], e["sample_rate"], e["steps"]) for e in data["entries"]]
    assert ledger.recorded_figures.patient == pytest.approx(_opacus(training, 1e-5), rel=1e-9)
    # Read back, the entries are in the order they were charged.
    assert [entry.key for entry in PrivacyLedger.read(ledger.path).entries] == in_memory


def _rewrite(path, change):
    """Edit the file and give it a matching checksum (as its owner could; the head is not)."""
    from common.dp.ledger_store import _checksum

    data = json.loads(path.read_text())
    change(data)
    data.pop("checksum")
    data["checksum"] = _checksum(data)
    path.write_text(json.dumps(data))


def test_a_ledger_with_test_entries_among_entries_still_reads_in_order(tmp_path):
    ledger = _charge_both_tracks(tmp_path)
    in_memory = [entry.key for entry in ledger.entries]

    def merge(data):
        for test in data.pop("test_entries"):
            data["entries"].insert(test.pop("at"), test)

    _rewrite(ledger.path, merge)
    assert [entry.key for entry in parse_ledger(ledger.path.read_text()).entries] == in_memory


@pytest.mark.parametrize("at", [[4, 1], [1, 5], [1, "4"], [1, True]])
def test_a_test_entry_out_of_its_place_is_refused_naming_it(tmp_path, at):
    from common.errors import LedgerError

    ledger = _charge_both_tracks(tmp_path)

    def move(data):
        for test, place in zip(data["test_entries"], at, strict=True):
            test["at"] = place

    _rewrite(ledger.path, move)
    with pytest.raises(LedgerError, match=r"test_entries\[\d\]\.at must be"):
        parse_ledger(ledger.path.read_text())
