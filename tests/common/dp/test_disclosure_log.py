"""The disclosure log: a hash chain anchored in the ledger's head file (real files, real ledger)."""

import json
import shutil

import pytest

from common.dp.disclosure_log import (
    DisclosureLogError,
    append_anchored,
    log_path,
    read_anchor,
    read_records,
    record_budget_init,
    verify_beside,
)
from common.dp.events import GaussianRoundEvent
from common.dp.ledger import PrivacyLedger
from common.dp.ledger_store import read_head

EVENT = GaussianRoundEvent(noise_multiplier=1.5, sample_rate=0.1, steps=3, level="patient")


@pytest.fixture
def ledger(tmp_path):
    """A ledger with its head apart, its budget recorded, and three request records."""
    opened = PrivacyLedger.create(tmp_path / "ledgers" / "va.json", hospital="va",
                                  budget_epsilon=3.0, budget_delta=1e-5,
                                  head_path=tmp_path / "heads" / "va.head")
    record_budget_init(opened, by="test")
    for number in (1, 2, 3):
        append_anchored(opened.path, (opened.head_path,),
                        {"event": "request", "outcome": "answered", "round": number})
    return opened


def _lines(ledger):
    return log_path(ledger.path).read_text().splitlines()


def _write(ledger, lines):
    log_path(ledger.path).write_text("".join(line + "\n" for line in lines))


def test_an_intact_log_verifies_and_is_anchored_at_its_last_record(ledger):
    verification = verify_beside(ledger)

    assert verification.ok, verification.problems
    assert [r["seq"] for r in verification.records] == [1, 2, 3, 4]
    assert verification.records[0]["event"] == "budget-init"
    assert verification.anchor.count == 4
    assert verification.anchor.head == verification.records[-1]["hash"]
    assert "4 records, hash chain verified, anchored in the ledger's head file at record 4" in (
        verification.summary())


def test_an_edited_record_is_reported_by_number(ledger):
    lines = _lines(ledger)
    record = json.loads(lines[1])
    record["outcome"] = "declined"  # the hash is left as it was
    lines[1] = json.dumps(record, sort_keys=True, separators=(",", ":"))
    _write(ledger, lines)

    verification = verify_beside(ledger)

    assert not verification.ok
    assert verification.problems == ("record 2 was edited (its hash does not match its "
                                     "content)",)


def test_an_edited_record_with_its_hash_recomputed_breaks_the_chain(ledger):
    from common.dp.disclosure_log import record_hash

    lines = _lines(ledger)
    record = json.loads(lines[1])
    record["outcome"] = "declined"
    record["hash"] = record_hash(record)
    lines[1] = json.dumps(record)
    _write(ledger, lines)

    problems = verify_beside(ledger).problems

    assert problems == ("record 3 does not follow record 2: records were removed, inserted or "
                        "reordered",)


def test_a_truncated_tail_is_reported_against_the_anchor(ledger):
    _write(ledger, _lines(ledger)[:2])

    problems = verify_beside(ledger).problems

    assert problems == ("the head file anchors record 4, but the log ends at record 2: its "
                        "tail was truncated or an older copy was restored",)


def test_a_restored_older_copy_is_reported(ledger, tmp_path):
    copy = tmp_path / "backup.jsonl"
    shutil.copy(log_path(ledger.path), copy)
    append_anchored(ledger.path, (ledger.head_path,), {"event": "request", "round": 4})
    shutil.copy(copy, log_path(ledger.path))  # the backup put back in place

    problems = verify_beside(ledger).problems

    assert problems == ("the head file anchors record 5, but the log ends at record 4: its "
                        "tail was truncated or an older copy was restored",)


def test_a_replaced_log_of_the_same_length_is_reported(ledger):
    lines = _lines(ledger)
    log_path(ledger.path).unlink()
    for number in range(len(lines)):  # a fresh, internally consistent chain
        append_anchored(ledger.path, (), {"event": "request", "round": number})

    problems = verify_beside(ledger).problems

    assert problems == ("record 4 differs from the one the head file anchors: the log was "
                        "replaced or rewritten",)


def test_a_deleted_log_is_reported(ledger):
    log_path(ledger.path).unlink()

    problems = verify_beside(ledger).problems

    assert problems == ("the head file anchors 4 records, but the log is missing or empty: "
                        "it was deleted or emptied",)


def test_a_garbled_line_is_reported_not_raised(ledger):
    lines = _lines(ledger)
    lines[2] = lines[2][:-5]
    _write(ledger, lines)

    verification = verify_beside(ledger)

    assert not verification.ok
    assert "line 3: not valid JSON" in verification.problems[0]


def test_the_ledgers_own_writes_keep_the_logs_anchor(ledger):
    before = read_anchor(ledger.head_path)

    ledger_again = PrivacyLedger.open(ledger.path, hospital="va")
    ledger_again.charge("run-1", 1, EVENT)

    head = json.loads(ledger.head_path.read_text())
    assert head["sequence"] == ledger_again.sequence  # the ledger's head moved on
    assert read_anchor(ledger.head_path) == before  # and the log's anchor stayed
    assert read_head(ledger.head_path).sequence == ledger_again.sequence
    assert verify_beside(ledger_again).ok


def test_a_head_file_without_a_log_anchor_is_still_read(tmp_path):
    # A ledger and head written before the log existed (no "log" key): still valid.
    ledger = PrivacyLedger.create(tmp_path / "l" / "va.json", hospital="va", budget_epsilon=1,
                                  budget_delta=1e-5, head_path=tmp_path / "h" / "va.head")
    assert "log" not in json.loads(ledger.head_path.read_text())

    verification = verify_beside(PrivacyLedger.read(ledger.path))

    assert verification.ok and verification.anchor is None and verification.records == ()
    assert "no records yet" in verification.summary()


def test_records_after_the_anchor_are_covered_by_the_chain_only(ledger):
    append_anchored(ledger.path, (), {"event": "request", "round": 9})  # not anchored

    verification = verify_beside(ledger)

    assert verification.ok and verification.unanchored == 1
    assert "1 later record(s) covered by the chain only" in verification.summary()


def test_a_record_may_not_set_the_chain_keys(ledger):
    with pytest.raises(DisclosureLogError, match=r"may not set the chain keys \['seq'\]"):
        append_anchored(ledger.path, (ledger.head_path,), {"seq": 7})
    assert len(read_records(log_path(ledger.path))) == 4


def test_an_unwritable_log_raises_a_named_error(ledger):
    path = log_path(ledger.path)
    path.unlink()
    path.mkdir()  # the log's name taken by a directory

    with pytest.raises(DisclosureLogError, match="disclosure log"):
        append_anchored(ledger.path, (ledger.head_path,), {"event": "request"})


def test_non_finite_numbers_are_stored_as_null(ledger):
    record, _ = append_anchored(ledger.path, (ledger.head_path,),
                                {"event": "request", "epsilon": float("inf")})

    assert record["epsilon"] is None
    assert read_records(log_path(ledger.path))[-1]["epsilon"] is None
    assert verify_beside(ledger).ok
