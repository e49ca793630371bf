from typer.testing import CliRunner

from common.dp.events import GaussianRoundEvent
from common.dp.ledger import PrivacyLedger
from simulations.cli import app


def test_budget_shows_spent_remaining_and_rounds_left(tmp_path):
    path = tmp_path / "cleveland.json"
    ledger = PrivacyLedger.open(path, hospital="cleveland", budget_epsilon=2.0, budget_delta=1e-5)
    event = GaussianRoundEvent(noise_multiplier=1.5, sample_rate=0.06, steps=17, level="patient")
    for r in (1, 2):
        ledger.charge("run", r, event)
    result = CliRunner().invoke(app, ["budget", str(path)])
    assert result.exit_code == 0
    spent = ledger.epsilon_spent("patient")
    assert f"{spent:.4f}" in result.output and f"{2.0 - spent:.4f}" in result.output
    assert str(ledger.rounds_left(event)) in result.output


def test_budget_refuses_tampered_ledger(tmp_path):
    path = tmp_path / "va.json"
    PrivacyLedger.open(path, hospital="va", budget_epsilon=1.0, budget_delta=1e-5)
    path.write_text(path.read_text().replace('"epsilon": 1.0', '"epsilon": 9.0'))
    result = CliRunner().invoke(app, ["budget", str(path)])
    assert result.exit_code == 2 and "rejected" in " ".join(result.output.split())
