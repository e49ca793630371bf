"""The console's epsilon budget is each hospital's own (from its replies), never the run
config's: a unit test of the headline, and a run of hospitals with budgets of their own over
the in-process grid (the deployed ClientApp's privacy: node config and `fedcare budget init`).
"""

from typer.testing import CliRunner

from client.app import build_client_app
from common.config import RunConfig
from server.federation import run_federation
from server.progress import REPORTS_KEY, headline_items
from simulations.cli.main import app as fedcare_cli
from simulations.engine.in_process_grid import InProcessGrid

HOSPITALS = ("cleveland", "hungary", "switzerland", "va")


def _reports(**budgets_and_spent):
    return {name: {"patient": spent, "hospital": float("inf"), "budget_epsilon": budget}
            for name, (budget, spent) in budgets_and_spent.items()}


def test_one_shared_budget_reads_spent_over_budget():
    row = {"epsilon_patient_max": 0.42, REPORTS_KEY: _reports(a=(2.0, 0.42), b=(2.0, 0.3))}

    assert headline_items(row, ("epsilon_patient_max",), epsilon_budget=1.0) == ["eps 0.42/2.00"]


def test_different_budgets_name_the_hospital_that_spent_most_and_the_range():
    row = {"epsilon_patient_max": 0.9, REPORTS_KEY: _reports(a=(2.0, 0.42), va=(3.0, 0.9))}

    assert headline_items(row, ("epsilon_patient_max",)) == [
        "eps 0.90/3.00 (va's; budgets 2.00-3.00)"]


def test_without_a_reported_budget_only_the_spent_epsilon_shows():
    row = {"epsilon_patient_max": 0.0, REPORTS_KEY: {}}

    assert headline_items(row, ("epsilon_patient_max",)) == ["eps 0.00"]


def test_a_run_shows_the_hospitals_budgets_not_the_run_configs(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FEDCARE_HOME", str(tmp_path / "home"))
    nodes = {}
    for index, (name, budget) in enumerate(zip(HOSPITALS, (2.0, 2.0, 3.0, 3.0), strict=True)):
        ledger = tmp_path / name / "ledger.json"
        done = CliRunner().invoke(fedcare_cli, ["budget", "init", str(ledger), "--hospital",
                                                name, "--epsilon", str(budget), "--head",
                                                str(tmp_path / "heads" / f"{name}.head")])
        assert done.exit_code == 0, done.output
        nodes[100 + index] = {"partition-id": index, "num-partitions": 4,
                              "budget-epsilon": budget, "ledger-path": str(ledger)}
    config = RunConfig.from_run_config({"dp.mode": "patient", "local-steps": 2,
                                        "num-server-rounds": 1})  # dp.epsilon: default 1
    (tmp_path / "run").mkdir()
    capsys.readouterr()

    run_federation(InProcessGrid(build_client_app(), nodes, config.to_run_config()), config,
                   tmp_path / "run")

    console = " ".join(capsys.readouterr().err.split())
    assert "budgets 2.00-3.00)" in console
    assert "/1.00" not in console
