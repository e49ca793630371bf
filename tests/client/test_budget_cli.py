import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from common.dp.events import GaussianRoundEvent
from common.dp.ledger import PrivacyLedger
from common.dp.ledger_store import parse_ledger, render_ledger, write_head
from simulations.cli.main import app

PATIENT_ROUND = GaussianRoundEvent(noise_multiplier=1.5, sample_rate=0.06, steps=17,
                                   level="patient")


@pytest.fixture(autouse=True)
def fedcare_home(tmp_path, monkeypatch):
    """The hospital's own FEDCARE_HOME (never the user's ~/.fedcare)."""
    home = tmp_path / "fedcare-home"
    monkeypatch.setenv("FEDCARE_HOME", str(home))
    return home


def _words(result):
    return " ".join(result.output.split())


def _init(path, *extra):
    return CliRunner().invoke(app, ["budget", "init", str(path), *extra])


def test_budget_shows_spent_remaining_and_rounds_left(tmp_path):
    path = tmp_path / "cleveland.json"
    assert _init(path, "--epsilon", "2.0", "--delta", "1e-5").exit_code == 0
    ledger = PrivacyLedger.open(path, hospital="cleveland")
    event = PATIENT_ROUND
    for r in (1, 2):
        ledger.charge("run", r, event)
    result = CliRunner().invoke(app, ["budget", str(path)])
    assert result.exit_code == 0
    spent = ledger.epsilon_spent("patient")
    assert f"{spent:.4f}" in result.output and f"{2.0 - spent:.4f}" in result.output
    assert str(ledger.rounds_left(event)) in result.output
    assert "unbounded" in result.output  # hospital level, after patient-level releases
    assert "recorded at charge time" in _words(result)


def _charged(tmp_path, rounds=3, epsilon="8"):
    path = tmp_path / "va.json"
    assert _init(path, "--epsilon", epsilon).exit_code == 0
    ledger = PrivacyLedger.open(path, hospital="va")
    for r in range(1, rounds + 1):
        ledger.charge("run", r, PATIENT_ROUND)
    return path, ledger


def _rewrite(path, change):
    """Rewrite a ledger and its head as its own administrator could (valid checksum, chain)."""
    state = change(parse_ledger(path.read_text()))
    text, head = render_ledger(state)
    path.write_text(text)
    write_head(Path(state.head_file), dataclasses.replace(state, head=head), path)


def test_budget_recompute_says_the_recorded_figures_agree_with_opacus(tmp_path):
    path, ledger = _charged(tmp_path)

    result = CliRunner().invoke(app, ["budget", str(path), "--recompute"])

    assert result.exit_code == 0, result.output
    assert "recomputed by Opacus" in _words(result)
    assert ("the recorded figures agree with Opacus (both levels' and the test track's epsilon, "
            "rounds left)") in _words(result)
    assert f"{ledger.epsilon_spent('patient'):.4f}" in result.output


def test_budget_recompute_exposes_a_recorded_figure_that_is_not_opacus(tmp_path):
    path, ledger = _charged(tmp_path)
    true = ledger.epsilon_spent("patient")

    def inflate(state):
        last = state.entries[-1]
        after = dataclasses.replace(last.after, patient=true / 2)
        return dataclasses.replace(state, entries=(*state.entries[:-1],
                                                   dataclasses.replace(last, after=after)))

    _rewrite(path, inflate)
    shown = CliRunner().invoke(app, ["budget", str(path)])
    result = CliRunner().invoke(app, ["budget", str(path), "--recompute"])

    assert shown.exit_code == 0 and f"{true / 2:.4f}" in shown.output  # shown as recorded
    assert result.exit_code == 1
    assert (f"patient-level epsilon: recorded {true / 2:.6g}, Opacus {true:.6g}"
            in _words(result))


@pytest.mark.parametrize("why", ["older entries", "budget lowered"])
def test_budget_recomputes_when_the_recorded_figures_do_not_apply(tmp_path, why):
    path, ledger = _charged(tmp_path)
    if why == "budget lowered":
        PrivacyLedger.open(path, hospital="va", budget_epsilon=4.0)  # the node config lowers it
        expected = "the budget was lowered after the last charge"
    else:
        _rewrite(path, lambda state: dataclasses.replace(state, entries=tuple(
            dataclasses.replace(e, after=None) for e in state.entries)))
        expected = "the last entry records no figures"

    result = CliRunner().invoke(app, ["budget", str(path)])

    reopened = PrivacyLedger.read(path)
    assert result.exit_code == 0, result.output
    assert f"recomputed by Opacus: {expected}" in _words(result)
    assert f"{reopened.epsilon_spent('patient'):.4f}" in result.output
    assert str(reopened.rounds_left(PATIENT_ROUND)) in result.output


def test_budget_shows_both_levels_composed(tmp_path):
    path = tmp_path / "va.json"
    _init(path, "--epsilon", "8", "--hospital", "va")
    ledger = PrivacyLedger.open(path, hospital="va")
    for r in (1, 2, 3):
        ledger.charge("run", r, GaussianRoundEvent(2.0, 1.0, 1, "hospital"))

    result = CliRunner().invoke(app, ["budget", str(path)])

    assert result.exit_code == 0
    hospital, patient = ledger.epsilon_spent("hospital"), ledger.epsilon_spent("patient")
    assert math.isfinite(hospital) and patient == hospital  # q = 1 either way
    assert f"{hospital:.4f}" in result.output and "unbounded" not in result.output


def test_budget_init_keeps_the_head_apart_by_default_and_prints_where(tmp_path, fedcare_home):
    path = tmp_path / "ledgers" / "va.json"

    result = _init(path)

    head = fedcare_home / "heads" / "va.head"
    assert result.exit_code == 0, result.output
    assert f"head file {head}" in _words(result) and "another volume" in _words(result)
    data = json.loads(path.read_text())
    assert data["head_file"] == str(head)
    assert json.loads(head.read_text())["head"] == data["checksum"]
    assert PrivacyLedger.read(path).head_path == head  # found through the ledger's record


def test_budget_init_after_rm_r_of_the_ledger_directory_is_refused(tmp_path, fedcare_home):
    path = tmp_path / "ledgers" / "va.json"
    assert _init(path, "--epsilon", "8").exit_code == 0
    PrivacyLedger.open(path, hospital="va").charge("run", 1, PATIENT_ROUND)
    shutil.rmtree(path.parent)

    result = _init(path, "--epsilon", "1")

    assert result.exit_code == 2 and not path.exists()
    assert (f"ledger head file {fedcare_home / 'heads' / 'va.head'} already records a ledger "
            "of hospital 'va' at write 2") in _words(result)


def test_budget_init_warns_about_a_head_inside_the_ledger_directory(tmp_path):
    path = tmp_path / "va.json"

    result = _init(path, "--head", str(tmp_path / "va.head"))

    assert result.exit_code == 0 and "warning" in _words(result)
    assert "would reset the budget unnoticed" in _words(result)


def test_budget_init_creates_the_ledger_with_head_and_defaults(tmp_path):
    path, head = tmp_path / "ledgers" / "hungary.json", tmp_path / "elsewhere" / "hungary.head"

    result = _init(path, "--head", str(head))

    assert result.exit_code == 0, result.output
    data = json.loads(path.read_text())
    assert data["hospital"] == "hungary" and data["entries"] == []
    assert data["budget"] == {"epsilon": 1.0, "delta": 1e-5} and data["accountant"] == "rdp"
    assert json.loads(head.read_text())["head"] == data["checksum"]
    assert PrivacyLedger.open(path, hospital="hungary", head_path=head).budget_epsilon == 1.0


def test_budget_init_refuses_an_existing_ledger_without_traceback(tmp_path):
    path = tmp_path / "va.json"
    _init(path, "--epsilon", "1")
    before = path.read_bytes()

    result = _init(path, "--epsilon", "100")

    assert result.exit_code == 2
    assert str(path) in _words(result) and "already exists" in _words(result)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert path.read_bytes() == before


def test_budget_init_refuses_invalid_values_naming_them(tmp_path):
    path = tmp_path / "va.json"

    for extra, words in ((["--epsilon", "0"], "--epsilon must be > 0"),
                         (["--delta", "1.5"], "--delta must be in (0, 1)"),
                         (["--accountant", "gdp"], "--accountant must be one of")):
        result = _init(path, *extra)
        assert result.exit_code == 2 and words in _words(result), result.output
        assert str(path) in _words(result)
    assert not path.exists()


def test_budget_of_a_missing_ledger_names_the_init_command(tmp_path, fedcare_home):
    path = tmp_path / "none.json"

    result = CliRunner().invoke(app, ["budget", str(path)])

    head = fedcare_home / "heads" / "none.head"
    assert result.exit_code == 2
    assert f"fedcare budget init {path} --head {head} --epsilon E --delta D" in _words(result)


def test_budget_of_a_deleted_ledger_says_it_was_deleted(tmp_path):
    path, _ = _charged(tmp_path, rounds=1)
    path.unlink()

    result = CliRunner().invoke(app, ["budget", str(path)])

    assert result.exit_code == 2
    assert "records write 2 of hospital 'va': the ledger was deleted" in _words(result)


def test_budget_refuses_tampered_ledger(tmp_path):
    path = tmp_path / "va.json"
    _init(path, "--epsilon", "1.0")
    path.write_text(path.read_text().replace('"epsilon": 1.0', '"epsilon": 9.0'))
    result = CliRunner().invoke(app, ["budget", str(path)])
    assert result.exit_code == 2 and "rejected" in _words(result)


def test_budget_help_describes_the_ledger_path_argument():
    for command, description in ((["show"], "The hospital's ledger JSON file."),
                                 (["init"], "The ledger file to create (must not exist).")):
        result = CliRunner().invoke(app, ["budget", *command, "--help"])
        assert result.exit_code == 0
        assert description in _words(result)
