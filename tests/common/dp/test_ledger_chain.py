"""Tests for the ledger's lifecycle: created once, never silently recreated or rolled back."""

import hashlib
import json
import shutil

import pytest

import common.dp.ledger as ledger_module
from common.dp.events import GaussianRoundEvent
from common.dp.ledger import PrivacyLedger
from common.errors import LedgerError

HOSPITAL_ROUND = GaussianRoundEvent(3.0, 1.0, 1, "hospital")


@pytest.fixture
def paths(tmp_path):
    """A ledger on the hospital's disk and a head file on "another volume"."""
    return tmp_path / "disk" / "ledger.json", tmp_path / "other-volume" / "ledger.head"


def _create(path, head=None, epsilon=5.0):
    return PrivacyLedger.create(path, hospital="va", budget_epsilon=epsilon, budget_delta=1e-5,
                                head_path=head)


def _open(path, head=None, **kwargs):
    return PrivacyLedger.open(path, hospital="va", head_path=head, **kwargs)


def test_open_never_creates_and_names_the_init_command(paths):
    ledger, _ = paths

    with pytest.raises(LedgerError) as error:
        _open(ledger, budget_epsilon=1.0, budget_delta=1e-5)

    message = str(error.value)
    assert str(ledger) in message
    # The hospital's name differs from the file's stem: the command names it.
    assert f"fedcare budget init {ledger} --hospital va --epsilon E --delta D" in message
    assert not ledger.parent.exists()


def test_missing_ledger_and_head_are_refused_naming_init_with_the_head(paths):
    ledger, head = paths

    with pytest.raises(LedgerError) as error:
        PrivacyLedger.open(ledger, hospital="ledger", default_head_path=head)

    assert (f"no privacy ledger at {ledger} (nor a head file at {head})" in str(error.value))
    assert f"`fedcare budget init {ledger} --head {head} --epsilon E --delta D`" in str(
        error.value)
    assert not ledger.parent.exists() and not head.parent.exists()


def test_the_ledger_records_its_head_file_and_every_reader_checks_it(paths, tmp_path):
    ledger, head = paths
    _create(ledger, head).charge("run", 1, HOSPITAL_ROUND)
    snapshot = tmp_path / "snapshot"
    shutil.copytree(ledger.parent, snapshot)  # the whole directory, its beside head included
    _open(ledger).charge("run", 2, HOSPITAL_ROUND)  # no head named: the recorded one is kept

    assert json.loads(ledger.read_text())["head_file"] == str(head)
    assert json.loads(head.read_text())["sequence"] == 3
    shutil.rmtree(ledger.parent)
    shutil.copytree(snapshot, ledger.parent)  # the directory restored to write 2
    for reader in (lambda: _open(ledger), lambda: PrivacyLedger.read(ledger)):
        with pytest.raises(LedgerError, match="records write 3, the ledger is at write 2"):
            reader()


def test_deleting_the_ledger_directory_is_refused_while_its_head_is_kept_apart(paths):
    ledger, head = paths
    _create(ledger, head).charge("run", 1, HOSPITAL_ROUND)
    shutil.rmtree(ledger.parent)  # `rm -r` of the ledger's directory, head file included

    with pytest.raises(LedgerError) as error:
        _open(ledger, default_head_path=head)
    assert f"its head file {head} records write 2 of hospital 'va'" in str(error.value)
    assert "was deleted" in str(error.value)
    with pytest.raises(LedgerError, match="already records a ledger of hospital 'va'"):
        _create(ledger, head)
    assert not ledger.exists()


def test_a_named_head_file_overrides_the_recorded_one_and_is_recorded(paths, tmp_path):
    ledger, head = paths
    _create(ledger, head)
    moved = tmp_path / "third-volume" / "va.head"
    moved.parent.mkdir()
    shutil.copy(head, moved)  # the administrator moves the head file

    _open(ledger, moved).charge("run", 1, HOSPITAL_ROUND)

    assert json.loads(ledger.read_text())["head_file"] == str(moved)
    assert json.loads(moved.read_text())["sequence"] == 3
    assert json.loads(head.read_text())["sequence"] == 1  # the old one is no longer written
    assert PrivacyLedger.read(ledger).head_path == moved


def test_deleted_ledger_is_refused_not_recreated(paths):
    ledger, head = paths
    _create(ledger, head).charge("run", 1, HOSPITAL_ROUND)
    ledger.unlink()

    with pytest.raises(LedgerError, match="is missing, but its head file .* records write 2"):
        _open(ledger, head)
    # Re-initialising over the remaining head file is refused too: it would reset the budget.
    with pytest.raises(LedgerError, match="already records a ledger of hospital 'va' at write 2"):
        _create(ledger, head)
    assert not ledger.exists()


def test_create_refuses_an_existing_ledger(paths):
    ledger, head = paths
    _create(ledger, head)
    before = ledger.read_bytes()

    with pytest.raises(LedgerError, match="already exists"):
        _create(ledger, head, epsilon=50.0)
    assert ledger.read_bytes() == before


def test_restored_older_copy_is_refused_naming_both_files(paths, tmp_path):
    ledger, head = paths
    opened = _create(ledger, head)
    opened.charge("run", 1, HOSPITAL_ROUND)
    backup = tmp_path / "backup.json"
    shutil.copy(ledger, backup)
    opened.charge("run", 2, HOSPITAL_ROUND)
    shutil.copy(backup, ledger)  # an older, perfectly valid ledger restored in place

    with pytest.raises(LedgerError) as error:
        _open(ledger, head)

    message = str(error.value)
    assert str(ledger) in message and str(head) in message
    assert "records write 3" in message and "at write 2" in message
    with pytest.raises(LedgerError, match="older copy"):
        opened.epsilon_spent("hospital")  # every reread checks too


def test_restored_older_copy_is_refused_with_the_fallback_head_beside(paths, tmp_path):
    ledger, _ = paths
    opened = _create(ledger)
    backup = tmp_path / "backup.json"
    shutil.copy(ledger, backup)
    opened.charge("run", 1, HOSPITAL_ROUND)
    shutil.copy(backup, ledger)

    with pytest.raises(LedgerError, match="older copy"):
        _open(ledger)


def test_restoring_ledger_and_fallback_head_together_is_not_detected(paths, tmp_path):
    # The documented limit of the fallback: keep head_path on another volume to close it.
    ledger, _ = paths
    opened = _create(ledger)
    beside = ledger.with_name(f".{ledger.name}.head")
    backup = tmp_path / "backup"
    backup.mkdir()
    shutil.copy(ledger, backup / "ledger.json")
    shutil.copy(beside, backup / "head")
    opened.charge("run", 1, HOSPITAL_ROUND)
    shutil.copy(backup / "ledger.json", ledger)
    shutil.copy(backup / "head", beside)

    assert _open(ledger).entries == ()


def test_missing_external_head_is_refused(paths):
    ledger, head = paths
    _create(ledger, head).charge("run", 1, HOSPITAL_ROUND)
    head.unlink()

    with pytest.raises(LedgerError, match="head file is missing") as error:
        _open(ledger, head)
    assert str(head) in str(error.value)


def test_head_file_is_written_atomically_after_every_write(paths):
    ledger, head = paths
    opened = _create(ledger, head)
    opened.charge("run", 1, HOSPITAL_ROUND)

    data = json.loads(ledger.read_text())
    recorded = json.loads(head.read_text())
    beside = json.loads(ledger.with_name(f".{ledger.name}.head").read_text())
    assert recorded == beside == {"hospital": "va", "sequence": 2, "head": data["checksum"],
                                  "ledger": str(ledger)}
    assert sorted(p.name for p in head.parent.iterdir()) == ["ledger.head"]


def test_each_state_hash_covers_the_previous_head(paths):
    ledger, head = paths
    opened = _create(ledger, head)
    first = json.loads(ledger.read_text())["checksum"]
    opened.charge("run", 1, HOSPITAL_ROUND)
    second = json.loads(ledger.read_text())

    assert second["previous"] == first
    # A forged successor (valid checksum, wrong link) is refused against the head file.
    forged = {k: v for k, v in second.items() if k != "checksum"}
    forged["sequence"], forged["previous"], forged["entries"] = 3, "f" * 64, []
    canonical = json.dumps(forged, sort_keys=True, separators=(",", ":"))
    forged["checksum"] = hashlib.sha256(canonical.encode()).hexdigest()
    ledger.write_text(json.dumps(forged))
    with pytest.raises(LedgerError, match="does not follow"):
        _open(ledger, head)


def test_interrupted_head_write_is_accepted_and_repaired(paths, monkeypatch):
    ledger, head = paths
    opened = _create(ledger, head)

    def crash(*_args, **_kwargs):
        raise LedgerError("power cut")

    monkeypatch.setattr(ledger_module, "write_head", crash)
    with pytest.raises(LedgerError, match="power cut"):
        opened.charge("run", 1, HOSPITAL_ROUND)  # ledger written, head not
    monkeypatch.undo()

    reopened = _open(ledger, head)
    assert [e.round for e in reopened.entries] == [1]
    assert json.loads(head.read_text())["sequence"] == 2


def test_legacy_ledger_is_read_as_local_and_upgraded_on_open(paths):
    ledger, head = paths
    ledger.parent.mkdir(parents=True)
    payload = {"hospital": "va", "budget": {"epsilon": 5.0, "delta": 1e-5}, "accountant": "rdp",
               "entries": [{"run": "old", "round": 1, "level": "hospital",
                            "noise_multiplier": 3.0, "sample_rate": 1.0, "steps": 1}]}
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    old_checksum = hashlib.sha256(canonical.encode()).hexdigest()
    ledger.write_text(json.dumps({**payload, "checksum": old_checksum}))

    assert PrivacyLedger.read(ledger).entries[0].event.noise_mode == "local"
    opened = _open(ledger, head)

    data = json.loads(ledger.read_text())
    assert (data["sequence"], data["previous"]) == (1, old_checksum)
    assert data["entries"][0]["noise_mode"] == "local"
    assert opened.entries[0].event == HOSPITAL_ROUND
    assert json.loads(head.read_text())["head"] == data["checksum"]
    assert opened.charge("old", 1, HOSPITAL_ROUND) is False  # the same entry, still charged


def test_open_budget_only_lowers_and_none_keeps_it(paths):
    ledger, head = paths
    _create(ledger, head, epsilon=5.0)

    kept = _open(ledger, head)
    raised = _open(ledger, head, budget_epsilon=9.0, budget_delta=1e-3)
    lowered = _open(ledger, head, budget_epsilon=2.0)

    assert (kept.budget_epsilon, raised.budget_epsilon, lowered.budget_epsilon) == (5.0, 5.0, 2.0)
    assert _open(ledger, head).budget_epsilon == 2.0
    assert _open(ledger, head).budget_delta == 1e-5


def test_read_only_ledger_refuses_to_charge(paths):
    ledger, head = paths
    _create(ledger, head)

    with pytest.raises(LedgerError, match="read-only"):
        PrivacyLedger.read(ledger, head_path=head).charge("run", 1, HOSPITAL_ROUND)
