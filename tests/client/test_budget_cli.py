import json
import math

from typer.testing import CliRunner

from common.dp.events import GaussianRoundEvent
from common.dp.ledger import PrivacyLedger
from simulations.cli.main import app


def _words(result):
    return " ".join(result.output.split())


def _init(path, *extra):
    return CliRunner().invoke(app, ["budget", "init", str(path), *extra])


def test_budget_shows_spent_remaining_and_rounds_left(tmp_path):
    path = tmp_path / "cleveland.json"
    assert _init(path, "--epsilon", "2.0", "--delta", "1e-5").exit_code == 0
    ledger = PrivacyLedger.open(path, hospital="cleveland")
    event = GaussianRoundEvent(noise_multiplier=1.5, sample_rate=0.06, steps=17, level="patient")
    for r in (1, 2):
        ledger.charge("run", r, event)
    result = CliRunner().invoke(app, ["budget", str(path)])
    assert result.exit_code == 0
    spent = ledger.epsilon_spent("patient")
    assert f"{spent:.4f}" in result.output and f"{2.0 - spent:.4f}" in result.output
    assert str(ledger.rounds_left(event)) in result.output
    assert "unbounded" in result.output  # hospital level, after patient-level releases


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


def test_budget_of_a_missing_ledger_names_the_init_command(tmp_path):
    path = tmp_path / "none.json"

    result = CliRunner().invoke(app, ["budget", str(path)])

    assert result.exit_code == 2
    assert f"fedcare budget init {path} --epsilon E --delta D" in _words(result)


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
